"""Value types shared by every engine: detections and tracked faces.

All images in facestream are HxWx3 uint8 numpy arrays in RGB order unless a
docstring says otherwise. Coordinates are float pixels, x to the right, y down.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _as_float_array(value: np.ndarray, shape_tail: tuple[int, ...], what: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float32)
    if array.ndim != 1 + len(shape_tail) or array.shape[1:] != shape_tail:
        raise ValueError(
            f"{what} must have shape (N, {', '.join(map(str, shape_tail))}), got {array.shape}"
        )
    return array


@dataclass(frozen=True)
class Detections:
    """Faces found in one image, as parallel arrays.

    boxes: (N, 4) float32 x1, y1, x2, y2 in pixels.
    scores: (N,) float32 in [0, 1].
    landmarks: (N, 5, 2) float32 x, y in pixels, MTCNN order: left eye, right eye,
        nose, left mouth corner, right mouth corner (left/right as seen in the image).
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    def __post_init__(self) -> None:
        boxes = _as_float_array(self.boxes, (4,), "boxes")
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        landmarks = _as_float_array(self.landmarks, (5, 2), "landmarks")
        if not (len(boxes) == len(scores) == len(landmarks)):
            raise ValueError(
                f"boxes, scores and landmarks differ in length: "
                f"{len(boxes)}, {len(scores)}, {len(landmarks)}"
            )
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "landmarks", landmarks)

    @classmethod
    def empty(cls) -> Detections:
        return cls(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            landmarks=np.zeros((0, 5, 2), np.float32),
        )

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, index: np.ndarray | slice | list[int]) -> Detections:
        """Select faces by boolean mask, index array or slice."""
        return Detections(self.boxes[index], self.scores[index], self.landmarks[index])


@dataclass(frozen=True)
class Face:
    """One tracked face in one frame, as the effects see it.

    track_id: stable id of the face across frames (-1 when the face is not tracked,
        e.g. in a still image).
    box: (4,) float32 x1, y1, x2, y2 in pixels (smoothed when tracked).
    landmarks5: (5, 2) float32 MTCNN-order landmarks in pixels (smoothed when tracked).
    score: detection confidence of the last detection that fed the track.
    landmarks68: optional (68, 2) float32 dlib-order landmarks, filled by the
        landmark stage for effects that need them.
    """

    track_id: int
    box: np.ndarray
    landmarks5: np.ndarray
    score: float = 1.0
    landmarks68: np.ndarray | None = field(default=None)

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @classmethod
    def from_detections(cls, detections: Detections) -> list[Face]:
        """Untracked faces (track_id -1) from a detector result, e.g. for a still image."""
        return [
            cls(
                track_id=-1,
                box=detections.boxes[i],
                landmarks5=detections.landmarks[i],
                score=float(detections.scores[i]),
            )
            for i in range(len(detections))
        ]
