"""Where every level of the P-Net pyramid lives: pure geometry, no tensors.

:class:`PyramidLayout` is the P-Net scale pyramid (the same scales and level sizes
as facenet-pytorch) packed into one canvas, so that the whole pyramid is one P-Net
pass. Every level sits at even offsets in an even-sized slot: P-Net has stride 2,
so its output grid stays aligned with each level's own grid. Computed once per
input size and cached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

PNET_CELL = 12
PNET_STRIDE = 2
_UNBOUNDED = 1 << 30


@dataclass(frozen=True)
class Placement:
    """A rectangle of `height` x `width` pixels at (`top`, `left`) in a canvas."""

    top: int
    left: int
    height: int
    width: int


@dataclass(frozen=True)
class PyramidLevel:
    """One pyramid level: the image resized by `scale` to `height` x `width` (the
    reference's int(h * scale + 1)), placed at `slot` (even-sized, even offsets)."""

    scale: float
    height: int
    width: int
    slot: Placement

    @property
    def out_height(self) -> int:
        """Rows of P-Net output cells this level has on its own."""
        return math.ceil((self.height - 2) / 2) - 4

    @property
    def out_width(self) -> int:
        return math.ceil((self.width - 2) / 2) - 4


@dataclass(frozen=True)
class PyramidLayout:
    """All levels of one image's pyramid, packed into a canvas_height x canvas_width canvas."""

    image_height: int
    image_width: int
    levels: tuple[PyramidLevel, ...]
    canvas_height: int
    canvas_width: int

    @property
    def out_height(self) -> int:
        """Rows of the P-Net output on the whole canvas."""
        return self.canvas_height // 2 - 5

    @property
    def out_width(self) -> int:
        return self.canvas_width // 2 - 5


def pyramid_scales(height: int, width: int, min_face_size: float, factor: float) -> list[float]:
    """The scales facenet-pytorch's MTCNN uses (same float arithmetic, same stop rule)."""
    m = 12.0 / min_face_size
    min_side = min(height, width) * m
    scales = []
    scale = m
    while min_side >= 12:
        scales.append(scale)
        scale = scale * factor
        min_side = min_side * factor
    return scales


def _even(value: int) -> int:
    return value + (value & 1)


def _pack(sizes: list[tuple[int, int]], width: int) -> tuple[list[Placement], int]:
    """Guillotine packing of (height, width) rectangles, largest first, into a canvas of
    fixed `width`; returns the placements (input order) and the canvas height."""
    free = [Placement(0, 0, _UNBOUNDED, width)]
    placed: list[Placement] = []
    for height, w in sizes:
        fits = [rect for rect in free if rect.width >= w and rect.height >= height]
        if not fits:
            raise ValueError(f"a {height}x{w} level does not fit a canvas {width} wide")
        rect = min(fits, key=lambda r: (r.top + height, r.width * min(r.height, _UNBOUNDED)))
        free.remove(rect)
        placed.append(Placement(rect.top, rect.left, height, w))
        if rect.width > w:
            free.append(Placement(rect.top, rect.left + w, height, rect.width - w))
        if rect.height > height:
            free.append(Placement(rect.top + height, rect.left, rect.height - height, rect.width))
    return placed, max(p.top + p.height for p in placed)


@lru_cache(maxsize=64)
def plan_pyramid(height: int, width: int, min_face_size: float, factor: float) -> PyramidLayout:
    """The packed P-Net pyramid for a height x width image (cached).

    Tries a few canvas widths and keeps the packing with the smallest area.
    Raises ValueError when the image is too small for even one level.
    """
    scales = pyramid_scales(height, width, min_face_size, factor)
    if not scales:
        raise ValueError(
            f"a {width}x{height} image is smaller than the smallest face ({min_face_size} px)"
        )
    sizes = [(int(height * s + 1), int(width * s + 1)) for s in scales]
    slots = [(_even(h), _even(w)) for h, w in sizes]
    packings = []
    for extra in [0] + [w for _, w in slots[1:]]:
        placed, canvas_height = _pack(slots, slots[0][1] + extra)
        packings.append(
            (canvas_height * (slots[0][1] + extra), placed, canvas_height, slots[0][1] + extra)
        )
    _, placed, canvas_height, canvas_width = min(packings, key=lambda packing: packing[0])
    levels = tuple(
        PyramidLevel(scale=s, height=h, width=w, slot=slot)
        for s, (h, w), slot in zip(scales, sizes, placed, strict=True)
    )
    return PyramidLayout(height, width, levels, canvas_height, canvas_width)
