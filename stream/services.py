"""The long-lived objects of one running server, built in the app's lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engines.effects.base import EffectResources
from stream.audit import AuditLog
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
        """Resources an effect is built with: weights folder, device, uploaded faces;
        for the server's remote users (no server paths or command-line advice in reasons)."""
        return effect_resources(self.settings, self.worker.device, self.faces, remote_users=True)

    @property
    def audit(self) -> AuditLog:
        return AuditLog.for_data_dir(self.settings.data_dir)

    async def delete_face(self, face_id: str, client: str) -> bool:
        """Delete an uploaded face and stop every use of it: its uploader withdraws
        consent. Live sessions swapping it switch to `none`, queued and running jobs
        using it fail; the audit log records it. False when there was no such face."""
        if not await asyncio.to_thread(self.faces.remove, face_id):
            return False
        sessions = await self.sessions.withdraw_face(face_id)
        jobs = self.jobs.withdraw_face(face_id)
        self.audit.record(
            "face.delete",
            client=client,
            face_id=face_id,
            sessions_stopped=sessions,
            jobs_stopped=jobs,
        )
        return True


def effect_resources(
    settings: Settings,
    device: str,
    faces: Mapping[str, np.ndarray],
    model_path: Path | None = None,
    remote_users: bool = False,
) -> EffectResources:
    """What effects are built with, from the settings: weights folder, backend, faces, model.

    remote_users: for the HTTP server (EffectResources.remote_users); False on the command line.
    """
    return EffectResources(
        weights_dir=settings.weights_dir,
        device=device,
        source_faces=faces,
        model_path=model_path,
        backend=settings.backend,
        remote_users=remote_users,
    )
