"""`neural_style`: fast neural style transfer of the whole frame (engines.style_net).

The model is `--model PATH` (resources.model_path) when given, else the first file by
name in weights/style/ (*.pth, *.pt): either a model written by engines.style_train or a
state dict of the classic PyTorch fast-neural-style example. Models are loaded once per
file version and device and shared by every effect instance.

Per frame: downscale to `scale` of the frame (sides rounded to multiples of 4), run the
network on resources.device (batch of one, channels_last, inference mode), upscale back,
and blend with the original by `strength`. Frames in and out are HxWx3 uint8 RGB.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from engines.effects.base import (
    REMOTE_MODEL_ADVICE,
    Effect,
    EffectResources,
    EffectSpec,
    ParamSpec,
    model_load_failed,
)
from engines.errors import EffectUnavailable, ModelLoadError
from engines.types import Face

if TYPE_CHECKING:
    from engines.style_net import LoadedStyleModel

logger = logging.getLogger(__name__)

_MIN_SIDE = 16
_TRAIN_HINT = (
    "put a fast-neural-style .pth there (a facestream style model or a state dict of the "
    "PyTorch fast-neural-style example), or train one with `python -m engines.style_train "
    "--style IMAGE --content PHOTOS --out weights/style/NAME.pth`, or pass --model PATH"
)


def resolve_model_path(resources: EffectResources) -> Path | None:
    """The explicit model path if one was given, else the first model in weights/style."""
    if resources.model_path is not None:
        return Path(resources.model_path)
    from engines.style_net import find_style_model

    return find_style_model(resources.weights_dir)


def _unavailable_reason(resources: EffectResources) -> str | None:
    path = resolve_model_path(resources)
    if path is not None and path.is_file():
        return None
    if resources.remote_users:
        return f"no style model is installed on this server; {REMOTE_MODEL_ADVICE}"
    if path is None:
        folder = Path(resources.weights_dir) / "style"
        return f"no style model in {folder}/: {_TRAIN_HINT}"
    if path.is_dir():
        return f"style model {path} is a folder: pass the model's .pth file in it"
    return f"style model {path} does not exist: {_TRAIN_HINT}"


def processing_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """(width, height) the network runs at: `scale` of the frame, multiples of 4, >= 16."""

    def side(length: int) -> int:
        return max(_MIN_SIDE, round(length * scale / 4.0) * 4)

    return side(width), side(height)


class NeuralStyle(Effect):
    """Repaints the whole frame in the style the model was trained on."""

    name = "neural_style"

    def __init__(self, model: LoadedStyleModel, strength: float, scale: float) -> None:
        self.model = model
        self.strength = float(strength)
        self.scale = float(scale)
        self.device = next(model.net.parameters()).device

    def stylise(self, image: np.ndarray) -> np.ndarray:
        """Run the network once: image HxWx3 uint8 RGB (H, W multiples of 4) -> same
        shape and dtype, the model's rendering of it."""
        import torch

        with torch.inference_mode():
            pixels = torch.from_numpy(image).to(self.device, non_blocking=True)
            # HWC memory permuted to (1, 3, H, W) is already channels_last.
            batch = pixels.permute(2, 0, 1).unsqueeze(0).float()
            batch = batch.contiguous(memory_format=torch.channels_last)
            styled = self.model.net(batch).clamp_(0.0, 255.0).add_(0.5).to(torch.uint8)
            out = styled[0].permute(1, 2, 0).contiguous().cpu().numpy()
        return out

    def apply(self, frame: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        if self.strength <= 0.0:
            return frame
        height, width = frame.shape[:2]
        size = processing_size(width, height, self.scale)
        small = frame
        if size != (width, height):
            interpolation = cv2.INTER_AREA if size[0] < width else cv2.INTER_LINEAR
            small = cv2.resize(frame, size, interpolation=interpolation)
        styled = self.stylise(np.ascontiguousarray(small))
        if size != (width, height):
            styled = cv2.resize(styled, (width, height), interpolation=cv2.INTER_LINEAR)
        if self.strength >= 1.0:
            return styled
        return cv2.addWeighted(styled, self.strength, frame, 1.0 - self.strength, 0.0)


def _build(params: Mapping[str, Any], resources: EffectResources) -> Effect:
    from engines.style_net import shared_style_model

    path = resolve_model_path(resources)
    if path is None:
        hint = REMOTE_MODEL_ADVICE if resources.remote_users else _TRAIN_HINT
        raise EffectUnavailable(f"effect 'neural_style' has no model: {hint}")
    try:
        model = shared_style_model(path, resources.device)
    except ModelLoadError as error:
        raise model_load_failed("neural_style", error, resources) from error
    logger.info("neural_style: %s (%s) on %s", path, model.source, resources.device)
    return NeuralStyle(model, strength=params["strength"], scale=params["scale"])


SPECS = (
    EffectSpec(
        name="neural_style",
        description=(
            "fast neural style transfer of the whole frame with a trained style model "
            "(--model PATH, else the first file in weights/style/)"
        ),
        params={
            "strength": ParamSpec(
                "float", 1.0, 0.0, 1.0, help="blend of the stylised frame over the original"
            ),
            "scale": ParamSpec(
                "float",
                0.5,
                0.25,
                1.0,
                help="processing resolution relative to the frame (lower is faster)",
            ),
        },
        factory=_build,
        unavailable_reason=_unavailable_reason,
    ),
)
