"""Faces with landmarks for the effect tests (makeup, swap, blur, similarity).

Faces come from the project's MTCNN (engines.detection.FaceDetector) and dlib's
68-point predictor, as in the pipeline; a moving clip runs through the real
LandmarkStage so smoothing is part of what is tested.
"""

from __future__ import annotations

import dataclasses
from functools import cache
from typing import Any

import numpy as np

from engines.landmarks import LandmarkPredictor
from engines.types import Detections, Face
from stream.landmark_stage import LandmarkStage
from stream.pipeline import FrameContext


class _FacenetMTCNN:
    """facenet-pytorch's reference MTCNN with the FaceDetector interface."""

    def __init__(self) -> None:
        from facenet_pytorch import MTCNN

        self._mtcnn = MTCNN(keep_all=True, device="cpu", min_face_size=40)

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        results = []
        for image in images:
            boxes, scores, points = self._mtcnn.detect(image, landmarks=True)
            if boxes is None:
                results.append(Detections.empty())
                continue
            results.append(
                Detections(
                    np.asarray(boxes.tolist(), np.float32),
                    np.asarray(scores.tolist(), np.float32),
                    np.asarray(points.tolist(), np.float32),
                )
            )
        return results


@cache
def detector() -> Any:
    """The project's MTCNN (engines.detection), or facenet-pytorch's reference MTCNN
    while that package is not there; loaded once per test session."""
    try:
        from engines.detection import FaceDetector
    except ImportError:
        return _FacenetMTCNN()
    return FaceDetector(device="cpu", min_face_size=40)


@cache
def landmarker() -> LandmarkPredictor:
    return LandmarkPredictor()


def faces_in(image: np.ndarray, track_ids: bool = False) -> list[Face]:
    """Faces (with landmarks68) in one RGB image, largest first; track ids 0.. when asked."""
    found = detector().detect([image])[0]
    faces = Face.from_detections(found)
    faces.sort(key=lambda f: -f.width * f.height)
    points = landmarker().predict_faces(image, faces)
    return [
        dataclasses.replace(face, landmarks68=p, track_id=i if track_ids else -1)
        for i, (face, p) in enumerate(zip(faces, points, strict=True))
    ]


def moved_face(face: Face, shift: np.ndarray, scale: float, centre: np.ndarray) -> Face:
    """`face` moved like a clip's portrait: scaled by `scale` about `centre`, then shifted."""
    box = np.concatenate(
        [
            (face.box[:2] - centre) * scale + centre + shift,
            (face.box[2:] - centre) * scale + centre + shift,
        ]
    )
    points = (face.landmarks5 - centre) * scale + centre + shift
    return dataclasses.replace(
        face, box=box.astype(np.float32), landmarks5=points.astype(np.float32)
    )


def track_clip(
    frames: list[np.ndarray], centres: np.ndarray, scales: np.ndarray | None = None
) -> list[list[Face]]:
    """Faces per frame of a one-face clip from tests/synthetic.py: the face detected on
    the first frame, moved along the clip's known trajectory (a perfect tracker, track
    id 0), then the real LandmarkStage (dlib on every frame, temporal smoothing)."""
    first = max(Face.from_detections(detector().detect([frames[0]])[0]), key=lambda f: f.width)
    first = dataclasses.replace(first, track_id=0)
    scales = np.ones(len(frames)) if scales is None else np.asarray(scales) / scales[0]
    stage = LandmarkStage(landmarker())
    result = []
    for index, frame in enumerate(frames):
        face = moved_face(first, centres[index] - centres[0], float(scales[index]), centres[0])
        ctx = FrameContext(image=frame, index=index, faces=[face])
        stage.process(ctx)
        result.append(ctx.faces)
    return result


def points68(face: Face) -> np.ndarray:
    """The face's (68, 2) landmarks; fails the test when the landmark stage left none."""
    if face.landmarks68 is None:
        raise AssertionError(f"face {face.track_id} has no 68-point landmarks")
    return np.asarray(face.landmarks68, np.float32)


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
