"""Batched swapping of aligned faces with an exported faceswap-GAN model.

`FaceSwapper` takes aligned crops (N, S, S, 3) uint8 RGB on the host and returns
the other identity's face (N, S, S, 3) uint8 RGB and its attention mask (N, S, S)
float32 in [0, 1]. Models are loaded once per (file, device) and shared.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from engines.faceswap_gan.model import FaceswapConfig, SwapNet
from engines.faceswap_gan.modelfile import LoadedModel, load_model

logger = logging.getLogger(__name__)

Direction = Literal["a_to_b", "b_to_a"]
DIRECTIONS: tuple[Direction, ...] = ("a_to_b", "b_to_a")
SwapCallable = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

_cache_lock = threading.Lock()
_loaded: dict[tuple[str, int, int, str], LoadedModel] = {}
_swappers: dict[tuple[tuple[str, int, int, str], str, bool], FaceSwapper] = {}


def _signature(path: Path, device: str) -> tuple[str, int, int, str] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (str(path), stat.st_size, stat.st_mtime_ns, str(device))


def shared_model(path: Path, device: str = "cpu") -> LoadedModel:
    """The model at `path` on `device`, loaded once per file version (path, size, mtime)
    and reused by every effect. Raises ModelLoadError like load_model."""
    path = Path(path).resolve()
    signature = _signature(path, device)
    if signature is None:
        return load_model(path, device)  # raises the clear "does not exist" error
    with _cache_lock:
        if signature not in _loaded:
            model = load_model(path, device)
            _forget_older_versions(signature)
            _loaded[signature] = model
        return _loaded[signature]


def _forget_older_versions(signature: tuple[str, int, int, str]) -> None:
    """Drop cached models and swappers of earlier versions of the same file and device."""
    path, _, _, device = signature
    for key in [k for k in _loaded if k[0] == path and k[3] == device]:
        del _loaded[key]
    for swap_key in [k for k in _swappers if k[0][0] == path and k[0][3] == device]:
        del _swappers[swap_key]


def shared_swapper(
    path: Path,
    device: str,
    direction: Direction,
    compile_fn: Callable[[SwapNet, FaceswapConfig], SwapCallable] | None = None,
) -> FaceSwapper:
    """A FaceSwapper for one model file, device and direction, built (and compiled,
    when `compile_fn` is given) once and shared by every effect instance."""
    model = shared_model(path, device)
    signature = _signature(Path(path).resolve(), device)
    if signature is None:  # the file vanished after loading
        return FaceSwapper(model, direction, compile_fn)
    key = (signature, direction, compile_fn is not None)
    with _cache_lock:
        if key not in _swappers:
            _swappers[key] = FaceSwapper(model, direction, compile_fn)
        return _swappers[key]


@dataclass(frozen=True)
class SwapResult:
    """rgb: (N, S, S, 3) uint8 RGB generated faces; mask: (N, S, S) float32 in [0, 1]."""

    rgb: np.ndarray
    mask: np.ndarray


class FaceSwapper:
    """One swap direction of a loaded model, on the model's device.

    direction "a_to_b" draws faces of identity a as identity b (decoder b); "b_to_a"
    the reverse. `compile_fn`, when given, turns the SwapNet into a faster callable
    (e.g. a compile backend's engine) with the same inputs and outputs.
    """

    def __init__(
        self,
        model: LoadedModel,
        direction: Direction = "a_to_b",
        compile_fn: Callable[[SwapNet, FaceswapConfig], SwapCallable] | None = None,
    ) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        target = "b" if direction == "a_to_b" else "a"
        generator = model.generator
        self.config = model.config
        self.size = model.config.size
        self.padding = model.config.padding
        self.direction = direction
        self.device = next(generator.parameters()).device
        self.net = SwapNet(generator.encoder, generator.decoders[target]).eval()
        self._run: SwapCallable = (
            compile_fn(self.net, self.config) if compile_fn is not None else self.net
        )

    @torch.inference_mode()
    def swap_tensor(self, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, S, S) float32 RGB in [-1, 1] on the model's device -> rgb in [-1, 1]
        (N, 3, S, S) and mask (N, 1, S, S), float32, same device."""
        rgb, mask = self._run(faces)
        return rgb.float(), mask.float()

    def __call__(self, crops: np.ndarray) -> SwapResult:
        """Swap aligned crops (N, S, S, 3) uint8 RGB; N may be 0."""
        crops = np.asarray(crops)
        if (
            crops.ndim != 4
            or crops.shape[1:] != (self.size, self.size, 3)
            or crops.dtype != np.uint8
        ):
            raise ValueError(
                f"crops must be (N, {self.size}, {self.size}, 3) uint8, got {crops.shape} {crops.dtype}"
            )
        if len(crops) == 0:
            return SwapResult(np.zeros_like(crops), np.zeros(crops.shape[:3], np.float32))
        batch = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device).permute(0, 3, 1, 2)
        rgb, mask = self.swap_tensor(batch.float() / 127.5 - 1.0)
        rgb8 = ((rgb.clamp(-1, 1) + 1.0) * 127.5 + 0.5).to(torch.uint8).permute(0, 2, 3, 1)
        return SwapResult(rgb=rgb8.cpu().numpy(), mask=mask[:, 0].cpu().numpy())
