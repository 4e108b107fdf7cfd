"""Uploaded swap sources: a bounded, thread-safe store of face images on disk.

`FaceStore` is the `source_faces` mapping effects are built with: face_id -> HxWx3
uint8 RGB image. An upload is kept only with the uploader's consent and only when it
holds exactly one face; what is stored is a crop around that face (the face keeps
its resolution, the rest of the photo is dropped). Each face is one PNG plus a JSON
note of the consent under `directory`; the oldest are removed beyond `max_faces`.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from engines.errors import InvalidParams, NoFaceFound, TooManyFaces

logger = logging.getLogger(__name__)

_FACE_ID = re.compile(r"^[0-9a-f]{32}$")
# A stored crop reaches this far around the face box, in face widths, and is at most
# this many pixels on its longer side.
_CROP_MARGIN = 0.8
_MAX_STORED_SIDE = 1024
_MEMORY_CACHE = 8
_DETECT_SIDE = 1280
# Faces smaller than this share of the largest face in the upload are not counted
# (background faces on posters and prints).
_MIN_RELATIVE_SIZE = 0.35


class ConsentRequired(InvalidParams):
    """A face was uploaded without the uploader confirming they may use it."""


class _FaceResult(Protocol):
    @property
    def boxes(self) -> np.ndarray: ...

    def __len__(self) -> int: ...


class FaceFinder(Protocol):
    """Anything with the FaceDetector shape: `.detect([rgb]) -> [result with boxes]`."""

    def detect(self, images: list[np.ndarray]) -> Sequence[_FaceResult]: ...


class FaceStore(Mapping[str, np.ndarray]):
    """face_id -> RGB uint8 face crop, persisted under `directory`.

    detector: finds faces in uploads (default: dlib's HOG detector, loaded on first
    use); `add` also takes one per call, e.g. the server's shared MTCNN.
    Call `add` from the model worker thread: it runs the detector.
    """

    def __init__(
        self, directory: Path, max_faces: int = 100, detector: FaceFinder | None = None
    ) -> None:
        if max_faces < 1:
            raise ValueError(f"max_faces must be at least 1, got {max_faces}")
        self.directory = Path(directory)
        self.max_faces = max_faces
        self._detector = detector
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._ids: list[str] = self._scan()
        self._withdrawn: set[str] = set()  # deleted by request (consent withdrawn), not evicted

    def _scan(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        files = [p for p in self.directory.glob("*.png") if _FACE_ID.match(p.stem)]
        return [p.stem for p in sorted(files, key=lambda p: p.stat().st_mtime)]

    def _default_detector(self) -> FaceFinder:
        if self._detector is None:
            from engines.landmarks import HogFaceDetector

            hog: FaceFinder = HogFaceDetector()
            self._detector = hog
            return hog
        return self._detector

    def add(self, image: np.ndarray, consent: bool, detector: FaceFinder | None = None) -> str:
        """Store the one face in `image` (HxWx3 uint8 RGB) and return its new face_id.

        Raises ConsentRequired without consent, NoFaceFound or TooManyFaces unless the
        image holds exactly one face.
        """
        if consent is not True:
            raise ConsentRequired(
                "consent is required: confirm that you have the right to use this person's face"
            )
        image = _as_rgb(image)
        box = find_single_face(image, detector or self._default_detector())
        crop = _crop_around(image, box)
        face_id = uuid.uuid4().hex
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self._path(face_id)
            if not cv2.imwrite(str(path), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)):
                raise OSError(f"cannot write {path}")
            note = {"consent": True, "created": time.time(), "shape": list(crop.shape)}
            path.with_suffix(".json").write_text(json.dumps(note))
            self._ids.append(face_id)
            self._remember(face_id, crop)
            self._evict()
        logger.info("stored source face %s (%dx%d)", face_id, crop.shape[1], crop.shape[0])
        return face_id

    def remove(self, face_id: str) -> bool:
        """Delete a stored face; returns False when there was none."""
        with self._lock:
            if face_id not in self._ids:
                return False
            self._ids.remove(face_id)
            self._withdrawn.add(face_id)
            self._delete_files(face_id)
            return True

    def is_withdrawn(self, face_id: str) -> bool:
        """Whether `face_id` was deleted by request (its uploader withdrew consent); a
        face evicted to make room is not: sessions already using it may go on."""
        with self._lock:
            return face_id in self._withdrawn

    def __getitem__(self, face_id: str) -> np.ndarray:
        if not isinstance(face_id, str) or not _FACE_ID.match(face_id):
            raise KeyError(face_id)
        with self._lock:
            if face_id in self._cache:
                self._cache.move_to_end(face_id)
                return self._cache[face_id]
            if face_id not in self._ids:
                raise KeyError(face_id)
            bgr = cv2.imread(str(self._path(face_id)), cv2.IMREAD_COLOR)
            if bgr is None:
                raise KeyError(face_id)
            image = np.ascontiguousarray(bgr[:, :, ::-1])
            self._remember(face_id, image)
            return image

    def __contains__(self, face_id: object) -> bool:
        with self._lock:
            return face_id in self._ids

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._ids))

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)

    def _path(self, face_id: str) -> Path:
        return self.directory / f"{face_id}.png"

    def _remember(self, face_id: str, image: np.ndarray) -> None:
        image.setflags(write=False)
        self._cache[face_id] = image
        self._cache.move_to_end(face_id)
        while len(self._cache) > _MEMORY_CACHE:
            self._cache.popitem(last=False)

    def _evict(self) -> None:
        while len(self._ids) > self.max_faces:
            oldest = self._ids.pop(0)
            self._delete_files(oldest)
            logger.info("removed source face %s (store holds at most %d)", oldest, self.max_faces)

    def _delete_files(self, face_id: str) -> None:
        self._cache.pop(face_id, None)
        for suffix in (".png", ".json"):
            self._path(face_id).with_suffix(suffix).unlink(missing_ok=True)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InvalidParams(
            f"a face image must be HxWx3 uint8 RGB, got {image.dtype} {image.shape}"
        )
    return np.ascontiguousarray(image)


def find_single_face(image: np.ndarray, detector: FaceFinder, verb: str = "upload") -> np.ndarray:
    """The (4,) float32 box x1,y1,x2,y2 of the one face in `image` (HxWx3 uint8 RGB), in
    its pixels; NoFaceFound or TooManyFaces otherwise. Faces under _MIN_RELATIVE_SIZE of
    the largest do not count. verb: what the caller does with a photo ("upload" over
    HTTP, "give" on the command line), for the messages.
    """
    # Faces are counted on a copy of at most _DETECT_SIDE pixels (a phone photo at
    # full size would take seconds); the box is scaled back to the full image.
    scale = min(1.0, _DETECT_SIDE / max(image.shape[:2]))
    small = image
    if scale < 1.0:
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    boxes = np.asarray(detector.detect([small])[0].boxes, np.float32).reshape(-1, 4)
    if len(boxes) == 0:
        raise NoFaceFound(
            f"no face found in the image: {verb} a photo with one clearly visible, "
            "front-facing face"
        )
    sizes = np.sqrt(
        np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    )
    counted = sizes >= _MIN_RELATIVE_SIZE * sizes.max()
    if counted.sum() > 1:
        raise TooManyFaces(
            f"the image shows {int(counted.sum())} faces: {verb} a photo of exactly one person"
        )
    return boxes[int(np.argmax(sizes))] / scale


def _crop_around(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The face box grown by _CROP_MARGIN face widths per side, clipped, downscaled so
    its longer side is at most _MAX_STORED_SIDE."""
    height, width = image.shape[:2]
    side = max(float(box[2] - box[0]), float(box[3] - box[1]))
    x1 = max(int(box[0] - _CROP_MARGIN * side), 0)
    y1 = max(int(box[1] - _CROP_MARGIN * side), 0)
    x2 = min(int(box[2] + _CROP_MARGIN * side) + 1, width)
    y2 = min(int(box[3] + _CROP_MARGIN * side) + 1, height)
    crop = image[y1:y2, x1:x2]
    scale = _MAX_STORED_SIDE / max(crop.shape[:2])
    if scale < 1.0:
        crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(crop)
