"""The compile-backend interface.

A backend turns an `nn.Module` plus example inputs into a
:class:`~engines.backends.engine.CompiledEngine`. Building is separate from loading: a backend that can serialise
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

from engines.backends.cache import EngineCache
from engines.backends.engine import DTYPES, CompiledEngine, memory_format_of
from engines.backends.key import BackendName, BatchProfile, EngineKey
from engines.errors import EngineBuildError

logger = logging.getLogger(__name__)


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
