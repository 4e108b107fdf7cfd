"""The TensorRT backend (optional extra: pip install "facestream[tensorrt]").

The module is exported (torch.export) and compiled ahead of time by torch-tensorrt
into TensorRT engines, with an optimisation profile for the batch dimension when a
dynamic batch is asked for. The compiled program is saved as an ExportedProgram
(engine.ep) in the engine cache and loaded from there on the next start; building
an engine takes minutes, loading it seconds.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engines.backends.base import CompileBackend, Unavailability, UnavailableReason
from engines.backends.key import BatchProfile

ENGINE_FILE = "engine.ep"


class TensorRTBackend(CompileBackend):
    """torch_tensorrt.compile(ir="dynamo"), saved with torch_tensorrt.save."""

    name = "tensorrt"
    serialisable = True

    @classmethod
    def unavailable_reason(cls, device: torch.device) -> Unavailability | None:
        if importlib.util.find_spec("torch_tensorrt") is None:
            return Unavailability(
                "tensorrt",
                UnavailableReason.NOT_INSTALLED,
                'torch-tensorrt is not installed; pip install "facestream[tensorrt]"',
            )
        if device.type != "cuda":
            return Unavailability(
                "tensorrt",
                UnavailableReason.NO_CUDA,
                f"TensorRT runs only on NVIDIA GPUs, not on {device}",
            )
        try:
            import torch_tensorrt  # noqa: F401
        except Exception as error:  # a broken install raises anything from ImportError to OSError
            return Unavailability(
                "tensorrt",
                UnavailableReason.IMPORT_FAILED,
                f"import torch_tensorrt failed ({type(error).__name__}: {error}); "
                "its version must match torch's",
            )
        return None

    def batch_limits(self, dynamic_batch: BatchProfile | None) -> tuple[int, int | None]:
        # The engine's optimisation profile: pad below its minimum, chunk above its maximum.
        return (dynamic_batch[0], dynamic_batch[2]) if dynamic_batch else (1, None)

    def build(
        self,
        module: nn.Module,
        example_inputs: Sequence[torch.Tensor],
        dynamic_batch: BatchProfile | None,
    ) -> Callable[..., Any]:
        import torch_tensorrt

        compiled: Callable[..., Any] = torch_tensorrt.compile(
            module,
            ir="dynamo",
            arg_inputs=_trt_inputs(example_inputs, dynamic_batch),
            min_block_size=1,
            device=self.device,
        )
        return compiled

    def save(
        self,
        fn: Callable[..., Any],
        directory: Path,
        example_inputs: Sequence[torch.Tensor],
        dynamic_batch: BatchProfile | None,
    ) -> None:
        import torch_tensorrt

        torch_tensorrt.save(
            fn,
            str(directory / ENGINE_FILE),
            output_format="exported_program",
            arg_inputs=list(example_inputs),
            dynamic_shapes=_dynamic_shapes(example_inputs, dynamic_batch),
        )

    def load(
        self,
        directory: Path,
        module: nn.Module,
        example_inputs: Sequence[torch.Tensor],
        dynamic_batch: BatchProfile | None,
    ) -> Callable[..., Any]:
        import torch_tensorrt

        loaded: Callable[..., Any] = torch_tensorrt.load(str(directory / ENGINE_FILE)).module()
        return loaded


def _trt_inputs(
    example_inputs: Sequence[torch.Tensor], dynamic_batch: BatchProfile | None
) -> list[Any]:
    """torch_tensorrt.Input specs: the batch ranges over the profile, the rest is fixed."""
    import torch_tensorrt

    specs = []
    for tensor in example_inputs:
        if dynamic_batch is None or tensor.ndim == 0:
            specs.append(torch_tensorrt.Input(shape=tuple(tensor.shape), dtype=tensor.dtype))
            continue
        rest = tuple(tensor.shape[1:])
        low, opt, high = dynamic_batch
        specs.append(
            torch_tensorrt.Input(
                min_shape=(low, *rest),
                opt_shape=(opt, *rest),
                max_shape=(high, *rest),
                dtype=tensor.dtype,
            )
        )
    return specs


def _dynamic_shapes(
    example_inputs: Sequence[torch.Tensor], dynamic_batch: BatchProfile | None
) -> tuple[dict[int, Any], ...] | None:
    """One batch Dim shared by every input (torch.export style), or None for static shapes."""
    if dynamic_batch is None:
        return None
    batch = torch.export.Dim("batch", min=dynamic_batch[0], max=dynamic_batch[2])
    return tuple({0: batch} if t.ndim > 0 else {} for t in example_inputs)
