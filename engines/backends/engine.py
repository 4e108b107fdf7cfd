"""The compiled engine every backend returns, and how it batches its inputs.

A :class:`CompiledEngine` is callable like the module it was built from: it takes
the module's inputs (tensors already on the engine's device), runs them in the
engine's precision, and returns float32 outputs of the same structure. Batches
are padded to the engine's buckets (static-shape engines) or its profile's
minimum, and run in chunks above its maximum; inputs are normalised to one kind
(inference tensors in the example's memory layout) so a compiled graph is never
rebuilt at run time.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils import _pytree as pytree

from engines.backends.key import BackendName, BatchProfile, EngineKey, Precision

DTYPES: dict[Precision, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
WARMUP_RUNS = 3  # CUDA graphs are recorded on the second or third call


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
        # On a GPU one engine is shared by threads (live sessions, the batch threads,
        # the jobs thread): calls take turns. A TensorRT execution context is not
        # thread-safe, and CUDA-graph outputs are overwritten by the next replay until
        # `_finish` has copied them. On a CPU eager modules run concurrently.
        self._turns: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if device.type != "cpu" else contextlib.nullcontext()
        )

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
        with self._turns, torch.inference_mode():
            formats = self.input_formats or tuple(map(memory_format_of, inputs))
            args = [_as_inference(t, self.dtype, f) for t, f in zip(inputs, formats, strict=True)]
            if inputs and target != batch:
                args = [_pad_batch(t, target) for t in args]
            if self.device.type == "cuda" and self.clone_outputs:
                torch.compiler.cudagraph_mark_step_begin()
            outputs = self.fn(*args)
            padded = bool(inputs) and target != batch
            return pytree.tree_map_only(
                torch.Tensor, lambda t: self._finish(t, batch, padded), outputs
            )

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
