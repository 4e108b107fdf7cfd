"""faceswap-GAN speed: inference per face and per 720p frame, training iterations/s.

    facestream bench gan [--device auto] [--size 64] [--model PATH] [--batches 1,4,8]
                         [--train-batch 8] [--demo-minutes M]

Rows (all in one run, on one device):
- reference: the project's MTCNN (engines.detection) on the 720p frame; every other
  row's `vs_detect` is its time divided by this one, so rows compare across machines.
- swap: FaceSwapper (encoder + other decoder, host uint8 in and out) on a batch of
  aligned faces: ms per call and per face.
- frame_720p: the whole `gan_swap` effect (align, swap, colour match, mask blend,
  paste back) on a 1280x720 frame with 1 face and with every face of multiface.jpg,
  once on each path: host (crops, colour match and paste with OpenCV on the host, the
  network on --device) and device (the frame uploaded once, everything on --device,
  downloaded once; what a GPU server runs). On a CPU the device path is forced.
- train: one FaceswapTrainer step (both identities, generator + critics) at the
  model's default width and the test's tiny width: iterations per second.
- demo (with --demo-minutes): extract the two largest tracks of video.mp4, train
  a model for at most that long into weights/faceswap/bench_demo/, and write its
  preview grid, loss curve and a swapped video frame to benchmarks/out/faceswap_gan/.
The model is untrained unless --model is given (speed does not depend on training).
"""

from __future__ import annotations

import argparse
import functools
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import OUT_DIR, PROJECT_ROOT, SHARED_DATA, load_rgb, machine
from engines.alignment import estimate_alignment, warp_to_crop
from engines.effects.base import EffectResources
from engines.effects.gan_swap import GanSwapEffect
from engines.effects.registry import build_effect
from engines.faceswap_gan.dataset import ExtractManifest, FaceDataset, read_manifest
from engines.faceswap_gan.model import FaceswapConfig, FaceswapGenerator
from engines.faceswap_gan.modelfile import export_model
from engines.faceswap_gan.trainer import FaceswapTrainer, TrainConfig
from engines.types import Face

logger = logging.getLogger(__name__)

DEMO_OUT = OUT_DIR / "faceswap_gan"
TINY = {"width": 8, "max_width": 32, "latent_dim": 32, "attention_resolutions": (16,)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--size", type=int, choices=(64, 128, 256), default=64)
    parser.add_argument(
        "--model", type=Path, default=None, help="an exported model.pt (default: untrained)"
    )
    parser.add_argument("--batches", default="1,4,8", help="face batch sizes for the swap rows")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--train-iters", type=int, default=3, help="timed training steps (0: skip)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--demo-minutes", type=float, default=0.0, help="train a demo model this long"
    )
    parser.add_argument("--demo-out", type=Path, default=DEMO_OUT)


def time_calls(fn: Callable[[], object], repeat: int, warmup: int = 2) -> tuple[float, float]:
    """(mean wall ms, mean process CPU ms) per call of `fn`. On a shared machine the
    wall time grows with other load; the CPU time much less (with --threads 1 it is
    the single thread's time)."""
    for _ in range(warmup):
        fn()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - wall) * 1000 / repeat, (time.process_time() - cpu) * 1000 / repeat


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _frame_720p(device: str) -> tuple[np.ndarray, list[Face], tuple[float, float]]:
    """multiface.jpg scaled to 1280x720, its faces, and the detector's (wall, CPU) ms."""
    from engines.detection import FaceDetector

    frame = load_rgb(SHARED_DATA / "multiface.jpg", (1280, 720))
    detector = FaceDetector(device=device, min_face_size=20)
    timing = time_calls(lambda: detector.detect([frame]), repeat=5, warmup=1)
    faces = Face.from_detections(detector.detect([frame])[0])
    return frame, faces, timing


def _model_path(args: argparse.Namespace, folder: Path) -> Path:
    if args.model is not None:
        return Path(args.model)
    torch.manual_seed(0)
    generator = FaceswapGenerator(FaceswapConfig(size=args.size))
    return export_model(generator, folder / "untrained" / "model.pt", {"names": ["a", "b"]})


def _applier(effect: Any, frame: np.ndarray, faces: list[Face]) -> Callable[[], object]:
    return lambda: effect.apply(frame.copy(), faces)


def _row(
    measure: str,
    device: str,
    faces: int,
    timing: tuple[float, float],
    reference: tuple[float, float],
) -> dict[str, Any]:
    """One table row; vs_detect compares CPU times (steadier than wall on a shared machine)
    on a CPU, wall times on a GPU."""
    wall, cpu = timing
    ratio = cpu / reference[1] if device == "cpu" else wall / reference[0]
    return {
        "measure": measure,
        "device": device,
        "faces": faces,
        "ms": wall,
        "cpu_ms": cpu,
        "ms_per_face": wall / faces,
        "vs_detect": ratio,
    }


def _inference_rows(args: argparse.Namespace, device: str, folder: Path) -> list[dict[str, Any]]:
    frame, faces, reference = _frame_720p(device)
    rows = [_row("reference: detect 720p", device, len(faces), reference, reference)]
    resources = EffectResources(
        weights_dir=folder, device=device, model_path=_model_path(args, folder)
    )
    started = time.perf_counter()
    effect = build_effect("gan_swap", {}, resources)
    build_s = time.perf_counter() - started
    swapper = effect.swapper  # type: ignore[attr-defined]
    crops = np.stack(
        [warp_to_crop(frame, estimate_alignment(f.landmarks5, swapper.size)) for f in faces]
    )
    for batch in (int(b) for b in args.batches.split(",")):
        batch_crops = np.resize(crops, (batch, *crops.shape[1:]))
        timing = time_calls(functools.partial(swapper, batch_crops), repeat=args.repeat)
        rows.append(_row(f"swap batch {batch}", device, batch, timing, reference))
    rows[1]["build_s"] = round(build_s, 2)
    for path in ("host", "device"):
        chosen = GanSwapEffect(swapper, colour=True, feather=0.1, device_path=path == "device")
        for count in sorted({1, len(faces)}):
            timing = time_calls(_applier(chosen, frame, faces[:count]), repeat=args.repeat)
            measure = f"gan_swap 720p frame, {path} path, {count} face(s)"
            rows.append(_row(measure, device, count, timing, reference))
    return rows


def _portrait_data(folder: Path, size: int) -> dict[str, FaceDataset]:
    from stream.extract import ExtractOptions, extract_faces

    extract_faces(SHARED_DATA / "faces", folder / "portraits", ExtractOptions(size=size))
    dataset = FaceDataset(folder / "portraits", size)
    return {"a": dataset, "b": dataset}


def _train_rows(
    args: argparse.Namespace, device: str, folder: Path, reference: tuple[float, float]
) -> list[dict[str, Any]]:
    data = _portrait_data(folder, args.size)
    rows = []
    for label, changes in (("default width", {}), ("test tiny width", TINY)):
        config = FaceswapConfig(size=args.size, **changes)  # type: ignore[arg-type]
        train = TrainConfig(iters=10**9, batch_size=args.train_batch, device=device)
        trainer = FaceswapTrainer(config, train, data, folder / f"train_{label.replace(' ', '_')}")
        timing = time_calls(trainer.step, repeat=args.train_iters, warmup=1)
        row = _row(f"train step, {label}", device, 2 * args.train_batch, timing, reference)
        row["it_per_s"] = 1000.0 / timing[0]
        rows.append(row)
    return rows


def _two_largest_tracks(folder: Path, device: str, size: int) -> tuple[Path, Path]:
    """Extract video.mp4 and split its two largest tracks into folders a and b."""
    from stream.extract import ExtractOptions, extract_faces

    everyone = folder / "everyone"
    extract_faces(
        SHARED_DATA / "video.mp4", everyone, ExtractOptions(size=size, device=device, min_face=60)
    )
    manifest = read_manifest(everyone)
    area: dict[int, float] = {}
    for face in manifest.faces:
        area[face.track_id] = area.get(face.track_id, 0.0) + (face.box[2] - face.box[0]) * (
            face.box[3] - face.box[1]
        )
    tracks = sorted(area, key=lambda t: -area[t])[:2]
    folders = []
    for name, track in zip(("a", "b"), tracks, strict=True):
        target = folder / name
        (target / "faces").mkdir(parents=True)
        kept = tuple(f for f in manifest.faces if f.track_id == track)
        for face in kept:
            shutil.copy(everyone / face.file, target / face.file)
        ExtractManifest(size=manifest.size, padding=manifest.padding, faces=kept).write(target)
        folders.append(target)
    return folders[0], folders[1]


def _demo_rows(args: argparse.Namespace, device: str, folder: Path) -> list[dict[str, Any]]:
    size = args.size
    a, b = _two_largest_tracks(folder, device, max(size, 128))
    data = {"a": FaceDataset(a, size), "b": FaceDataset(b, size)}
    train = TrainConfig(
        iters=10**9,
        batch_size=args.train_batch,
        device=device,
        max_seconds=args.demo_minutes * 60,
        preview_every=500,
        checkpoint_every=1000,
        names=("video track a", "video track b"),
    )
    run = PROJECT_ROOT / "weights" / "faceswap" / "bench_demo"
    model = FaceswapTrainer(FaceswapConfig(size=size), train, data, run).train()  # a fresh run
    args.demo_out.mkdir(parents=True, exist_ok=True)
    for name in ("preview.png", "loss_curve.png", "loss_log.csv"):
        shutil.copy(run / name, args.demo_out / name)
    _swap_example(model, device, args.demo_out / "swap_example.jpg")
    from engines.faceswap_gan.reports import read_loss_log

    rows = read_loss_log(run / "loss_log.csv")
    last = rows[-1]
    return [
        {
            "measure": "demo training",
            "device": device,
            "faces": len(data["a"]) + len(data["b"]),
            "iterations": int(last["iteration"]),
            "minutes": round(last["elapsed_s"] / 60, 1),
            "recon_a": round(last["recon_a"], 4),
            "recon_b": round(last["recon_b"], 4),
            "first_recon_a": round(rows[0]["recon_a"], 4),
            "model": str(model),
        }
    ]


def _swap_example(model: Path, device: str, path: Path) -> None:
    """Frame 60 of video.mp4 (720p) before and after `gan_swap` a_to_b, stacked."""
    import cv2

    from engines.detection import FaceDetector
    from stream.extract import iter_video_frames

    frame = next(f for n, f in iter_video_frames(SHARED_DATA / "video.mp4") if n == 60)
    frame = cv2.resize(frame, (1280, 720), interpolation=cv2.INTER_AREA)
    faces = Face.from_detections(FaceDetector(device=device, min_face_size=20).detect([frame])[0])
    effect = build_effect("gan_swap", {}, EffectResources(device=device, model_path=model))
    swapped = effect.apply(frame.copy(), faces)
    both = np.concatenate([frame, swapped], axis=0)[:, :, ::-1]
    cv2.imwrite(str(path), cv2.resize(both, None, fx=0.5, fy=0.5), [cv2.IMWRITE_JPEG_QUALITY, 85])


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = _device(args.device)
    with tempfile.TemporaryDirectory(prefix="bench_gan_") as tmp:
        folder = Path(tmp)
        rows = _inference_rows(args, device, folder)
        reference = (rows[0]["ms"], rows[0]["cpu_ms"])
        if args.train_iters > 0:
            rows += _train_rows(args, device, folder, reference)
        if args.demo_minutes > 0:
            rows += _demo_rows(args, device, folder)
    for row in rows:
        row["machine"] = machine()
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    for result in run(parser.parse_args()):
        print(result)
