"""Frame operations that stay on the device: upload once, warp, blend, download once.

Colour (Lab conversion, colour transfer) is in engines.gpu_color.

Everything here works on torch tensors on any device (CPU or CUDA) and never
synchronises with the host between `upload_frame` and `download_frame`: no
`.item()`, no data-dependent shapes, and host values (face matrices, paste
regions) travel to the device through pinned memory without a wait. Results match
the OpenCV operations named in each docstring (tests compare them).

Conventions:
- A frame on the device is (3, H, W) uint8 RGB (`upload_frame`); maths runs on
  float32 (B, C, H, W) RGB in [0, 1] (`to_float`).
- Affine matrices are (B, 2, 3) in OpenCV's convention: pixel centres at integer
  coordinates, and `M @ [x_src, y_src, 1] = [x_dst, y_dst]` (as cv2.warpAffine
  takes them), unless `inverse_map=True` (cv2.WARP_INVERSE_MAP: dst -> src).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from engines.errors import InvalidImage

Padding = Literal["zeros", "border", "reflection", "reflect101"]
Roi = tuple[int, int, int, int]


def to_device(array: np.ndarray | torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A host array on `device` without a host wait (pinned, non-blocking on CUDA)."""
    tensor = torch.as_tensor(array)
    device = torch.device(device)
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def constant(values: object, like: torch.Tensor) -> torch.Tensor:
    """A small constant on `like`'s device and dtype. A plain copy to a GPU would wait
    for the stream; a non-blocking one from pageable memory is staged at once, no wait."""
    return torch.tensor(values, dtype=like.dtype).to(like.device, non_blocking=True)


def upload_frame(frame: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """HxWx3 uint8 RGB numpy frame -> (3, H, W) uint8 tensor on `device` (one copy to
    a GPU; on the CPU a view that shares the frame's memory)."""
    if (
        not isinstance(frame, np.ndarray)
        or frame.dtype != np.uint8
        or frame.ndim != 3
        or frame.shape[2] != 3
    ):
        shape = getattr(frame, "shape", None)
        raise InvalidImage(
            f"a frame must be an HxWx3 uint8 array, got {type(frame).__name__} {shape}"
        )
    return to_device(np.ascontiguousarray(frame), device).permute(2, 0, 1)


def download_frame(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) uint8, or float in [0, 1], on any device -> HxWx3 uint8 RGB numpy
    (the one device -> host copy of a frame; it waits for the device)."""
    if image.is_floating_point():
        image = to_uint8(image)
    return image.permute(1, 2, 0).contiguous().cpu().numpy()


def to_float(image: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1], same shape and device."""
    return image.to(torch.float32).div_(255.0)


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """float [0, 1] -> uint8 [0, 255], rounded and clipped, same shape and device."""
    return image.mul(255.0).round_().clamp_(0.0, 255.0).to(torch.uint8)


# --- geometry ----------------------------------------------------------------------------


def invert_affine(matrices: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) affine matrices -> their inverses (closed form: no solver, no sync)."""
    a, b, tx = matrices[:, 0, 0], matrices[:, 0, 1], matrices[:, 0, 2]
    c, d, ty = matrices[:, 1, 0], matrices[:, 1, 1], matrices[:, 1, 2]
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    row0 = torch.stack([ia, ib, -(ia * tx + ib * ty)], dim=-1)
    row1 = torch.stack([ic, id_, -(ic * tx + id_ * ty)], dim=-1)
    return torch.stack([row0, row1], dim=1)


def _half_extent(height: int, width: int, corners: bool) -> tuple[float, float, float]:
    """(sx, sy, shift): pixel x = (x_n + 1) * sx - shift (y likewise) for grid_sample's
    x_n in [-1, 1]; with `corners` (align_corners=True) +-1 are the corner pixels' centres,
    else the image's outer edges."""
    if corners:
        return max(width - 1, 1) / 2.0, max(height - 1, 1) / 2.0, 0.0
    return width / 2.0, height / 2.0, 0.5


def _to_normalised(height: int, width: int, like: torch.Tensor, corners: bool) -> torch.Tensor:
    """(3, 3): pixel coordinates (centres at integers) -> grid_sample's [-1, 1]."""
    sx, sy, shift = _half_extent(height, width, corners)
    rows = [[1.0 / sx, 0.0, shift / sx - 1.0], [0.0, 1.0 / sy, shift / sy - 1.0], [0, 0, 1.0]]
    return constant(rows, like)


def _to_pixels(height: int, width: int, like: torch.Tensor, corners: bool) -> torch.Tensor:
    """(3, 3): grid_sample's [-1, 1] -> pixel coordinates (inverse of _to_normalised)."""
    sx, sy, shift = _half_extent(height, width, corners)
    return constant([[sx, 0.0, sx - shift], [0.0, sy, sy - shift], [0.0, 0.0, 1.0]], like)


def warp_affine(
    images: torch.Tensor,
    matrices: torch.Tensor,
    size: tuple[int, int],
    *,
    inverse_map: bool = False,
    padding: Padding = "zeros",
) -> torch.Tensor:
    """cv2.warpAffine(INTER_LINEAR) for a batch: (B, C, H, W) float -> (B, C, h, w).

    matrices: (B, 2, 3) src -> dst (or dst -> src with `inverse_map`), any float dtype;
        host matrices are sent without a wait. size: (h, w) of the output.
    padding: "zeros" (BORDER_CONSTANT 0), "border" (BORDER_REPLICATE), "reflection"
        (BORDER_REFLECT: mirrored about the image's edge) or "reflect101" (BORDER_REFLECT_101,
        OpenCV's default: mirrored about the edge pixels' centres).
    """
    # grid_sample's "reflection" with align_corners=True mirrors about the corner pixels'
    # centres (BORDER_REFLECT_101); with align_corners=False about the image's edge.
    corners = padding == "reflect101"
    grid = affine_grid(
        to_device(matrices, images.device),
        (int(images.shape[2]), int(images.shape[3])),
        size,
        inverse_map=inverse_map,
        corners=corners,
    ).to(images.dtype)
    mode = "reflection" if corners else padding
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=mode, align_corners=corners)


def affine_grid(
    matrices: torch.Tensor,
    source_size: tuple[int, int],
    size: tuple[int, int],
    *,
    inverse_map: bool = False,
    corners: bool = False,
) -> torch.Tensor:
    """The (B, h, w, 2) float32 sampling grid of warp_affine, for F.grid_sample with
    align_corners=`corners` (one grid can sample several images, e.g. with two paddings).

    matrices: (B, 2, 3) on the device, src -> dst (dst -> src with `inverse_map`).
    source_size, size: (H, W) of the sampled images and (h, w) of the output.
    """
    height, width = source_size
    out_h, out_w = size
    matrices = matrices.to(torch.float32)
    dst_to_src = matrices if inverse_map else invert_affine(matrices)
    batch = int(matrices.shape[0])
    last_row = constant([0.0, 0.0, 1.0], dst_to_src).expand(batch, 1, 3)
    full = torch.cat([dst_to_src, last_row], dim=1)
    theta = (
        _to_normalised(height, width, full, corners)
        @ full
        @ _to_pixels(out_h, out_w, full, corners)
    )
    return F.affine_grid(theta[:, :2], [batch, 1, out_h, out_w], align_corners=corners)


def box_matrices(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, 4) x1, y1, x2, y2 boxes -> (N, 2, 3) matrices that map each box onto an (h, w)
    crop the way cv2.resize maps a whole image (half-pixel centres)."""
    out_h, out_w = size
    boxes = boxes.to(torch.float32)
    sx = out_w / (boxes[:, 2] - boxes[:, 0])
    sy = out_h / (boxes[:, 3] - boxes[:, 1])
    zero = torch.zeros_like(sx)
    row0 = torch.stack([sx, zero, (0.5 - boxes[:, 0]) * sx - 0.5], dim=-1)
    row1 = torch.stack([zero, sy, (0.5 - boxes[:, 1]) * sy - 0.5], dim=-1)
    return torch.stack([row0, row1], dim=1)


def crop_boxes(
    image: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int], padding: Padding = "zeros"
) -> torch.Tensor:
    """Crops of one (C, H, W) float image, each box resized to (h, w): (N, C, h, w).

    Equals cv2.resize(image[y1:y2, x1:x2], (w, h), INTER_LINEAR) for whole-pixel boxes,
    except that at the crop's edge it samples the real neighbouring pixels where
    cv2.resize replicates the edge. Boxes may be fractional and may leave the image
    (padded per `padding`).
    """
    boxes = to_device(boxes, image.device)
    count = boxes.shape[0]
    if count == 0:
        return image.new_zeros((0, image.shape[0], *size))
    return warp_affine(
        image.expand(count, *image.shape), box_matrices(boxes, size), size, padding=padding
    )


def paste_rois(
    matrices: np.ndarray, crop_size: tuple[int, int], frame_size: tuple[int, int]
) -> list[Roi]:
    """Host-side: the frame region (x1, y1, x2, y2, ints, clipped) each crop lands on.

    matrices: (N, 2, 3) frame -> crop, numpy. crop_size, frame_size: (h, w).
    """
    height, width = frame_size
    crop_h, crop_w = crop_size
    corners = np.array(
        [
            [-0.5, -0.5, 1],
            [crop_w - 0.5, -0.5, 1],
            [-0.5, crop_h - 0.5, 1],
            [crop_w - 0.5, crop_h - 0.5, 1],
        ]
    )
    rois: list[Roi] = []
    for matrix in np.asarray(matrices, np.float64).reshape(-1, 2, 3):
        full = np.vstack([matrix, [0.0, 0.0, 1.0]])
        points = (np.linalg.inv(full) @ corners.T)[:2]
        x1, y1 = np.floor(points.min(axis=1)).astype(int) - 1
        x2, y2 = np.ceil(points.max(axis=1)).astype(int) + 2
        rois.append((max(int(x1), 0), max(int(y1), 0), min(int(x2), width), min(int(y2), height)))
    return rois


# --- masks and blending ------------------------------------------------------------------


def gaussian_kernel(
    sigma: float, ksize: int | None = None, *, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """1-D Gaussian taps as cv2.getGaussianKernel(ksize, sigma): (ksize,) float32, sum 1.
    ksize defaults to 2 * ceil(3 sigma) + 1."""
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    ksize = ksize or 2 * math.ceil(3.0 * sigma) + 1
    x = torch.arange(ksize, dtype=torch.float64, device=device) - (ksize - 1) / 2.0
    taps = torch.exp(-(x**2) / (2.0 * sigma * sigma))
    return (taps / taps.sum()).to(torch.float32)


def gaussian_blur(images: torch.Tensor, sigma: float, ksize: int | None = None) -> torch.Tensor:
    """cv2.GaussianBlur((k, k), sigma) with BORDER_REFLECT_101 on (B, C, H, W) float."""
    taps = gaussian_kernel(sigma, ksize, device=images.device).to(images.dtype)
    channels, radius = images.shape[1], (taps.numel() - 1) // 2
    horizontal = taps.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    vertical = taps.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    return F.conv2d(F.conv2d(padded, horizontal, groups=channels), vertical, groups=channels)


def erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """cv2.erode with a (2r+1)-square kernel (default border) on (B, C, H, W) float."""
    if radius <= 0:
        return mask
    return -F.max_pool2d(-mask, kernel_size=2 * radius + 1, stride=1, padding=radius)


def feather_mask(mask: torch.Tensor, erode_px: int = 0, blur_sigma: float = 0.0) -> torch.Tensor:
    """A soft-edged alpha from a hard mask: erode by `erode_px`, then Gaussian-blur.

    mask: (B, 1, H, W) float in [0, 1]. Returns the same shape, in [0, 1].
    """
    soft = erode(mask, erode_px)
    if blur_sigma > 0:
        soft = gaussian_blur(soft, blur_sigma)
    return soft.clamp(0.0, 1.0)


def alpha_blend(
    background: torch.Tensor, foreground: torch.Tensor, alpha: torch.Tensor
) -> torch.Tensor:
    """background * (1 - alpha) + foreground * alpha; alpha broadcasts over channels."""
    return torch.lerp(background, foreground, alpha.to(background.dtype))


def paste_back(
    frame: torch.Tensor,
    faces: torch.Tensor,
    matrices: torch.Tensor | np.ndarray,
    alphas: torch.Tensor,
    rois: Sequence[Roi],
) -> torch.Tensor:
    """Blend aligned faces back into the frame, in place, in order (a later face lies over
    an earlier one where they overlap).

    frame: (3, H, W) float RGB [0, 1], or uint8 RGB (blended in float, rounded per face).
    faces: (N, 3, h, w) float RGB [0, 1]. alphas: (N, 1, h, w) in [0, 1] (e.g.
    feather_mask of the face mask). matrices: (N, 2, 3) frame -> crop (the ones the
    faces were cut with), on the device or on the host (sent without a wait).
    rois: the frame region (x1, y1, x2, y2) each face may touch, host ints (e.g. from
    `paste_rois`), so no device value is read back; an empty one skips its face.
    Every face and alpha is warped by one batched inverse warp onto the largest ROI.
    Returns `frame`. Matches cv2.warpAffine(..., WARP_INVERSE_MAP) of each face (with
    BORDER_REPLICATE) and alpha (BORDER_CONSTANT 0) and blending.
    """
    live = [(i, roi) for i, roi in enumerate(rois) if roi[2] > roi[0] and roi[3] > roi[1]]
    if not live:
        return frame
    height = max(y2 - y1 for _, (_, y1, _, y2) in live)
    width = max(x2 - x1 for _, (x1, _, x2, _) in live)
    matrices = to_device(matrices, frame.device).to(torch.float32)
    # ROI pixel (u, v) is frame pixel (u + x1, v + y1); the crop pixel is M @ that.
    offsets = constant([[float(roi[0]), float(roi[1])] for roi in rois], matrices)
    shifted = matrices.clone()
    shifted[:, :, 2] += (matrices[:, :, :2] * offsets[:, None, :]).sum(dim=-1)
    source_size = (int(faces.shape[2]), int(faces.shape[3]))
    grid = affine_grid(shifted, source_size, (height, width), inverse_map=True)
    # As OpenCV code pastes: the face's edge replicated, the alpha zero outside the crop.
    warped = F.grid_sample(faces, grid, padding_mode="border", align_corners=False)
    weights = F.grid_sample(alphas.to(faces.dtype), grid, align_corners=False)
    for index, (x1, y1, x2, y2) in live:
        face = warped[index, :, : y2 - y1, : x2 - x1]
        alpha = weights[index, :, : y2 - y1, : x2 - x1]
        region = frame[:, y1:y2, x1:x2]
        if region.is_floating_point():
            region.copy_(alpha_blend(region, face, alpha))
        else:
            region.copy_(to_uint8(alpha_blend(to_float(region), face, alpha)))
    return frame
