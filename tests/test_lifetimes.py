"""Session lifetimes: every way a peer can go away frees its session, and shutdown drains.

- DELETE and a peer that closes its connection: covered by test_churn (within 2 s).
- A peer that vanishes (its process is killed: no DTLS close, no RTCP BYE) is
  noticed by ICE consent freshness (RFC 7675): aiortc reports the connection
  "failed" after CONSENT_FAILURES missed checks. The interval is shortened here
  so the test runs in seconds; with aioice's defaults the same path takes ~34 s.
- A peer that never connects (posts an offer, then disappears) is dropped at
  Settings.session_connect_timeout_s.
- Shutting the server down closes every session.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import aioice.ice
import httpx
import pytest
from security_helpers import offer_sdp_async
from server_helpers import RunningServer, running_server

from stream.settings import Settings

pytestmark = [pytest.mark.timeout(120)]

TESTS_DIR = Path(__file__).resolve().parent

_CLIENT = textwrap.dedent(
    """
    import asyncio, sys
    sys.path.insert(0, {tests!r})
    import numpy as np
    from webrtc_helpers import ClipTrack, connect

    async def main() -> None:
        frames = [np.full((120, 160, 3), 90 + i, np.uint8) for i in range(10)]
        pc, collector, session_id = await connect({url!r}, ClipTrack(frames, loop=True), {{"name": "none"}})
        await collector.wait_for(5, timeout=30)
        print(session_id, flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def _gone_within(server: RunningServer, session_id: str, timeout: float) -> float:
    sessions = server.app.state.services.sessions
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            sessions.get(session_id)
        except LookupError:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"session {session_id} still alive after {timeout} s")


def test_vanished_peer_is_freed_by_ice_consent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    interval = 1.0
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", interval)
    # Worst case: every check waits 1.2 intervals and a 0.5 s STUN timeout.
    limit = aioice.ice.CONSENT_FAILURES * (1.2 * interval + 0.5) + 3.0
    with running_server(Settings(data_dir=tmp_path)) as server:
        code = _CLIENT.format(tests=str(TESTS_DIR), url=server.url)
        client = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        try:
            assert client.stdout is not None
            session_id = client.stdout.readline().strip()
            assert session_id, "the client peer did not connect"
            session = server.app.state.services.sessions.get(session_id)
            assert session.pc.connectionState == "connected"
        finally:
            client.kill()
            client.wait(10)
        elapsed = asyncio.run(_gone_within(server, session_id, limit))
    assert elapsed >= interval  # noticed by consent checks, not by a goodbye
    assert session.closed.is_set()
    assert session.track is not None and session.track.readyState == "ended"


async def _offer_and_vanish(url: str) -> str:
    """Post a real offer, take the answer and never connect."""
    sdp = await offer_sdp_async()
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/offer", json={"sdp": sdp, "type": "offer"})
    assert response.status_code == 200, response.text
    return str(response.json()["session_id"])


def test_peer_that_never_connects_is_dropped(tmp_path: Path) -> None:
    deadline = 1.5
    # No warm-up: loading the face models at start would compete for the CPU with the
    # timer under test (the session never gets a frame, so it never needs them).
    settings = Settings(data_dir=tmp_path, session_connect_timeout_s=deadline, warm_up=False)
    with running_server(settings) as server:
        session_id = asyncio.run(_offer_and_vanish(server.url))
        elapsed = asyncio.run(_gone_within(server, session_id, deadline + 30))
        assert len(server.app.state.services.sessions) == 0
    # At the deadline, give or take a loaded host; not the default 20 s, nor never.
    assert elapsed <= deadline + 4.0


def test_shutdown_closes_every_session(tmp_path: Path) -> None:
    with running_server(Settings(data_dir=tmp_path, max_sessions=8)) as server:
        ids = [asyncio.run(_offer_and_vanish(server.url)) for _ in range(3)]
        manager = server.app.state.services.sessions
        sessions = [manager.get(session_id) for session_id in ids]
    assert len(manager) == 0
    assert all(session.closed.is_set() for session in sessions)
    assert all(session.pc.connectionState == "closed" for session in sessions)
