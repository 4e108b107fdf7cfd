"""Image resampling for the cascade: the packed P-Net canvas and the R-/O-Net crops.

Both reproduce facenet-pytorch's ``F.interpolate(mode="area")`` exactly (up to
float rounding): each output pixel is the mean of an integer window of input
pixels, rows floor(i * h / o) .. ceil((i + 1) * h / o) of the region, likewise
columns. Everything is computed from one array of row prefix sums of the image
(exact integers in float32): a column window is the difference of two prefix
sums, so no pyramid level and no crop re-reads the image; row windows are summed
by small matmuls with 0/1 weights (exact too).

Prefix sums are (3, B, H, W + 1) float32 (channel first) on the images' device.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from engines.detection.layout import PyramidLayout

_ROW_BLOCK = 8  # output rows per matmul block when resizing a pyramid level
_MAX_GATHER = 1 << 21  # gathered elements per chunk of crops: bounds peak memory


def row_prefix_sums(images: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 RGB -> (3, B, H, W + 1) float32: for every channel and row,
    the sum of its first x pixels, x = 0..W.

    Channel first, so that one gather reads all three channels. Exact in float32
    while 255 * W < 2**24 (any W below 65,000).
    """
    batch, height, width, channels = images.shape
    prefix = torch.zeros(
        (channels, batch, height, width + 1), dtype=torch.float32, device=images.device
    )
    torch.cumsum(images.permute(3, 0, 1, 2), dim=3, dtype=torch.float32, out=prefix[..., 1:])
    return prefix


def build_canvas(prefix: torch.Tensor, layout: PyramidLayout) -> torch.Tensor:
    """The packed P-Net input: (B, 3, CH, CW) float32, channels-last.

    Each level is the reference's area resize of the full image (area_resize). An
    odd-sized level's extra slot row/column repeats its last row/column.
    """
    channels, batch = prefix.shape[:2]
    canvas = prefix.new_zeros((batch, layout.canvas_height, layout.canvas_width, channels))
    canvas = canvas.permute(0, 3, 1, 2)
    for level in layout.levels:
        resized = area_resize(prefix, level.height, level.width).transpose(0, 1)
        slot = level.slot
        target = canvas[:, :, slot.top : slot.top + slot.height, slot.left : slot.left + slot.width]
        target[:, :, : level.height, : level.width] = resized
        if slot.height > level.height:
            target[:, :, level.height :, : level.width] = resized[:, :, -1:, :]
        if slot.width > level.width:
            target[:, :, :, level.width :] = target[:, :, :, level.width - 1 : level.width]
    return canvas


def host_canvas(images: list[np.ndarray], layout: PyramidLayout) -> torch.Tensor:
    """build_canvas for host images with OpenCV: (B, 3, CH, CW) float32 channels-last.

    images: HxWx3 uint8 RGB, all of the layout's size. The first level is an
    INTER_AREA resize of the image, every smaller level one of the first (fractional
    pixel weights, so pixels differ from the reference's by rounding-level amounts;
    about twenty times cheaper on a CPU). Odd slots repeat the last row/column.
    """
    canvas = np.zeros((len(images), layout.canvas_height, layout.canvas_width, 3), np.uint8)
    for index, image in enumerate(images):
        first = None
        for level in layout.levels:
            source = image if first is None else first
            resized = cv2.resize(source, (level.width, level.height), interpolation=cv2.INTER_AREA)
            first = resized if first is None else first
            slot = level.slot
            target = canvas[
                index, slot.top : slot.top + slot.height, slot.left : slot.left + slot.width
            ]
            target[: level.height, : level.width] = resized
            target[level.height :, : level.width] = resized[-1:]
            target[:, level.width :] = target[:, level.width - 1 : level.width]
    return torch.from_numpy(canvas).permute(0, 3, 1, 2).float()


def area_resize(prefix: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """F.interpolate(images, (height, width), mode="area") from row prefix sums:
    (3, B, H, W + 1) -> (3, B, height, width) float32.

    Column windows: two gathers of prefix sums per row. Row windows: the output rows
    in blocks of _ROW_BLOCK, each block one 0/1 matmul over the input rows it spans.
    Cost grows with the level, not with the image, beyond one gather per input row.
    """
    channels, batch, rows, width1 = prefix.shape
    device = prefix.device
    col_first, col_end = (w[0] for w in _windows(torch.tensor([width1 - 1], device=device), width))
    row_first, row_end = (w[0] for w in _windows(torch.tensor([rows], device=device), height))
    flat = prefix.reshape(-1, width1)
    columns = flat.index_select(1, col_end).sub_(flat.index_select(1, col_first))
    columns = columns.view(channels * batch, rows, width)
    blocks = -(-height // _ROW_BLOCK)
    block_rows = torch.arange(blocks * _ROW_BLOCK, device=device).clamp(max=height - 1)
    block_rows = block_rows.view(blocks, _ROW_BLOCK)
    start = row_first[block_rows[:, 0]]  # (blocks,) first input row of each block
    span = int((row_end[block_rows[:, -1]] - start).max())
    source = start[:, None] + torch.arange(span, device=device)  # (blocks, span)
    picked = columns.index_select(1, source.clamp(max=rows - 1).reshape(-1))
    weights = (source[:, None, :] >= row_first[block_rows][:, :, None]) & (
        source[:, None, :] < row_end[block_rows][:, :, None]
    )  # (blocks, block, span): input row inside the output row's window
    sums = torch.matmul(
        weights.to(prefix.dtype), picked.view(channels * batch, blocks, span, width)
    )
    sums = sums.view(channels * batch, blocks * _ROW_BLOCK, width)[:, :height]
    area = ((row_end - row_first)[:, None] * (col_end - col_first)[None, :]).to(prefix.dtype)
    return (sums / area).view(channels, batch, height, width)


@dataclass(frozen=True)
class CellMap:
    """Per P-Net output cell of the packed canvas: which level it belongs to and where.

    level: (h, w) int64, -1 for cells outside every level.
    scale: (L,) float32 level scales; row0, col0: (L,) int64 first cell of each level.
    """

    level: torch.Tensor
    scale: torch.Tensor
    row0: torch.Tensor
    col0: torch.Tensor


def cell_map(layout: PyramidLayout, device: torch.device) -> CellMap:
    """The CellMap of `layout` on `device`."""
    level = torch.full((layout.out_height, layout.out_width), -1, dtype=torch.int64)
    for index, lv in enumerate(layout.levels):
        r0, c0 = lv.slot.top // 2, lv.slot.left // 2
        level[r0 : r0 + lv.out_height, c0 : c0 + lv.out_width] = index
    return CellMap(
        level=level.to(device),
        scale=torch.tensor([lv.scale for lv in layout.levels], dtype=torch.float32, device=device),
        row0=torch.tensor([lv.slot.top // 2 for lv in layout.levels], device=device),
        col0=torch.tensor([lv.slot.left // 2 for lv in layout.levels], device=device),
    )


def _windows(length: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive-pooling windows of regions of (N,) lengths pooled to `size`: (N, size)
    first index (relative to the region) and end index of each output pixel."""
    i = torch.arange(size, device=length.device)
    first = torch.div(i[None, :] * length[:, None], size, rounding_mode="floor")
    end = -torch.div(-(i[None, :] + 1) * length[:, None], size, rounding_mode="floor")
    return first, end


def _height_bucket(height: int) -> int:
    """Rows a group of crops is padded to: the next of 16, 24, 32, 48, 64, 96, ..."""
    bucket = 16
    while bucket < height:
        bucket = bucket * 3 // 2 if bucket & (bucket - 1) == 0 else bucket * 4 // 3
    return bucket


def pool_crops(
    prefix: torch.Tensor, rois: torch.Tensor, image_index: torch.Tensor, size: int
) -> torch.Tensor:
    """Area-resize image regions to size x size, exactly as F.interpolate(mode="area").

    prefix: row_prefix_sums of the images. rois: (N, 4) integer-valued float x1, y1,
    x2, y2 pixel edges, inside the image, non-empty. image_index: (N,) int64.
    Returns (N, 3, size, size) float32 channels-last.

    Column windows are differences of row prefix sums (two gathers per row and output
    column); row windows are then summed by a batched matmul with 0/1 weights. All
    sums are of integers below 2**24, hence exact. Crops are grouped by height (a
    handful of groups, padded to a common height); no loop over crops.
    """
    count = rois.shape[0]
    if count == 0:
        return prefix.new_zeros((0, size, size, 3)).permute(0, 3, 1, 2)
    whole = rois.to(torch.int64)
    heights = whole[:, 3] - whole[:, 1]
    buckets = sorted({_height_bucket(h) for h in torch.unique(heights).tolist()})
    limits = torch.tensor(buckets, device=rois.device)
    group = torch.bucketize(heights, limits)
    parts, order = [], []
    for g, rows in enumerate(buckets):
        members = (group == g).nonzero(as_tuple=True)[0]
        if len(members) == 0:
            continue
        step = max(1, _MAX_GATHER // (6 * rows * size))
        for chunk in torch.split(members, step):
            parts.append(_pool_group(prefix, whole[chunk], image_index[chunk], size, rows))
            order.append(chunk)
    pooled = torch.cat(parts) if len(parts) > 1 else parts[0]
    if len(parts) > 1:
        pooled = pooled[torch.argsort(torch.cat(order))]
    return pooled.contiguous(memory_format=torch.channels_last)


def _pool_group(
    prefix: torch.Tensor, rois: torch.Tensor, image_index: torch.Tensor, size: int, rows: int
) -> torch.Tensor:
    """pool_crops for regions at most `rows` pixels high: (N, 3, size, size)."""
    channels, _, height, width1 = prefix.shape
    count = rois.shape[0]
    col_first, col_end = _windows(rois[:, 2] - rois[:, 0], size)
    row_first, row_end = _windows(rois[:, 3] - rois[:, 1], size)
    r = torch.arange(rows, device=rois.device)
    y = (rois[:, 1:2] + r).clamp(max=height - 1)  # (N, rows); rows past the crop get weight 0
    base = ((image_index[:, None] * height + y) * width1 + rois[:, 0:1])[:, :, None]  # (N, rows, 1)
    planes = prefix.reshape(channels, -1)
    right = planes.index_select(1, (base + col_end[:, None, :]).reshape(-1))
    columns = right.sub_(planes.index_select(1, (base + col_first[:, None, :]).reshape(-1)))
    # (N, rows, 3 * size): column-window sums of every row of every crop
    columns = columns.view(channels, count, rows, size).permute(1, 2, 0, 3).reshape(count, rows, -1)
    inside = (r[None, None, :] >= row_first[:, :, None]) & (r[None, None, :] < row_end[:, :, None])
    sums = torch.bmm(inside.to(prefix.dtype), columns)  # (N, size, 3 * size)
    area = ((row_end - row_first)[:, :, None] * (col_end - col_first)[:, None, :]).to(prefix.dtype)
    return sums.view(count, size, channels, size).permute(0, 2, 1, 3) / area[:, None]
