"""Key-colour background for the OBS overlay: only the people's heads stay visible.

`KeyedBackground` wraps any effect: after the effect has run, every pixel outside
the tracked faces' head regions (an ellipse around each face box, grown to take in
hair and chin, with a soft edge) is painted in a key colour, pure green by default.
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
    """`inner`, then everything outside the heads painted in `colour` (RGB)."""

    name = "keyed_background"

    def __init__(self, inner: Effect, colour: Color = GREEN) -> None:
        self.inner = inner
        self._key = np.asarray(colour, np.float32)

    def apply(self, frame: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        out = self.inner.apply(frame, faces)
        mask = head_mask(out.shape[:2], faces)[:, :, None]
        keyed = out.astype(np.float32) * mask + self._key * (1.0 - mask)
        return np.clip(keyed + 0.5, 0, 255).astype(np.uint8)

    def close(self) -> None:
        self.inner.close()


def keyed_spec(spec: EffectSpec) -> EffectSpec:
    """`spec` with face tracking switched on (the mask needs the faces)."""
    return dataclasses.replace(spec, needs_faces=True)
