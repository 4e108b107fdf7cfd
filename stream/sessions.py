"""Live WebRTC sessions: one peer connection, one processed video track, one pipeline each."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from engines.effects.base import Color, Effect, EffectResources, EffectSpec
from engines.effects.registry import build_effect, get_effect_spec
from engines.errors import EngineError
from stream.audit import AuditLog
from stream.frame_sharing import ViewerTracks
from stream.keying import KeyedBackground, keyed_spec
from stream.lifetimes import close_peer
from stream.metrics import Metrics
from stream.models import SharedModels
from stream.pipeline import EffectPipeline
from stream.sdp_check import OFFER_ERRORS
from stream.session_track import ProcessedVideoTrack
from stream.worker import ModelWorker

logger = logging.getLogger(__name__)

RECENTLY_ENDED_S = 60.0  # a DELETE this soon after a session ended is answered as done
_RECENTLY_ENDED_MAX = 4096


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
        """From `{"name": ..., "params": {...}}` or a bare name; raises ValueError with a
        reason."""
        if isinstance(body, str):
            return cls(name=body)
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
        self.viewers = ViewerTracks()
        self.closed = asyncio.Event()
        self.audited = False  # a swap effect ran: the audit log gets its end too
        self.connect_deadline: asyncio.TimerHandle | None = None
        self.key_colour: Color | None = None  # a WHIP overlay's key background, kept across PATCH
        self.effect_lock = asyncio.Lock()  # effect changes one at a time, in order
        self.control: RTCDataChannel | None = None  # the page's control channel, once open

    def subscribe(self) -> MediaStreamTrack:
        """A new consumer of the processed stream (newest frame only), e.g. a WHEP player."""
        if self.track is None:
            raise SessionNotFound(f"session {self.id} has no video yet")
        return self.viewers.subscribe(self.track)

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
        audit: AuditLog | None = None,
        connect_timeout_s: float = 20.0,
    ) -> None:
        self._worker = worker
        self._models = models
        self._metrics = metrics
        self._resources = resources
        self._max_sessions = max_sessions
        self._max_per_client = max_per_client
        self._sessions: dict[str, Session] = {}
        self._pending: dict[str, int] = {}  # client -> sessions being created (slots held)
        self._audit = audit or AuditLog.for_data_dir(models.settings.data_dir)
        self._connect_timeout_s = connect_timeout_s
        self._background: set[asyncio.Future[Any]] = set()
        self._ended: OrderedDict[str, float] = OrderedDict()  # id -> time.monotonic() it ended

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session_id: str) -> Session:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise SessionNotFound(f"no session {session_id!r}") from None

    def ended_recently(self, session_id: str) -> bool:
        """True when `session_id` ended within the last RECENTLY_ENDED_S seconds.

        A page that sends DELETE as it closes its peer connection may arrive after the server
        already ended the session on the connection's close: that DELETE has nothing left to do.
        """
        ended = self._ended.get(session_id)
        return ended is not None and time.monotonic() - ended < RECENTLY_ENDED_S

    def _remember_ended(self, session_id: str) -> None:
        now = time.monotonic()
        self._ended[session_id] = now
        while self._ended and (
            len(self._ended) > _RECENTLY_ENDED_MAX
            or now - next(iter(self._ended.values())) >= RECENTLY_ENDED_S
        ):
            self._ended.popitem(last=False)

    def check_capacity(self, client: str) -> None:
        """Raise SessionLimitReached when a new session for `client` would exceed a limit.

        Sessions still being created count too, so concurrent offers cannot overshoot.
        """
        if len(self._sessions) + sum(self._pending.values()) >= self._max_sessions:
            raise SessionLimitReached(
                f"the server is at its limit of {self._max_sessions} sessions"
            )
        own = sum(1 for s in self._sessions.values() if s.client == client)
        own += self._pending.get(client, 0)
        if own >= self._max_per_client:
            raise SessionLimitReached(
                f"this client already has {own} sessions (limit {self._max_per_client})"
            )

    async def build_effect(self, choice: EffectChoice) -> tuple[EffectSpec, Effect]:
        """Validate `choice` on the loop (fail fast, before any model work), build it in the worker."""
        spec = get_effect_spec(choice.name)
        spec.validate(choice.params)
        effect = await self._worker.run(build_effect, choice.name, choice.params, self._resources)
        return spec, effect

    async def _build_keyed(
        self, choice: EffectChoice, key_colour: Color | None
    ) -> tuple[EffectSpec, Effect]:
        """build_effect, then with everything outside the heads in `key_colour` when given."""
        spec, effect = await self.build_effect(choice)
        if key_colour is None:
            return spec, effect
        return keyed_spec(spec), KeyedBackground(effect, key_colour)

    async def _build_pipeline(
        self, choice: EffectChoice, key_colour: Color | None
    ) -> EffectPipeline:
        spec, effect = await self._build_keyed(choice, key_colour)
        # In the worker: the first session's face stage loads (and on a GPU compiles)
        # the detector, which must neither block the event loop nor load in a thread
        # other than the one that runs it.
        return await self._worker.run(
            EffectPipeline,
            spec,
            effect,
            self._models.stage_factories(),
            self._metrics.observe_stage,
        )

    async def create(
        self,
        offer: RTCSessionDescription,
        choice: EffectChoice,
        client: str,
        send_back: bool = True,
        key_colour: Color | None = None,
    ) -> tuple[Session, RTCSessionDescription]:
        """Answer `offer`; the answer's video track is the processed offer video (when `send_back`).

        send_back=False (WHIP) processes the video only for subscribers (WHEP players).
        key_colour: paint everything outside the heads in it (an OBS overlay's key), also
        after later effect changes.
        Raises EngineError for a bad effect, ValueError for an SDP aiortc cannot use.
        """
        self.check_capacity(client)
        self._pending[client] = self._pending.get(client, 0) + 1
        try:
            return await self._create(offer, choice, client, send_back, key_colour)
        finally:
            self._pending[client] -= 1
            if not self._pending[client]:
                del self._pending[client]

    async def _create(
        self,
        offer: RTCSessionDescription,
        choice: EffectChoice,
        client: str,
        send_back: bool,
        key_colour: Color | None,
    ) -> tuple[Session, RTCSessionDescription]:
        pipeline = await self._build_pipeline(choice, key_colour)
        pc = RTCPeerConnection()
        session = Session(uuid.uuid4().hex, client, pc, pipeline)
        session.effect = choice
        session.key_colour = key_colour
        self._wire(session, send_back)
        try:
            await pc.setRemoteDescription(offer)
            if session.track is None:
                raise ValueError("the offer has no video track")
            await pc.setLocalDescription(await pc.createAnswer())
            self._audit_event("session.start", session)
        except Exception as error:
            await self._dispose(session)
            if isinstance(error, (*OFFER_ERRORS, OSError)):
                raise
            # aiortc trips over some malformed offers with lookups: still the offer's fault
            logger.warning("aiortc could not use an offer", exc_info=True)
            raise ValueError(f"aiortc could not use the offer ({type(error).__name__})") from error
        self._sessions[session.id] = session
        session.connect_deadline = asyncio.get_running_loop().call_later(
            self._connect_timeout_s, self._check_connected, session.id
        )
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
                session.control = channel
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
                await self.close(session.id, reason=f"connection {pc.connectionState}")

    async def _on_control(self, session: Session, channel: RTCDataChannel, message: Any) -> None:
        """Data channel `control`: {"effect": {...}} changes the effect; {"ping": x} -> {"pong": x}.

        An effect message's optional "id" (a number or a short string) comes back in its reply,
        so a client can tell which of several changes was applied or refused.
        """
        reply: dict[str, Any] = {}
        try:
            body = json.loads(message)
            if not isinstance(body, dict):
                raise ValueError("a control message must be a JSON object")
            if "ping" in body:
                channel.send(json.dumps({"pong": body["ping"]}))
                return
            reply = _reply_id(body.get("id"))
            await self.update_effect(session.id, EffectChoice.parse(body.get("effect")))
            reply.update(ok=True, effect=session.effect.name)
        except (ValueError, EngineError, SessionNotFound) as error:
            reply.update(ok=False, detail=str(error))
        if channel.readyState == "open":
            channel.send(json.dumps(reply))

    async def withdraw_face(self, face_id: str) -> int:
        """Stop every live use of a deleted swap source (its uploader withdrew consent):
        sessions whose effect uses `face_id` switch to `none` (a WHIP overlay keeps its
        key background) and their page is told why. Returns how many were switched."""
        using = [
            session
            for session in list(self._sessions.values())
            if face_id in get_effect_spec(session.effect.name).face_ids(session.effect.params)
        ]
        for session in using:
            try:
                await self.update_effect(session.id, EffectChoice("none"))
            except SessionNotFound:
                continue
            logger.info("session %s: its source face was deleted; swap stopped", session.id)
            channel = session.control
            if channel is not None and channel.readyState == "open":
                channel.send(
                    json.dumps(
                        {
                            "ok": True,
                            "effect": "none",
                            "withdrawn": face_id,
                            "detail": "the source face was deleted, so the swap stopped",
                        }
                    )
                )
        return len(using)

    async def update_effect(self, session_id: str, choice: EffectChoice) -> Session:
        """Switch a live session's effect; its face tracks and key background are kept.

        Changes to one session are applied one at a time, in the order they came (PATCH
        and the control channel alike), so the last one sent is the one that stays.
        """
        session = self.get(session_id)
        async with session.effect_lock:
            spec, effect = await self._build_keyed(choice, session.key_colour)
            await self._worker.run_for(session.pipeline, session.pipeline.set_effect, spec, effect)
            renamed = session.effect.name != choice.name
            session.effect = choice
        self._audit_event("session.effect", session)
        # a slider drag sends many parameter-only changes: those stay at DEBUG
        logger.log(
            logging.INFO if renamed else logging.DEBUG,
            "session %s now uses effect %s",
            session_id,
            choice.name if renamed else f"{choice.name} with new parameters",
        )
        return session

    def _check_connected(self, session_id: str) -> None:
        """A peer that never connects (or vanished before it did) must not hold a slot."""
        session = self._sessions.get(session_id)
        if session is None or session.pc.connectionState == "connected":
            return
        reason = f"not connected within {self._connect_timeout_s:g} s"
        logger.info("session %s %s", session_id, reason)
        task = asyncio.ensure_future(self.close(session_id, reason=reason))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _audit_event(self, event: str, session: Session, **extra: Any) -> None:
        """One audit line for sessions that run (or ran) an identity-changing effect."""
        spec = session.pipeline.spec
        if not (spec.changes_identity or session.audited):
            return
        session.audited = True
        face_ids = spec.face_ids(session.effect.params)
        self._audit.record(
            event,
            client=session.client,
            effect=session.effect.name,
            face_id=face_ids[0] if len(face_ids) == 1 else (face_ids or None),
            session_id=session.id,
            **extra,
        )

    async def close(self, session_id: str, reason: str = "closed") -> None:
        """End a session: its peer connection, track, reader task and pipeline."""
        session = self._sessions.pop(session_id, None)
        if session is None:
            raise SessionNotFound(f"no session {session_id!r}")
        self._remember_ended(session_id)
        self._metrics.sessions.set(len(self._sessions))
        await self._dispose(session)
        try:
            self._audit_event("session.end", session, reason=reason)
        except OSError:
            logger.exception("could not write the audit log for session %s", session_id)
        logger.info("session %s closed (%s)", session_id, reason)

    async def _dispose(self, session: Session) -> None:
        if session.connect_deadline is not None:
            session.connect_deadline.cancel()
        if session.track is not None:
            session.track.stop()
        await close_peer(session.pc)
        await self._worker.run_for(session.pipeline, session.pipeline.close)
        session.closed.set()

    async def close_all(self) -> None:
        await asyncio.gather(
            *(self.close(sid, reason="shutdown") for sid in list(self._sessions)),
            return_exceptions=True,
        )


def _reply_id(value: Any) -> dict[str, Any]:
    """The reply's echo of a control message's "id": numbers and strings up to 64 characters."""
    if isinstance(value, bool) or value is None:
        return {}
    if isinstance(value, (int, float)) or (isinstance(value, str) and len(value) <= 64):
        return {"id": value}
    return {}
