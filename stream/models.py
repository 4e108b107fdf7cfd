"""Models shared by every session on one device, loaded on first use in the worker thread."""

from __future__ import annotations

import logging
from functools import cached_property
from typing import TYPE_CHECKING

from stream.pipeline import Stage, StageFactories
from stream.settings import Settings

if TYPE_CHECKING:
    from engines.backends import CompileBackend
    from engines.detection import FaceDetector
    from engines.landmarks import LandmarkPredictor

logger = logging.getLogger(__name__)


class SharedModels:
    """Lazily loaded models for one device. Touch only from that device's worker thread."""

    def __init__(self, settings: Settings, device: str) -> None:
        self.settings = settings
        self.device = device

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
    def detector(self) -> FaceDetector:
        from engines.detection import FaceDetector
        from engines.detection.compiled import compile_detector

        logger.info("loading the face detector on %s", self.device)
        detector = FaceDetector(device=self.device, min_face_size=self.settings.min_face_size)
        return compile_detector(detector, self.backend)

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

    def stage_factories(self) -> StageFactories:
        """Factories for the stages of one new session or file."""
        return StageFactories(
            face=self._face_stage, landmarks68=self._landmark_stage, label=self._label_stage
        )

    def _face_stage(self) -> Stage:
        from stream.face_stage import FaceStage

        return FaceStage(
            self.detector,
            detect_every=self.settings.detect_every,
            smoothing=self.settings.smoothing,
        )

    def _landmark_stage(self) -> Stage:
        from stream.landmark_stage import LandmarkStage

        return LandmarkStage(self.landmarker)

    def _label_stage(self) -> Stage:
        from stream.label_stage import LabelStage

        return LabelStage(enabled=self.settings.label_swaps)
