"""The three stages of the MTCNN cascade, each one batched over images and candidates.

Candidates travel between stages as :class:`Candidates`: parallel tensors on the
detector's device. No stage loops over candidates or boxes in Python.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from engines.detection.boxes import crop_regions, nms_min_per_group, nms_per_group, regress, square
from engines.detection.layout import PyramidLayout
from engines.detection.nets import ONet, PNet, RNet
from engines.detection.pyramid import CellMap, pool_crops

BatchRunner = Callable[[torch.nn.Module, torch.Tensor], tuple[torch.Tensor, ...]]


@dataclass(frozen=True)
class Candidates:
    """Face candidates of a batch of images.

    boxes: (N, 4) float32 x1, y1, x2, y2 pixels. scores: (N,) float32.
    image_index: (N,) int64 index of the image in the batch.
    group: (N,) int64 NMS group: candidates of different groups never suppress each
        other (the image, or a region of interest of it). Default: image_index.
    landmarks: (N, 5, 2) float32 pixels, only after the output stage.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    image_index: torch.Tensor
    group: torch.Tensor | None = None
    landmarks: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @property
    def groups(self) -> torch.Tensor:
        return self.image_index if self.group is None else self.group

    def select(self, index: torch.Tensor) -> Candidates:
        """The candidates at `index` (indices or a boolean mask), in that order."""
        return Candidates(
            self.boxes[index],
            self.scores[index],
            self.image_index[index],
            None if self.group is None else self.group[index],
            None if self.landmarks is None else self.landmarks[index],
        )

    def replace(self, **fields: torch.Tensor) -> Candidates:
        return dataclasses.replace(self, **fields)


def top_per_group(found: Candidates, count: int) -> Candidates:
    """The `count` best-scoring candidates of every group."""
    if len(found) == 0:
        return found
    order = torch.argsort(found.scores, descending=True, stable=True)
    order = order[torch.argsort(found.groups[order], stable=True)]
    groups = found.groups[order]
    rank = torch.arange(len(order), device=order.device) - torch.searchsorted(groups, groups)
    return found.select(order[rank < count])


def run_plain(net: torch.nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Run `net` on the whole batch as it is."""
    return tuple(net(batch))


def run_pnet(
    pnet: PNet, canvas: torch.Tensor, layout: PyramidLayout, strip_rows: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """P-Net on the whole canvas, or strip by strip of `strip_rows` output rows.

    Strips overlap by P-Net's receptive field, so the output is the same; they keep
    the intermediate tensors small (cache-resident, no fresh pages), which is what
    makes a CPU fast. The eager PNet gets each strip cut at the right edge of the
    levels it crosses; any other module (a compiled engine) gets strips of one shape
    (full width, the last one padded). Returns reg (B, 4, h, w) and prob (B, h, w),
    0 where no level is.
    """
    out_rows, out_cols = layout.out_height, layout.out_width
    if strip_rows is None or out_rows <= strip_rows:
        return pnet(canvas)
    uniform = not isinstance(pnet, PNet)
    if uniform:
        padding = -out_rows % strip_rows
        canvas = torch.nn.functional.pad(canvas, (0, 0, 0, 2 * padding))
    batch = canvas.shape[0]
    reg = canvas.new_zeros((batch, 4, out_rows, out_cols))
    prob = canvas.new_zeros((batch, out_rows, out_cols))
    for first in range(0, out_rows, strip_rows):
        last = min(out_rows, first + strip_rows)
        right = canvas.shape[3] if uniform else _right_edge(layout, first, last)
        if right == 0:
            continue
        rows_in = 2 * (first + strip_rows if uniform else last) + 10
        strip_reg, strip_prob = pnet(canvas[:, :, 2 * first : rows_in, :right])
        reg[:, :, first:last, : strip_prob.shape[2]] = strip_reg[:, :, : last - first]
        prob[:, first:last, : strip_prob.shape[2]] = strip_prob[:, : last - first]
    return reg, prob


def _right_edge(layout: PyramidLayout, first: int, last: int) -> int:
    """Right edge of the levels that output rows first..last read (0 if none)."""
    return max(
        (
            lv.slot.left + lv.slot.width
            for lv in layout.levels
            if lv.slot.top < 2 * last + 10 and lv.slot.top + lv.slot.height > 2 * first
        ),
        default=0,
    )


def propose(
    pnet: PNet,
    canvas: torch.Tensor,
    layout: PyramidLayout,
    cells: CellMap,
    threshold: float,
    strip_rows: int | None = None,
) -> Candidates:
    """Stage 1: P-Net over the packed pyramid of every image in one pass, then NMS
    within each scale (IoU 0.5) and each image (IoU 0.7), box regression, squaring.

    canvas: the packed pyramid (pyramid.build_canvas or pyramid.host_canvas)."""
    reg, prob = run_pnet(pnet, canvas, layout, strip_rows)
    mask = (prob >= threshold) & (cells.level >= 0)
    image_index, rows, cols = mask.nonzero(as_tuple=True)
    level = cells.level[rows, cols]
    scale = cells.scale[level]
    x = (cols - cells.col0[level]).to(torch.float32)
    y = (rows - cells.row0[level]).to(torch.float32)
    corner = torch.stack([x, y], dim=1) * 2
    top_left = torch.floor((corner + 1) / scale[:, None])
    bottom_right = torch.floor((corner + 12) / scale[:, None])
    boxes = torch.cat([top_left, bottom_right], dim=1)
    scores = prob[image_index, rows, cols]
    offsets = reg[image_index, :, rows, cols]
    per_scale = nms_per_group(boxes, scores, image_index * len(layout.levels) + level, 0.5)
    boxes, scores, image_index, offsets = (
        t[per_scale] for t in (boxes, scores, image_index, offsets)
    )
    per_image = nms_per_group(boxes, scores, image_index, 0.7)
    boxes, scores, image_index, offsets = (
        t[per_image] for t in (boxes, scores, image_index, offsets)
    )
    boxes = square(regress(boxes, offsets, plus_one=False))
    return Candidates(boxes, scores, image_index)


@dataclass(frozen=True)
class CropSource:
    """Where R-Net and O-Net crops are cut from.

    prefix: row prefix sums (pyramid.row_prefix_sums) of the images, or of one window
    of them. image_size: (H, W) of the whole images (crops are clipped to them, as the
    reference does). origin: (x, y) of the window's top-left corner in the images.
    host_images: instead of prefix sums, the HxWx3 uint8 RGB host images (in batch
    order) whose crops OpenCV area-resizes: on a CPU a few hundred crops cost about a
    millisecond this way (fractional pixel weights, so crops differ from the
    reference's by rounding-level amounts).
    """

    prefix: torch.Tensor | None
    image_size: tuple[int, int]
    origin: tuple[int, int] = (0, 0)
    host_images: tuple[np.ndarray, ...] | None = None


def _crops(source: CropSource, found: Candidates, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """size x size crops of every candidate, as the reference cuts them, and a mask of
    candidates whose crop is non-empty (the others get a dummy crop)."""
    rois, valid = crop_regions(found.boxes, *source.image_size)
    if source.host_images is not None:
        return _host_crops(source.host_images, rois, found.image_index, valid, size), valid
    if source.prefix is None:
        raise ValueError("a CropSource needs prefix sums or a host image")
    x0, y0 = source.origin
    if x0 or y0 or source.prefix.shape[2:] != (source.image_size[0], source.image_size[1] + 1):
        height, width = source.prefix.shape[2], source.prefix.shape[3] - 1
        rois = rois - rois.new_tensor([x0, y0, x0, y0])
        rois = torch.stack(
            [
                rois[:, 0].clamp(0, width),
                rois[:, 1].clamp(0, height),
                rois[:, 2].clamp(0, width),
                rois[:, 3].clamp(0, height),
            ],
            dim=1,
        )
        valid = valid & (rois[:, 2] > rois[:, 0]) & (rois[:, 3] > rois[:, 1])
    rois = torch.where(valid[:, None], rois, rois.new_tensor([0.0, 0.0, 1.0, 1.0]))
    return pool_crops(source.prefix, rois, found.image_index, size), valid


def _host_crops(
    images: tuple[np.ndarray, ...],
    rois: torch.Tensor,
    image_index: torch.Tensor,
    valid: torch.Tensor,
    size: int,
) -> torch.Tensor:
    """(N, 3, size, size) float32 channels-last crops of `images[image_index]` at
    integer `rois` (x1, y1, x2, y2 pixel edges) by cv2.INTER_AREA; zeros where not
    `valid`."""
    crops = np.zeros((len(rois), size, size, 3), np.uint8)
    owners = image_index.tolist()
    keep = valid.tolist()
    for index, (x1, y1, x2, y2) in enumerate(rois.to(torch.int64).tolist()):
        if keep[index]:
            crops[index] = cv2.resize(
                images[owners[index]][y1:y2, x1:x2], (size, size), interpolation=cv2.INTER_AREA
            )
    return torch.from_numpy(crops).permute(0, 3, 1, 2).float()


def refine(
    rnet: RNet,
    source: CropSource,
    found: Candidates,
    threshold: float,
    run: BatchRunner = run_plain,
) -> Candidates:
    """Stage 2: R-Net on 24x24 crops of every candidate in one call; keep scores above
    `threshold`, NMS within each group (IoU 0.7), box regression, squaring."""
    if len(found) == 0:
        return found
    crops, valid = _crops(source, found, 24)
    offsets, scores = run(rnet, crops)
    keep = ((scores > threshold) & valid).nonzero(as_tuple=True)[0]
    kept = found.select(keep).replace(scores=scores[keep])
    pick = nms_per_group(kept.boxes, kept.scores, kept.groups, 0.7)
    kept = kept.select(pick)
    return kept.replace(boxes=square(regress(kept.boxes, offsets[keep][pick])))


def output(
    onet: ONet,
    source: CropSource,
    found: Candidates,
    threshold: float,
    run: BatchRunner = run_plain,
    nms_threshold: float = 0.7,
) -> Candidates:
    """Stage 3: O-Net on 48x48 crops in one call; keep scores above `threshold`,
    landmarks, box regression, then "Min" NMS within each group."""
    if len(found) == 0:
        return found.replace(landmarks=found.boxes.new_zeros((0, 5, 2)))
    crops, valid = _crops(source, found, 48)
    offsets, points, scores = run(onet, crops)
    keep = ((scores > threshold) & valid).nonzero(as_tuple=True)[0]
    kept = found.select(keep)
    boxes, offsets, points = kept.boxes, offsets[keep], points[keep]
    size = (boxes[:, 2:] - boxes[:, :2] + 1)[:, None, :]
    landmarks = torch.stack([points[:, :5], points[:, 5:]], dim=2) * size + boxes[:, None, :2] - 1
    kept = kept.replace(boxes=regress(boxes, offsets), scores=scores[keep], landmarks=landmarks)
    return kept.select(nms_min_per_group(kept.boxes, kept.scores, kept.groups, nms_threshold))
