"""FastAPI dependency aliases: `def route(services: ServicesDep)`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from stream.services import Services


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def client_of(request: Request) -> str:
    """The client's address, as counted for per-client limits and the audit log (behind
    a trusted proxy: the address it forwards)."""
    return request.client.host if request.client else "unknown"
