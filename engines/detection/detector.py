"""FaceDetector: an MTCNN cascade written for speed, with facenet-pytorch's weights.

Same nets, scales, thresholds, resampling and box arithmetic as facenet-pytorch's
MTCNN, so it finds the same faces (the same boxes, up to float rounding). Faster
because the whole pyramid is packed into one canvas for P-Net; the small pyramid
levels and every R-Net/O-Net crop are computed from row prefix sums of the image
(exact integer sums) instead of re-reading the image per level and per crop; all
candidates of a stage are cropped and classified in one batch; NMS is torchvision's
(and a vectorised "Min" NMS); the nets run channels-last with folded normalisation
and a cheaper PReLU + max-pool. Everything stays on one device (CPU or CUDA) until
the result is copied out.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from engines.detection.boxes import nms_per_group, square
from engines.detection.layout import PyramidLayout, plan_pyramid, pyramid_scales
from engines.detection.nets import load_nets
from engines.detection.pyramid import (
    CellMap,
    build_canvas,
    cell_map,
    host_canvas,
    row_prefix_sums,
)
from engines.detection.stages import (
    Candidates,
    CropSource,
    output,
    propose,
    refine,
    run_plain,
    top_per_group,
)
from engines.errors import InvalidImage
from engines.types import Detections

logger = logging.getLogger(__name__)

ImageBatch = Sequence[np.ndarray] | np.ndarray | torch.Tensor

# Candidate squares around each region for detect_in_regions: a 3x3 grid of shifts (in
# box sides) at the box's size, and the centred square smaller and larger.
_REGION_SHIFTS = (-0.2, 0.0, 0.2)
_REGION_SCALES = (0.8, 1.25)
_REGION_KEEP = 2  # R-Net survivors per region passed to O-Net
# Cell maps kept, one per image size (~0.8 MB at 1080p on a CPU): every stream uses one
# size, but uploaded photos come in any size, so the least recently used are dropped.
_CELL_MAPS_KEPT = 32


def _bucket(count: int) -> int:
    """The padded batch size for `count` candidates: a power of two, at least 16."""
    return max(16, 1 << (count - 1).bit_length())


class FaceDetector:
    """MTCNN face detector.

    device: "cpu", "cuda" or "cuda:N". min_face_size: smallest face searched, pixels.
    thresholds: P-, R-, O-Net score thresholds; factor: pyramid scale step
    (facenet-pytorch's defaults, except min_face_size 20 there).
    static_shapes: pad R-/O-Net batches to powers of two so a compiled net sees few
    shapes (default: on for CUDA). weights_dir: folder with pnet.pt, rnet.pt,
    onet.pt (default: the installed facenet-pytorch package's data folder).
    resample: "exact" resizes the pyramid and the crops exactly as the reference (from
    row prefix sums, on the device: the same boxes as facenet-pytorch); "fast", CPU
    only, resizes them with OpenCV on the host (INTER_AREA with fractional pixel
    weights; a 720p frame in about two thirds of the time; on the shared test media
    97% of the reference's faces found at IoU >= 0.5, mean IoU 0.92 with its boxes);
    "auto" (default): fast on a CPU, exact on a GPU. The follow step
    (detect_in_regions) has no reference to match and crops with OpenCV on a CPU
    either way.

    The nets are plain modules (`pnet`, `rnet`, `onet`); a compile backend may
    replace them with compiled versions taking the same inputs. On a CPU, P-Net runs
    in strips of `pnet_strip_rows` output rows and R-/O-Net in chunks of `crop_chunk`
    crops (small tensors stay in cache); on a GPU each is one call (both None).
    Not thread-safe: one detector per worker thread.
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        min_face_size: float = 40,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        static_shapes: bool | None = None,
        weights_dir: Path | None = None,
        resample: str = "auto",
    ) -> None:
        if len(thresholds) != 3 or not all(0.0 <= t <= 1.0 for t in thresholds):
            raise ValueError(f"thresholds must be three scores in [0, 1], got {list(thresholds)}")
        if not 0.1 <= factor < 1.0:
            raise ValueError(f"factor must be in [0.1, 1), got {factor}")
        if min_face_size < 12:
            raise ValueError(f"min_face_size must be at least 12 pixels, got {min_face_size}")
        self.device = torch.device(device)
        if resample not in ("auto", "exact", "fast"):
            raise ValueError(f"resample must be 'auto', 'exact' or 'fast', got {resample!r}")
        if resample == "fast" and self.device.type != "cpu":
            raise ValueError("resample='fast' resizes on the host: it is for CPU detectors only")
        if resample == "auto":
            resample = "fast" if self.device.type == "cpu" else "exact"
        self.resample = resample
        self.min_face_size = float(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = float(factor)
        self.static_shapes = self.device.type == "cuda" if static_shapes is None else static_shapes
        on_cpu = self.device.type == "cpu"
        self.pnet_strip_rows: int | None = 128 if on_cpu else None
        self.crop_chunk: int | None = 128 if on_cpu else None
        self.pnet, self.rnet, self.onet = load_nets(self.device, weights_dir)
        self._cells: OrderedDict[PyramidLayout, CellMap] = OrderedDict()

    def __repr__(self) -> str:
        return (
            f"FaceDetector(device={str(self.device)!r}, min_face_size={self.min_face_size:g}, "
            f"thresholds={list(self.thresholds)}, factor={self.factor}, "
            f"resample={self.resample!r})"
        )

    # -- input -------------------------------------------------------------------------

    def _to_batches(self, images: ImageBatch) -> list[tuple[list[int], torch.Tensor]]:
        """Group the images by size: (positions in the input, (B, H, W, 3) uint8 tensor)."""
        if isinstance(images, torch.Tensor):
            batch = images.unsqueeze(0) if images.ndim == 3 else images
            _check_shape(tuple(batch.shape[1:]), batch.dtype == torch.uint8, "tensor")
            return [(list(range(batch.shape[0])), batch.to(self.device))]
        if isinstance(images, np.ndarray):
            images = [images] if images.ndim == 3 else list(images)
        groups: dict[tuple[int, ...], list[int]] = {}
        for position, image in enumerate(images):
            if not isinstance(image, np.ndarray):
                raise InvalidImage(
                    f"image {position} is a {type(image).__name__}, not a numpy array"
                )
            _check_shape(image.shape, image.dtype == np.uint8, f"image {position}")
            groups.setdefault(image.shape, []).append(position)
        batches = []
        for positions in groups.values():
            stacked = (
                np.stack([images[p] for p in positions])
                if len(positions) > 1
                else (np.ascontiguousarray(images[positions[0]])[None])
            )
            batches.append((positions, torch.from_numpy(stacked).to(self.device)))
        return batches

    def _cell_map(self, layout: PyramidLayout) -> CellMap:
        cells = self._cells.get(layout)
        if cells is None:
            cells = self._cells[layout] = cell_map(layout, self.device)
            while len(self._cells) > _CELL_MAPS_KEPT:
                self._cells.popitem(last=False)
        else:
            self._cells.move_to_end(layout)
        return cells

    def _run(self, net: torch.nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Run R-Net or O-Net on a batch of crops, in chunks on a CPU (small tensors stay
        in cache), padded to a bucketed size when static shapes are asked for."""
        if self.crop_chunk is None or batch.shape[0] <= self.crop_chunk:
            return self._run_padded(net, batch)
        outs = [self._run_padded(net, piece) for piece in batch.split(self.crop_chunk)]
        return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))

    def _run_padded(self, net: torch.nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not self.static_shapes:
            return run_plain(net, batch)
        count = batch.shape[0]
        padded = batch.new_zeros((_bucket(count), *batch.shape[1:])).contiguous(
            memory_format=torch.channels_last
        )
        padded[:count] = batch
        return tuple(out[:count] for out in net(padded))

    # -- detection ---------------------------------------------------------------------

    def detect(self, images: ImageBatch) -> list[Detections]:
        """Faces in each image.

        images: a list of HxWx3 uint8 RGB numpy arrays (sizes may differ), one such
        array, a (B, H, W, 3) uint8 numpy array, or a (B, H, W, 3) / (H, W, 3) uint8
        RGB torch tensor on any device. Returns one Detections per image, in order,
        faces sorted by decreasing score (host numpy arrays).
        """
        batches = self._to_batches(images)
        results: list[Detections] = [Detections.empty()] * sum(len(p) for p, _ in batches)
        with torch.inference_mode():
            for positions, batch in batches:
                for position, found in zip(positions, self._detect_batch(batch), strict=True):
                    results[position] = found
        return results

    def _detect_batch(self, batch: torch.Tensor) -> list[Detections]:
        height, width = int(batch.shape[1]), int(batch.shape[2])
        if not pyramid_scales(height, width, self.min_face_size, self.factor):
            return [Detections.empty() for _ in range(batch.shape[0])]
        layout = plan_pyramid(height, width, self.min_face_size, self.factor)
        if self.resample == "fast":
            images = tuple(batch.numpy())
            canvas = host_canvas(list(images), layout)
            source = CropSource(None, (height, width), host_images=images)
        else:
            prefix = row_prefix_sums(batch)
            canvas = build_canvas(prefix, layout)
            source = CropSource(prefix, (height, width))
        cells = self._cell_map(layout)
        found = propose(self.pnet, canvas, layout, cells, self.thresholds[0], self.pnet_strip_rows)
        found = refine(self.rnet, source, found, self.thresholds[1], self._run)
        found = output(self.onet, source, found, self.thresholds[2], self._run)
        return _split(found, int(batch.shape[0]))

    def detect_in_regions(self, image: np.ndarray | torch.Tensor, boxes: np.ndarray) -> Detections:
        """Faces near given boxes (e.g. tracks' predicted boxes): the cheap follow step.

        image: HxWx3 uint8 RGB (numpy, or a tensor on any device). boxes: (K, 4) float
        x1, y1, x2, y2 pixels, each roughly around one face. Skips P-Net: around each
        box a few shifted and scaled squares go through R-Net and O-Net (all regions
        in one batch each), reading only the part of the image around the boxes. A
        face that moved by more than about a quarter of its size is not found.
        Returns the faces found (about one per region at most), by decreasing score.
        """
        region_boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if len(region_boxes) == 0:
            return Detections.empty()
        ((_, batch),) = self._to_batches(image if isinstance(image, torch.Tensor) else [image])
        height, width = int(batch.shape[1]), int(batch.shape[2])
        x0, y0, x1, y1 = _window(region_boxes, height, width)
        if x1 <= x0 or y1 <= y0:
            return Detections.empty()
        with torch.inference_mode():
            if isinstance(image, np.ndarray) and self.device.type == "cpu":
                source = CropSource(None, (height, width), host_images=(image,))
            else:
                prefix = row_prefix_sums(batch[:, y0:y1, x0:x1])
                source = CropSource(prefix, (height, width), (x0, y0))
            seeds, region = _region_candidates(torch.from_numpy(region_boxes).to(self.device))
            found = Candidates(
                seeds,
                torch.ones_like(region, dtype=torch.float32),
                torch.zeros_like(region),
                region,
            )
            found = refine(self.rnet, source, found, self.thresholds[1], self._run)
            found = top_per_group(found, _REGION_KEEP)
            found = top_per_group(
                output(self.onet, source, found, self.thresholds[2], self._run), 1
            )
            # Two regions on one face (tracks about to merge) give one detection.
            found = found.select(nms_per_group(found.boxes, found.scores, found.image_index, 0.5))
            return _split(found, 1)[0]


def _window(boxes: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 of the image part that the refinement of `boxes` can read: the
    boxes grown to 1.6x around their centres (candidate spread and regression), clipped."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = 0.8 * (boxes[:, 2:] - boxes[:, :2]).max(axis=1, keepdims=True)
    low = np.floor((centre - half).min(axis=0)).astype(int)
    high = np.ceil((centre + half).max(axis=0)).astype(int)
    return max(0, low[0]), max(0, low[1]), min(width, high[0]), min(height, high[1])


def _check_shape(shape: tuple[int, ...], is_uint8: bool, what: str) -> None:
    if len(shape) != 3 or shape[2] != 3 or not is_uint8:
        raise InvalidImage(f"{what} must be HxWx3 uint8 RGB, got shape {tuple(shape)}")
    if shape[0] < 1 or shape[1] < 1:
        raise InvalidImage(f"{what} is empty ({shape[1]}x{shape[0]})")


def _region_candidates(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, 4) boxes -> (K * 11, 4) squares around them (shifted, and scaled) and the
    (K * 11,) int64 index of the box each square came from."""
    squares = square(boxes)
    centre = (squares[:, :2] + squares[:, 2:]) / 2
    side = squares[:, 2] - squares[:, 0]
    shifts = torch.tensor(_REGION_SHIFTS, device=boxes.device)
    dx, dy = torch.meshgrid(shifts, shifts, indexing="ij")
    zero = torch.zeros(len(_REGION_SCALES), device=boxes.device)
    dx = torch.cat([dx.reshape(-1), zero])
    dy = torch.cat([dy.reshape(-1), zero])
    ds = torch.cat(
        [
            torch.ones(len(_REGION_SHIFTS) ** 2, device=boxes.device),
            torch.tensor(_REGION_SCALES, device=boxes.device),
        ]
    )
    cx = centre[:, None, 0] + dx * side[:, None]
    cy = centre[:, None, 1] + dy * side[:, None]
    half = ds * side[:, None] / 2
    seeds = torch.stack([cx - half, cy - half, cx + half, cy + half], dim=2).reshape(-1, 4)
    region = torch.arange(len(boxes), device=boxes.device).repeat_interleave(len(dx))
    return seeds, region


def _split(found: Candidates, batch_size: int) -> list[Detections]:
    """Per-image Detections (host numpy) from the batch's candidates."""
    if found.landmarks is None:
        raise ValueError("candidates have no landmarks: run the output stage first")
    boxes = found.boxes.float().cpu().numpy()
    scores = found.scores.float().cpu().numpy()
    landmarks = found.landmarks.float().cpu().numpy()
    owner = found.image_index.cpu().numpy()
    results = []
    for index in range(batch_size):
        mine = np.flatnonzero(owner == index)
        mine = mine[np.argsort(-scores[mine], kind="stable")]
        results.append(Detections(boxes[mine], scores[mine], landmarks[mine]))
    return results
