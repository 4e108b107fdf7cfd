"""Warp and colour augmentation of training faces, batched in torch.

The autoencoder learns to undo a random smooth warp: the network sees a warped
face and must draw the unwarped one. Both the input and the target share a random
similarity transform (rotation, zoom, shift, mirror) and a random colour change,
so the pair stays pixel-aligned apart from the warp. Tensors are float32
(B, C, S, S), images RGB in [-1, 1], on any device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Strength of each augmentation; zero turns one off.

    rotation_deg, zoom, shift: ranges of the shared similarity transform (uniform in
        +/- range; zoom and shift as fractions of the side). mirror: flip half the faces.
    warp: standard deviation of the smooth warp's displacement, as a fraction of the
        side; warp_grid: control points per side of the warp.
    brightness, contrast, saturation: ranges of the shared colour change.
    """

    rotation_deg: float = 10.0
    zoom: float = 0.05
    shift: float = 0.05
    mirror: bool = True
    warp: float = 0.02
    warp_grid: int = 5
    brightness: float = 0.1
    contrast: float = 0.15
    saturation: float = 0.15


@dataclass(frozen=True)
class AugmentedBatch:
    """inputs: warped faces for the encoder; targets: the same faces unwarped;
    regions: the (B, R, S, S) region masks moved like the targets."""

    inputs: torch.Tensor
    targets: torch.Tensor
    regions: torch.Tensor


def _uniform(count: int, spread: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(count, generator=generator) * 2.0 - 1.0) * spread


def similarity_thetas(
    batch: int, config: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """(B, 2, 3) float32 affine_grid matrices (output -> input, normalised coordinates)."""
    angle = _uniform(batch, math.radians(config.rotation_deg), generator)
    scale = 1.0 + _uniform(batch, config.zoom, generator)
    shift = torch.stack([_uniform(batch, config.shift * 2, generator) for _ in range(2)], dim=1)
    flip = torch.ones(batch)
    if config.mirror:
        flip = torch.where(torch.rand(batch, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * flip, cos
    theta[:, :, 2] = shift
    return theta


def smooth_warp_offsets(
    batch: int, size: int, config: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """(B, S, S, 2) float32 smooth random displacements in normalised coordinates."""
    coarse = torch.randn(batch, 2, config.warp_grid, config.warp_grid, generator=generator)
    coarse = coarse * (2.0 * config.warp)
    dense = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)
    return dense.permute(0, 2, 3, 1)


def colour_jitter(
    images: torch.Tensor, config: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """Random brightness, contrast and saturation per face; keeps [-1, 1]."""
    batch = images.shape[0]

    def factor(spread: float) -> torch.Tensor:
        return _uniform(batch, spread, generator).to(images.device).view(batch, 1, 1, 1)

    x = (images + 1.0) * 0.5
    x = x + factor(config.brightness)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (1.0 + factor(config.contrast)) + mean
    grey = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    x = grey + (x - grey) * (1.0 + factor(config.saturation))
    return x.clamp(0.0, 1.0) * 2.0 - 1.0


def augment_batch(
    images: torch.Tensor, regions: torch.Tensor, config: AugmentConfig, generator: torch.Generator
) -> AugmentedBatch:
    """Make (warped input, target) pairs from aligned faces.

    images: (B, 3, S, S) RGB in [-1, 1]. regions: (B, R, S, S) masks in [0, 1] (eyes,
    mouth) that follow the targets. Random numbers come from `generator` (CPU).
    """
    batch, _, size, _ = images.shape
    device = images.device
    images = colour_jitter(images, config, generator)
    theta = similarity_thetas(batch, config, generator).to(device)
    grid = F.affine_grid(theta, [batch, 3, size, size], align_corners=False)
    targets = F.grid_sample(
        images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )
    moved = F.grid_sample(regions, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if config.warp > 0:
        grid = grid + smooth_warp_offsets(batch, size, config, generator).to(device)
    inputs = F.grid_sample(
        images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )
    return AugmentedBatch(inputs=inputs, targets=targets, regions=moved)
