"""What a compiled engine depends on, as one frozen value with a stable digest.

An engine built for one model, input shape profile, precision, device and set of
library versions must never be reused for another: every one of those goes into
:class:`EngineKey`, and the key's `digest()` names the engine's cache entry. The
digest is a SHA-256 of a canonical JSON form, so it is the same in every process
and on every run (it never uses Python's randomised `hash`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import json
import platform
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

BackendName = Literal["eager", "inductor", "tensorrt"]
Precision = Literal["fp32", "fp16", "bf16"]
BatchProfile = tuple[int, int, int]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class DeviceIdentity:
    """The device an engine was built for.

    name: GPU product name ("NVIDIA H100 80GB HBM3") or, on a CPU, the machine and
        the vector instruction set inductor generates code for ("cpu x86_64 AVX512").
    capability: CUDA compute capability (major, minor); None on a CPU.
    """

    name: str
    capability: tuple[int, int] | None

    @classmethod
    def of(cls, device: torch.device | str) -> DeviceIdentity:
        """Identify `device` ("cpu", "cuda", "cuda:1"); initialises CUDA for a GPU."""
        device = torch.device(device)
        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            major, minor = torch.cuda.get_device_capability(index)
            return cls(name=torch.cuda.get_device_name(index), capability=(major, minor))
        return cls(
            name=f"{device.type} {platform.machine()} {torch.backends.cpu.get_cpu_capability()}",
            capability=None,
        )


def package_version(name: str) -> str | None:
    """Installed version of distribution `name`, or None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def tensorrt_versions() -> str | None:
    """ "torch-tensorrt X, tensorrt Y" (both change TensorRT engines), or None without either."""
    runtime = next(
        (v for v in map(package_version, ("tensorrt", "tensorrt-cu13", "tensorrt-cu12")) if v), None
    )
    frontend = package_version("torch-tensorrt") or package_version("torch_tensorrt")
    if runtime is None and frontend is None:
        return None
    return f"torch-tensorrt {frontend}, tensorrt {runtime}"


@dataclass(frozen=True)
class EngineKey:
    """Everything that changes a compiled engine.

    model: a readable name for the model ("mtcnn.onet"); names the cache folder.
    model_hash: SHA-256 of the weights and of the module's source code
        (:func:`hash_module`) or of the model file (:func:`hash_file`).
    backend: "eager" | "inductor" | "tensorrt".
    input_shapes: shape of every example input, batch dimension included.
    input_dtypes: dtype of every example input as the caller passes it ("torch.float32").
    batch_profile: (min, opt, max) batch sizes the engine accepts, or None for a
        fixed batch (the example's).
    precision: "fp32" | "fp16" | "bf16", the dtype the engine computes in.
    device_name, device_capability: see :class:`DeviceIdentity`.
    torch_version, tensorrt_version, triton_version: library versions (None when absent).
    python_version: "3.11" (serialised engines embed pickles and bytecode).
    options: backend options that change the engine, as sorted (name, value) pairs.
    """

    model: str
    model_hash: str
    backend: BackendName
    input_shapes: tuple[tuple[int, ...], ...]
    input_dtypes: tuple[str, ...]
    batch_profile: BatchProfile | None
    precision: Precision
    device_name: str
    device_capability: tuple[int, int] | None
    torch_version: str = torch.__version__
    tensorrt_version: str | None = field(default_factory=tensorrt_versions)
    triton_version: str | None = field(default_factory=lambda: package_version("triton"))
    python_version: str = field(
        default_factory=lambda: ".".join(platform.python_version_tuple()[:2])
    )
    options: tuple[tuple[str, str], ...] = ()

    def canonical(self) -> str:
        """The key as compact JSON with sorted keys (tuples become lists)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        """64 hex digits naming this engine; equal keys give equal digests in every process."""
        return hashlib.sha256(self.canonical().encode()).hexdigest()

    @classmethod
    def for_module(
        cls,
        *,
        model: str,
        model_hash: str,
        backend: BackendName,
        example_inputs: Sequence[torch.Tensor],
        precision: Precision,
        device: torch.device | str,
        batch_profile: BatchProfile | None = None,
        options: Iterable[tuple[str, str]] = (),
    ) -> EngineKey:
        """The key for compiling a module on `device` with these example inputs."""
        identity = DeviceIdentity.of(device)
        return cls(
            model=model,
            model_hash=model_hash,
            backend=backend,
            input_shapes=tuple(tuple(int(d) for d in t.shape) for t in example_inputs),
            input_dtypes=tuple(str(t.dtype) for t in example_inputs),
            batch_profile=batch_profile,
            precision=precision,
            device_name=identity.name,
            device_capability=identity.capability,
            options=tuple(sorted((str(k), str(v)) for k, v in options)),
        )


def _source_of(kind: type) -> str:
    try:
        return inspect.getsource(kind)
    except (OSError, TypeError):
        return f"{kind.__module__}.{kind.__qualname__}"


def hash_module(module: nn.Module) -> str:
    """SHA-256 hex of a module's weights and buffers and of the code of its classes.

    Weights are hashed by name, dtype, shape and raw bytes (copied to the host once),
    so the same weights on any device give the same hash; the source of every
    distinct submodule class is hashed too, so a change of `forward` changes it.
    """
    digest = hashlib.sha256()
    classes = sorted(
        {type(m) for m in module.modules()}, key=lambda k: f"{k.__module__}.{k.__qualname__}"
    )
    for kind in classes:
        digest.update(f"{kind.__module__}.{kind.__qualname__}\0".encode())
        digest.update(_source_of(kind).encode())
    for name, tensor in module.state_dict().items():
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"\0{name}\0{flat.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def hash_file(path: Path) -> str:
    """SHA-256 hex of a model file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
