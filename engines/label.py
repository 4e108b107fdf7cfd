"""The visible "AI-modified" label drawn on frames whose faces were changed.

The label is a badge in one corner of the frame: white text on a dark,
semi-opaque box, its height a fixed fraction of the frame height (never below
a readable minimum), so it is legible at any resolution and survives video
compression. Rendering is deterministic: the same frame size and style give
the same badge at the same place, which `label_score` uses to tell whether a
frame carries it.

All images are HxWx3 uint8 RGB numpy arrays in host memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import cv2
import numpy as np

LABEL_TEXT = "AI-modified"

Corner = Literal["top-left", "top-right", "bottom-left", "bottom-right"]

_FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class LabelStyle:
    """How the badge looks.

    height_fraction: badge height relative to the frame height.
    min_height: the smallest badge height in pixels (legibility on small frames).
    margin_fraction: gap between badge and frame edges, relative to the frame height.
    box_opacity: opacity of the dark box behind the text, 0..1 (the text is opaque).
    box_rgb, text_rgb: colours, RGB.
    """

    text: str = LABEL_TEXT
    corner: Corner = "bottom-right"
    height_fraction: float = 0.045
    min_height: int = 16
    margin_fraction: float = 0.02
    box_opacity: float = 0.7
    box_rgb: tuple[int, int, int] = (16, 16, 16)
    text_rgb: tuple[int, int, int] = (255, 255, 255)


DEFAULT_STYLE = LabelStyle()


@dataclass(frozen=True)
class Badge:
    """A rendered badge for one frame size.

    x, y: top-left corner of the badge in the frame, pixels.
    rgb: (h, w, 3) uint8 badge colours (box and text).
    alpha: (h, w, 1) float32 opacity per pixel (box_opacity on the box, 1 on text).
    text_mask: (h, w) float32 in [0, 1], anti-aliased text coverage.
    """

    x: int
    y: int
    rgb: np.ndarray
    alpha: np.ndarray
    text_mask: np.ndarray

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


def _fit_text(
    text: str, box_height: int, max_width: int
) -> tuple[float, int, tuple[int, int], int]:
    """Font scale, thickness, text size and baseline so the text fills ~60% of the box height."""
    (_, unit_height), _ = cv2.getTextSize(text, _FONT, 1.0, 1)
    scale = 0.6 * box_height / max(unit_height, 1)
    thickness = max(1, round(scale * 1.6))
    (width, height), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
    pad = box_height // 2
    if width + 2 * pad > max_width:  # very narrow frame: shrink to fit
        scale *= (max_width - 2 * pad) / max(width, 1)
        thickness = max(1, round(scale * 1.6))
        (width, height), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
    return scale, thickness, (width, height), baseline


@lru_cache(maxsize=32)
def render_badge(frame_width: int, frame_height: int, style: LabelStyle = DEFAULT_STYLE) -> Badge:
    """The badge for a frame of this size, positioned in `style.corner`.

    Raises ValueError for a frame too small to hold a legible badge (< 32x16).
    """
    if frame_width < 32 or frame_height < 16:
        raise ValueError(f"a {frame_width}x{frame_height} frame is too small for the label")
    box_height = min(
        frame_height, max(style.min_height, round(style.height_fraction * frame_height))
    )
    margin = round(style.margin_fraction * frame_height)
    max_width = frame_width - 2 * margin
    scale, thickness, (text_w, text_h), _baseline = _fit_text(style.text, box_height, max_width)
    pad = box_height // 2
    box_width = min(max_width, text_w + 2 * pad)

    mask = np.zeros((box_height, box_width), np.uint8)
    origin = ((box_width - text_w) // 2, (box_height + text_h) // 2)
    cv2.putText(mask, style.text, origin, _FONT, scale, 255, thickness, cv2.LINE_AA)
    text_mask = mask.astype(np.float32) / 255.0

    coverage = text_mask[:, :, None]
    rgb = (1 - coverage) * np.asarray(style.box_rgb, np.float32) + coverage * np.asarray(
        style.text_rgb, np.float32
    )
    alpha = style.box_opacity + (1 - style.box_opacity) * coverage

    x = margin if style.corner.endswith("left") else frame_width - margin - box_width
    y = margin if style.corner.startswith("top") else frame_height - margin - box_height
    badge = Badge(
        x=x, y=y, rgb=rgb.astype(np.uint8), alpha=alpha.astype(np.float32), text_mask=text_mask
    )
    for array in (badge.rgb, badge.alpha, badge.text_mask):
        array.setflags(write=False)
    return badge


def draw_label(image: np.ndarray, style: LabelStyle = DEFAULT_STYLE) -> np.ndarray:
    """Blend the badge into `image` (HxWx3 uint8 RGB) in place and return it.

    The image must be writable and C-contiguous; only the badge region changes.
    What shows through the box is the region's brightness only (no colour), so the
    badge carries no key colour and survives a chroma key (the OBS overlay keys
    green backgrounds out after the label is drawn).
    """
    height, width = image.shape[:2]
    badge = render_badge(width, height, style)
    region = image[badge.y : badge.y + badge.height, badge.x : badge.x + badge.width]
    gray = cv2.cvtColor(np.ascontiguousarray(region), cv2.COLOR_RGB2GRAY).astype(np.float32)
    behind = gray[:, :, None]
    blended = behind * (1 - badge.alpha) + badge.rgb.astype(np.float32) * badge.alpha
    region[...] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    return image


def label_score(image: np.ndarray, style: LabelStyle = DEFAULT_STYLE) -> float:
    """How strongly `image` shows the badge: correlation of the badge region with the text.

    image: HxWx3 uint8 RGB. Returns a value in [-1, 1]: above ~0.6 for a labelled
    frame (also after lossy video coding), near 0 for ordinary content.
    """
    height, width = image.shape[:2]
    badge = render_badge(width, height, style)
    region = image[badge.y : badge.y + badge.height, badge.x : badge.x + badge.width]
    gray = cv2.cvtColor(np.ascontiguousarray(region), cv2.COLOR_RGB2GRAY).astype(np.float32)
    reference = badge.text_mask
    gray -= gray.mean()
    centred = reference - reference.mean()
    denominator = float(np.sqrt((gray * gray).sum() * (centred * centred).sum()))
    if denominator < 1e-6:
        return 0.0
    return float((gray * centred).sum() / denominator)


def has_label(image: np.ndarray, style: LabelStyle = DEFAULT_STYLE, threshold: float = 0.6) -> bool:
    """True when `image` (HxWx3 uint8 RGB) carries the badge."""
    return label_score(image, style) >= threshold
