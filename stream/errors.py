"""Map typed errors to HTTP answers: always JSON `{"detail": ...}`, never a bare 500."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from engines.errors import (
    EffectUnavailable,
    EngineError,
    InvalidParams,
    ModelLoadError,
    NoFaceFound,
    TooManyFaces,
    UnknownEffect,
)
from stream.sdp_check import InvalidSDP
from stream.security import EmptyUpload, Unauthorized, UnsupportedMediaType
from stream.security.responses import SafeJSONResponse, validation_error
from stream.sessions import SessionLimitReached, SessionNotFound

logger = logging.getLogger(__name__)

_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (UnknownEffect, 422),
    (InvalidParams, 422),
    (EffectUnavailable, 422),
    (ModelLoadError, 422),
    (NoFaceFound, 422),
    (TooManyFaces, 422),
    (EngineError, 422),
    (SessionNotFound, 404),
    (SessionLimitReached, 429),
    (InvalidSDP, 400),
    (EmptyUpload, 400),
    (Unauthorized, 401),
    (UnsupportedMediaType, 415),
)


def _status_of(error: Exception) -> int:
    for kind, status in _STATUS:
        if isinstance(error, kind):
            return status
    return 500


def install_error_handlers(app: FastAPI) -> None:
    async def typed_error(_request: Request, error: Exception) -> JSONResponse:
        status = _status_of(error)
        headers = {"Retry-After": "10"} if status == 429 else None
        if status == 401:
            headers = {"WWW-Authenticate": 'Bearer realm="facestream"'}
        return SafeJSONResponse({"detail": str(error)}, status_code=status, headers=headers)

    async def client_gone(request: Request, _error: Exception) -> JSONResponse:
        # A cancelled upload or a closed tab: nobody is left to answer, nothing went wrong here.
        logger.info("client left during %s %s", request.method, request.url.path)
        detail = "the client disconnected before its request was read"
        return JSONResponse({"detail": detail}, status_code=400)

    async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error: {type(error).__name__}"}, status_code=500)

    for kind, _status in _STATUS:
        app.add_exception_handler(kind, typed_error)
    app.add_exception_handler(ClientDisconnect, client_gone)
    app.add_exception_handler(Exception, unexpected_error)
    app.add_exception_handler(RequestValidationError, validation_error)
