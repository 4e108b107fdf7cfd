"""Compile backends (eager, torch.compile/inductor, TensorRT), engine keys and the engine cache.

Typical use, once per device at start (in the worker thread that will run the engines)::

    backend = select_backend(settings.backend, device, cache_dir=settings.weights_dir / "cache")
    onet = compile_module(onet_net, [crops], backend, name="mtcnn.onet", dynamic_batch=(1, 16, 64))
    outputs = onet(crops_on_device)
"""

from engines.backends.base import CompileBackend, Unavailability, UnavailableReason
from engines.backends.cache import EngineCache
from engines.backends.eager import EagerBackend
from engines.backends.engine import CompiledEngine, batch_buckets, bucket_for
from engines.backends.inductor import InductorBackend
from engines.backends.key import (
    BackendName,
    BatchProfile,
    DeviceIdentity,
    EngineKey,
    Precision,
    hash_file,
    hash_module,
)
from engines.backends.select import (
    RequestedBackend,
    compile_module,
    describe,
    resolve_precision,
    select_backend,
)
from engines.backends.tensorrt import TensorRTBackend

__all__ = [
    "BackendName",
    "BatchProfile",
    "CompileBackend",
    "CompiledEngine",
    "DeviceIdentity",
    "EagerBackend",
    "EngineCache",
    "EngineKey",
    "InductorBackend",
    "Precision",
    "RequestedBackend",
    "TensorRTBackend",
    "Unavailability",
    "UnavailableReason",
    "batch_buckets",
    "bucket_for",
    "compile_module",
    "describe",
    "hash_file",
    "hash_module",
    "resolve_precision",
    "select_backend",
]
