"""Colour operations that stay on the device: OpenCV's RGB <-> Lab and colour transfer.

Works on float32 (B, 3, H, W) RGB in [0, 1] torch tensors on any device, without a
host sync (see engines.gpu_ops for the conventions).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from engines.gpu_ops import constant

# sRGB (D65) -> XYZ and the D65 white point, as OpenCV uses them for RGB <-> Lab.
_RGB_TO_XYZ = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
_XYZ_TO_RGB = tuple(tuple(row) for row in np.linalg.inv(np.array(_RGB_TO_XYZ)).tolist())
_WHITE = (0.950456, 1.0, 1.088754)
_LAB_EPS = 0.008856
_LAB_KAPPA = 903.3


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """cv2.cvtColor(float32 RGB in [0, 1], COLOR_RGB2Lab) on (B, 3, H, W): L in [0, 100],
    a and b roughly [-127, 127]; sRGB gamma and the D65 white as OpenCV has them."""
    rgb = rgb.clamp(0.0, 1.0)
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = torch.einsum("ij,bjhw->bihw", constant(_RGB_TO_XYZ, rgb), linear)
    xyz = xyz / constant(_WHITE, rgb).view(1, 3, 1, 1)
    f = torch.where(xyz > _LAB_EPS, xyz.clamp_min(1e-12) ** (1.0 / 3.0), 7.787 * xyz + 16.0 / 116.0)
    y = xyz[:, 1:2]
    lightness = torch.where(y > _LAB_EPS, 116.0 * f[:, 1:2] - 16.0, _LAB_KAPPA * y)
    a = 500.0 * (f[:, 0:1] - f[:, 1:2])
    b = 200.0 * (f[:, 1:2] - f[:, 2:3])
    return torch.cat([lightness, a, b], dim=1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Inverse of rgb_to_lab: (B, 3, H, W) Lab -> RGB in [0, 1] (clipped)."""
    lightness, a, b = lab[:, 0:1], lab[:, 1:2], lab[:, 2:3]
    y = torch.where(
        lightness > _LAB_KAPPA * _LAB_EPS, ((lightness + 16.0) / 116.0) ** 3, lightness / _LAB_KAPPA
    )
    fy = torch.where(y > _LAB_EPS, y.clamp_min(1e-12) ** (1.0 / 3.0), 7.787 * y + 16.0 / 116.0)
    fx, fz = fy + a / 500.0, fy - b / 200.0

    def finv(t: torch.Tensor) -> torch.Tensor:
        return torch.where(t**3 > _LAB_EPS, t**3, (t - 16.0 / 116.0) / 7.787)

    xyz = torch.cat([finv(fx), y, finv(fz)], dim=1) * constant(_WHITE, lab).view(1, 3, 1, 1)
    linear = torch.einsum("ij,bjhw->bihw", constant(_XYZ_TO_RGB, lab), xyz)
    linear = linear.clamp(0.0, 1.0)
    return torch.where(
        linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1.0 / 2.4) - 0.055
    ).clamp(0.0, 1.0)


def _masked_stats(
    values: torch.Tensor, weights: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image, per-channel weighted mean and standard deviation: (B, C, 1, 1) each."""
    total = weights.sum(dim=(2, 3), keepdim=True).clamp_min(eps)
    mean = (values * weights).sum(dim=(2, 3), keepdim=True) / total
    var = (((values - mean) ** 2) * weights).sum(dim=(2, 3), keepdim=True) / total
    return mean, var.clamp_min(0.0).sqrt()


def color_transfer(
    source: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    eps: float = 1e-6,
    *,
    space: Literal["lab", "rgb"] = "lab",
    ratio_range: tuple[float, float] | None = None,
    min_weight: float = 0.0,
) -> torch.Tensor:
    """Mean and spread transfer: `source` recoloured so its per-channel mean and standard
    deviation (weighted by `mask`) match `target`'s.

    source, target: (B, 3, H, W) float RGB in [0, 1] (e.g. generated and original
        aligned faces). mask: (B, 1, H, W) weights in [0, 1], or None for the whole
        image. space: "lab" (Reinhard, in OpenCV's Lab) or "rgb" (per RGB channel, as
        gan_swap's host colour_match). ratio_range: the spread ratio (target std + eps) /
        (source std + eps) is clamped into it (None: not clamped). min_weight: images whose
        mask sums to less (in pixels) come back unchanged (chosen on the device, no sync).
    Returns (B, 3, H, W) float RGB in [0, 1].
    """
    weights = mask if mask is not None else torch.ones_like(source[:, :1])
    lab = space == "lab"
    source_c = rgb_to_lab(source) if lab else source
    target_c = rgb_to_lab(target) if lab else target
    source_mean, source_std = _masked_stats(source_c, weights, eps)
    target_mean, target_std = _masked_stats(target_c, weights, eps)
    ratio = (target_std + eps) / (source_std + eps)
    if ratio_range is not None:
        ratio = ratio.clamp(*ratio_range)
    recoloured = (source_c - source_mean) * ratio + target_mean
    result = lab_to_rgb(recoloured) if lab else recoloured.clamp(0.0, 1.0)
    if min_weight > 0:
        enough = weights.sum(dim=(1, 2, 3), keepdim=True) >= min_weight
        result = torch.where(enough, result, source)
    return result
