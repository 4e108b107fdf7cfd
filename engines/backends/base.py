"""The compile-backend interface and the compiled engine every backend returns.

A backend turns an `nn.Module` plus example inputs into a :class:`CompiledEngine`:
a callable that takes the module's inputs (tensors already on the engine's
device), runs them in the engine's precision and returns float32 outputs of the
same structure. Building is separate from loading: a backend that can serialise
its engines stores them in an :class:`~engines.backends.cache.EngineCache` after a
build and loads them from there on the next start; every engine is warmed up
before it is returned, so the first frame is not slow.
"""

from __future__ import annotations

import abc
import copy
import enum
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils import _pytree as pytree

from engines.backends.cache import EngineCache
from engines.backends.key import BackendName, BatchProfile, EngineKey, Precision
from engines.errors import EngineBuildError

logger = logging.getLogger(__name__)

DTYPES: dict[Precision, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
WARMUP_RUNS = 3  # CUDA graphs are recorded on the second or third call


class UnavailableReason(enum.Enum):
    """Why a backend cannot run here."""

    NOT_INSTALLED = "not installed"
    IMPORT_FAILED = "installed but fails to import"
    NO_CUDA = "needs a CUDA GPU"
    NO_COMPILER = "needs a C++ compiler"
    GPU_TOO_OLD = "GPU too old"


@dataclass(frozen=True)
class Unavailability:
    """One backend that was asked for (or tried by `auto`) and cannot run here."""

    backend: BackendName
    reason: UnavailableReason
    detail: str

    def message(self) -> str:
        return f"{self.backend} is unavailable ({self.reason.value}): {self.detail}"


def batch_buckets(profile: BatchProfile) -> tuple[int, ...]:
    """Batch sizes a static-shape engine is built for: powers of two in [min, max], and max.

    (1, 4, 12) -> (1, 2, 4, 8, 12). A batch of n runs padded to the smallest bucket >= n.
    """
    low, opt, high = profile
    if not 1 <= low <= opt <= high:
        raise ValueError(f"batch profile must satisfy 1 <= min <= opt <= max, got {profile}")
    sizes = {low, high}
    size = 1
    while size < high:
        if size >= low:
            sizes.add(size)
        size *= 2
    return tuple(sorted(sizes))


def bucket_for(batch: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds `batch` items."""
    for size in buckets:
        if size >= batch:
            return size
    raise ValueError(f"batch of {batch} exceeds the engine's largest batch {buckets[-1]}")


def memory_format_of(tensor: torch.Tensor) -> torch.memory_format:
    """channels_last for a 4-D channels-last tensor, else contiguous_format."""
    if (
        tensor.ndim == 4
        and not tensor.is_contiguous()
        and tensor.is_contiguous(memory_format=torch.channels_last)
    ):
        return torch.channels_last
    return torch.contiguous_format


def _pad_batch(tensor: torch.Tensor, size: int) -> torch.Tensor:
    missing = size - tensor.shape[0]
    if missing <= 0:
        return tensor
    filler = tensor[-1:].expand(missing, *tensor.shape[1:])
    # Compiled graphs are specialised on strides: keep the input's layout.
    return torch.cat([tensor, filler], dim=0).contiguous(memory_format=memory_format_of(tensor))


class CompiledEngine:
    """A model ready to run: call it like the module it was built from.

    Inputs: tensors on `device`, batched along dim 0 (floating ones are cast to the
    engine's dtype; the caller moves data to the device, the engine never copies
    host <-> device). A batch is padded up to the engine's next bucket (or its
    minimum batch) and one larger than `max_batch` runs in chunks.
    Outputs: the module's output structure, floating tensors as float32, owned by
    the caller (never a buffer a later call overwrites).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        key: EngineKey,
        device: torch.device,
        buckets: tuple[int, ...] | None = None,
        batch_limits: tuple[int, int | None] = (1, None),
        input_formats: Sequence[torch.memory_format] = (),
        clone_outputs: bool = False,
        from_cache: bool = False,
        build_seconds: float = 0.0,
        fallback: str | None = None,
    ) -> None:
        self.fn = fn
        self.key = key
        self.device = device
        self.dtype = DTYPES[key.precision]
        self.buckets = buckets
        self.min_batch = buckets[0] if buckets else batch_limits[0]
        self.max_batch = buckets[-1] if buckets else batch_limits[1]
        self.input_formats = tuple(input_formats)
        self.clone_outputs = clone_outputs
        self.from_cache = from_cache
        self.build_seconds = build_seconds
        self.fallback = fallback

    @property
    def backend(self) -> BackendName:
        return self.key.backend

    def __repr__(self) -> str:
        return (
            f"CompiledEngine({self.key.model}, backend={self.backend}, "
            f"precision={self.key.precision}, device={self.device}, from_cache={self.from_cache})"
        )

    def __call__(self, *inputs: torch.Tensor) -> Any:
        batch = int(inputs[0].shape[0]) if inputs else 0
        if self.max_batch is not None and batch > self.max_batch:
            return self._in_chunks(inputs, self.max_batch)
        target = bucket_for(batch, self.buckets) if self.buckets else max(batch, self.min_batch)
        with torch.inference_mode():
            formats = self.input_formats or tuple(map(memory_format_of, inputs))
            args = [_as_inference(t, self.dtype, f) for t, f in zip(inputs, formats, strict=True)]
            if inputs and target != batch:
                args = [_pad_batch(t, target) for t in args]
            if self.device.type == "cuda" and self.clone_outputs:
                torch.compiler.cudagraph_mark_step_begin()
            outputs = self.fn(*args)
        padded = bool(inputs) and target != batch
        return pytree.tree_map_only(torch.Tensor, lambda t: self._finish(t, batch, padded), outputs)

    def _in_chunks(self, inputs: Sequence[torch.Tensor], size: int) -> Any:
        batch = int(inputs[0].shape[0])
        parts = [
            self(*(t[start : start + size] for t in inputs)) for start in range(0, batch, size)
        ]
        return pytree.tree_map(lambda *pieces: torch.cat(pieces), parts[0], *parts[1:])

    def _finish(self, tensor: torch.Tensor, batch: int, padded: bool) -> torch.Tensor:
        if padded:
            tensor = tensor[:batch]
        if tensor.is_floating_point() and tensor.dtype != torch.float32:
            return tensor.float()
        return tensor.clone() if self.clone_outputs else tensor

    def warm_up(
        self,
        example_inputs: Sequence[torch.Tensor],
        dynamic_batch: BatchProfile | None = None,
        runs: int = WARMUP_RUNS,
    ) -> float:
        """Run every batch size the engine is built for (each bucket, or the profile's
        min, opt and max) `runs` times, so no compilation or graph capture is left for
        the first frame; returns the seconds it took (synchronises the device)."""
        started = time.perf_counter()
        if self.buckets is not None:
            sizes: Sequence[int] = self.buckets
        elif dynamic_batch is not None:
            sizes = sorted(set(dynamic_batch))
        else:
            sizes = [int(example_inputs[0].shape[0])] if example_inputs else []
        for size in sizes:
            batch = [_resize_batch(t, size) for t in example_inputs]
            for _ in range(runs):
                self(*batch)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - started


def _as_inference(
    tensor: torch.Tensor, dtype: torch.dtype, layout: torch.memory_format
) -> torch.Tensor:
    """`tensor` in the engine's dtype and the example's memory layout, as an inference
    tensor (call under inference_mode). Compiled graphs are specialised on all three,
    so every call (and the warm-up) hands them the same kind: one graph, no recompiles.
    Copies (on the device) only what differs."""
    layout = layout if tensor.ndim == 4 else torch.contiguous_format
    if not tensor.is_contiguous(memory_format=layout):
        tensor = tensor.contiguous(memory_format=layout)
    if tensor.is_floating_point() and tensor.dtype != dtype:
        return tensor.to(dtype)  # made under inference_mode: already an inference tensor
    return tensor if tensor.is_inference() else tensor.clone()


def _resize_batch(tensor: torch.Tensor, size: int) -> torch.Tensor:
    if tensor.shape[0] >= size:
        return tensor[:size]
    return _pad_batch(tensor, size)


class CompileBackend(abc.ABC):
    """Turns modules into warmed-up :class:`CompiledEngine` objects on one device.

    requested: what the operator asked for ("auto", "tensorrt", ...).
    fallbacks: the backends that were asked for or tried first and could not run
        here, with their reasons (empty when the request was met).
    cache: where built engines are stored and loaded from; None for no disk cache.
    """

    name: ClassVar[BackendName]
    serialisable: ClassVar[bool] = False

    def __init__(
        self,
        device: torch.device | str,
        *,
        cache: EngineCache | None = None,
        requested: str | None = None,
        fallbacks: tuple[Unavailability, ...] = (),
    ) -> None:
        self.device = torch.device(device)
        self.cache = cache
        self.requested = requested or self.name
        self.fallbacks = fallbacks

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={self.device}, requested={self.requested})"

    @classmethod
    @abc.abstractmethod
    def unavailable_reason(cls, device: torch.device) -> Unavailability | None:
        """None when this backend can run on `device`, else why not."""

    def options(self) -> tuple[tuple[str, str], ...]:
        """Backend settings that change the engine; they become part of its key."""
        return ()

    def buckets(self, dynamic_batch: BatchProfile | None) -> tuple[int, ...] | None:
        """Static batch sizes this backend builds for, or None when it takes any batch."""
        return None

    def batch_limits(self, dynamic_batch: BatchProfile | None) -> tuple[int, int | None]:
        """Smallest and largest batch an engine takes (None: no upper limit)."""
        return (1, None)

    @abc.abstractmethod
    def build(
        self,
        module: nn.Module,
        example_inputs: Sequence[torch.Tensor],
        dynamic_batch: BatchProfile | None,
    ) -> Callable[..., Any]:
        """Compile `module` (already on the device, in the engine's dtype, in eval mode)."""

    def save(
        self,
        fn: Callable[..., Any],
        directory: Path,
        example_inputs: Sequence[torch.Tensor],
        dynamic_batch: BatchProfile | None,
    ) -> None:
        """Serialise a built (and warmed-up) engine into `directory`."""
        raise NotImplementedError(f"{self.name} engines are not serialisable")

    def load(
        self,
        directory: Path,
        module: nn.Module,
        example_inputs: Sequence[torch.Tensor],
        dynamic_batch: BatchProfile | None,
    ) -> Callable[..., Any]:
        """Load an engine that `save` wrote into `directory`."""
        raise NotImplementedError(f"{self.name} engines are not serialisable")

    def compile(
        self,
        module: nn.Module,
        example_inputs: Sequence[torch.Tensor],
        key: EngineKey,
        dynamic_batch: BatchProfile | None = None,
    ) -> CompiledEngine:
        """A warmed-up engine for `module`: loaded from the cache when `key` is there,
        else built (and stored). `module` is put in eval mode; its weights, device and
        dtype are left as they were (a copy is cast when the engine needs another).

        example_inputs: tensors of the shapes the engine will see, on this device.
        dynamic_batch: (min, opt, max) batch sizes to accept, or None for the example's.
        Raises EngineBuildError when compiling or loading fails.
        """
        if key.backend != self.name:
            raise ValueError(f"key is for backend {key.backend}, this is {self.name}")
        dtype = DTYPES[key.precision]
        prepared = prepare_module(module, self.device, dtype)
        inputs = [
            t.to(self.device, dtype) if t.is_floating_point() else t.to(self.device)
            for t in example_inputs
        ]
        started = time.perf_counter()
        fn, from_cache = self._load_or_build(prepared, inputs, key, dynamic_batch)
        engine = CompiledEngine(
            fn,
            key=key,
            device=self.device,
            buckets=self.buckets(dynamic_batch),
            batch_limits=self.batch_limits(dynamic_batch),
            input_formats=[memory_format_of(t) for t in inputs],
            clone_outputs=self._clones_outputs(),
            from_cache=from_cache,
        )
        try:
            engine.warm_up(inputs, dynamic_batch)
        except Exception as error:
            raise EngineBuildError(
                f"{self.name} engine for {key.model} failed on its example inputs: {_summary(error)}"
            ) from error
        engine.build_seconds = time.perf_counter() - started
        if not from_cache and self.serialisable and self.cache is not None:
            self.cache.store(key, lambda directory: self.save(fn, directory, inputs, dynamic_batch))
        logger.info(
            "%s engine for %s ready in %.1f s (%s, %s)",
            self.name,
            key.model,
            engine.build_seconds,
            "from cache" if from_cache else "built",
            key.precision,
        )
        return engine

    def _clones_outputs(self) -> bool:
        return False

    def _load_or_build(
        self,
        module: nn.Module,
        inputs: list[torch.Tensor],
        key: EngineKey,
        dynamic_batch: BatchProfile | None,
    ) -> tuple[Callable[..., Any], bool]:
        if self.serialisable and self.cache is not None:
            directory = self.cache.lookup(key)
            if directory is not None:
                try:
                    return self.load(directory, module, inputs, dynamic_batch), True
                except Exception as error:
                    logger.warning(
                        "cached %s engine for %s is unusable (%s); rebuilding",
                        self.name,
                        key.model,
                        error,
                    )
                    self.cache.remove(key)
        try:
            return self.build(module, inputs, dynamic_batch), False
        except Exception as error:
            raise EngineBuildError(
                f"{self.name} could not compile {key.model}: {_summary(error)}"
            ) from error


def prepare_module(module: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """`module` in eval mode on `device` in `dtype`; a copy when that changes it."""
    parameters = list(module.parameters()) + list(module.buffers())
    floating = [p for p in parameters if p.is_floating_point()]
    same = all(p.device == device for p in parameters) and all(p.dtype == dtype for p in floating)
    target = module if same else copy.deepcopy(module).to(device=device, dtype=dtype)
    return target.eval()


def _summary(error: BaseException) -> str:
    """The exception's type and first line (compiler errors run to pages)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"
