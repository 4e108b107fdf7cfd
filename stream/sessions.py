"""Live WebRTC sessions: one peer connection, one processed video track, one pipeline each."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack

from engines.effects.base import EffectResources
from engines.effects.registry import build_effect, get_effect_spec
from engines.errors import EngineError
from stream.metrics import Metrics
from stream.models import SharedModels
from stream.pipeline import EffectPipeline
from stream.session_track import ProcessedVideoTrack
from stream.worker import ModelWorker

logger = logging.getLogger(__name__)


class SessionNotFound(LookupError):
    """No live session has this id."""


class SessionLimitReached(RuntimeError):
    """The server (or this client) has as many sessions as it may."""


@dataclass(frozen=True)
class EffectChoice:
    """An effect by name with raw (not yet validated) parameters."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, body: Any) -> EffectChoice:
        """From `{"name": ..., "params": {...}}`; raises ValueError with a reason."""
        if not isinstance(body, Mapping) or not isinstance(body.get("name"), str):
            raise ValueError('effect must be an object like {"name": "cartoon", "params": {}}')
        params = body.get("params") or {}
        if not isinstance(params, Mapping):
            raise ValueError("effect.params must be an object")
        return cls(name=body["name"], params=dict(params))


class Session:
    """One peer: its connection, its processed track and its pipeline."""

    def __init__(
        self, session_id: str, client: str, pc: RTCPeerConnection, pipeline: EffectPipeline
    ) -> None:
        self.id = session_id
        self.client = client
        self.pc = pc
        self.pipeline = pipeline
        self.effect = EffectChoice(pipeline.spec.name)
        self.track: ProcessedVideoTrack | None = None
        self.relay = MediaRelay()
        self.closed = asyncio.Event()

    def subscribe(self) -> MediaStreamTrack:
        """A new consumer of the processed stream (newest frame only), e.g. a WHEP player."""
        if self.track is None:
            raise SessionNotFound(f"session {self.id} has no video yet")
        return self.relay.subscribe(self.track, buffered=False)

    def describe(self) -> dict[str, Any]:
        track = self.track
        return {
            "session_id": self.id,
            "effect": {"name": self.effect.name, "params": dict(self.effect.params)},
            "state": self.pc.connectionState,
            "frames_in": track.frames_in if track else 0,
            "frames_out": track.frames_out if track else 0,
            "frames_dropped": track.frames_dropped if track else 0,
        }


class SessionManager:
    """Creates, changes and ends sessions; enforces the session limits."""

    def __init__(
        self,
        worker: ModelWorker,
        models: SharedModels,
        metrics: Metrics,
        resources: EffectResources,
        max_sessions: int,
        max_per_client: int,
    ) -> None:
        self._worker = worker
        self._models = models
        self._metrics = metrics
        self._resources = resources
        self._max_sessions = max_sessions
        self._max_per_client = max_per_client
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session_id: str) -> Session:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise SessionNotFound(f"no session {session_id!r}") from None

    def check_capacity(self, client: str) -> None:
        """Raise SessionLimitReached when a new session for `client` would exceed a limit."""
        if len(self._sessions) >= self._max_sessions:
            raise SessionLimitReached(
                f"the server is at its limit of {self._max_sessions} sessions"
            )
        own = sum(1 for s in self._sessions.values() if s.client == client)
        if own >= self._max_per_client:
            raise SessionLimitReached(
                f"this client already has {own} sessions (limit {self._max_per_client})"
            )

    async def _build_pipeline(self, choice: EffectChoice) -> EffectPipeline:
        spec = get_effect_spec(choice.name)
        spec.validate(choice.params)  # fail fast on the loop, before any model work
        effect = await self._worker.run(build_effect, choice.name, choice.params, self._resources)
        return EffectPipeline(
            spec, effect, self._models.stage_factories(), self._metrics.observe_stage
        )

    async def create(
        self,
        offer: RTCSessionDescription,
        choice: EffectChoice,
        client: str,
        send_back: bool = True,
    ) -> tuple[Session, RTCSessionDescription]:
        """Answer `offer`; the answer's video track is the processed offer video (when `send_back`).

        send_back=False (WHIP) processes the video only for subscribers (WHEP players).
        Raises EngineError for a bad effect, ValueError for an SDP aiortc cannot use.
        """
        self.check_capacity(client)
        pipeline = await self._build_pipeline(choice)
        pc = RTCPeerConnection()
        session = Session(uuid.uuid4().hex, client, pc, pipeline)
        session.effect = choice
        self._wire(session, send_back)
        try:
            await pc.setRemoteDescription(offer)
            if session.track is None:
                raise ValueError("the offer has no video track")
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception:
            await self._dispose(session)
            raise
        self._sessions[session.id] = session
        self._metrics.sessions.set(len(self._sessions))
        logger.info("session %s started with effect %s", session.id, choice.name)
        return session, pc.localDescription

    def _wire(self, session: Session, send_back: bool) -> None:
        pc = session.pc

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind != "video" or session.track is not None:
                return
            session.track = ProcessedVideoTrack(
                track, session.pipeline, self._worker, self._metrics
            )
            if send_back:
                pc.addTrack(session.subscribe())

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            if channel.label == "control":
                channel.on(
                    "message",
                    lambda message: asyncio.ensure_future(
                        self._on_control(session, channel, message)
                    ),
                )

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed") and session.id in self._sessions:
                logger.info("session %s connection %s", session.id, pc.connectionState)
                await self.close(session.id)

    async def _on_control(self, session: Session, channel: RTCDataChannel, message: Any) -> None:
        """Data channel `control`: {"effect": {...}} changes the effect; {"ping": x} -> {"pong": x}."""
        try:
            body = json.loads(message)
            if not isinstance(body, dict):
                raise ValueError("a control message must be a JSON object")
            if "ping" in body:
                channel.send(json.dumps({"pong": body["ping"]}))
                return
            await self.update_effect(session.id, EffectChoice.parse(body.get("effect")))
            reply: dict[str, Any] = {"ok": True, "effect": session.effect.name}
        except (ValueError, EngineError, SessionNotFound) as error:
            reply = {"ok": False, "detail": str(error)}
        if channel.readyState == "open":
            channel.send(json.dumps(reply))

    async def update_effect(self, session_id: str, choice: EffectChoice) -> Session:
        """Switch a live session's effect; its face tracks are kept."""
        session = self.get(session_id)
        spec = get_effect_spec(choice.name)
        spec.validate(choice.params)
        effect = await self._worker.run(build_effect, choice.name, choice.params, self._resources)
        await self._worker.run(session.pipeline.set_effect, spec, effect)
        session.effect = choice
        logger.info("session %s now uses effect %s", session_id, choice.name)
        return session

    async def close(self, session_id: str) -> None:
        """End a session: its peer connection, track, reader task and pipeline."""
        session = self._sessions.pop(session_id, None)
        if session is None:
            raise SessionNotFound(f"no session {session_id!r}")
        self._metrics.sessions.set(len(self._sessions))
        await self._dispose(session)
        logger.info("session %s closed", session_id)

    async def _dispose(self, session: Session) -> None:
        if session.track is not None:
            session.track.stop()
        await session.pc.close()
        await self._worker.run(session.pipeline.close)
        session.closed.set()

    async def close_all(self) -> None:
        await asyncio.gather(
            *(self.close(sid) for sid in list(self._sessions)), return_exceptions=True
        )
