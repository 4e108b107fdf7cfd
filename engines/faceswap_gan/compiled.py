"""The swap network through the project's compile backends (engines.backends).

On CUDA, `gan_swap` runs the encoder + target decoder as one compiled engine
(TensorRT, torch.compile or eager, whichever `select_backend` picks), built once
per model file, direction, device and library versions and cached on disk. The
engine takes (N, 3, S, S) float32 in [-1, 1] on the device, N up to MAX_BATCH, and
returns float32 (rgb, mask) like SwapNet.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from engines.faceswap_gan.inference import SwapCallable
from engines.faceswap_gan.model import FaceswapConfig, SwapNet

logger = logging.getLogger(__name__)

BATCH_PROFILE = (1, 4, 16)  # faces per frame: min, typical, max (larger batches run in chunks)


def compile_swap_net(
    net: SwapNet,
    config: FaceswapConfig,
    *,
    name: str,
    device: str,
    cache_dir: Path | None = None,
    model_hash: str | None = None,
    backend: str = "auto",
) -> SwapCallable:
    """A compiled engine for `net` on `device`, or `net` itself when no backend can
    build one (the reason is logged). name: e.g. "faceswap.a_to_b.64" (cache folder)."""
    from engines.backends import compile_module, select_backend
    from engines.errors import EngineError

    generator = torch.Generator().manual_seed(0)
    example = torch.rand(BATCH_PROFILE[1], 3, config.size, config.size, generator=generator) * 2 - 1
    try:
        chosen = select_backend(backend, device, cache_dir=cache_dir)
        engine = compile_module(
            net,
            [example.to(device)],
            chosen,
            name=name,
            dynamic_batch=BATCH_PROFILE,
            model_hash=model_hash,
        )
    except EngineError as error:
        logger.warning("cannot compile %s (%s); running it eagerly", name, error)
        return net
    logger.info("%s runs on the %s backend", name, engine.backend)
    return engine  # type: ignore[return-value]
