"""Webcam-like clips made from a real portrait moved over a background with a known trajectory.

The portrait is pasted, scaled, at a known centre on every frame, so a face box found
in the first frame moves exactly with the trajectory: ground truth for tracking tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Clip:
    """frames: list of HxWx3 uint8 RGB; centres: (T, 2) float pixel centre of the pasted
    portrait; scales: (T,) its scale relative to frame 0; occluded: (T,) bool."""

    frames: list[np.ndarray]
    centres: np.ndarray
    scales: np.ndarray
    occluded: np.ndarray


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A textured, non-uniform RGB background (gradient + soft blobs), deterministic."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [
            90 + 60 * xx / width,
            110 + 40 * yy / height,
            130 - 50 * xx / width,
        ],
        axis=-1,
    )
    noise = cv2.GaussianBlur(rng.normal(0, 25, (height, width, 3)).astype(np.float32), (0, 0), 9)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def linear_path(n_frames: int, start: tuple[float, float], end: tuple[float, float]) -> np.ndarray:
    """(T, 2) centres moving at constant velocity from start to end."""
    t = np.linspace(0.0, 1.0, n_frames)[:, None]
    return (1 - t) * np.asarray(start, np.float32) + t * np.asarray(end, np.float32)


def make_clip(
    portrait: np.ndarray,
    centres: np.ndarray,
    size: tuple[int, int] = (640, 480),
    portrait_height: int = 300,
    scales: np.ndarray | None = None,
    occluded: np.ndarray | None = None,
    seed: int = 0,
) -> Clip:
    """Paste `portrait` (RGB uint8) at each centre over a fixed background.

    size: (width, height) of the frames. portrait_height: pasted height at scale 1.
    occluded: frames on which a grey bar covers the middle of the face.
    """
    width, height = size
    count = len(centres)
    scales = np.ones(count, np.float32) if scales is None else np.asarray(scales, np.float32)
    occluded = np.zeros(count, bool) if occluded is None else np.asarray(occluded, bool)
    back = background(width, height, seed)
    aspect = portrait.shape[1] / portrait.shape[0]
    frames = []
    for (cx, cy), scale, hidden in zip(centres, scales, occluded, strict=True):
        ph = portrait_height * float(scale)
        pw = ph * aspect
        matrix = np.array(
            [
                [pw / portrait.shape[1], 0, cx - pw / 2],
                [0, ph / portrait.shape[0], cy - ph / 2],
            ],
            np.float32,
        )
        frame = cv2.warpAffine(
            portrait,
            matrix,
            (width, height),
            dst=back.copy(),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_TRANSPARENT,
        )
        if hidden:
            y0, y1 = int(cy - ph * 0.35), int(cy + ph * 0.35)
            x0, x1 = int(cx - pw * 0.45), int(cx + pw * 0.45)
            frame[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = 128
        frames.append(frame)
    return Clip(
        frames=frames, centres=np.asarray(centres, np.float32), scales=scales, occluded=occluded
    )


def write_y4m(path: str, frames: list[np.ndarray], fps: int = 30) -> None:
    """Write RGB frames as a YUV4MPEG2 (4:2:0) file, the format Chromium's fake camera reads."""
    height, width = frames[0].shape[:2]
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            yuv = cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420)
            out.write(b"FRAME\n")
            out.write(yuv.tobytes())
