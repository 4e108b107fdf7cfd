"""The `debug` effect: draws what detection and tracking see.

Per face: its box, its track id and score, the five MTCNN landmarks, and the 68
dlib landmarks when the pipeline filled them. Each track id keeps one colour, so
an id switch is visible as a colour change. Frames are HxWx3 uint8 RGB.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from engines.effects.base import Effect, EffectResources, EffectSpec, ParamSpec
from engines.types import Face

# Distinct RGB colours, picked by track id.
_PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (170, 110, 40),
)
_UNTRACKED = (255, 255, 255)


def track_colour(track_id: int) -> tuple[int, int, int]:
    """The RGB colour of a track id (white for untracked faces, id -1)."""
    return _UNTRACKED if track_id < 0 else _PALETTE[track_id % len(_PALETTE)]


class DebugOverlay(Effect):
    """Draws boxes, ids, scores and landmarks of the tracked faces."""

    name = "debug"

    def __init__(self, landmarks: bool, labels: bool, thickness: int) -> None:
        self._landmarks = landmarks
        self._labels = labels
        self._thickness = thickness

    def apply(self, frame: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        scale = max(frame.shape[0], frame.shape[1]) / 1000
        thickness = max(1, round(self._thickness * max(scale, 0.5)))
        for face in faces:
            colour = track_colour(face.track_id)
            x1, y1, x2, y2 = (round(float(v)) for v in face.box)
            cv2.rectangle(frame, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_AA)
            if self._labels:
                self._label(frame, face, (x1, y1), colour, scale)
            if self._landmarks:
                self._points(frame, face.landmarks5, colour, max(2, round(3 * scale)))
                if face.landmarks68 is not None:
                    self._points(frame, face.landmarks68, colour, max(1, round(1.5 * scale)))
        return frame

    @staticmethod
    def _label(
        frame: np.ndarray,
        face: Face,
        corner: tuple[int, int],
        colour: tuple[int, int, int],
        scale: float,
    ) -> None:
        text = f"#{face.track_id} {face.score:.2f}" if face.track_id >= 0 else f"{face.score:.2f}"
        font_scale = max(0.4, 0.7 * scale)
        weight = max(1, round(2 * scale))
        (width, height), baseline = cv2.getTextSize(
            text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, weight
        )
        x, y = corner[0], max(corner[1], height + baseline + 2)
        cv2.rectangle(frame, (x, y - height - baseline - 2), (x + width + 4, y), colour, cv2.FILLED)
        cv2.putText(
            frame,
            text,
            (x + 2, y - baseline),
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            (0, 0, 0),
            weight,
            cv2.LINE_AA,
        )

    @staticmethod
    def _points(
        frame: np.ndarray, points: np.ndarray, colour: tuple[int, int, int], radius: int
    ) -> None:
        for x, y in np.asarray(points, np.float64).reshape(-1, 2):
            if np.isfinite(x) and np.isfinite(y):
                cv2.circle(frame, (round(x), round(y)), radius, colour, cv2.FILLED, cv2.LINE_AA)


def _build(params: Mapping[str, Any], resources: EffectResources) -> Effect:
    return DebugOverlay(
        landmarks=bool(params["landmarks"]),
        labels=bool(params["labels"]),
        thickness=int(params["thickness"]),
    )


SPECS = (
    EffectSpec(
        name="debug",
        description="Draw detected and tracked faces: boxes, track ids, scores, landmarks",
        params={
            "landmarks": ParamSpec("bool", True, help="draw the 5 (and 68) landmarks"),
            "labels": ParamSpec("bool", True, help="write the track id and score"),
            "thickness": ParamSpec("int", 2, min=1, max=10, help="line width at 1000 px"),
        },
        factory=_build,
        needs_faces=True,
    ),
)
