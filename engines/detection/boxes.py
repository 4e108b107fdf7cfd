"""Box arithmetic of the MTCNN cascade, vectorised, on any device.

Boxes are (N, 4) float32 tensors x1, y1, x2, y2 in image pixels. The formulas
(including facenet-pytorch's mix of "+1" and plain widths) follow the reference
so that the cascade keeps the same candidates.
"""

from __future__ import annotations

import torch

from engines.detection.nms import batched_nms


def square(boxes: torch.Tensor) -> torch.Tensor:
    """Grow each box to a square around its centre (side = the longer side); new tensor."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    x1 = boxes[:, 0] + w * 0.5 - side * 0.5
    y1 = boxes[:, 1] + h * 0.5 - side * 0.5
    return torch.stack([x1, y1, x1 + side, y1 + side], dim=1)


def regress(boxes: torch.Tensor, offsets: torch.Tensor, plus_one: bool = True) -> torch.Tensor:
    """Apply (N, 4) regression offsets, in box widths/heights, to (N, 4) boxes.

    plus_one: widths as x2 - x1 + 1 (R-Net and O-Net) or x2 - x1 (P-Net), as the reference.
    """
    extra = 1.0 if plus_one else 0.0
    w = boxes[:, 2] - boxes[:, 0] + extra
    h = boxes[:, 3] - boxes[:, 1] + extra
    return boxes + offsets * torch.stack([w, h, w, h], dim=1)


def crop_regions(boxes: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The image region facenet-pytorch crops for each box, and whether it is non-empty.

    The reference truncates the box to integers, clips it to the image and crops
    rows y1 - 1 .. y2 (exclusive), columns likewise. Returns (N, 4) float pixel-edge
    rois and an (N,) bool mask of non-empty ones.
    """
    whole = boxes.trunc()
    x1 = whole[:, 0].clamp(min=1) - 1
    y1 = whole[:, 1].clamp(min=1) - 1
    x2 = whole[:, 2].clamp(max=width)
    y2 = whole[:, 3].clamp(max=height)
    valid = (x2 > x1) & (y2 > y1)
    return torch.stack([x1, y1, x2, y2], dim=1), valid


def nms_per_group(
    boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou: float
) -> torch.Tensor:
    """Indices kept by IoU non-maximum suppression within each group, by decreasing score."""
    return batched_nms(boxes, scores, groups, iou)


def nms_min_per_group(
    boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, threshold: float
) -> torch.Tensor:
    """Greedy NMS with the "Min" overlap (intersection over the smaller box, areas with
    +1 pixels), as facenet-pytorch's last stage; indices kept, by decreasing score.

    Vectorised: the greedy result is the fixed point of "keep a box unless a kept,
    better box of its group overlaps it"; it is reached in a few iterations (at most N).
    """
    count = boxes.shape[0]
    if count == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    b, g = boxes[order], groups[order]
    area = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    lt = torch.maximum(b[:, None, :2], b[None, :, :2])
    rb = torch.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt + 1).clamp(min=0).prod(dim=2)
    overlap = inter / torch.minimum(area[:, None], area[None, :])
    better = torch.ones(count, count, dtype=torch.bool, device=boxes.device).triu(diagonal=1)
    suppresses = (overlap > threshold) & better & (g[:, None] == g[None, :])
    keep = torch.ones(count, dtype=torch.bool, device=boxes.device)
    for _ in range(count):
        new_keep = ~(suppresses & keep[:, None]).any(dim=0)
        if bool(torch.equal(new_keep, keep)):
            break
        keep = new_keep
    return order[keep]
