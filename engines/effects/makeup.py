"""`makeup`: lipstick, eyebrow tint, eyeliner and eye colour on every tracked face.

Colour is changed in CIE Lab by shifting each region's mean towards the chosen
colour, so the texture and shading inside the region (lip creases, highlights,
single brow hairs) are kept: it reads as makeup, not paint. Masks come from the
68 landmarks, are feathered, and every size is a multiple of the eye distance, so
the result looks the same on a small and a large face. The mouth opening (teeth,
tongue) is never painted. Defaults are from face_recognition's digital makeup
example: brows RGB 68,54,39, lips 150,0,0, eyes 255,255,255, eyeliner black.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engines.effects.base import Color, Effect, EffectResources, EffectSpec, ParamSpec
from engines.face_geometry import (
    INNER_LIPS,
    LEFT_BROW,
    LEFT_EYE,
    OUTER_LIPS,
    RIGHT_BROW,
    RIGHT_EYE,
    colour_lab,
    face_scale,
    feather,
    fill_polygons,
    from_lab,
    roi_around,
    to_lab,
)
from engines.types import Face

logger = logging.getLogger(__name__)

REGIONS = ("lips", "eyebrows", "eyeliner", "eyes")
_DEFAULTS: dict[str, tuple[Color, float]] = {
    "lips": ((150, 0, 0), 0.5),
    "eyebrows": ((68, 54, 39), 0.5),
    "eyeliner": ((0, 0, 0), 0.5),
    "eyes": ((255, 255, 255), 0.15),
}
# How much of the lightness difference each region takes (1 = all of it); the rest
# of the region's own lightness (its shading) stays.
_LIGHTNESS_SHARE = {"lips": 0.7, "eyebrows": 0.8, "eyeliner": 1.0, "eyes": 0.5}
# The landmarks each region's mask lies around, and the margin (in eye distances)
# that holds its feathering, thickness and eyeliner wing.
_REGION_POINTS = {
    "lips": OUTER_LIPS,
    "eyebrows": np.concatenate([LEFT_BROW, RIGHT_BROW]),
    "eyeliner": np.concatenate([LEFT_EYE, RIGHT_EYE]),
    "eyes": np.concatenate([LEFT_EYE, RIGHT_EYE]),
}
_REGION_PAD = {"lips": 0.15, "eyebrows": 0.3, "eyeliner": 0.25, "eyes": 0.08}


@dataclass(frozen=True)
class Paint:
    """One region's colour (Lab, (3,) float32) and intensity (0-1)."""

    lab: np.ndarray
    intensity: float


def _paint_from(params: Mapping[str, Any], region: str) -> Paint:
    return Paint(colour_lab(params[f"{region}_color"]), float(params[f"{region}_intensity"]))


def _perpendicular_up(points: np.ndarray, towards: np.ndarray) -> np.ndarray:
    """(K, 2) unit normals of a polyline, each pointing away from `towards` (2,)."""
    tangent = np.gradient(points, axis=0)
    normal = np.stack([tangent[:, 1], -tangent[:, 0]], axis=1)
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-6)
    flip = ((points - towards) * normal).sum(axis=1) < 0
    normal[flip] *= -1
    return normal


def lips_mask(shape: tuple[int, int], points: np.ndarray, scale: float) -> np.ndarray:
    """Feathered mask of the lips without the mouth opening. points: (68, 2) ROI pixels."""
    outer = feather(fill_polygons(shape, [points[OUTER_LIPS]]), 0.04 * scale)
    opening = fill_polygons(shape, [points[INNER_LIPS]])
    return outer * (1.0 - np.minimum(feather(opening, 0.02 * scale) * 1.5, 1.0))


def eyebrow_mask(shape: tuple[int, int], points: np.ndarray, scale: float) -> np.ndarray:
    """Feathered band along both eyebrows, tapering towards the tails."""
    polygons = []
    # 17 is the tail of the left brow, 22 the inner end of the right one.
    for brow, eye, inner_first in ((LEFT_BROW, LEFT_EYE, False), (RIGHT_BROW, RIGHT_EYE, True)):
        line = points[brow]
        up = _perpendicular_up(line, points[eye].mean(axis=0))
        taper = np.linspace(1.0, 0.55, len(line))
        if not inner_first:
            taper = taper[::-1]
        thickness = (0.2 * scale * taper)[:, None]
        top = line + up * thickness * 0.5
        bottom = line - up * thickness * 0.6
        polygons.append(np.concatenate([top, bottom[::-1]]))
    return feather(fill_polygons(shape, polygons), 0.04 * scale)


def eyeliner_mask(shape: tuple[int, int], points: np.ndarray, scale: float) -> np.ndarray:
    """Feathered line along both upper lids, thicker outwards, with a small wing."""
    polygons = []
    for lid, centre in (
        (points[[39, 38, 37, 36]], points[LEFT_EYE].mean(axis=0)),
        (points[[42, 43, 44, 45]], points[RIGHT_EYE].mean(axis=0)),
    ):
        up = _perpendicular_up(lid, centre)
        thickness = np.linspace(0.02, 0.075, len(lid))[:, None] * scale
        outward = lid[-1] - lid[0]
        tip = lid[-1] + 0.22 * outward + up[-1] * 0.1 * np.linalg.norm(outward)
        lash_line = lid - up * 0.01 * scale
        polygons.append(np.concatenate([lash_line, tip[None], (lid + up * thickness)[::-1]]))
    return feather(fill_polygons(shape, polygons), 0.012 * scale)


def eyes_mask(shape: tuple[int, int], points: np.ndarray, scale: float) -> np.ndarray:
    """Feathered mask of both eye openings, pulled in slightly from the lids."""
    polygons = []
    for eye in (LEFT_EYE, RIGHT_EYE):
        contour = points[eye]
        centre = contour.mean(axis=0)
        polygons.append(centre + (contour - centre) * 0.9)
    return feather(fill_polygons(shape, polygons), 0.02 * scale)


def _dark_share(lightness: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """0-1 per pixel: how dark it is against the region's lighter pixels (hair on
    skin, iris on white); weights the paint so single hairs and the iris take most."""
    values = lightness[mask > 0.5]
    if values.size < 8:
        return np.ones_like(lightness)
    light, dark = np.percentile(values, [85, 15])
    return np.clip((light - lightness) / max(float(light - dark), 1.0), 0.0, 1.0)


def _shift_towards(
    lab: np.ndarray, weight: np.ndarray, paint: Paint, lightness_share: float
) -> None:
    """Move the weighted mean of `lab` towards `paint.lab`, in place, keeping texture."""
    core = weight > 0.5 * float(weight.max(initial=0.0))
    if not core.any():
        return
    mean = lab[core].mean(axis=0)
    delta = paint.lab - mean
    delta[0] *= lightness_share
    lab += (weight * paint.intensity)[..., None] * delta


class Makeup(Effect):
    """Paints the four regions with their colours on every face that has landmarks68."""

    name = "makeup"

    def __init__(self, paints: Mapping[str, Paint]) -> None:
        self.paints = {region: paint for region, paint in paints.items() if paint.intensity > 0}

    def apply(self, frame: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        for face in faces:
            if face.landmarks68 is not None and self.paints:
                self._paint_face(frame, np.asarray(face.landmarks68, np.float32))
        return frame

    def _paint_face(self, frame: np.ndarray, landmarks: np.ndarray) -> None:
        scale = face_scale(landmarks)
        if scale < 4.0:
            return
        roi = roi_around(landmarks[17:68], 0.3 * scale, frame.shape)
        if roi.empty:
            return
        points = landmarks - roi.origin
        original = frame[roi.slices]
        lab = to_lab(original)
        total = np.zeros((roi.height, roi.width), np.float32)
        for region, paint in self.paints.items():
            part = roi_around(
                points[_REGION_POINTS[region]], _REGION_PAD[region] * scale, lab.shape
            )
            if part.empty:
                continue
            part_lab = lab[part.slices]
            weight = self._weight(
                region, (part.height, part.width), points - part.origin, scale, part_lab[..., 0]
            )
            _shift_towards(part_lab, weight, paint, _LIGHTNESS_SHARE[region])
            np.maximum(total[part.slices], weight, out=total[part.slices])
        painted = from_lab(lab)
        touched = total > 1e-3
        original[touched] = painted[touched]

    @staticmethod
    def _weight(
        region: str, shape: tuple[int, int], points: np.ndarray, scale: float, lightness: np.ndarray
    ) -> np.ndarray:
        if region == "lips":
            return lips_mask(shape, points, scale)
        if region == "eyeliner":
            return eyeliner_mask(shape, points, scale)
        mask = (
            eyebrow_mask(shape, points, scale)
            if region == "eyebrows"
            else eyes_mask(shape, points, scale)
        )
        return mask * (0.35 + 0.65 * _dark_share(lightness, mask))


def _build(params: Mapping[str, Any], _resources: EffectResources) -> Effect:
    return Makeup({region: _paint_from(params, region) for region in REGIONS})


def _params() -> dict[str, ParamSpec]:
    params: dict[str, ParamSpec] = {}
    for region in REGIONS:
        colour, intensity = _DEFAULTS[region]
        params[f"{region}_color"] = ParamSpec("color", colour, help=f"{region} colour (RGB)")
        params[f"{region}_intensity"] = ParamSpec(
            "float", intensity, min=0.0, max=1.0, help=f"{region} strength, 0 = off"
        )
    return params


SPECS = (
    EffectSpec(
        name="makeup",
        description="lipstick, eyebrow tint, eyeliner and eye colour that follow the face",
        params=_params(),
        factory=_build,
        needs_faces=True,
        needs_landmarks68=True,
    ),
)
