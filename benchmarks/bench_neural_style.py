"""neural_style speed: ms per 640x480 frame, and an optional trained demo picture.

    facestream bench neural_style [--threads 2] [--repeat 10] [--model PATH]
                                  [--demo-iters N] [--demo-out DIR]

Rows (one run, one device), each the whole `neural_style` effect (resize, network,
resize back) built through the registry from a model file, on a webcam-like frame:
- reference: the OpenCV `stylize` effect on the same frame; `vs_stylize` of every
  other row is its time over this one (CPU times on a CPU: steadier on a shared machine).
- small / classic at scale 0.5 and 1.0: engines.style_net.SMALL (width 0.25, 3 residual
  blocks) and CLASSIC (width 1, 5 blocks, the published size), untrained (speed does not
  depend on the weights) unless --model is given.
- train_step: one step of engines.style_train at its defaults (SMALL, 256 px, batch 2).
- net_nchw: the small network alone at 320x240 with contiguous (NCHW) tensors, next to
  net_channels_last, the layout the effect uses.
With --demo-iters N, a SMALL model is trained here for N steps with the trainer's default
settings (random-feature loss without weights/perceptual; a procedural orange/teal streak
image as the style, the four portraits and the group photo as content) and a
before/after picture goes to benchmarks/out/neural_style/; its row gives ms per step.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from benchmarks.common import OUT_DIR, SHARED_DATA, load_rgb, machine, webcam_clip
from engines.effects.base import EffectResources
from engines.effects.registry import build_effect
from engines.style_net import CLASSIC, SMALL, StyleNet, StyleNetConfig, save_style_model

DEMO_OUT = OUT_DIR / "neural_style"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--model", type=Path, default=None, help="time this model as 'given'")
    parser.add_argument("--classic", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--train-steps", type=int, default=4, help="timed training steps")
    parser.add_argument("--demo-iters", type=int, default=0, help="train a demo model (0: no)")
    parser.add_argument("--demo-out", type=Path, default=DEMO_OUT)


def time_calls(fn: Callable[[], object], repeat: int, warmup: int = 2) -> tuple[float, float]:
    """(mean wall ms, mean process CPU ms) per call of `fn`."""
    for _ in range(warmup):
        fn()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - wall) * 1000 / repeat, (time.process_time() - cpu) * 1000 / repeat


def _row(name: str, scale: float | None, timing: tuple[float, float], reference: tuple) -> dict:
    wall, cpu = timing
    return {
        "measure": name,
        "scale": scale,
        "wall_ms": round(wall, 1),
        "cpu_ms": round(cpu, 1),
        "fps_wall": round(1000 / wall, 1),
        "vs_stylize": round(cpu / reference[1], 2),
        "threads": torch.get_num_threads(),
        "machine": machine(),
    }


def _effect_timing(path: Path, scale: float, frame: np.ndarray, repeat: int) -> tuple:
    resources = EffectResources(weights_dir=path.parent, model_path=path)
    effect = build_effect("neural_style", {"scale": scale}, resources)
    return time_calls(lambda: effect.apply(frame.copy(), []), repeat)


def _net_timings(config: StyleNetConfig, repeat: int) -> dict[str, tuple[float, float]]:
    net = StyleNet(config).eval()
    image = torch.rand(1, 3, 240, 320) * 255
    timings = {}
    for name, layout in (
        ("net_nchw", torch.contiguous_format),
        ("net_channels_last", torch.channels_last),
    ):
        net = net.to(memory_format=layout)
        batch = image.contiguous(memory_format=layout)
        with torch.inference_mode():
            timings[name] = time_calls(lambda: net(batch), repeat)  # noqa: B023
    return timings


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.threads:
        torch.set_num_threads(args.threads)
    frame = webcam_clip((640, 480), 1)[0]
    reference = time_calls(
        lambda: build_effect("stylize", {}, EffectResources()).apply(frame.copy(), []), args.repeat
    )
    rows = [_row("reference_stylize", None, reference, reference)]
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        models = {"small": save_style_model(StyleNet(SMALL), Path(folder) / "small.pth")}
        if args.classic:
            models["classic"] = save_style_model(StyleNet(CLASSIC), Path(folder) / "classic.pth")
        if args.model is not None:
            models["given"] = Path(args.model)
        for name, path in models.items():
            for scale in (0.5, 1.0):
                repeat = max(2, args.repeat // 4) if name == "classic" else args.repeat
                timing = _effect_timing(path, scale, frame, repeat)
                rows.append(_row(name, scale, timing, reference))
    for name, timing in _net_timings(SMALL, args.repeat).items():
        rows.append(_row(f"small_{name}_320x240", None, timing, reference))
    if args.train_steps > 0:
        rows.append(_row("train_step_256px_batch2", None, _train_timing(args, frame), reference))
    if args.demo_iters > 0:
        rows.append(_demo(args.demo_iters, args.demo_out))
    return rows


def _train_timing(args: argparse.Namespace, frame: np.ndarray) -> tuple[float, float]:
    """(wall, CPU) ms per step of the trainer at its defaults (SMALL net, 256 px, batch 2),
    random-feature loss unless weights/perceptual holds a network."""
    from engines.style_train import StyleTrainConfig, train_style_model

    config = StyleTrainConfig(iterations=args.train_steps + 1)
    marks: list[tuple[float, float]] = []

    def mark(_iteration: int, _loss: float) -> None:
        marks.append((time.perf_counter(), time.process_time()))

    with tempfile.TemporaryDirectory() as folder:
        train_style_model(
            demo_style_image(), [frame], Path(folder) / "t.pth", config, progress=mark
        )
    steps = len(marks) - 1  # the first step (with setup) is not timed
    return (
        (marks[-1][0] - marks[0][0]) * 1000 / steps,
        (marks[-1][1] - marks[0][1]) * 1000 / steps,
    )


def demo_style_image(size: int = 256, seed: int = 3) -> np.ndarray:
    """A procedural style picture: orange and teal blobs cut by dark horizontal streaks,
    size x size x 3 uint8 RGB."""
    rng = np.random.default_rng(seed)
    blobs = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), 6)
    streaks = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (31, 3), 0)
    mix = ((blobs - blobs.min()) / np.ptp(blobs))[..., None]
    colour = mix * np.array([240, 140, 40], np.float32) + (1 - mix) * np.array([20, 110, 130])
    return np.clip(colour * (1 + 6.4 * streaks[..., None]), 0, 255).astype(np.uint8)


def _portrait(name: str) -> np.ndarray:
    """A portrait, centre-cropped to 3:4 and resized to 240x320 (WxH), RGB uint8."""
    image = load_rgb(SHARED_DATA / "faces" / f"{name}.jpg")
    height, width = image.shape[:2]
    crop_w = min(width, height * 3 // 4)
    crop_h = crop_w * 4 // 3
    x, y = (width - crop_w) // 2, (height - crop_h) // 2
    return cv2.resize(
        image[y : y + crop_h, x : x + crop_w], (240, 320), interpolation=cv2.INTER_AREA
    )


def _demo(iterations: int, out_dir: Path) -> dict[str, Any]:
    from engines.style_train import StyleTrainConfig, read_content_images, train_style_model

    style = demo_style_image()
    content = read_content_images([SHARED_DATA / "faces", SHARED_DATA / "multiface.jpg"])
    config = StyleTrainConfig(iterations=iterations)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        path = train_style_model(style, content, Path(folder) / "demo.pth", config)
        seconds = time.perf_counter() - started
        effect = build_effect(
            "neural_style", {}, EffectResources(weights_dir=Path(folder), model_path=path)
        )
        frames = [_portrait(name) for name in ("paul_rudd", "kate_siegel")]
        rows = [np.concatenate([f, effect.apply(f.copy(), [])], axis=1) for f in frames]
    swatch = cv2.resize(style, (320, 320))
    picture = np.concatenate([np.concatenate(rows, axis=0), np.vstack([swatch, swatch])], axis=1)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"demo_{iterations}iters.jpg"
    cv2.imwrite(str(target), picture[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
    return {
        "measure": f"demo_train_{iterations}_iters_{config.size}px_batch{config.batch_size}",
        "wall_ms": round(seconds * 1000 / iterations, 1),
        "picture": str(target),
        "threads": torch.get_num_threads(),
        "machine": machine(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    for row in run(parser.parse_args()):
        print(row)
