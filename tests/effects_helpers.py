"""Faces with landmarks for the effect tests (makeup, swap, blur, similarity).

Faces come from the project's MTCNN (engines.detection.FaceDetector) and dlib's
68-point predictor, as in the pipeline; a moving clip runs through the real
LandmarkStage so smoothing is part of what is tested.
"""

from __future__ import annotations

import dataclasses
from functools import cache

import numpy as np

from engines.landmarks import LandmarkPredictor
from engines.types import Face
from stream.landmark_stage import LandmarkStage
from stream.pipeline import FrameContext


@cache
def detector() -> object:
    """The shared MTCNN detector (loaded once per test session)."""
    from engines.detection import FaceDetector

    return FaceDetector(device="cpu", min_face_size=20)


@cache
def landmarker() -> LandmarkPredictor:
    return LandmarkPredictor()


def faces_in(image: np.ndarray, track_ids: bool = False) -> list[Face]:
    """Faces (with landmarks68) in one RGB image, largest first; track ids 0.. when asked."""
    found = detector().detect([image])[0]  # type: ignore[attr-defined]
    faces = Face.from_detections(found)
    faces.sort(key=lambda f: -f.width * f.height)
    points = landmarker().predict_faces(image, faces)
    return [
        dataclasses.replace(face, landmarks68=p, track_id=i if track_ids else -1)
        for i, (face, p) in enumerate(zip(faces, points, strict=True))
    ]


def track_clip(frames: list[np.ndarray]) -> list[list[Face]]:
    """Faces per frame of a one-face clip: detection on every frame (track id 0), then
    the real LandmarkStage with its temporal smoothing."""
    stage = LandmarkStage(landmarker())
    result = []
    for index, frame in enumerate(frames):
        found = detector().detect([frame])[0]  # type: ignore[attr-defined]
        faces = [dataclasses.replace(f, track_id=0) for f in Face.from_detections(found)]
        faces = sorted(faces, key=lambda f: -f.width * f.height)[:1]
        ctx = FrameContext(image=frame, index=index, faces=faces)
        stage.process(ctx)
        result.append(ctx.faces)
    return result


def grown_boxes_mask(shape: tuple[int, ...], faces: list[Face], grow: float = 0.2) -> np.ndarray:
    """HxW bool: inside any face box grown by `grow` (0.2: 20 % wider and taller, about
    its centre)."""
    mask = np.zeros(shape[:2], bool)
    for face in faces:
        x1, y1, x2, y2 = face.box
        dx, dy = grow / 2 * (x2 - x1), grow / 2 * (y2 - y1)
        mask[
            max(int(y1 - dy), 0) : max(int(np.ceil(y2 + dy)), 0),
            max(int(x1 - dx), 0) : max(int(np.ceil(x2 + dx)), 0),
        ] = True
    return mask
