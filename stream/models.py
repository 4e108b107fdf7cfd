"""Models shared by every session on one device, loaded on first use.

Without batching, everything here is touched only from the device's single worker
thread. With cross-session batching (`SharedModels(..., batching=True)`, as the
server makes it through :func:`serving_models` when Settings.batch_sessions says so),
sessions run in several worker threads and the face detector is reached only
through a :class:`stream.batched_detector.BatchedDetector`: the real detector lives
in the detect scheduler's thread, and the sessions' calls are batched there. Effects
with their own networks (gan_swap) batch through `batching` (EffectResources.batching).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING

from engines.batching import SchedulerPool
from engines.effects.base import EffectResources
from stream.batched_detector import BatchedDetector, Detector, DetectRequest, run_detections
from stream.pipeline import Stage, StageFactories
from stream.settings import Settings
from stream.worker import ModelWorker

if TYPE_CHECKING:
    from engines.backends import CompileBackend
    from engines.batching import BatchStats
    from engines.detection import FaceDetector
    from engines.landmarks import LandmarkPredictor
    from engines.types import Detections

logger = logging.getLogger(__name__)

# A session that asked within this window counts as active: a batch stops waiting for
# company once every active session has a request in it.
ACTIVE_WINDOW_MS = 500.0
# Most worker threads with batching on (about one per active session).
MAX_WORKER_THREADS = 32


def batching_enabled(settings: Settings, device: str) -> bool:
    """Settings.batch_sessions resolved for `device`: auto is on for CUDA only."""
    if settings.batch_sessions == "auto":
        return device.startswith("cuda")
    return settings.batch_sessions == "on"


def serving_models(settings: Settings, device: str) -> tuple[ModelWorker, SharedModels]:
    """The live sessions' worker and models for `device`, batched when the settings say so.

    With batching, the worker has one thread per session up to max_sessions (at most
    32) and closes the models' batch schedulers when it shuts down.
    """
    batching = batching_enabled(settings, device)
    models = SharedModels(settings, device, batching=batching)
    if not batching:
        return ModelWorker(device), models
    threads = max(2, min(settings.max_sessions, MAX_WORKER_THREADS))
    logger.info(
        "live sessions batch their model calls on %s (%d worker threads, wait %g ms)",
        device,
        threads,
        settings.batch_max_wait_ms,
    )
    return ModelWorker(device, threads=threads, on_shutdown=[models.close]), models


class SharedModels:
    """Lazily loaded models for one device.

    batching: route the face detector (and, through `session_resources`, gan_swap's
    network) through cross-session batch schedulers; their threads own those engines.
    """

    def __init__(self, settings: Settings, device: str, batching: bool = False) -> None:
        self.settings = settings
        self.device = device
        self.batching: SchedulerPool | None = (
            SchedulerPool(
                max_batch=settings.batch_max_size,
                max_wait_ms=settings.batch_max_wait_ms,
                max_queue=max(256, 4 * settings.batch_max_size),
                active_window_ms=ACTIVE_WINDOW_MS,
            )
            if batching
            else None
        )
        self._sessions = itertools.count()

    @cached_property
    def backend(self) -> CompileBackend:
        """The compile backend chosen at start (`--backend`); falls back with a logged reason."""
        import os

        from engines.backends import select_backend

        cache_dir = self.settings.weights_dir / "cache"
        # torch.compile's own kernel cache survives restarts next to our engine cache.
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir / "inductor"))
        return select_backend(self.settings.backend, self.device, cache_dir=cache_dir)

    @cached_property
    def engine_detector(self) -> FaceDetector:
        """The real detector, loaded (and compiled) in the thread that first asks, which
        then owns it: the worker thread, or with batching the detect scheduler's thread."""
        from engines.detection import FaceDetector
        from engines.detection.compiled import compile_detector

        logger.info("loading the face detector on %s", self.device)
        detector = FaceDetector(device=self.device, min_face_size=self.settings.min_face_size)
        return compile_detector(detector, self.backend)

    @cached_property
    def detector(self) -> Detector:
        """The face detector for callers in worker threads (e.g. POST /faces): the real one,
        or with batching a thread-safe BatchedDetector (no session of its own)."""
        if self.batching is None:
            return self.engine_detector
        scheduler = self.batching.get("detector", self._run_detections, name="detect")
        return BatchedDetector(scheduler, self.settings.min_face_size)

    def _run_detections(self, requests: Sequence[DetectRequest]) -> list[Detections]:
        """The detect scheduler's batch function; runs in its thread."""
        return run_detections(self.engine_detector, requests)

    @cached_property
    def landmarker(self) -> LandmarkPredictor:
        from engines.landmarks import LandmarkPredictor

        return LandmarkPredictor()

    def warm_up(self) -> None:
        """Load (and compile) the detector and landmarks and run them once on a blank frame."""
        import numpy as np

        try:
            self.detector.detect([np.zeros((480, 640, 3), np.uint8)])
            self.landmarker  # noqa: B018 - loads the dlib model
        except Exception:
            logger.exception("warming up the face models failed; they load on first use")

    def session_resources(self, resources: EffectResources) -> EffectResources:
        """`resources` for the effects of live sessions: with the batch schedulers, if any."""
        if self.batching is None:
            return resources
        return dataclasses.replace(resources, batching=self.batching)

    def batch_stats(self) -> dict[str, BatchStats]:
        """Engine name (detect, gan_swap...) -> batching counters; empty without batching."""
        return {} if self.batching is None else self.batching.stats()

    def close(self) -> None:
        """Finish queued batched calls and stop the schedulers' threads."""
        if self.batching is not None:
            self.batching.close()

    def stage_factories(self) -> StageFactories:
        """Factories for the stages of one new session or file."""
        return StageFactories(
            face=self._face_stage, landmarks68=self._landmark_stage, label=self._label_stage
        )

    def _face_stage(self) -> Stage:
        from stream.face_stage import FaceStage

        detector = self.detector
        if isinstance(detector, BatchedDetector):
            # Each face stage is its own session for the scheduler (order, early dispatch).
            detector = detector.for_session(f"faces-{next(self._sessions)}")
        return FaceStage(
            detector,
            detect_every=self.settings.detect_every,
            smoothing=self.settings.smoothing,
        )

    def _landmark_stage(self) -> Stage:
        from stream.landmark_stage import LandmarkStage

        return LandmarkStage(self.landmarker)

    def _label_stage(self) -> Stage:
        from stream.label_stage import LabelStage

        return LabelStage(enabled=self.settings.label_swaps)
