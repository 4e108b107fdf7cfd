"""Helpers shared by the benchmarks: test media, synthetic clips, timing."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# ../shared/data beside the checkout; shared/data inside it where only the checkout travels
# (a lent GPU machine: see docs/GPU_SESSION.md).
_BESIDE = PROJECT_ROOT.parent / "shared" / "data"
SHARED_DATA = _BESIDE if _BESIDE.is_dir() else PROJECT_ROOT / "shared" / "data"
OUT_DIR = PROJECT_ROOT / "benchmarks" / "out"


def machine() -> str:
    """'N-core CPU' or the GPU name, for result tables."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    import os

    return f"{os.cpu_count()}-core CPU ({platform.machine()}), no GPU"


def load_rgb(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(path)
    if size is not None:
        bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(bgr[:, :, ::-1])


def webcam_clip(size: tuple[int, int], count: int, portrait: str = "paul_rudd") -> list[np.ndarray]:
    """A webcam-like clip: one portrait gliding over a textured background, RGB uint8."""
    width, height = size
    face = load_rgb(SHARED_DATA / "faces" / f"{portrait}.jpg")
    scale = 0.65 * height / face.shape[0]
    face = cv2.resize(face, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    back = cv2.GaussianBlur(rng.integers(40, 200, (height, width, 3), dtype=np.uint8), (0, 0), 8)
    frames = []
    for i in range(count):
        x = int((width - face.shape[1]) * (0.3 + 0.4 * np.sin(i / count * np.pi)))
        y = (height - face.shape[0]) // 2
        frame = back.copy()
        frame[y : y + face.shape[0], x : x + face.shape[1]] = face
        frames.append(frame)
    return frames


@dataclass(frozen=True)
class Timing:
    mean_ms: float
    p50_ms: float
    p95_ms: float

    @classmethod
    def of(cls, seconds: list[float]) -> Timing:
        ms = sorted(s * 1000 for s in seconds)
        return cls(
            statistics.fmean(ms), ms[len(ms) // 2], ms[min(len(ms) - 1, int(len(ms) * 0.95))]
        )


def time_calls(fn: Callable[[], object], repeat: int, warmup: int = 2) -> Timing:
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return Timing.of(seconds)
