"""`blur`: hide every tracked face (privacy), by pixelating or blurring it.

The hidden area is the face box grown by `margin` (a fraction of the box's size on
each side), so hair, ears and a box that lags a fast head are covered too.
`strength` sets how coarse the result is, relative to the face size, so a far and
a near face are equally unrecognisable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from engines.effects.base import Effect, EffectResources, EffectSpec, ParamSpec
from engines.types import Face


def grown_box(
    box: np.ndarray, margin: float, frame_shape: tuple[int, ...]
) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 ints of `box` grown by `margin` of its width/height per side, clipped."""
    height, width = frame_shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    dx, dy = margin * (x2 - x1), margin * (y2 - y1)
    return (
        int(np.clip(np.floor(x1 - dx), 0, width)),
        int(np.clip(np.floor(y1 - dy), 0, height)),
        int(np.clip(np.ceil(x2 + dx), 0, width)),
        int(np.clip(np.ceil(y2 + dy), 0, height)),
    )


class FaceBlur(Effect):
    """Pixelates (`mode="pixelate"`) or Gaussian-blurs (`mode="gaussian"`) every face.

    margin: growth of each face box per side, as a fraction of its size.
    strength: 0-1; pixelate: 12 blocks across the face at 0, 4 at 1; gaussian: sigma
    from 5 % to 25 % of the face size.
    """

    name = "blur"

    def __init__(self, mode: str, margin: float, strength: float) -> None:
        self.mode = mode
        self.margin = margin
        self.strength = strength

    def apply(self, frame: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        for face in faces:
            x0, y0, x1, y1 = grown_box(face.box, self.margin, frame.shape)
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            region = frame[y0:y1, x0:x1]
            size = max(face.width, face.height, 1.0)
            if self.mode == "pixelate":
                region[...] = self._pixelate(region, size)
            else:
                region[...] = self._gaussian(region, size)
        return frame

    def _pixelate(self, region: np.ndarray, face_size: float) -> np.ndarray:
        blocks_across_face = 12.0 - 8.0 * self.strength
        block = max(face_size / blocks_across_face, 2.0)
        height, width = region.shape[:2]
        small = (max(round(width / block), 1), max(round(height / block), 1))
        tiny = cv2.resize(region, small, interpolation=cv2.INTER_AREA)
        return cv2.resize(tiny, (width, height), interpolation=cv2.INTER_NEAREST)

    def _gaussian(self, region: np.ndarray, face_size: float) -> np.ndarray:
        sigma = face_size * (0.05 + 0.2 * self.strength)
        # Blur a downscaled copy: same look, a fraction of the cost on large faces.
        step = max(int(sigma / 4), 1)
        height, width = region.shape[:2]
        small = cv2.resize(
            region, (max(width // step, 1), max(height // step, 1)), interpolation=cv2.INTER_AREA
        )
        blurred = cv2.GaussianBlur(small, (0, 0), sigma / step, borderType=cv2.BORDER_REPLICATE)
        return cv2.resize(blurred, (width, height), interpolation=cv2.INTER_LINEAR)


def _build(params: Mapping[str, Any], _resources: EffectResources) -> Effect:
    return FaceBlur(str(params["mode"]), float(params["margin"]), float(params["strength"]))


SPECS = (
    EffectSpec(
        name="blur",
        description="Hide every face (privacy): pixelate or blur",
        params={
            "mode": ParamSpec(
                "choice", "pixelate", choices=("pixelate", "gaussian"), help="how faces are hidden"
            ),
            "margin": ParamSpec(
                "float", 0.2, min=0.0, max=1.0, help="growth of the face box per side, fraction"
            ),
            "strength": ParamSpec("float", 0.7, min=0.0, max=1.0, help="0 = light, 1 = coarsest"),
        },
        factory=_build,
        needs_faces=True,
    ),
)
