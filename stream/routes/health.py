"""/healthz, /metrics and /effects."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from engines.effects.registry import describe_effects
from stream.deps import ServicesDep

router = APIRouter()


@router.get("/healthz")
async def healthz(services: ServicesDep) -> dict[str, Any]:
    return {"status": "ok", "device": services.worker.device, "sessions": len(services.sessions)}


@router.get("/metrics")
async def metrics(services: ServicesDep) -> Response:
    return Response(services.metrics.render(), media_type="text/plain; version=0.0.4")


@router.get("/effects")
async def effects(services: ServicesDep) -> list[dict[str, Any]]:
    return describe_effects(services.effect_resources())
