"""One ASGI middleware for what must happen before a route runs: CORS, auth, body size.

Order, outermost first:
1. CORS (Starlette's CORSMiddleware) with Settings.cors_origins as the allow-list,
   so preflights pass and even refusals carry the CORS headers a browser needs.
2. Bearer-token check on the protected paths (stream.security.auth).
3. Body-size limit per endpoint, enforced BEFORE the body is read: a declared
   Content-Length above the limit is answered 413 at once; a body without one
   (chunked) is counted as it streams and the request ends with 413 as soon as
   it passes the limit.

Settings come from the constructor or, when the app was created without them,
from `app.state.services.settings` (built in the lifespan) on the first request.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stream.security.auth import Unauthorized, check_bearer, is_protected
from stream.settings import Settings
from stream.uploads import human_size

logger = logging.getLogger(__name__)

_FORM_ALLOWANCE = 64 * 1024  # multipart boundaries and small form fields next to a file


def body_limit(settings: Settings, method: str, path: str) -> int:
    """The largest request body accepted for `method path`, in bytes."""
    if method == "POST" and (path in ("/offer", "/whip") or path.startswith("/whep/")):
        return settings.max_offer_bytes
    if method == "POST" and path == "/faces":
        return settings.max_image_bytes + _FORM_ALLOWANCE
    if method == "POST" and path == "/similarity":  # two images
        return 2 * settings.max_image_bytes + _FORM_ALLOWANCE
    if method == "POST" and path == "/jobs":
        return settings.max_video_bytes + _FORM_ALLOWANCE
    return settings.max_body_bytes


def limit_words(settings: Settings, method: str, path: str) -> str:
    """The body limit of `method path` as its user knows it: the configured file size."""
    if method == "POST" and path == "/jobs":
        return f"the limit for a video on this server is {human_size(settings.max_video_bytes)}"
    if method == "POST" and path in ("/faces", "/similarity"):
        return f"the limit for an image on this server is {human_size(settings.max_image_bytes)}"
    if method == "POST" and (path in ("/offer", "/whip") or path.startswith("/whep/")):
        return f"the limit for an SDP offer is {human_size(settings.max_offer_bytes)}"
    return f"the limit for {method} {path} is {human_size(body_limit(settings, method, path))}"


class _BodyTooLarge(Exception):
    pass


async def _send_json(
    send: Send, status: int, detail: str, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    if status == 413:
        raw.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class _Guard:
    """Auth and body limits for one app (inner part of SecurityMiddleware)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        if method != "OPTIONS" and is_protected(path):
            try:
                token = check_bearer(self.settings, _header(scope, b"authorization"), path)
            except Unauthorized as error:
                challenge = {"WWW-Authenticate": 'Bearer realm="facestream"'}
                await _send_json(send, 401, str(error), challenge)
                return
            scope.setdefault("state", {})["token_id"] = token
        limit = body_limit(self.settings, method, path)
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await _send_json(send, 400, "the Content-Length header is not a number")
                return
            if int(declared) > limit:
                await _send_json(send, 413, self._too_large(method, path, int(declared)))
                return
        await self._limited(scope, receive, send, limit)

    def _too_large(self, method: str, path: str, size: int | None) -> str:
        limit = human_size(body_limit(self.settings, method, path))
        what = human_size(size) if size is not None else limit
        if size is None or what == limit:  # 512.2 MiB is "512 MiB" too: not "512 over 512"
            what = f"more than {limit}"
        return f"the request body is {what}; {limit_words(self.settings, method, path)}"

    async def _limited(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """Run the app with a receive that counts body bytes and stops at `limit`."""
        state: dict[str, Any] = {"received": 0, "exceeded": False, "started": False}

        async def counting_receive() -> Message:
            if state["exceeded"]:
                raise _BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    state["exceeded"] = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            if state["exceeded"]:
                return  # the app's answer to a cut-off body is replaced by the 413
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        with contextlib.suppress(_BodyTooLarge):
            await self.app(scope, counting_receive, guarded_send)
        if state["exceeded"] and not state["started"]:
            logger.info("refused %s %s: body over %d bytes", scope["method"], scope["path"], limit)
            await _send_json(send, 413, self._too_large(scope["method"], scope["path"], None))


class _JsonCORSMiddleware(CORSMiddleware):
    """Starlette's CORS handling, with refused preflights answered in JSON like every other 4xx."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        reason = bytes(response.body).decode("utf-8", "replace")  # "Disallowed CORS origin, ..."
        what = reason.removeprefix("Disallowed CORS ").strip() or "request"
        refused = what.split(", ")
        detail = f"CORS preflight refused: {what} not allowed"
        if "origin" in refused:
            origin = request_headers.get("origin", "")
            detail += f" ({origin!r} is not in FACESTREAM_CORS_ORIGINS)"
        if "method" in refused:
            detail += f" (method {request_headers.get('access-control-request-method', '')})"
        if "headers" in refused:
            asked = request_headers.get("access-control-request-headers", "")
            detail += f" (headers asked for: {asked})"
        headers = {
            key: value
            for key, value in response.headers.items()
            if key.lower() not in ("content-length", "content-type")
        }
        return JSONResponse({"detail": detail}, status_code=response.status_code, headers=headers)


class SecurityMiddleware:
    """CORS allow-list, Bearer auth on protected paths and per-endpoint body limits."""

    def __init__(self, app: ASGIApp, settings: Settings | None = None) -> None:
        self.app = app
        self._settings = settings
        self._chain: ASGIApp | None = None

    def _resolve_settings(self, scope: Scope) -> Settings | None:
        if self._settings is not None:
            return self._settings
        services = getattr(getattr(scope.get("app"), "state", None), "services", None)
        return getattr(services, "settings", None)

    def _build(self, settings: Settings) -> ASGIApp:
        guard = _Guard(self.app, settings)
        if not settings.cors_origins:
            return guard
        return _JsonCORSMiddleware(
            guard,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "If-Match"],
            expose_headers=["Location", "Retry-After", "ETag", "Link"],
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._chain is None:
            settings = self._resolve_settings(scope)
            if settings is None:  # no lifespan ran: refuse rather than serve unguarded
                await _send_json(send, 503, "the server is not started yet")
                return
            self._chain = self._build(settings)
        await self._chain(scope, receive, send)
