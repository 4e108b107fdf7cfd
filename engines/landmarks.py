"""dlib's 68-point landmarks on detected or tracked faces, and dlib's model files.

The 68-point order is dlib's (iBUG 300-W): jaw 0-16, brows 17-21 and 22-26,
nose 27-35, eyes 36-41 and 42-47, outer lips 48-59, inner lips 60-67. "Left" and
"right" below mean as seen in the image, as in MTCNN's 5-point order.

dlib's shape predictor was trained on boxes from dlib's own HOG detector, which
frame a face differently from MTCNN. The box it gets here is computed from the five
MTCNN landmarks with constants fitted on the project's test media (mean error
against HOG-box landmarks: 1.5 % of the inter-ocular distance), and a tilted head
is rotated upright before prediction.

Images are HxWx3 uint8 RGB numpy arrays in host memory; points are float32 (x, y)
pixels. dlib runs on the CPU only.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import threading
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from engines.errors import ModelLoadError
from engines.types import Detections, Face

logger = logging.getLogger(__name__)

DLIB_MODEL_FILES = {
    "landmarks68": "shape_predictor_68_face_landmarks.dat",
    "landmarks5": "shape_predictor_5_face_landmarks.dat",
    "encoder": "dlib_face_recognition_resnet_model_v1.dat",
}

# dlib box (square) from five MTCNN points: side = a * eye distance + b * eye-to-mouth
# distance; centre = midpoint of eyes and mouth + offset * side.
_SIDE_FROM_EYES, _SIDE_FROM_EYE_MOUTH = 0.148, 1.965
_CENTRE_OFFSET = np.array([-0.015, -0.049], np.float32)
# A head rolled more than this is rotated upright before prediction.
_MAX_ROLL_DEGREES = 12.0


def dlib_model_path(name: str) -> Path:
    """Path of a dlib model shipped by the face-recognition-models package.

    name: "landmarks68", "landmarks5" or "encoder". Raises ModelLoadError when the
    package or the file is missing.
    """
    if name not in DLIB_MODEL_FILES:
        raise ModelLoadError(f"unknown dlib model {name!r}; known: {', '.join(DLIB_MODEL_FILES)}")
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the face-recognition-models package is not installed; "
            "run: pip install face-recognition-models==0.3.0"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / DLIB_MODEL_FILES[name]
    if not path.is_file():
        raise ModelLoadError(
            f"dlib model file {path} is missing; reinstall face-recognition-models"
        )
    return path


@cache
def load_shape_predictor(path: Path) -> Any:
    """A dlib.shape_predictor, loaded once per file and shared (it is read-only)."""
    import dlib

    try:
        return dlib.shape_predictor(str(path))
    except RuntimeError as error:
        raise ModelLoadError(f"cannot load dlib shape predictor {path}: {error}") from error


def landmarks5_from_68(points: np.ndarray) -> np.ndarray:
    """(..., 68, 2) dlib points -> (..., 5, 2) float32 in MTCNN order (eye centres,
    nose tip, mouth corners)."""
    points = np.asarray(points, np.float32)
    return np.stack(
        [
            points[..., 36:42, :].mean(axis=-2),
            points[..., 42:48, :].mean(axis=-2),
            points[..., 30, :],
            points[..., 48, :],
            points[..., 54, :],
        ],
        axis=-2,
    )


def dlib_boxes_from_landmarks5(landmarks5: np.ndarray) -> np.ndarray:
    """(N, 5, 2) MTCNN points -> (N, 4) float32 square boxes framed like dlib's HOG boxes
    (axis-aligned, as if the face were upright)."""
    points = np.asarray(landmarks5, np.float32).reshape(-1, 5, 2)
    eyes = (points[:, 0] + points[:, 1]) / 2
    mouth = (points[:, 3] + points[:, 4]) / 2
    eye_distance = np.linalg.norm(points[:, 1] - points[:, 0], axis=1)
    eye_mouth = np.linalg.norm(mouth - eyes, axis=1)
    side = _SIDE_FROM_EYES * eye_distance + _SIDE_FROM_EYE_MOUTH * eye_mouth
    centre = (eyes + mouth) / 2 + _CENTRE_OFFSET[None] * side[:, None]
    half = side[:, None] / 2
    return np.concatenate([centre - half, centre + half], axis=1).astype(np.float32)


def dlib_boxes_from_mtcnn_boxes(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) MTCNN-style boxes -> (N, 4) dlib-style square boxes (used when a face has
    no usable 5-point landmarks)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    side = 0.87 * (boxes[:, 3] - boxes[:, 1])
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 + 0.072 * side
    return np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=1)


def _roll_degrees(landmarks5: np.ndarray) -> float:
    dx, dy = landmarks5[1] - landmarks5[0]
    return math.degrees(math.atan2(float(dy), float(dx)))


def _usable(landmarks5: np.ndarray, box: np.ndarray) -> bool:
    eye_distance = float(np.linalg.norm(landmarks5[1] - landmarks5[0]))
    width = float(box[2] - box[0])
    return bool(np.all(np.isfinite(landmarks5))) and eye_distance > 0.15 * max(width, 1.0)


class LandmarkPredictor:
    """dlib's 68-point shape predictor (about 1 ms per face on one CPU core).

    model_path: a dlib shape predictor file; default: face-recognition-models' 68-point one.
    """

    def __init__(self, model_path: Path | None = None) -> None:
        self.model_path = model_path or dlib_model_path("landmarks68")
        self._predictor = load_shape_predictor(self.model_path)

    def predict_faces(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """(N, 68, 2) float32 landmarks of `faces` in `image` (HxWx3 uint8 RGB).

        Uses each face's 5-point landmarks to frame it (and to undo head roll); falls
        back to its box when those are unusable.
        """
        if not faces:
            return np.zeros((0, 68, 2), np.float32)
        landmarks5 = np.stack([np.asarray(f.landmarks5, np.float32) for f in faces])
        boxes = np.stack([np.asarray(f.box, np.float32) for f in faces])
        usable = np.array([_usable(p, b) for p, b in zip(landmarks5, boxes, strict=True)])
        result = np.empty((len(faces), 68, 2), np.float32)
        if usable.any():
            result[usable] = self.predict(image, landmarks5[usable])
        if not usable.all():
            result[~usable] = self.predict_boxes(image, dlib_boxes_from_mtcnn_boxes(boxes[~usable]))
        return result

    def predict(self, image: np.ndarray, landmarks5: np.ndarray) -> np.ndarray:
        """(N, 68, 2) float32 landmarks from (N, 5, 2) MTCNN-order points in `image`."""
        landmarks5 = np.asarray(landmarks5, np.float32).reshape(-1, 5, 2)
        boxes = dlib_boxes_from_landmarks5(landmarks5)
        result = np.empty((len(landmarks5), 68, 2), np.float32)
        for i, (points, box) in enumerate(zip(landmarks5, boxes, strict=True)):
            roll = _roll_degrees(points)
            if abs(roll) > _MAX_ROLL_DEGREES:
                result[i] = self._predict_rotated(image, box, roll)
            else:
                result[i] = self._predict_box(image, box)
        return result

    def predict_boxes(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(N, 68, 2) float32 landmarks from (N, 4) dlib-style boxes x1, y1, x2, y2."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        result = np.empty((len(boxes), 68, 2), np.float32)
        for i, box in enumerate(boxes):
            result[i] = self._predict_box(image, box)
        return result

    def _predict_box(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        import dlib

        x1, y1, x2, y2 = (round(float(v)) for v in box)
        shape = self._predictor(image, dlib.rectangle(x1, y1, x2, y2))
        return np.array([(p.x, p.y) for p in shape.parts()], np.float32)

    def _predict_rotated(self, image: np.ndarray, box: np.ndarray, roll: float) -> np.ndarray:
        """Rotate a crop around the face upright, predict, and map the points back."""
        centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        side = float(box[2] - box[0])
        crop = max(int(side * 2), 8)
        rotation = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), roll, 1.0)
        rotation[:, 2] += (crop / 2 - centre[0], crop / 2 - centre[1])
        upright = cv2.warpAffine(image, rotation, (crop, crop), flags=cv2.INTER_LINEAR)
        half = side / 2
        local_box = np.array([crop / 2 - half, crop / 2 - half, crop / 2 + half, crop / 2 + half])
        points = self._predict_box(upright, local_box)
        back = cv2.invertAffineTransform(rotation)
        return (points @ back[:, :2].T + back[:, 2]).astype(np.float32)


class HogFaceDetector:
    """dlib's HOG frontal-face detector with 68-point landmarks: a light detector for
    still images (uploaded swap sources), with the same `.detect` shape as MTCNN's.

    upsample: how many times dlib doubles the image first (finds faces down to ~40 px
    at 1); images are first scaled so their longer side is at most `max_side`.
    """

    def __init__(self, upsample: int = 1, max_side: int = 800) -> None:
        import dlib

        self.upsample = upsample
        self.max_side = max_side
        self._detector = dlib.get_frontal_face_detector()
        # dlib's detector keeps its scan buffers in the object: two threads running it
        # at once crash the process (segfault), so calls take turns.
        self._detector_lock = threading.Lock()
        self._landmarks = LandmarkPredictor()

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """One Detections per HxWx3 uint8 RGB image (scores: the HOG margin squashed
        into 0-1; landmarks: 5 points derived from the 68)."""
        results = []
        for image in images:
            boxes, margins, points = self.detect_68(image)
            results.append(
                Detections(
                    boxes=boxes,
                    scores=1.0 / (1.0 + np.exp(-2.0 * margins)),
                    landmarks=landmarks5_from_68(points),
                )
            )
        return results

    def detect_68(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Faces of one HxWx3 uint8 RGB image: (N, 4) float32 boxes, (N,) float32 HOG
        margins (higher is surer) and (N, 68, 2) float32 landmarks, full-image pixels."""
        image = np.ascontiguousarray(image)
        scale = min(1.0, self.max_side / max(image.shape[:2]))
        small = image
        if scale < 1.0:
            small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        with self._detector_lock:
            rects, margins, _ = self._detector.run(small, self.upsample, 0.0)
        if not rects:
            return (
                np.zeros((0, 4), np.float32),
                np.zeros(0, np.float32),
                np.zeros((0, 68, 2), np.float32),
            )
        boxes = np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], np.float32)
        boxes /= scale
        return boxes, np.asarray(margins, np.float32), self._landmarks.predict_boxes(image, boxes)
