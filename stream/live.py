"""Live-streaming overlay state: WHIP publishers by stream name, WHEP players per session.

A WHIP publisher (OBS, any RFC 9725 client) is an ordinary session created with
`send_back=False`: its processed video only goes to subscribers. Each publisher has
a stream name (`?stream=`, default "live") so an overlay URL can stay the same
across reconnects; a new publisher on a name ends the previous one on that name.

A WHEP player is its own RTCPeerConnection whose video track is a relayed
subscription (newest frame only) of the session's processed track. Players end when
they DELETE, when their connection fails, when it is not connected within the connect
deadline (Settings.session_connect_timeout_s, as sessions), or when the session they
watch ends. Each session takes at most MAX_PLAYERS_PER_SESSION players, the server
MAX_PLAYERS in all (each player costs an encoder).
Audio a publisher sends is drained and dropped (the overlay is video only; OBS
already has the sound).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from stream.security.auth import WHIP_SESSIONS
from stream.sessions import Session, SessionManager, SessionNotFound

logger = logging.getLogger(__name__)

DEFAULT_STREAM = "live"
MAX_PLAYERS_PER_SESSION = 16
MAX_PLAYERS = 64  # server-wide: each player runs its own video encoder
PLAYER_CONNECT_TIMEOUT_S = 20.0


class PlayerLimitReached(RuntimeError):
    """As many WHEP players watch as the session (or the server) allows."""


class PlayerNotFound(LookupError):
    """No WHEP player has this id on this session."""


@dataclass
class Publisher:
    """A WHIP session and the tasks that drain its audio."""

    session_id: str
    stream: str
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


@dataclass
class Player:
    """A WHEP viewer of one session."""

    id: str
    session_id: str
    pc: RTCPeerConnection
    watcher: asyncio.Task[None] | None = None
    connect_deadline: asyncio.TimerHandle | None = None


async def _drain(track: MediaStreamTrack) -> None:
    """Read and drop a track's frames so aiortc's unbounded receive queue stays empty."""
    with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
        while True:
            await track.recv()


class LiveRegistry:
    """WHIP publishers and WHEP players of one server (event loop only)."""

    def __init__(
        self,
        sessions: SessionManager,
        max_players: int = MAX_PLAYERS,
        max_players_per_session: int = MAX_PLAYERS_PER_SESSION,
        connect_timeout_s: float = PLAYER_CONNECT_TIMEOUT_S,
    ) -> None:
        self._sessions = sessions
        self._max_players = max_players
        self._max_per_session = max_players_per_session
        self._connect_timeout_s = connect_timeout_s
        self._background: set[asyncio.Future[None]] = set()
        self._publishers: dict[str, Publisher] = {}
        self._streams: dict[str, str] = {}
        self._players: dict[str, Player] = {}

    def publishers(self) -> list[Publisher]:
        return list(self._publishers.values())

    def players(self, session_id: str | None = None) -> list[Player]:
        return [p for p in self._players.values() if session_id in (None, p.session_id)]

    async def add_publisher(
        self, session: Session, stream: str, by_whip_token: bool = False
    ) -> Publisher:
        """Register a new WHIP session under `stream`; ends the previous one of that name.

        by_whip_token: published with Settings.whip_token, which may then also GET, PATCH
        and DELETE /sessions/{id} of this session (stream.security.auth.WHIP_SESSIONS).
        """
        previous = self._streams.get(stream)
        publisher = Publisher(session.id, stream)
        for receiver in session.pc.getReceivers():
            if receiver.track is not None and receiver.track.kind == "audio":
                publisher.tasks.append(asyncio.ensure_future(_drain(receiver.track)))
        publisher.tasks.append(asyncio.ensure_future(self._forget_when_closed(session)))
        self._publishers[session.id] = publisher
        self._streams[stream] = session.id
        if by_whip_token and not session.closed.is_set():
            WHIP_SESSIONS.grant(session.id)
        if previous is not None and previous != session.id:
            logger.info("stream %r: new publisher %s replaces %s", stream, session.id, previous)
            await self.end_publisher(previous)
        return publisher

    async def _forget_when_closed(self, session: Session) -> None:
        await session.closed.wait()
        WHIP_SESSIONS.revoke(session.id)
        publisher = self._publishers.pop(session.id, None)
        if publisher is not None and self._streams.get(publisher.stream) == session.id:
            del self._streams[publisher.stream]
        for player in self.players(session.id):
            await self.end_player(session.id, player.id)
        if publisher is not None:
            for task in publisher.tasks:
                if task is not asyncio.current_task():
                    task.cancel()

    def is_publisher(self, session_id: str) -> bool:
        return session_id in self._publishers

    async def end_publisher(self, session_id: str) -> None:
        """End a WHIP session (and, through it, its players)."""
        if session_id not in self._publishers:
            raise SessionNotFound(f"no WHIP session {session_id!r}")
        with contextlib.suppress(SessionNotFound):
            await self._sessions.close(session_id)

    def resolve(self, session_or_stream: str) -> Session:
        """The live session with this id, else the current publisher of this stream name."""
        with contextlib.suppress(SessionNotFound):
            return self._sessions.get(session_or_stream)
        session_id = self._streams.get(session_or_stream)
        if session_id is None:
            raise SessionNotFound(f"no live session or stream named {session_or_stream!r}")
        return self._sessions.get(session_id)

    def _check_player_capacity(self, session_id: str) -> None:
        watching = len(self.players(session_id))
        if watching >= self._max_per_session:
            raise PlayerLimitReached(
                f"{watching} players already watch this stream, the most one stream takes"
            )
        if len(self._players) >= self._max_players:
            raise PlayerLimitReached(
                f"{len(self._players)} players are watching; the server's limit"
            )

    async def add_player(
        self, session: Session, offer: RTCSessionDescription
    ) -> tuple[Player, str]:
        """Answer a WHEP offer with the session's processed video; returns (player, answer SDP).

        Raises PlayerLimitReached when the session or the server has as many players as it takes.
        """
        self._check_player_capacity(session.id)
        pc = RTCPeerConnection()
        player = Player(uuid.uuid4().hex, session.id, pc)
        try:
            await pc.setRemoteDescription(offer)
            pc.addTrack(session.subscribe())
            await pc.setLocalDescription(await pc.createAnswer())
        except BaseException:
            await pc.close()
            raise
        self._players[player.id] = player
        player.watcher = asyncio.ensure_future(self._watch_player(player))
        player.connect_deadline = asyncio.get_running_loop().call_later(
            self._connect_timeout_s, self._check_connected, player
        )
        logger.info("WHEP player %s watches session %s", player.id, session.id)
        return player, pc.localDescription.sdp

    def _check_connected(self, player: Player) -> None:
        """A player that never connects (no usable candidates, gone) must not hold a place."""
        if self._players.get(player.id) is not player or player.pc.connectionState == "connected":
            return
        logger.info("WHEP player %s not connected within %g s", player.id, self._connect_timeout_s)
        task = asyncio.ensure_future(self._end_quietly(player))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _end_quietly(self, player: Player) -> None:
        with contextlib.suppress(PlayerNotFound):
            await self.end_player(player.session_id, player.id)

    async def _watch_player(self, player: Player) -> None:
        ended = asyncio.Event()

        @player.pc.on("connectionstatechange")
        def on_state() -> None:
            if player.pc.connectionState in ("failed", "closed"):
                ended.set()

        await ended.wait()
        await self._end_quietly(player)

    async def end_player(self, session_id: str, player_id: str) -> None:
        player = self._players.get(player_id)
        if player is None or player.session_id != session_id:
            raise PlayerNotFound(f"no WHEP player {player_id!r} on session {session_id!r}")
        del self._players[player_id]
        if player.connect_deadline is not None:
            player.connect_deadline.cancel()
        for sender in player.pc.getSenders():
            if sender.track is not None:
                sender.track.stop()
        await player.pc.close()
        if player.watcher is not None and player.watcher is not asyncio.current_task():
            player.watcher.cancel()
        logger.info("WHEP player %s ended", player_id)

    async def close(self) -> None:
        """End every player and publisher (server shutdown)."""
        for player in list(self._players.values()):
            with contextlib.suppress(PlayerNotFound):
                await self.end_player(player.session_id, player.id)
        for session_id in list(self._publishers):
            with contextlib.suppress(SessionNotFound):
                await self.end_publisher(session_id)
