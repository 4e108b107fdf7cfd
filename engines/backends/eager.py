"""The eager backend: the module itself, in the engine's precision, in inference mode."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from engines.backends.base import CompileBackend, Unavailability
from engines.backends.key import BatchProfile


class EagerBackend(CompileBackend):
    """Plain PyTorch: no compilation, nothing to cache; runs everywhere."""

    name = "eager"

    @classmethod
    def unavailable_reason(cls, device: torch.device) -> Unavailability | None:
        return None

    def build(
        self,
        module: nn.Module,
        example_inputs: Sequence[torch.Tensor],
        dynamic_batch: BatchProfile | None,
    ) -> Callable[..., Any]:
        return module
