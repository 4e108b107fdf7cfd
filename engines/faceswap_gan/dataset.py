"""Extract folders: aligned faces on disk with their landmarks, and a sampler over them.

An extract folder (written by `facestream extract`) holds `manifest.json` and the
face images it lists (PNG, RGB, `size` x `size`, aligned with engines.alignment at
`padding`). Each face keeps its five landmarks in crop pixels, from which the eye
and mouth regions used by the eye-aware losses are drawn.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from engines.errors import InvalidDataset

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "facestream-faces"
MANIFEST_VERSION = 1
REGION_NAMES = ("eyes", "mouth")


@dataclass(frozen=True)
class FaceRecord:
    """One aligned face. file: path relative to the extract folder. source: the video
    or image it came from; frame: its frame number (0 for images). track_id: the face
    track (-1 for images). box: [x1, y1, x2, y2] in source pixels. landmarks: five
    [x, y] in crop pixels, MTCNN order."""

    file: str
    source: str
    frame: int
    track_id: int
    score: float
    box: list[float]
    landmarks: list[list[float]]


@dataclass(frozen=True)
class ExtractManifest:
    """size: crop side in pixels; padding: alignment padding; faces: what was kept."""

    size: int
    padding: float
    faces: tuple[FaceRecord, ...]

    def write(self, folder: Path) -> Path:
        data = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "size": self.size,
            "padding": self.padding,
            "faces": [asdict(face) for face in self.faces],
        }
        path = Path(folder) / MANIFEST_NAME
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(data, indent=1))
        temporary.replace(path)
        return path


def _parse_manifest(data: Any, path: Path) -> ExtractManifest:
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise InvalidDataset(f"{path} is not a facestream extract manifest")
    if data.get("version") != MANIFEST_VERSION:
        raise InvalidDataset(
            f"{path} has manifest version {data.get('version')}, this facestream reads "
            f"version {MANIFEST_VERSION}; extract the faces again"
        )
    try:
        faces = tuple(FaceRecord(**face) for face in data["faces"])
        return ExtractManifest(size=int(data["size"]), padding=float(data["padding"]), faces=faces)
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidDataset(f"{path} is damaged ({error}); extract the faces again") from error


def read_manifest(folder: Path) -> ExtractManifest:
    """The manifest of an extract folder; InvalidDataset when missing or malformed."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise InvalidDataset(
            f"{folder} is not an extract folder (no {MANIFEST_NAME}); "
            "make one with `facestream extract VIDEO OUTDIR`"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InvalidDataset(f"cannot read {path}: {error}") from error
    return _parse_manifest(data, path)


def region_masks(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(2, size, size) float32 soft masks in [0, 1]: both eyes, then the mouth.

    landmarks: (5, 2) crop pixels, MTCNN order. Each region is a Gaussian-edged
    ellipse scaled to the face (eye distance, mouth width).
    """
    points = np.asarray(landmarks, np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    eye_distance = max(float(np.linalg.norm(points[1] - points[0])), 1.0)
    mouth_width = max(float(np.linalg.norm(points[4] - points[3])), 1.0)

    def ellipse(centre: np.ndarray, half_x: float, half_y: float) -> np.ndarray:
        distance = ((xx - centre[0]) / half_x) ** 2 + ((yy - centre[1]) / half_y) ** 2
        return np.exp(-0.5 * distance**2).astype(np.float32)

    eyes = np.maximum(
        ellipse(points[0], 0.3 * eye_distance, 0.2 * eye_distance),
        ellipse(points[1], 0.3 * eye_distance, 0.2 * eye_distance),
    )
    mouth = ellipse((points[3] + points[4]) / 2, 0.75 * mouth_width, 0.4 * mouth_width)
    return np.stack([eyes, mouth])


def _load_face(folder: Path, record: FaceRecord, size: int) -> np.ndarray:
    path = folder / record.file
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InvalidDataset(f"cannot read face image {path} listed in {folder / MANIFEST_NAME}")
    if bgr.shape[0] != size or bgr.shape[1] != size:
        bgr = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(bgr[:, :, ::-1])


class FaceDataset:
    """All faces of one extract folder, in memory, resized to the model's size.

    images: (N, 3, S, S) uint8 RGB tensor on CPU; regions: (N, 2, S, S) uint8 (eyes,
    mouth; 255 = inside). `sample` draws random batches as float tensors.
    """

    def __init__(self, folder: Path, size: int) -> None:
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        if not self.manifest.faces:
            raise InvalidDataset(
                f"{self.folder} holds no faces; extract from a video where the person is visible"
            )
        scale = size / self.manifest.size
        images, regions = [], []
        for record in self.manifest.faces:
            images.append(_load_face(self.folder, record, size))
            landmarks = np.asarray(record.landmarks, np.float32) * scale
            regions.append(np.round(region_masks(landmarks, size) * 255).astype(np.uint8))
        self.size = size
        self.padding = self.manifest.padding
        self.images = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        self.regions = torch.from_numpy(np.stack(regions))
        if len(self) < 32:
            logger.warning(
                "%s holds only %d faces; the model will learn that person poorly",
                self.folder,
                len(self),
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def sample(
        self, batch: int, generator: torch.Generator, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A random batch (with replacement): images (B, 3, S, S) float32 RGB in [-1, 1]
        and regions (B, 2, S, S) float32 in [0, 1], on `device`."""
        index = torch.randint(len(self), (batch,), generator=generator)
        images = self.images[index].to(device, non_blocking=True).float() / 127.5 - 1.0
        regions = self.regions[index].to(device, non_blocking=True).float() / 255.0
        return images, regions
