"""The long-lived objects of one running server, built in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from engines.effects.base import EffectResources
from stream.metrics import Metrics
from stream.models import SharedModels
from stream.settings import Settings
from stream.worker import ModelWorker

if TYPE_CHECKING:
    from stream.face_store import FaceStore
    from stream.jobs import JobManager
    from stream.sessions import SessionManager


@dataclass
class Services:
    """What the routes reach through `stream.deps`.

    worker: the model worker thread of the serving device; models: its shared models.
    faces: uploaded swap sources; sessions: live WebRTC sessions.
    """

    settings: Settings
    worker: ModelWorker
    models: SharedModels
    metrics: Metrics
    faces: FaceStore
    sessions: SessionManager
    jobs: JobManager

    def effect_resources(self) -> EffectResources:
        """Resources an effect is built with: weights folder, device, uploaded faces."""
        return EffectResources(
            weights_dir=self.settings.weights_dir,
            device=self.worker.device,
            source_faces=self.faces,
        )
