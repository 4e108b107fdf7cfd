"""Shared pytest fixtures: paths to the real test media in ../shared/data."""

from __future__ import annotations

import os

# Before torch loads: idle OpenMP threads sleep instead of spinning (see stream.cli.quiet_openmp).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path

import numpy as np
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# ../shared/data beside the checkout; shared/data inside it where only the checkout travels
# (a lent GPU machine: see docs/GPU_SESSION.md).
_BESIDE = PROJECT_ROOT.parent / "shared" / "data"
SHARED_DATA = _BESIDE if _BESIDE.is_dir() else PROJECT_ROOT / "shared" / "data"
PORTRAITS = ("angelina_jolie", "kate_siegel", "paul_rudd", "shea_whigham")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"test media not found at {SHARED_DATA}")
    return SHARED_DATA


def load_rgb(path: Path, max_side: int | None = None) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB, optionally downscaled so its longer side <= max_side."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(path)
    if max_side is not None and max(bgr.shape[:2]) > max_side:
        scale = max_side / max(bgr.shape[:2])
        bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(bgr[:, :, ::-1])


def portrait_path(name: str) -> Path:
    return SHARED_DATA / "faces" / f"{name}.jpg"


@pytest.fixture(scope="session")
def portrait() -> object:
    """portrait(name, max_side=640) -> RGB uint8 array of one of the four portraits."""

    def _load(name: str, max_side: int | None = 640) -> np.ndarray:
        return load_rgb(portrait_path(name), max_side)

    return _load
