"""Bearer-token authentication for the endpoints that start work or take uploads.

Tokens come from Settings.api_tokens. Authentication is required when
Settings.require_auth is True, off when False, and by default (None) required
exactly when the server listens on anything but a loopback address: a server
on 127.0.0.1 serves only its own machine, one on 0.0.0.0 serves the network.

Settings.whip_token (the one token OBS holds) is accepted on /whip and /whep, and on
/sessions/{id} for exactly the sessions published on /whip with it (`WHIP_SESSIONS`),
so a streamer can change or end their own stream's effect; never on other sessions
or other endpoints.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from typing import Annotated

from fastapi import Depends, Request

from stream.settings import Settings

MIN_TOKEN_CHARS = 16

# Path prefixes whose every method needs a token when authentication is on.
PROTECTED_PREFIXES = ("/offer", "/whip", "/jobs", "/faces", "/similarity", "/sessions")


class Unauthorized(PermissionError):
    """The request lacks a valid Bearer token; the message says how to send one."""


class WhipSessionGrants:
    """Ids of the live sessions published with the WHIP token (event loop only).

    stream.live grants a session when its publisher used the WHIP token and revokes it when
    the session ends. Session ids are random 128-bit hex, unique across servers in a process.
    """

    def __init__(self) -> None:
        self._ids: set[str] = set()

    def grant(self, session_id: str) -> None:
        self._ids.add(session_id)

    def revoke(self, session_id: str) -> None:
        self._ids.discard(session_id)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._ids


WHIP_SESSIONS = WhipSessionGrants()


def whip_token_allowed(path: str) -> bool:
    """Whether the WHIP token is accepted on `path`: WHIP, WHEP and its own sessions."""
    if path.startswith(("/whip", "/whep")):
        return True
    prefix, _, session_id = path.partition("/sessions/")
    return prefix == "" and "/" not in session_id and session_id in WHIP_SESSIONS


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def auth_required(settings: Settings) -> bool:
    """Whether requests to protected paths need a Bearer token under `settings`."""
    if settings.require_auth is not None:
        return settings.require_auth
    return not is_loopback(settings.host)


def is_protected(path: str) -> bool:
    """True when `path` is one of the endpoints that need a token (when auth is on)."""
    return any(path == prefix or path.startswith(prefix + "/") for prefix in PROTECTED_PREFIXES)


def check_auth_settings(settings: Settings) -> None:
    """Fail fast (ValueError) on weak tokens, or on required auth with no token configured."""
    for token in settings.api_tokens:
        if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
            raise ValueError(
                f"every API token must be at least {MIN_TOKEN_CHARS} characters without spaces"
            )
    if auth_required(settings) and not settings.api_tokens:
        raise ValueError(
            f"the server listens on {settings.host}, not a loopback address, so it requires Bearer "
            "tokens: set FACESTREAM_API_TOKENS='[\"<a long random token>\"]' "
            "(or FACESTREAM_REQUIRE_AUTH=false to serve without authentication)"
        )


def token_id(token: str) -> str:
    """A short, non-reversible name of a token for logs: 'tok-' + 8 hex digits of its SHA-256."""
    return "tok-" + hashlib.sha256(token.encode()).hexdigest()[:8]


def check_bearer(settings: Settings, authorization: str | None, path: str = "") -> str | None:
    """Check an Authorization header value; returns the token's id, or None when auth is off.

    Raises Unauthorized when auth is required and the header is missing,
    not a Bearer token, or not one of Settings.api_tokens (compared in constant time).
    Settings.whip_token is accepted too on /whip and /whep (OBS holds only that) and on
    /sessions/{id} of a session published with it (whip_token_allowed).
    """
    if not auth_required(settings):
        return None
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized(
            "this endpoint needs a token: send the header Authorization: Bearer <token>"
        )
    accepted = list(settings.api_tokens)
    if settings.whip_token and whip_token_allowed(path):
        accepted.append(settings.whip_token)
    matched = False
    for candidate in accepted:
        matched |= hmac.compare_digest(candidate.encode(), token.encode())
    if not matched:
        raise Unauthorized("the Bearer token is not valid for this server")
    return token_id(token)


def require_token(request: Request) -> str | None:
    """FastAPI dependency: the caller's token id (None when auth is off); 401 otherwise.

    The SecurityMiddleware already guards PROTECTED_PREFIXES; use this for a route
    outside them that must be guarded too.
    """
    settings: Settings = request.app.state.services.settings
    return check_bearer(settings, request.headers.get("authorization"))


TokenDep = Annotated[str | None, Depends(require_token)]
