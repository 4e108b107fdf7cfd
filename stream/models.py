"""Models shared by every session on one device, loaded on first use in the worker thread."""

from __future__ import annotations

import logging
from functools import cached_property
from typing import TYPE_CHECKING, Any

from stream.pipeline import Stage, StageFactories
from stream.settings import Settings

if TYPE_CHECKING:
    from engines.detection import FaceDetector

logger = logging.getLogger(__name__)


class SharedModels:
    """Lazily loaded models for one device. Touch only from that device's worker thread."""

    def __init__(self, settings: Settings, device: str) -> None:
        self.settings = settings
        self.device = device

    @cached_property
    def detector(self) -> FaceDetector:
        from engines.detection import FaceDetector

        logger.info("loading the face detector on %s", self.device)
        return FaceDetector(device=self.device, min_face_size=self.settings.min_face_size)

    @cached_property
    def landmarker(self) -> Any:
        from engines.landmarks import LandmarkPredictor

        return LandmarkPredictor()

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
