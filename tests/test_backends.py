"""Compile backends: choice and fallback, engine keys, the engine cache, real compiles."""

from __future__ import annotations

import importlib.util
import itertools
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from backends_helpers import Cancelling, TinyNet, TinyNetVariant, example_input
from torch._dynamo.utils import counters

from engines.backends import (
    CompiledEngine,
    EagerBackend,
    EngineCache,
    EngineKey,
    UnavailableReason,
    batch_buckets,
    bucket_for,
    compile_module,
    describe,
    hash_file,
    hash_module,
    select_backend,
)
from engines.errors import BackendUnavailable

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TESTS_DIR = Path(__file__).resolve().parent
HAS_TRT = importlib.util.find_spec("torch_tensorrt") is not None
HAS_CUDA = torch.cuda.is_available()
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")


def tiny_key(**changes: object) -> EngineKey:
    key = EngineKey.for_module(
        model="tiny",
        model_hash=hash_module(TinyNet()),
        backend="eager",
        example_inputs=[example_input()],
        precision="fp32",
        device="cpu",
    )
    return replace(key, **changes)  # type: ignore[arg-type]


# --- choosing a backend ------------------------------------------------------------------


@pytest.mark.skipif(HAS_TRT, reason="torch-tensorrt is installed here")
@pytest.mark.parametrize(
    ("requested", "chosen", "skipped"),
    [
        ("auto", "eager", []),
        ("eager", "eager", []),
        ("inductor", "inductor", []),
        ("tensorrt", "eager", [("tensorrt", UnavailableReason.NOT_INSTALLED)]),
    ],
)
def test_select_backend_on_cpu(
    requested: str, chosen: str, skipped: list, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="engines.backends"):
        backend = select_backend(requested, "cpu")
    assert backend.name == chosen
    assert backend.requested == requested
    assert [(f.backend, f.reason) for f in backend.fallbacks] == skipped
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    if skipped:  # an explicit request that falls back says so, and how to fix it
        assert any(
            "tensorrt" in w and 'pip install "facestream[tensorrt]"' in w for w in warnings
        ), warnings
        assert describe(backend)["fallbacks"][0]["reason"] == "not_installed"
    else:
        assert warnings == []


@pytest.mark.skipif(HAS_TRT, reason="torch-tensorrt is installed here")
def test_strict_tensorrt_request_raises_with_the_reason() -> None:
    with pytest.raises(BackendUnavailable, match=r"facestream\[tensorrt\]"):
        select_backend("tensorrt", "cpu", strict=True)


def test_inductor_without_a_compiler_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    backend = select_backend("inductor", "cpu")
    assert backend.name == "eager"
    assert [(f.backend, f.reason) for f in backend.fallbacks] == [
        ("inductor", UnavailableReason.NO_COMPILER)
    ]
    assert "CXX" in backend.fallbacks[0].detail


@pytest.mark.parametrize(("requested", "device"), [("turbo", "cpu"), ("auto", "cuda")])
def test_unusable_requests_raise(requested: str, device: str) -> None:
    if device == "cuda" and HAS_CUDA:
        pytest.skip("CUDA is available here")
    with pytest.raises(BackendUnavailable):
        select_backend(requested, device)


# --- keys and hashes ---------------------------------------------------------------------


def test_key_digest_is_the_same_in_another_process() -> None:
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from backends_helpers import TinyNet, example_input\n"
        "from engines.backends import EngineKey, hash_module\n"
        "print(EngineKey.for_module(model='tiny', model_hash=hash_module(TinyNet()), backend='eager',"
        " example_inputs=[example_input()], precision='fp32', device='cpu').digest())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "4242"}
    out = subprocess.run(
        [sys.executable, "-c", script, str(TESTS_DIR)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stdout.strip() == tiny_key().digest()
    assert len(tiny_key().digest()) == 64


@pytest.mark.parametrize(
    "changes",
    [
        {"model_hash": hash_module(TinyNet(seed=1))},
        {"model_hash": hash_module(TinyNetVariant())},
        {"input_shapes": ((4, 3, 16, 16),)},
        {"input_dtypes": ("torch.float16",)},
        {"batch_profile": (1, 4, 8)},
        {"precision": "fp16"},
        {"backend": "inductor"},
        {"device_name": "NVIDIA H100 80GB HBM3"},
        {"device_capability": (9, 0)},
        {"torch_version": "2.99.0"},
        {"tensorrt_version": "torch-tensorrt 2.14.0, tensorrt 10.13"},
        {"triton_version": "9.9.9"},
        {"python_version": "3.12"},
        {"options": (("mode", "reduce-overhead"),)},
    ],
    ids=lambda changes: next(iter(changes)),
)
def test_key_digest_changes_with_everything_that_changes_an_engine(changes: dict) -> None:
    assert tiny_key(**changes).digest() != tiny_key().digest()


def test_module_hash_follows_weights_and_code_not_identity() -> None:
    base = hash_module(TinyNet())
    assert hash_module(TinyNet()) == base  # a new instance with the same weights
    assert hash_module(TinyNetVariant()) != base  # same weights, other forward
    nudged = TinyNet()
    with torch.no_grad():
        nudged.head.weight[0, 0, 0, 0] += 1e-6
    assert hash_module(nudged) != base
    assert hash_module(TinyNet().half()) != base


def test_file_hash(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"weights" * 1000)
    first = hash_file(path)
    assert hash_file(path) == first
    path.write_bytes(b"weights" * 999 + b"Weights")
    assert hash_file(path) != first


# --- the engine cache --------------------------------------------------------------------


def test_cache_round_trip_and_misses(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    key = tiny_key()
    assert cache.lookup(key) is None
    stored = cache.store(key, lambda d: (d / "engine.bin").write_bytes(b"ENGINE"))
    assert stored is not None and cache.lookup(key) == stored
    assert (stored / "engine.bin").read_bytes() == b"ENGINE"
    assert cache.lookup(tiny_key(precision="fp16")) is None
    assert cache.lookup(tiny_key(torch_version="0.0")) is None
    (stored / "key.json").write_text("{not json")
    assert cache.lookup(key) is None


def test_failed_save_leaves_nothing(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)

    def broken(directory: Path) -> None:
        (directory / "half.bin").write_bytes(b"x")
        raise OSError("disk full")

    assert cache.store(tiny_key(), broken) is None
    assert cache.lookup(tiny_key()) is None
    assert list(cache.model_dir("tiny").iterdir()) == []


def test_cache_keeps_the_most_recently_used(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path, keep_per_model=2)
    keys = [tiny_key(input_shapes=((b, 3, 16, 16),)) for b in (1, 2, 3)]
    for age, key in enumerate(keys[:2]):
        directory = cache.store(key, lambda d: None)
        assert directory is not None
        os.utime(directory, (1000 + age, 1000 + age))
    assert cache.lookup(keys[0]) is not None  # a lookup marks keys[0] as just used
    cache.store(keys[2], lambda d: None)  # one too many: the least recently used goes
    assert [cache.lookup(k) is not None for k in keys] == [True, False, True]


# --- batch buckets -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "buckets"),
    [
        ((1, 1, 1), (1,)),
        ((1, 4, 8), (1, 2, 4, 8)),
        ((1, 4, 12), (1, 2, 4, 8, 12)),
        ((3, 4, 16), (3, 4, 8, 16)),
    ],
)
def test_batch_buckets(profile: tuple[int, int, int], buckets: tuple[int, ...]) -> None:
    assert batch_buckets(profile) == buckets
    assert bucket_for(profile[2], buckets) == profile[2]
    with pytest.raises(ValueError):
        bucket_for(profile[2] + 1, buckets)


@pytest.mark.parametrize(
    ("buckets", "limits", "batch", "calls"),
    [
        ((1, 2, 4), (1, None), 3, [4]),  # padded up to the next bucket
        ((1, 2, 4), (1, None), 7, [4, 4]),  # chunked by the largest bucket, the rest padded
        (None, (4, 8), 2, [4]),  # padded up to a profile's minimum
        (None, (1, 8), 19, [8, 8, 3]),  # chunked by a profile's maximum
        (None, (1, None), 5, [5]),  # as it is
    ],
)
def test_engine_pads_and_chunks_batches(buckets, limits, batch: int, calls: list[int]) -> None:
    module = TinyNet().eval()
    seen: list[int] = []

    def spy(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append(int(x.shape[0]))
        return module(x)

    engine = CompiledEngine(
        spy, key=tiny_key(), device=torch.device("cpu"), buckets=buckets, batch_limits=limits
    )
    x = example_input(batch, seed=batch)
    features, pooled = engine(x)
    assert seen == calls
    with torch.no_grad():
        want_features, want_pooled = module(x)
    torch.testing.assert_close(features, want_features)
    torch.testing.assert_close(pooled, want_pooled)


# --- engines -----------------------------------------------------------------------------


def test_calls_to_one_engine_on_a_device_take_turns() -> None:
    """On a GPU one engine serves several threads (sessions, batch threads, jobs): its
    calls must not overlap (a TensorRT context is not thread-safe; CUDA-graph outputs
    are reused by the next replay). Checked on the meta device, which runs no kernels:
    the turns are the engine's own, whatever the device."""
    import threading

    spans: list[tuple[float, float]] = []
    lock = threading.Lock()

    def slow(x: torch.Tensor) -> torch.Tensor:
        started = time.perf_counter()
        time.sleep(0.05)
        with lock:
            spans.append((started, time.perf_counter()))
        return torch.zeros(int(x.shape[0]), 4)

    engine = CompiledEngine(slow, key=tiny_key(), device=torch.device("meta"))
    x = torch.empty(2, 3, 8, 8, device="meta")
    threads = [threading.Thread(target=engine, args=(x,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spans.sort()
    assert len(spans) == 4
    assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(spans))


def test_eager_engine_matches_module_and_returns_float32() -> None:
    module, x = TinyNet(), example_input(3)
    engine = compile_module(module, [x], EagerBackend("cpu"), name="tiny", precision="bf16")
    assert engine.key.precision == "bf16"
    features, pooled = engine(x)
    with torch.no_grad():
        want, _ = module(x)
    assert features.dtype == torch.float32 and pooled.shape == (3, 4)
    assert 0 < float((features - want).abs().max()) < 0.03 * float(want.abs().max())
    assert next(module.parameters()).dtype == torch.float32  # the caller's module is untouched


def test_reduced_precision_that_loses_accuracy_is_rebuilt_in_fp32(
    caplog: pytest.LogCaptureFixture,
) -> None:
    x = torch.rand(2, 4) + 0.5
    with caplog.at_level(logging.WARNING, logger="engines.backends"):
        engine = compile_module(
            Cancelling(), [x], EagerBackend("cpu"), name="cancel", precision="bf16"
        )
    assert engine.key.precision == "fp32"
    assert any("using fp32" in r.getMessage() for r in caplog.records)
    torch.testing.assert_close(engine(x), x, atol=1e-3, rtol=1e-3)


@pytest.fixture(scope="module")
def inductor_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An engine cache holding TinyNet compiled by inductor in this process."""
    return tmp_path_factory.mktemp("engines")


@pytest.mark.slow
def test_inductor_compiles_a_real_module_on_cpu(inductor_cache: Path) -> None:
    module = TinyNet()
    backend = select_backend("inductor", "cpu", cache_dir=inductor_cache)
    engine = compile_module(
        module, [example_input(2)], backend, name="tiny", dynamic_batch=(1, 2, 4)
    )
    assert engine.backend == "inductor" and not engine.from_cache and engine.fallback is None
    graphs = counters["stats"]["unique_graphs"]
    for batch, in_inference, channels_last in [
        (1, False, False),
        (3, True, False),
        (4, False, True),
    ]:
        x = example_input(batch, seed=batch)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(in_inference):
            got_all = engine(x)
        with torch.no_grad():
            want_all = module(x)
        for got, want in zip(got_all, want_all, strict=True):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # The warm-up left nothing to compile: no batch size, tensor kind or layout recompiles.
    assert counters["stats"]["unique_graphs"] == graphs
    assert backend.cache is not None and backend.cache.lookup(engine.key) is not None


_RELOAD_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from torch._dynamo.utils import counters
from backends_helpers import TinyNet, example_input
from engines.backends import compile_module, select_backend
backend = select_backend("inductor", "cpu", cache_dir=Path(sys.argv[2]))
engine = compile_module(TinyNet(), [example_input(2)], backend, name="tiny", dynamic_batch=(1, 2, 4))
x = example_input(3, seed=3)
error = max(float((a - b).abs().max()) for a, b in zip(engine(x), TinyNet()(x)))
print(json.dumps({"from_cache": engine.from_cache, "error": error, **counters["inductor"]}))
"""


@pytest.mark.slow
def test_inductor_engine_is_reused_after_a_restart(inductor_cache: Path, tmp_path: Path) -> None:
    """A new process with an empty torch compile cache loads the engine from ours."""
    if not any(inductor_cache.glob("tiny/inductor-*/key.json")):
        pytest.skip("needs test_inductor_compiles_a_real_module_on_cpu to have built the engine")
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "torch")}
    out = subprocess.run(
        [sys.executable, "-c", _RELOAD_SCRIPT, str(TESTS_DIR), str(inductor_cache)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=True,
    )
    reloaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert reloaded["from_cache"] is True
    assert reloaded.get("fxgraph_cache_hit", 0) >= 1 and reloaded.get("fxgraph_cache_miss", 0) == 0
    assert reloaded["error"] < 1e-5


@pytest.mark.slow
def test_a_compile_failure_falls_back_to_eager(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = select_backend("inductor", "cpu", cache_dir=tmp_path / "engines")
    assert backend.name == "inductor"
    # The C++ compiler breaks after selection, so inductor's build really fails. An input
    # shape no other test uses keeps this process's in-memory compile caches cold.
    import torch._inductor.config as inductor_config

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "torch"))
    module, x = TinyNet(seed=7), torch.rand(2, 3, 13, 11)
    with inductor_config.patch({"cpp.cxx": (None, "/bin/false")}):
        engine = compile_module(module, [x], backend, name="tiny-broken")
    assert engine.backend == "eager" and engine.fallback is not None
    assert "inductor" in engine.fallback and "tiny-broken" in engine.fallback
    assert "C++ compiler" in engine.fallback
    torch.testing.assert_close(engine(x)[0], module(x)[0])


# --- on a GPU ----------------------------------------------------------------------------


@gpu
@needs_cuda
def test_auto_on_a_gpu_prefers_a_compiler() -> None:
    backend = select_backend("auto", "cuda")
    assert backend.name == ("tensorrt" if HAS_TRT else "inductor")


@gpu
@needs_cuda
@pytest.mark.parametrize("requested", ["inductor", "tensorrt"])
def test_gpu_engine_matches_eager_in_fp16(requested: str, tmp_path: Path) -> None:
    if requested == "tensorrt" and not HAS_TRT:
        pytest.skip("torch-tensorrt is not installed")
    backend = select_backend(requested, "cuda", cache_dir=tmp_path, strict=True)
    module = TinyNet().cuda()
    engine = compile_module(
        module, [example_input(4).cuda()], backend, name="tiny", dynamic_batch=(1, 4, 8)
    )
    assert engine.key.precision == "fp16" and engine.key.device_capability is not None
    first = engine(example_input(3).cuda())[0]
    second = engine(example_input(5, seed=9).cuda())[0]  # a later call must not overwrite `first`
    torch.testing.assert_close(first, module(example_input(3).cuda())[0], atol=2e-2, rtol=2e-2)
    assert second.shape[0] == 5
    reloaded = compile_module(
        module, [example_input(4).cuda()], backend, name="tiny", dynamic_batch=(1, 4, 8)
    )
    assert reloaded.from_cache
