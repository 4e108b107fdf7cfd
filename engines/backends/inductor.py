"""The torch.compile backend: inductor code generation, with CUDA graphs on a GPU.

On a GPU the module is compiled in "reduce-overhead" mode (CUDA graphs: one launch
per call instead of one per kernel). A dynamic batch is compiled once with the
batch dimension symbolic (torch's automatic dynamic shapes: batch 1 gets its own
graph), and every batch is padded up to a bucket (1, 2, 4, ... max) so that only a
few CUDA graphs are recorded, all of them at warm-up. On a CPU (C++ code
generation) there are no graphs to record: batches below the profile's minimum are
padded up to it and the rest run as they are. Compiled code is cached by torch's own FX-graph and
autograd caches; this backend saves those artefacts (torch.compiler
`save_cache_artifacts`) into the engine cache and primes them from there on the
next start, so a restart, even on a fresh machine, does not compile again.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engines.backends.base import CompileBackend, Unavailability, UnavailableReason
from engines.backends.engine import batch_buckets
from engines.backends.key import BatchProfile

ARTIFACTS_FILE = "inductor_artifacts.bin"
MIN_CAPABILITY = (7, 0)  # triton's oldest supported GPU generation


def cpp_compiler() -> str | None:
    """Path of the C++ compiler inductor will use on a CPU ($CXX, else g++), or None."""
    return shutil.which(os.environ.get("CXX") or "g++")


class InductorBackend(CompileBackend):
    """torch.compile(backend="inductor")."""

    name = "inductor"
    serialisable = True

    @classmethod
    def unavailable_reason(cls, device: torch.device) -> Unavailability | None:
        if device.type == "cuda":
            if importlib.util.find_spec("triton") is None:
                return Unavailability(
                    "inductor",
                    UnavailableReason.NOT_INSTALLED,
                    "triton (torch.compile's GPU code generator) is not installed",
                )
            capability = torch.cuda.get_device_capability(device)
            if capability < MIN_CAPABILITY:
                return Unavailability(
                    "inductor",
                    UnavailableReason.GPU_TOO_OLD,
                    f"triton needs compute capability {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]}+, "
                    f"this GPU has {capability[0]}.{capability[1]}",
                )
            return None
        if cpp_compiler() is None:
            return Unavailability(
                "inductor",
                UnavailableReason.NO_COMPILER,
                f"no C++ compiler found ({os.environ.get('CXX') or 'g++'}); install g++ or set CXX",
            )
        return None

    @property
    def mode(self) -> str:
        return "reduce-overhead" if self.device.type == "cuda" else "default"

    def options(self) -> tuple[tuple[str, str], ...]:
        return (("mode", self.mode),)

    def buckets(self, dynamic_batch: BatchProfile | None) -> tuple[int, ...] | None:
        if self.device.type == "cuda" and dynamic_batch is not None:
            return batch_buckets(dynamic_batch)
        return None

    def batch_limits(self, dynamic_batch: BatchProfile | None) -> tuple[int, int | None]:
        # On a CPU (no buckets) smaller batches are padded to the profile's minimum, so the
        # dynamic graph built at warm-up serves them without another specialisation.
        return (dynamic_batch[0], None) if dynamic_batch else (1, None)

    def _clones_outputs(self) -> bool:
        return self.device.type == "cuda"  # CUDA-graph outputs are overwritten by the next replay

    def build(
        self,
        module: nn.Module,
        example_inputs: Sequence[torch.Tensor],
        dynamic_batch: BatchProfile | None,
    ) -> Callable[..., Any]:
        # Compilation is lazy: the warm-up calls in CompileBackend.compile do the work.
        return torch.compile(module, backend="inductor", mode=self.mode)

    def save(
        self,
        fn: Callable[..., Any],
        directory: Path,
        example_inputs: Sequence[torch.Tensor],
        dynamic_batch: BatchProfile | None,
    ) -> None:
        saved = torch.compiler.save_cache_artifacts()
        if saved is None:
            raise RuntimeError("torch.compile recorded no cache artefacts to save")
        (directory / ARTIFACTS_FILE).write_bytes(saved[0])

    def load(
        self,
        directory: Path,
        module: nn.Module,
        example_inputs: Sequence[torch.Tensor],
        dynamic_batch: BatchProfile | None,
    ) -> Callable[..., Any]:
        torch.compiler.load_cache_artifacts((directory / ARTIFACTS_FILE).read_bytes())
        return self.build(module, example_inputs, dynamic_batch)
