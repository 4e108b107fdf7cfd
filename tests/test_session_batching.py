"""Cross-session batching of the live server's model calls (no server here; see
test_session_batching_live.py): the batched detector facade, gan_swap's batched model
call, the scheduler's early dispatch, the worker's per-session serialisation, settings."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import PORTRAITS, load_rgb, portrait_path
from synthetic import linear_path, make_clip

from engines.batching import BatchScheduler, SchedulerPool
from engines.detection import FaceDetector
from engines.effects.base import EffectResources
from engines.effects.registry import build_effect
from engines.errors import InvalidImage
from engines.faceswap_gan.batched import BatchedSwapper
from engines.types import Detections, Face
from stream.batched_detector import BatchedDetector, run_detections
from stream.models import SharedModels, batching_enabled, serving_models
from stream.settings import Settings
from stream.worker import ModelWorker

pytestmark = pytest.mark.timeout(120)

SIZE = (256, 192)  # width, height: small frames keep the detector fast


def session_frames(person: int, count: int) -> list[np.ndarray]:
    """`count` frames of one portrait moving across a small frame."""
    portrait = load_rgb(portrait_path(PORTRAITS[person]), 400)
    path = linear_path(count, (100 + 10 * person, 96), (150 + 10 * person, 100))
    return make_clip(portrait, path, size=SIZE, portrait_height=150).frames


@pytest.fixture(scope="module")
def plain() -> FaceDetector:
    return FaceDetector(min_face_size=40)


def same(got: Detections, want: Detections) -> None:
    assert len(got) == len(want)
    np.testing.assert_allclose(got.boxes, want.boxes, atol=0.05)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-4)
    np.testing.assert_allclose(got.landmarks, want.landmarks, atol=0.05)


def run_sessions(target: Callable[[int], None], sessions: int) -> None:
    threads = [threading.Thread(target=target, args=(s,)) for s in range(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)


@pytest.mark.parametrize(("sessions", "frames"), [(2, 4), (3, 3)])
def test_batched_detector_gives_each_session_the_plain_detectors_results_in_order(
    plain: FaceDetector, tmp_path: Path, sessions: int, frames: int
) -> None:
    clips = [session_frames(s, frames) for s in range(sessions)]
    want_full = {s: [plain.detect([f])[0] for f in clips[s]] for s in range(sessions)}
    want_regions = {
        s: [
            plain.detect_in_regions(f, d.boxes) for f, d in zip(clips[s], want_full[s], strict=True)
        ]
        for s in range(sessions)
    }
    settings = Settings(data_dir=tmp_path, batch_max_wait_ms=50, min_face_size=40)
    models = SharedModels(settings, "cpu", batching=True)
    got: dict[int, list[tuple[Detections, Detections]]] = {}

    def session(sid: int) -> None:
        stage = models.stage_factories().face
        assert stage is not None
        detector = stage().detector  # type: ignore[attr-defined]
        assert isinstance(detector, BatchedDetector) and detector.session is not None
        got[sid] = [
            (detector.detect([frame])[0], detector.detect_in_regions(frame, want.boxes))
            for frame, want in zip(clips[sid], want_full[sid], strict=True)
        ]

    try:
        run_sessions(session, sessions)
        stats = models.batch_stats()["detect"]
    finally:
        models.close()
    for sid in range(sessions):
        assert len(got[sid]) == frames
        for (full, regions), want, want_near in zip(
            got[sid], want_full[sid], want_regions[sid], strict=True
        ):
            assert len(want) == 1  # one clear face per frame: a wrong routing would show
            same(full, want)
            same(regions, want_near)
    assert stats.items == 2 * sessions * frames and stats.failed_batches == 0
    assert stats.largest_batch > 1, "the sessions' detections were never batched together"
    assert not [t for t in threading.enumerate() if t.name.startswith("batch-")]


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((64, 64), np.uint8),  # not RGB
        np.zeros((64, 64, 3), np.float32),  # not uint8
    ],
)
def test_a_bad_image_fails_only_its_own_caller(plain: FaceDetector, bad: np.ndarray) -> None:
    frames = [session_frames(s, 1)[0] for s in range(2)]
    outcomes: dict[int, object] = {}
    # A full batch of three goes at once; the long wait makes sure all three share it.
    with BatchScheduler(
        functools.partial(run_detections, plain), max_batch=3, max_wait_ms=5000
    ) as scheduler:
        facade = BatchedDetector(scheduler, plain.min_face_size)
        images = [frames[0], bad, frames[1]]

        def session(sid: int) -> None:
            try:
                outcomes[sid] = facade.for_session(sid).detect([images[sid]])[0]
            except Exception as error:
                outcomes[sid] = error

        run_sessions(session, 3)
        stats = scheduler.stats
    assert isinstance(outcomes[1], InvalidImage)
    for sid, frame in ((0, frames[0]), (2, frames[1])):
        result = outcomes[sid]
        assert isinstance(result, Detections)
        same(result, plain.detect([frame])[0])
    assert stats.failed_batches == 1 and stats.largest_batch == 3


@pytest.mark.parametrize(
    ("window_ms", "waits"),
    [
        (None, True),  # without the active window a lone session waits out max_wait
        (500.0, False),  # with it, a lone (or every) active session's request goes at once
    ],
)
def test_a_batch_waits_only_while_another_session_could_join(
    window_ms: float | None, waits: bool
) -> None:
    def double(items: Sequence[int]) -> list[int]:
        return [i * 2 for i in items]

    with BatchScheduler(
        double, max_batch=8, max_wait_ms=500, active_window_ms=window_ms
    ) as scheduler:
        started = time.monotonic()
        for value in range(3):
            assert scheduler.submit(value, session="only").result(10) == value * 2
        elapsed = time.monotonic() - started
    # Waiting takes 3 x 500 ms at least; going at once leaves a loaded host a second for
    # three thread hand-overs.
    assert (elapsed >= 1.5) if waits else (elapsed < 1.0), elapsed


def test_an_active_session_is_waited_for_within_the_window() -> None:
    calls: list[list[str]] = []

    def run(items: Sequence[str]) -> list[str]:
        calls.append(list(items))
        return list(items)

    # Long waits and window: a1's check below (it must not go at once) cannot outlast
    # max_wait, nor b leave the window, on a loaded host.
    with BatchScheduler(run, max_batch=8, max_wait_ms=2000, active_window_ms=10_000) as scheduler:
        scheduler.submit("a0", session="a").result(10)  # a alone: at once
        started = time.monotonic()
        scheduler.submit("b0", session="b").result(10)  # a is active: b0 waits for it
        assert time.monotonic() - started >= 1.9
        first = scheduler.submit("a1", session="a")
        time.sleep(0.3)  # the dispatcher's chance to send a1 alone (the bug); 1.7 s to spare
        assert not first.done(), "a1 went although b was active and not queued"
        second = scheduler.submit("b1", session="b")
        assert first.result(10) == "a1" and second.result(10) == "b1"
    assert calls[-1] == ["a1", "b1"]


@pytest.mark.parametrize(
    ("choice", "device", "expected"),
    [
        ("auto", "cpu", False),
        ("auto", "cuda", True),
        ("auto", "cuda:1", True),
        ("on", "cpu", True),
        ("off", "cuda", False),
    ],
)
def test_batching_setting(tmp_path: Path, choice: str, device: str, expected: bool) -> None:
    settings = Settings(data_dir=tmp_path, batch_sessions=choice)  # type: ignore[arg-type]
    assert batching_enabled(settings, device) is expected


@pytest.mark.parametrize(("choice", "threads"), [("off", 1), ("on", 8)])
def test_serving_models_pool_and_shutdown(tmp_path: Path, choice: str, threads: int) -> None:
    settings = Settings(data_dir=tmp_path, batch_sessions=choice, max_sessions=8)  # type: ignore[arg-type]
    before = set(threading.enumerate())
    worker, models = serving_models(settings, "cpu")
    assert worker.threads == threads and (models.batching is not None) is (choice == "on")
    resources = models.session_resources(EffectResources())
    assert resources.batching is models.batching
    worker.submit(models.warm_up).result(60)
    assert set(models.batch_stats()) == ({"detect"} if choice == "on" else set())
    worker.shutdown()
    assert not set(threading.enumerate()) - before, "a worker or scheduler thread outlived it"


async def test_calls_for_one_owner_never_overlap() -> None:
    worker = ModelWorker("cpu", threads=4)
    active: dict[str, int] = {"a": 0, "b": 0}
    most: dict[str, int] = {"a": 0, "b": 0}
    spans: dict[str, list[tuple[float, float]]] = {"a": [], "b": []}
    lock = threading.Lock()

    def step(owner: str) -> None:
        with lock:
            active[owner] += 1
            most[owner] = max(most[owner], active[owner])
        began = time.monotonic()
        time.sleep(0.02)
        ended = time.monotonic()
        with lock:
            active[owner] -= 1
            spans[owner].append((began, ended))

    owners = {"a": Owner(), "b": Owner()}
    try:
        await asyncio.gather(
            *(worker.run_for(owners[name], step, name) for name in "abababab"),
        )
    finally:
        worker.shutdown()
    assert most == {"a": 1, "b": 1}
    assert len(spans["a"]) == len(spans["b"]) == 4
    side_by_side = [(a, b) for a in spans["a"] for b in spans["b"] if a[0] < b[1] and b[0] < a[1]]
    assert side_by_side, f"different owners did not run side by side: {spans}"


class Owner:
    """Stands for a session's pipeline (weakly referenceable)."""


# ----- gan_swap ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def swap_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny faceswap model: its output is arbitrary but deterministic."""
    from engines.faceswap_gan.model import FaceswapConfig, FaceswapGenerator
    from engines.faceswap_gan.modelfile import export_model

    torch.manual_seed(0)
    config = FaceswapConfig(size=64, width=8, max_width=32, latent_dim=16)
    path = tmp_path_factory.mktemp("swap") / "model.pt"
    return export_model(FaceswapGenerator(config), path, {})


def test_gan_swap_batches_the_faces_of_several_sessions(swap_model: Path) -> None:
    plain = build_effect("gan_swap", {}, EffectResources(model_path=swap_model))
    pool = SchedulerPool(max_batch=8, max_wait_ms=100, active_window_ms=1000)
    resources = EffectResources(model_path=swap_model, batching=pool)
    effects = [build_effect("gan_swap", {}, resources) for _ in range(3)]
    rng = np.random.default_rng(1)
    crops = [rng.integers(0, 255, (n, 64, 64, 3), dtype=np.uint8) for n in (1, 2, 3)]
    frames = [cv2.resize(session_frames(s, 1)[0], None, fx=2, fy=2) for s in range(3)]
    detector = FaceDetector(min_face_size=40)
    faces = [Face.from_detections(detector.detect([frame])[0]) for frame in frames]
    got: dict[int, tuple[object, np.ndarray]] = {}

    def session(sid: int) -> None:
        swapper = effects[sid].swapper  # type: ignore[attr-defined]
        assert isinstance(swapper, BatchedSwapper)
        results = [swapper(crops[sid]) for _ in range(3)]
        got[sid] = (results, effects[sid].apply(frames[sid].copy(), faces[sid]))

    try:
        run_sessions(session, 3)
        stats = pool.stats()
    finally:
        pool.close()
    direct = plain.swapper  # type: ignore[attr-defined]
    for sid in range(3):
        results, image = got[sid]
        want = direct(crops[sid])
        for result in results:  # type: ignore[attr-defined]
            assert result.rgb.shape == want.rgb.shape
            assert np.abs(result.rgb.astype(int) - want.rgb).max() <= 1
            np.testing.assert_allclose(result.mask, want.mask, atol=1e-4)
        reference = plain.apply(frames[sid].copy(), faces[sid])
        assert len(faces[sid]) == 1 and np.abs(image.astype(int) - reference).max() <= 2
        assert np.abs(image.astype(int) - frames[sid]).mean() > 0.5  # the face was swapped
    (name,) = stats
    assert name == "gan_swap.a_to_b" and stats[name].largest_batch > 1
    assert stats[name].items == 3 * 4 and stats[name].failed_batches == 0
