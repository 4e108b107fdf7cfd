"""Choosing a backend at start, and compiling a module with it.

`select_backend("auto", device)` picks TensorRT where torch-tensorrt is installed
and a GPU is present, else torch.compile (inductor) on a GPU, else eager; on a CPU
`auto` means eager. An explicit request that cannot be met here falls back to what
`auto` would pick, logs why, and records the typed reason on the backend's
`fallbacks`. `compile_module` then builds (or loads) one model's engine, in reduced
precision where that keeps the outputs within tolerance of float32, and falls back
to eager for that model when compiling fails.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import nn
from torch.utils import _pytree as pytree

from engines.backends.base import CompileBackend, Unavailability, prepare_module
from engines.backends.cache import EngineCache
from engines.backends.eager import EagerBackend
from engines.backends.engine import CompiledEngine
from engines.backends.inductor import InductorBackend
from engines.backends.key import BackendName, BatchProfile, EngineKey, Precision, hash_module
from engines.backends.tensorrt import TensorRTBackend
from engines.errors import BackendUnavailable, EngineBuildError

logger = logging.getLogger(__name__)

RequestedBackend = Literal["auto", "eager", "inductor", "tensorrt"]
RequestedPrecision = Literal["auto", "fp32", "fp16", "bf16"]

BACKENDS: dict[BackendName, type[CompileBackend]] = {
    "tensorrt": TensorRTBackend,
    "inductor": InductorBackend,
    "eager": EagerBackend,
}
# Largest tolerated error of a reduced-precision engine, relative to the largest
# float32 output magnitude (1e-2 of a [-1, 1] image is 2.5 grey levels).
TOLERANCE: dict[Precision, float] = {"fp32": float("inf"), "fp16": 1e-2, "bf16": 3e-2}


def auto_order(device: torch.device) -> tuple[BackendName, ...]:
    """Backends `auto` tries on `device`, best first."""
    return ("tensorrt", "inductor", "eager") if device.type == "cuda" else ("eager",)


def select_backend(
    requested: str = "auto",
    device: torch.device | str = "cpu",
    *,
    cache_dir: Path | None = None,
    strict: bool = False,
) -> CompileBackend:
    """The backend to compile every model with on `device`.

    requested: "auto" | "eager" | "inductor" | "tensorrt" (Settings.backend).
    cache_dir: where compiled engines are kept (weights/cache); None for no disk cache.
    strict: raise BackendUnavailable instead of falling back when an explicit
        request cannot be met.
    The returned backend's `fallbacks` lists what was skipped and why.
    Raises BackendUnavailable for an unknown name or a CUDA device without CUDA.
    """
    if requested != "auto" and requested not in BACKENDS:
        raise BackendUnavailable(
            f"unknown backend {requested!r}; choose auto, {', '.join(BACKENDS)}"
        )
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable(
            f"device {device} was asked for, but CUDA is not available here; use cpu"
        )
    order = auto_order(device)
    wanted = cast(BackendName, requested)
    candidates = order if requested == "auto" else (wanted, *(n for n in order if n != wanted))
    skipped: list[Unavailability] = []
    name: BackendName = "eager"
    for name in candidates:
        reason = BACKENDS[name].unavailable_reason(device)
        if reason is None:
            break
        if strict and requested != "auto":
            raise BackendUnavailable(f"backend {reason.message()}")
        skipped.append(reason)
    else:  # eager is always available, so this is unreachable unless BACKENDS changes
        raise BackendUnavailable(f"no backend can run on {device}")
    _log_choice(requested, name, device, skipped)
    cache = EngineCache(cache_dir) if cache_dir is not None else None
    return BACKENDS[name](device, cache=cache, requested=requested, fallbacks=tuple(skipped))


def _log_choice(
    requested: str, chosen: str, device: torch.device, skipped: list[Unavailability]
) -> None:
    for reason in skipped:
        if requested == reason.backend:
            logger.warning(
                "backend %s was asked for, but %s; falling back to %s",
                requested,
                reason.message(),
                chosen,
            )
        else:
            logger.info("backend %s skipped: %s", reason.backend, reason.message())
    logger.info("compile backend on %s: %s (asked for %s)", device, chosen, requested)


def resolve_precision(requested: str, device: torch.device | str) -> Precision:
    """The precision to build in: `auto` is fp16 on a GPU with tensor cores (compute
    capability 7.0+), else fp32; bf16 asked for on a GPU without it becomes fp16."""
    device = torch.device(device)
    if requested not in ("auto", "fp32", "fp16", "bf16"):
        raise ValueError(f"precision must be auto, fp32, fp16 or bf16, got {requested!r}")
    if device.type != "cuda":
        return "fp32" if requested == "auto" else requested  # type: ignore[return-value]
    capability = torch.cuda.get_device_capability(device)
    if requested == "auto":
        return "fp16" if capability >= (7, 0) else "fp32"
    if requested == "bf16" and not torch.cuda.is_bf16_supported():
        logger.info("bf16 is not supported by this GPU; using fp16")
        return "fp16"
    return requested  # type: ignore[return-value]


def output_error(
    engine: CompiledEngine, module: nn.Module, example_inputs: Sequence[torch.Tensor]
) -> float:
    """Largest |engine - float32 eager| over all floating outputs, relative to the
    largest float32 output magnitude. Synchronises the device (start-up only)."""
    reference_module = prepare_module(module, engine.device, torch.float32)
    inputs = [t.to(engine.device) for t in example_inputs]
    with torch.inference_mode():
        expected = pytree.tree_leaves(
            reference_module(*[t.float() if t.is_floating_point() else t for t in inputs])
        )
        actual = pytree.tree_leaves(engine(*inputs))
    worst, scale = 0.0, 1e-6
    for want, got in zip(expected, actual, strict=True):
        if isinstance(want, torch.Tensor) and want.is_floating_point():
            worst = max(worst, float((got.float() - want).abs().max()))
            scale = max(scale, float(want.abs().max()))
    return worst / scale


def compile_module(
    module: nn.Module,
    example_inputs: Sequence[torch.Tensor],
    backend: CompileBackend,
    *,
    name: str,
    precision: RequestedPrecision = "auto",
    dynamic_batch: BatchProfile | None = None,
    model_hash: str | None = None,
) -> CompiledEngine:
    """One model's warmed-up engine on `backend` (from its cache when possible).

    module: the model (any device; it is copied when the engine needs another
        device or dtype). example_inputs: typical inputs, e.g. (B, 3, 48, 48) float32
        crops; put real data here, the reduced-precision check runs on it.
    name: names the model in logs and in the cache ("mtcnn.onet").
    dynamic_batch: (min, opt, max) batch sizes the engine must accept.
    model_hash: hash_file() of the model's weights file; default hash_module(module).
    Reduced precision that misses TOLERANCE is rebuilt in fp32; a backend that fails
    to compile gives way to eager (recorded in the engine's `fallback`).
    """
    chosen = resolve_precision(precision, backend.device)
    key = EngineKey.for_module(
        model=name,
        model_hash=model_hash or hash_module(module),
        backend=backend.name,
        example_inputs=example_inputs,
        precision=chosen,
        device=backend.device,
        batch_profile=dynamic_batch,
        options=backend.options(),
    )
    try:
        engine = backend.compile(module, example_inputs, key, dynamic_batch)
    except EngineBuildError as error:
        logger.warning("%s; running %s eagerly", error, name)
        eager_key = replace(key, backend="eager", options=())
        engine = EagerBackend(backend.device).compile(
            module, example_inputs, eager_key, dynamic_batch
        )
        engine.fallback = str(error)
    if chosen != "fp32":
        error_ratio = output_error(engine, module, example_inputs)
        if error_ratio > TOLERANCE[chosen]:
            logger.warning(
                "%s in %s is off by %.2g of its output range (tolerance %.2g); using fp32",
                name,
                chosen,
                error_ratio,
                TOLERANCE[chosen],
            )
            return compile_module(
                module,
                example_inputs,
                backend,
                name=name,
                precision="fp32",
                dynamic_batch=dynamic_batch,
                model_hash=key.model_hash,
            )
    return engine


def describe(backend: CompileBackend) -> dict[str, Any]:
    """What was asked for, what runs, and why anything was skipped (for logs and /healthz)."""
    return {
        "requested": backend.requested,
        "backend": backend.name,
        "device": str(backend.device),
        "fallbacks": [
            {"backend": f.backend, "reason": f.reason.name.lower(), "detail": f.detail}
            for f in backend.fallbacks
        ],
    }
