"""Effects that need no face model: none, cartoon, sketch, stylize (OpenCV).

Tuned for CPU real time: the expensive edge-preserving smoothing runs at half
resolution and is scaled back up, so 640x480 stays well inside 33 ms on 2 cores.
All functions take and return HxWx3 uint8 RGB arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from engines.effects.base import Effect, EffectResources, EffectSpec, ParamSpec
from engines.types import Face


def _half(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    return cv2.resize(
        image, (max(width // 2, 1), max(height // 2, 1)), interpolation=cv2.INTER_AREA
    )


def _full(image: np.ndarray, like: np.ndarray) -> np.ndarray:
    return cv2.resize(image, (like.shape[1], like.shape[0]), interpolation=cv2.INTER_LINEAR)


class NoEffect(Effect):
    """Passes the frame through unchanged."""

    name = "none"

    def apply(self, frame: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        return frame


class Cartoon(Effect):
    """Flat colour regions (bilateral smoothing + posterise) with dark ink edges."""

    name = "cartoon"

    def __init__(self, levels: int, edge_strength: float, smoothness: int) -> None:
        step = 256 / levels
        self._lut = np.clip((np.floor(np.arange(256) / step) + 0.5) * step, 0, 255).astype(np.uint8)
        self._edge_strength = edge_strength
        self._smoothness = smoothness

    def apply(self, frame: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        small = _half(frame)
        for _ in range(self._smoothness):
            small = cv2.bilateralFilter(small, 7, 40, 5)
        flat = cv2.LUT(_full(small, frame), self._lut)
        gray = cv2.medianBlur(cv2.cvtColor(_half(frame), cv2.COLOR_RGB2GRAY), 5)
        edges = cv2.adaptiveThreshold(
            gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 9, 6
        )
        ink = _full(edges, frame).astype(np.float32) / 255.0
        ink = 1.0 - self._edge_strength * (1.0 - ink)
        return (flat * ink[:, :, None]).astype(np.uint8)


class Sketch(Effect):
    """Pencil drawing by colour dodge of the grey image with its blurred negative."""

    name = "sketch"

    def __init__(self, blur: float, colour: bool) -> None:
        self._blur = blur
        self._colour = colour

    def apply(self, frame: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        small_negative = 255 - _half(gray)
        blurred = _full(cv2.GaussianBlur(small_negative, (0, 0), self._blur / 2), gray)
        pencil = cv2.divide(gray, 255 - blurred, scale=256)
        if not self._colour:
            return cv2.cvtColor(pencil, cv2.COLOR_GRAY2RGB)
        tint = cv2.addWeighted(frame, 0.55, np.full_like(frame, 255), 0.45, 0)
        return cv2.multiply(tint, cv2.cvtColor(pencil, cv2.COLOR_GRAY2RGB), scale=1 / 255)


class Stylize(Effect):
    """Painterly look: edge-preserving smoothing, richer colour, crisp detail."""

    name = "stylize"

    def __init__(self, strength: float, saturation: float) -> None:
        self._sigma_r = 0.1 + 0.5 * strength
        self._saturation = saturation

    def apply(self, frame: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        small = cv2.edgePreservingFilter(
            _half(frame), flags=cv2.RECURS_FILTER, sigma_s=40, sigma_r=self._sigma_r
        )
        painted = _full(small, frame)
        hsv = cv2.cvtColor(painted, cv2.COLOR_RGB2HSV)
        hsv[:, :, 1] = cv2.convertScaleAbs(hsv[:, :, 1], alpha=self._saturation)
        painted = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        detail = cv2.subtract(frame, cv2.GaussianBlur(frame, (0, 0), 2))
        return cv2.add(painted, detail)


def _none(_params: Mapping[str, Any], _resources: EffectResources) -> Effect:
    return NoEffect()


def _cartoon(params: Mapping[str, Any], _resources: EffectResources) -> Effect:
    return Cartoon(params["levels"], params["edge_strength"], params["smoothness"])


def _sketch(params: Mapping[str, Any], _resources: EffectResources) -> Effect:
    return Sketch(params["blur"], params["colour"])


def _stylize(params: Mapping[str, Any], _resources: EffectResources) -> Effect:
    return Stylize(params["strength"], params["saturation"])


SPECS = (
    EffectSpec(name="none", description="the camera image, unchanged", params={}, factory=_none),
    EffectSpec(
        name="cartoon",
        description="flat colours with ink outlines",
        params={
            "levels": ParamSpec("int", 8, 2, 32, help="colour levels per channel"),
            "edge_strength": ParamSpec("float", 0.9, 0.0, 1.0, help="darkness of the outlines"),
            "smoothness": ParamSpec("int", 2, 1, 4, help="smoothing passes"),
        },
        factory=_cartoon,
    ),
    EffectSpec(
        name="sketch",
        description="pencil drawing",
        params={
            "blur": ParamSpec("float", 12.0, 2.0, 40.0, help="stroke softness"),
            "colour": ParamSpec("bool", False, help="coloured pencil"),
        },
        factory=_sketch,
    ),
    EffectSpec(
        name="stylize",
        description="painterly colours and crisp detail",
        params={
            "strength": ParamSpec("float", 0.6, 0.0, 1.0, help="how much flat areas are smoothed"),
            "saturation": ParamSpec("float", 1.3, 0.0, 3.0, help="colour saturation"),
        },
        factory=_stylize,
    ),
)
