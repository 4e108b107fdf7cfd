"""`facestream train faceswap --a DIR --b DIR --out weights/faceswap/NAME`: train a pair model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model (faceswap: a faceswap-GAN pair model)"
    )
    trainers = parser.add_subparsers(dest="trainer", required=True, metavar="MODEL")
    faceswap = trainers.add_parser(
        "faceswap",
        help="train a faceswap-GAN model for two people from their extract folders",
        description="Train a shared-encoder, two-decoder faceswap-GAN on the faces of person a and "
        "person b (folders made by `facestream extract`). Resumes from OUT/checkpoint.pt when it is "
        "there; writes previews, loss_log.csv and the model file OUT/model.pt. Only train on people "
        "who agreed to it; swapped output is labelled AI-modified.",
    )
    faceswap.add_argument("--a", required=True, type=Path, help="extract folder of person a")
    faceswap.add_argument("--b", required=True, type=Path, help="extract folder of person b")
    faceswap.add_argument(
        "--out", required=True, type=Path, help="run folder, e.g. weights/faceswap/NAME"
    )
    faceswap.add_argument(
        "--size", type=int, choices=(64, 128, 256), default=64, help="face size in pixels"
    )
    faceswap.add_argument(
        "--iters", type=int, default=20000, help="total iterations (a resumed run continues)"
    )
    faceswap.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="stop after this much training time (all runs)",
    )
    faceswap.add_argument(
        "--batch-size", type=int, default=8, help="faces per person per iteration"
    )
    faceswap.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate")
    faceswap.add_argument("--width", type=int, default=64, help="channels at full resolution")
    faceswap.add_argument("--max-width", type=int, default=512, help="largest channel count")
    faceswap.add_argument("--latent", type=int, default=512, help="width of the shared bottleneck")
    faceswap.add_argument(
        "--attention",
        type=int,
        nargs="*",
        default=[16, 32],
        metavar="RES",
        help="resolutions with self-attention (default 16 32)",
    )
    faceswap.add_argument("--preview-every", type=int, default=250)
    faceswap.add_argument("--checkpoint-every", type=int, default=500)
    faceswap.add_argument("--log-every", type=int, default=10)
    faceswap.add_argument("--seed", type=int, default=0)
    faceswap.add_argument(
        "--fresh", action="store_true", help="ignore OUT/checkpoint.pt and start over"
    )
    faceswap.add_argument(
        "--names", nargs=2, metavar=("A", "B"), help="display names of the two people"
    )
    faceswap.add_argument(
        "--weights-dir", type=Path, default=None, help="where perceptual/ weights are looked up"
    )
    faceswap.add_argument(
        "--no-perceptual", action="store_true", help="train without the perceptual loss"
    )
    faceswap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    faceswap.set_defaults(func=run_faceswap)


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is usable here")
    return name


def _check(args: argparse.Namespace) -> str | None:
    if args.iters < 1 or args.batch_size < 1 or args.lr <= 0:
        return "--iters and --batch-size must be >= 1 and --lr > 0"
    if min(args.preview_every, args.checkpoint_every, args.log_every) < 1:
        return "--preview-every, --checkpoint-every and --log-every must be >= 1"
    return None


def _build_trainer(args: argparse.Namespace) -> Any:
    from engines.faceswap_gan.dataset import FaceDataset
    from engines.faceswap_gan.losses import load_perceptual_network
    from engines.faceswap_gan.model import FaceswapConfig
    from engines.faceswap_gan.trainer import FaceswapTrainer, TrainConfig
    from stream.settings import Settings

    data = {"a": FaceDataset(args.a, args.size), "b": FaceDataset(args.b, args.size)}
    model_config = FaceswapConfig(
        size=args.size,
        width=args.width,
        max_width=max(args.max_width, args.width),
        latent_dim=args.latent,
        attention_resolutions=tuple(args.attention),
        padding=data["a"].padding,
    )
    names = tuple(args.names) if args.names else (args.a.name, args.b.name)
    train_config = TrainConfig(
        iters=args.iters,
        batch_size=args.batch_size,
        lr=args.lr,
        checkpoint_every=args.checkpoint_every,
        preview_every=args.preview_every,
        log_every=args.log_every,
        seed=args.seed,
        device=_device(args.device),
        names=(names[0], names[1]),
        max_seconds=args.max_minutes * 60 if args.max_minutes else None,
    )
    perceptual = None
    if not args.no_perceptual:
        perceptual = load_perceptual_network(args.weights_dir or Settings().weights_dir)
    trainer = FaceswapTrainer(model_config, train_config, data, args.out, perceptual)
    if not args.fresh:
        trainer.resume()
    return trainer


def run_faceswap(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from engines.errors import EngineError

    problem = _check(args)
    if problem:
        print(f"facestream train: {problem}", file=sys.stderr)
        return 2
    try:
        trainer = _build_trainer(args)
        with tqdm(
            total=args.iters, initial=trainer.iteration, unit="it", desc="train", file=sys.stderr
        ) as bar:

            def progress(iteration: int, row: dict[str, float]) -> None:
                bar.update(iteration - bar.n)
                bar.set_postfix(
                    recon_a=f"{row['recon_a']:.3f}", recon_b=f"{row['recon_b']:.3f}", refresh=False
                )

            model_path = trainer.train(progress)
    except (EngineError, ValueError, OSError) as error:
        print(f"facestream train: {error}", file=sys.stderr)
        return 1
    print(
        f"model {model_path} ({trainer.iteration} iterations); previews in {args.out / 'previews'}"
    )
    return 0
