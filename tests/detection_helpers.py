"""Shared inputs of the detection, tracking and face-stage tests (and bench_detect).

- `tracking_trajectory` / `tracking_clip`: a webcam-like clip of one real portrait
  moving with constant velocity, accelerations, a pause and a brief occlusion, with
  the true centre of the pasted portrait per frame.
- `video_frames`: frames of the shared crowd video decoded with PyAV.
- `reference_mtcnn` / `reference_detect`: facenet-pytorch's MTCNN, the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from conftest import SHARED_DATA

VIDEO = SHARED_DATA / "video.mp4"

OCCLUDED_FRAMES = range(92, 96)

# (first frame, velocity at its start, velocity at its end) of each segment; the
# velocity changes linearly within a segment, so the motion has no velocity jumps.
_SEGMENTS = (
    (0, (4.0, 1.0), (4.0, 1.0)),  # constant velocity
    (30, (4.0, 1.0), (-3.0, 2.0)),  # a turn: acceleration
    (50, (-3.0, 2.0), (0.0, 0.0)),  # braking
    (60, (0.0, 0.0), (0.0, 0.0)),  # pause
    (75, (0.0, 0.0), (3.0, -2.5)),  # starting again
    (85, (3.0, -2.5), (3.0, -2.5)),  # constant velocity, occluded at 92-95
    (110, (3.0, -2.5), (-3.0, 2.5)),  # slowing down and back
)


def tracking_trajectory(
    frames: int = 140, start: tuple[float, float] = (190.0, 230.0)
) -> np.ndarray:
    """(T, 2) centres of a smooth motion: constant velocity, a turn, braking to a pause,
    starting again, constant velocity (occluded at 92-95), slowing down and back."""
    velocity = np.zeros((frames, 2))
    bounds = [s[0] for s in _SEGMENTS[1:]] + [max(frames, _SEGMENTS[-1][0] + 1)]
    for (first, v0, v1), last in zip(_SEGMENTS, bounds, strict=True):
        for t in range(first, min(last, frames)):
            a = (t - first) / (last - first)
            velocity[t] = (1 - a) * np.asarray(v0) + a * np.asarray(v1)
    velocity[0] = 0.0
    return np.cumsum(velocity, axis=0) + np.asarray(start)


@dataclass(frozen=True)
class TrackingClip:
    """frames: HxWx3 uint8 RGB; centres: (T, 2) true portrait centres; occluded: (T,) bool."""

    frames: list[np.ndarray]
    centres: np.ndarray
    occluded: np.ndarray


def tracking_clip(portrait: np.ndarray, frames: int = 140) -> TrackingClip:
    """The tracking clip made from `portrait` (RGB uint8) on a 640x480 background."""
    from synthetic import make_clip

    centres = tracking_trajectory(frames)
    occluded = np.zeros(frames, bool)
    occluded[[t for t in OCCLUDED_FRAMES if t < frames]] = True
    clip = make_clip(portrait, centres, size=(640, 480), portrait_height=300, occluded=occluded)
    return TrackingClip(clip.frames, clip.centres, clip.occluded)


def face_truth(detected: np.ndarray, centres: np.ndarray, occluded: np.ndarray) -> np.ndarray:
    """(T, 2) true face centres: the portrait's centre plus the face's fixed offset in
    the portrait, estimated as the mean offset of the raw detections (so that the
    detector's constant bias does not count as error, for raw or tracked boxes alike)."""
    usable = np.isfinite(detected).all(axis=1) & ~occluded
    offset = (detected[usable] - centres[usable]).mean(axis=0)
    return centres + offset


def video_frames(indices: list[int], size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """Frames `indices` of the shared video as HxWx3 uint8 RGB, resized to (w, h) if given."""
    import av
    import cv2

    wanted, frames = set(indices), dict[int, np.ndarray]()
    with av.open(str(VIDEO)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                rgb: np.ndarray = frame.to_ndarray(format="rgb24")
                if size is not None and (rgb.shape[1], rgb.shape[0]) != size:
                    rgb = np.asarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))
                frames[index] = rgb
            if index >= max(wanted):
                break
    return [frames[i] for i in indices]


def reference_mtcnn(min_face_size: float = 20) -> object:
    """facenet-pytorch's MTCNN on the CPU, returning every face (the reference)."""
    from facenet_pytorch.models.mtcnn import MTCNN

    return MTCNN(keep_all=True, min_face_size=min_face_size, device="cpu")


def reference_detect(mtcnn: object, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(boxes (N, 4) float32, scores (N,) float32) of the reference on one RGB image."""
    boxes, scores = mtcnn.detect(image)  # type: ignore[attr-defined]
    if boxes is None:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32).reshape(-1)
