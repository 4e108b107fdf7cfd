"""POST /offer, GET/PATCH/DELETE /sessions/{id}: browser WebRTC sessions."""

from __future__ import annotations

from typing import Any, Literal

from aiortc import RTCSessionDescription
from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, Field, model_validator

from stream.deps import ServicesDep, client_of
from stream.sdp_check import OFFER_ERRORS, check_offer_sdp
from stream.sessions import EffectChoice, SessionNotFound

router = APIRouter()


_EFFECT = 'the effect, as {"name": "blur", "params": {...}} or just its name'


class EffectBody(BaseModel):
    """An effect choice: {"name": ..., "params": {...}}; a bare name stands for {"name": name}."""

    name: str = Field(
        min_length=1,
        max_length=64,
        description="the effect's name, one of those GET /effects lists",
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="the effect's parameters, as GET /effects lists them"
    )

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class OfferBody(BaseModel):
    sdp: str = Field(min_length=1, description="the browser's SDP offer")
    type: Literal["offer"] = Field(description='the word "offer"')
    effect: EffectBody = Field(default_factory=lambda: EffectBody(name="none"), description=_EFFECT)


class AnswerBody(BaseModel):
    sdp: str
    type: Literal["answer"]
    session_id: str


class PatchBody(BaseModel):
    effect: EffectBody = Field(description=_EFFECT)


@router.post("/offer")
async def offer(body: OfferBody, request: Request, services: ServicesDep) -> AnswerBody:
    choice = EffectChoice(body.effect.name, body.effect.params)
    try:
        check_offer_sdp(body.sdp, services.settings.max_offer_bytes)
        session, answer = await services.sessions.create(
            RTCSessionDescription(sdp=body.sdp, type=body.type), choice, client_of(request)
        )
    except OFFER_ERRORS as error:
        raise HTTPException(400, detail=f"unusable offer: {error}") from error
    return AnswerBody(sdp=answer.sdp, type="answer", session_id=session.id)


@router.get("/sessions/{session_id}")
async def get_session(session_id: str, services: ServicesDep) -> dict[str, Any]:
    return services.sessions.get(session_id).describe()


@router.patch("/sessions/{session_id}")
async def patch_session(session_id: str, body: PatchBody, services: ServicesDep) -> dict[str, Any]:
    choice = EffectChoice(body.effect.name, body.effect.params)
    session = await services.sessions.update_effect(session_id, choice)
    return session.describe()


@router.delete("/sessions/{session_id}", status_code=204)
async def delete_session(session_id: str, services: ServicesDep) -> Response:
    """204 also for a session that ended in the last minute (its peer connection closed first)."""
    try:
        await services.sessions.close(session_id)
    except SessionNotFound:
        if not services.sessions.ended_recently(session_id):
            raise
    return Response(status_code=204)
