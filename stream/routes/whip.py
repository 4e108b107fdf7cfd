"""WHIP ingest (RFC 9725) and WHEP playback of the processed stream.

POST /whip?effect=NAME&stream=NAME&background=green&KEY=VALUE...
    Content-Type: application/sdp; body: the publisher's SDP offer; answer: 201
    Created, application/sdp, Location: /whip/{session_id}. Every query key other
    than `effect`, `stream` and `background` is an effect parameter (OBS can only
    set a URL and a token, so the URL carries the effect). `stream` (default "live")
    names the stream for players. `background=green` (or RRGGBB) paints everything
    outside the heads in that key colour, for the overlay's transparent background.
DELETE /whip/{session_id}    ends the session (200).
POST /whep/{session}         `session`: a session id or a stream name; body: a
    recvonly SDP offer; answer: 201, Location: /whep/{session}/{player_id}.
DELETE /whep/{session}/{player_id}   ends that player only.
PATCH on either resource: 405 — aiortc does not trickle ICE; clients must put
    their candidates in the offer (OBS and browsers that wait for gathering do).
OPTIONS /whip and /whep/{session}: 200 with `Accept-Post: application/sdp` (RFC 9725
    section 4.2); CORS preflights from allowed origins (Settings.cors_origins) are
    answered by the security middleware before they get here.

Authentication: when Settings.whip_token is set, or the server requires API tokens
(stream.security: any non-loopback host by default), every WHIP and WHEP request
must carry `Authorization: Bearer <token>` with the WHIP token or an API token;
otherwise 401 with `WWW-Authenticate: Bearer`. (When API tokens are required, the
security middleware checks these paths first, against the same tokens.) A session
published with the WHIP token may be changed with it on /sessions/{id} too
(stream.security.auth.WHIP_SESSIONS).
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from aiortc import RTCSessionDescription
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response

from engines.effects.base import Color
from stream.deps import ServicesDep, client_of
from stream.keying import parse_key_colour
from stream.live import DEFAULT_STREAM, LiveRegistry, PlayerLimitReached, PlayerNotFound
from stream.sdp_check import check_offer_sdp
from stream.security import Unauthorized, auth_required
from stream.services import Services
from stream.sessions import EffectChoice
from stream.settings import Settings

SDP_TYPE = "application/sdp"
_RESERVED_QUERY = {"effect", "stream", "background"}
_NO_TRICKLE = "this server does not support trickle ICE; send every candidate in the offer"


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    services: Services = app.state.services
    registry = LiveRegistry(
        services.sessions, connect_timeout_s=services.settings.session_connect_timeout_s
    )
    app.state.live = registry
    try:
        yield
    finally:
        await registry.close()


router = APIRouter(lifespan=_lifespan)


def get_live(request: Request) -> LiveRegistry:
    registry: LiveRegistry = request.app.state.live
    return registry


LiveDep = Annotated[LiveRegistry, Depends(get_live)]


def check_whip_token(settings: Settings, authorization: str | None) -> bool:
    """Raise Unauthorized unless `authorization` carries an accepted token, when one is needed.

    A token is needed when Settings.whip_token is set or the server requires API tokens
    (stream.security.auth_required); accepted: whip_token and every API token.
    Returns True when the token given is the WHIP token.
    """
    accepted = [settings.whip_token] if settings.whip_token else []
    if not accepted and not auth_required(settings):
        return False
    accepted += settings.api_tokens
    scheme, _, given = (authorization or "").strip().partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        raise Unauthorized("send the WHIP token as the header Authorization: Bearer <token>")
    matched = False
    for token in accepted:
        matched |= hmac.compare_digest(token.encode(), given.encode())
    if not matched:
        raise Unauthorized("the Bearer token is not valid for WHIP/WHEP on this server")
    whip = settings.whip_token or ""
    return bool(whip) and hmac.compare_digest(whip.encode(), given.encode())


async def _sdp_offer(request: Request, settings: Settings) -> RTCSessionDescription:
    """The request body as an SDP offer: 415 unless application/sdp, 400 when malformed."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != SDP_TYPE:
        raise HTTPException(415, detail=f"send the SDP offer with Content-Type: {SDP_TYPE}")
    raw = await request.body()
    if len(raw) > settings.max_offer_bytes:
        raise HTTPException(
            413, detail=f"the offer is larger than {settings.max_offer_bytes} bytes"
        )
    try:
        sdp = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, detail="the SDP offer is not UTF-8 text") from None
    check_offer_sdp(sdp, settings.max_offer_bytes)  # InvalidSDP -> 400
    return RTCSessionDescription(sdp=sdp, type="offer")


def _sdp_answer(sdp: str, location: str, etag: str) -> Response:
    headers = {"Location": location, "ETag": f'"{etag}"', "Cache-Control": "no-store"}
    return Response(sdp, status_code=201, media_type=SDP_TYPE, headers=headers)


def effect_from_query(request: Request) -> EffectChoice:
    """`?effect=NAME&KEY=VALUE...` -> EffectChoice (values are coerced by the effect)."""
    params = {k: v for k, v in request.query_params.items() if k not in _RESERVED_QUERY}
    return EffectChoice(request.query_params.get("effect") or "none", params)


@router.post("/whip")
async def whip_publish(request: Request, services: ServicesDep, live: LiveDep) -> Response:
    by_whip_token = check_whip_token(services.settings, request.headers.get("authorization"))
    offer = await _sdp_offer(request, services.settings)
    stream = request.query_params.get("stream") or DEFAULT_STREAM
    if len(stream) > 64 or not stream.replace("-", "").replace("_", "").isalnum():
        raise HTTPException(422, detail="stream must be 1-64 letters, digits, - or _")
    key = _key_colour(request.query_params.get("background"))
    client = client_of(request)
    choice = effect_from_query(request)
    try:
        session, answer = await services.sessions.create(
            offer, choice, client, send_back=False, key_colour=key
        )
    except ValueError as error:
        raise HTTPException(400, detail=f"unusable offer: {error}") from error
    await live.add_publisher(session, stream, by_whip_token)
    return _sdp_answer(answer.sdp, f"/whip/{session.id}", session.id)


def _key_colour(value: str | None) -> Color | None:
    if value is None or value.strip().lower() in ("", "none"):
        return None
    try:
        return parse_key_colour(value)
    except ValueError as error:
        raise HTTPException(422, detail=str(error)) from None


@router.delete("/whip/{session_id}")
async def whip_end(
    session_id: str, request: Request, services: ServicesDep, live: LiveDep
) -> Response:
    check_whip_token(services.settings, request.headers.get("authorization"))
    await live.end_publisher(session_id)  # SessionNotFound -> 404
    return Response(status_code=200)


@router.options("/whip")
@router.options("/whep/{session}")
async def whip_options() -> Response:
    """RFC 9725 4.2: OPTIONS is answered 200 with the media type POST takes."""
    return Response(status_code=200, headers={"Accept-Post": SDP_TYPE, "Allow": "POST, OPTIONS"})


@router.patch("/whip/{session_id}")
async def whip_patch(session_id: str) -> Response:
    raise HTTPException(405, detail=_NO_TRICKLE, headers={"Allow": "DELETE"})


@router.post("/whep/{session}")
async def whep_play(
    session: str, request: Request, services: ServicesDep, live: LiveDep
) -> Response:
    check_whip_token(services.settings, request.headers.get("authorization"))
    offer = await _sdp_offer(request, services.settings)
    target = live.resolve(session)  # SessionNotFound -> 404 (the app's error handlers)
    try:
        player, answer = await live.add_player(target, offer)
    except PlayerLimitReached as error:
        raise HTTPException(429, detail=str(error), headers={"Retry-After": "10"}) from None
    except ValueError as error:
        raise HTTPException(400, detail=f"unusable offer: {error}") from error
    return _sdp_answer(answer, f"/whep/{target.id}/{player.id}", player.id)


@router.delete("/whep/{session_id}/{player_id}")
async def whep_end(
    session_id: str, player_id: str, request: Request, services: ServicesDep, live: LiveDep
) -> Response:
    check_whip_token(services.settings, request.headers.get("authorization"))
    try:
        await live.end_player(session_id, player_id)
    except PlayerNotFound as error:
        raise HTTPException(404, detail=str(error)) from None
    return Response(status_code=200)


@router.patch("/whep/{session_id}/{player_id}")
async def whep_patch(session_id: str, player_id: str) -> Response:
    raise HTTPException(405, detail=_NO_TRICKLE, headers={"Allow": "DELETE"})
