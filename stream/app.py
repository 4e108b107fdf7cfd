"""The FastAPI app: `create_app(settings)`; services are built in the lifespan, not at import."""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from stream.errors import install_error_handlers
from stream.metrics import Metrics
from stream.models import serving_models
from stream.security import SecurityMiddleware
from stream.services import Services, effect_resources
from stream.sessions import SessionManager
from stream.settings import Settings

logger = logging.getLogger(__name__)

# One router per resource; each module defines `router`.
_ROUTERS = (
    "stream.routes.health",
    "stream.routes.sessions",
    "stream.routes.faces",
    "stream.routes.jobs",
    "stream.routes.whip",
    "stream.routes.pages",
)


def build_services(settings: Settings) -> Services:
    """Worker, models, stores and the session manager for one server."""
    from stream.face_store import FaceStore
    from stream.jobs import JobManager

    device = settings.resolved_device()
    worker, models = serving_models(settings, device)
    metrics = Metrics()
    faces = FaceStore(settings.data_dir / "faces")
    resources = effect_resources(settings, device, faces, remote_users=True)
    sessions = SessionManager(
        worker,
        models,
        metrics,
        models.session_resources(resources),
        settings.max_sessions,
        settings.max_sessions_per_client,
        connect_timeout_s=settings.session_connect_timeout_s,
    )
    jobs = JobManager(settings, resources, settings.job_max_pending, settings.job_retention_s)
    return Services(settings, worker, models, metrics, faces, sessions, jobs)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The facestream server. `settings` default: read from FACESTREAM_* at start-up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings or Settings())
        app.state.services = services
        await services.jobs.start()
        if services.settings.warm_up:
            # Load and compile the face models before the first frame asks for them.
            services.worker.submit(services.models.warm_up)
        logger.info("facestream serving on %s", services.worker.device)
        try:
            yield
        finally:
            await services.jobs.shutdown()
            await services.sessions.close_all()
            services.worker.shutdown()
            logger.info("facestream stopped")

    app = FastAPI(title="facestream", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(SecurityMiddleware, settings=settings)
    for module_name in _ROUTERS:
        module = importlib.import_module(module_name)
        app.include_router(module.router)
    return app
