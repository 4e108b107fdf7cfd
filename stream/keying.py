"""Key-colour background for the OBS overlay: only the people's heads stay visible.

`KeyedBackground` wraps any effect: after the effect has run, every pixel outside
the tracked faces' head regions (an ellipse around each face box, grown to take in
hair and chin) is painted in a key colour, pure green by default. The edge is hard:
a pixel is either the key colour or the picture, never a mix of both, since a mixed
pixel is neither keyed out nor clean (a green halo around the head). The smooth
ellipse curve comes from a soft mask cut at half height; the soft, anti-aliased
edge is the keyer's work (the overlay's shader, OBS's Chroma Key smoothness).
The overlay page turns that colour transparent (`background=transparent`), or OBS's
Chroma Key filter does (`background=green`). A WHIP publisher asks for it with
`?background=green` (or `?background=RRGGBB`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import cv2
import numpy as np

from engines.effects.base import Color, Effect, EffectSpec
from engines.types import Face

GREEN: Color = (0, 255, 0)
_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")
_MASK_SCALE = 4  # the mask is drawn and blurred at 1/4 resolution
KEY_EDGE = 0.5  # head_mask level where the key colour begins


def parse_key_colour(value: str) -> Color:
    """'green' or 'RRGGBB' (optionally with #) -> RGB; ValueError otherwise."""
    if value.strip().lower() == "green":
        return GREEN
    match = _HEX.match(value.strip())
    if match is None:
        raise ValueError(f"background must be 'green' or a colour RRGGBB, got {value!r}")
    digits = match.group(1)
    return (int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16))


def head_mask(shape: tuple[int, int], faces: Sequence[Face], grow: float = 0.45) -> np.ndarray:
    """HxW float32 in [0, 1]: 1 inside each face's head ellipse, soft edge, 0 elsewhere."""
    height, width = shape
    small = np.zeros((max(height // _MASK_SCALE, 1), max(width // _MASK_SCALE, 1)), np.float32)
    for face in faces:
        x1, y1, x2, y2 = (float(v) / _MASK_SCALE for v in face.box)
        face_w, face_h = x2 - x1, y2 - y1
        centre = (round((x1 + x2) / 2), round((y1 + y2) / 2 - 0.1 * face_h))
        axes = (round(face_w * (0.5 + grow)), round(face_h * (0.55 + grow)))
        if min(axes) > 0:
            cv2.ellipse(small, centre, axes, 0, 0, 360, 1.0, thickness=-1)
    soft = max(2, round(0.02 * max(small.shape)))
    blurred: np.ndarray = cv2.GaussianBlur(small, (0, 0), soft)
    mask: np.ndarray = cv2.resize(blurred, (width, height), interpolation=cv2.INTER_LINEAR)
    return mask


class KeyedBackground(Effect):
    """`inner`, then everything outside the heads painted in `colour` (RGB, hard edge)."""

    name = "keyed_background"

    def __init__(self, inner: Effect, colour: Color = GREEN) -> None:
        self.inner = inner
        self._key = np.asarray(colour, np.uint8)

    def apply(self, frame: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """HxWx3 uint8 RGB -> the same shape: `inner`'s output inside the heads, else the key."""
        out = self.inner.apply(frame, faces)
        inside = head_mask(out.shape[:2], faces) >= KEY_EDGE
        keyed: np.ndarray = np.where(inside[:, :, None], out, self._key)
        return keyed

    def close(self) -> None:
        self.inner.close()


def keyed_spec(spec: EffectSpec) -> EffectSpec:
    """`spec` with face tracking switched on (the mask needs the faces)."""
    return dataclasses.replace(spec, needs_faces=True)
