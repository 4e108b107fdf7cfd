"""Slow consumers and floods: queues stay short, latency stays flat, the cap holds.

Slow consumer: a real peer sends 1280x720 video at 30 fps to a session running
`stylize` (54 ms per 720p frame on an idle 2-core CPU; about 20 fps processed, end to
end), so input is clearly faster than processing. The decoded frames waiting in the
server (aiortc's frame queue + the latest-frame slot) stay at 2 or fewer, stale
frames are dropped (and counted), and the end-to-end latency at the end of the run
is no higher than at its start. Encoded frames waiting for aiortc's decoder thread
are watched too: they do not accumulate (a few at a time when the co-located test
peer's encoder and the effect saturate both cores). On a machine where the effect
keeps up with the input (the peer's own encoder is the bottleneck), the test is
skipped: there is nothing to drop.

Flood: with `max_sessions` live sessions streaming, a burst of concurrent offers
gets 429 with Retry-After while the existing sessions keep most of their frame rate
(the flooding client runs in the same process, so it costs them some).

The limits are set for a slow, loaded 2-core CI machine (measured there with two
busy loops besides: 4 fps processed of 15 sent, latency 0.6 s rising to 0.85 s; a
flood costs the sessions up to 20% of their frame rate).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from security_helpers import offer_sdp_async
from server_helpers import RunningServer, running_server
from webrtc_helpers import ClipTrack, FrameCollector, connect

from stream.settings import Settings

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

SLOW_EFFECT: dict[str, object] = {"name": "stylize", "params": {}}  # 54 ms a 720p frame, idle
RUN_S = 8.0  # the slow consumer's measured run


def _moving_frames(width: int, height: int, count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    base = rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8)
    base = np.kron(base, np.ones((8, 8, 1), np.uint8))  # blocky texture, cheap to encode
    return [np.roll(base, 8 * i, axis=1) for i in range(count)]


def _waiting_in_server(session: Any) -> tuple[int, int]:
    """(decoded frames waiting to be processed: aiortc's frame queue + the latest-frame slot,
    encoded frames waiting for aiortc's decoder thread) for one session."""
    track = session.track
    decoded = track.queued + track.source._queue.qsize()
    encoded = sum(r._RTCRtpReceiver__decoder_queue.qsize() for r in session.pc.getReceivers())
    return int(decoded), int(encoded)


class TimedClipTrack(ClipTrack):
    """A ClipTrack that notes when each frame was handed to the encoder (pts -> monotonic s)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.produced: dict[int, float] = {}

    async def recv(self) -> Any:
        frame = await super().recv()
        self.produced[int(frame.pts or 0)] = time.monotonic()
        return frame


def _latencies(source: TimedClipTrack, collector: FrameCollector) -> list[float]:
    """Seconds from each frame's hand-over to the peer's encoder to its processed arrival.

    Received pts may differ from the sent ones by a few ticks (RTP clock rounding).
    """
    sent = np.array(sorted(source.produced))
    latencies = []
    for arrived, pts, _ in collector.frames:
        nearest = int(sent[np.abs(sent - pts).argmin()])
        if abs(nearest - pts) <= 100:
            latencies.append(arrived - source.produced[nearest])
    return latencies


@dataclass(frozen=True)
class SlowRun:
    """What one slow-consumer run measured over its sampling window.

    samples: (decoded, encoded) frames waiting in the server, every 50 ms;
    sent_fps: frames the peer handed to its encoder; received_fps: processed frames that
    came back; dropped: frames the server's latest-frame slot dropped over the whole run;
    latencies: seconds from hand-over to arrival of every frame that came back, in order.
    """

    samples: list[tuple[int, int]]
    sent_fps: float
    received_fps: float
    dropped: int
    latencies: list[float]


async def _slow_consumer(server: RunningServer) -> SlowRun:
    # 30 fps in; the slow effect manages about 15 fps at 720p on an idle 2-core host (cartoon,
    # used before, reached 24-28 fps on a faster host and no longer made the input clearly faster).
    source = TimedClipTrack(_moving_frames(1280, 720, 30), fps=30, loop=True)
    pc, collector, session_id = await connect(server.url, source, SLOW_EFFECT)
    session = server.app.state.services.sessions.get(session_id)
    try:
        await collector.wait_for(3, timeout=60)
        samples: list[tuple[int, int]] = []
        started = time.monotonic()
        while time.monotonic() - started < RUN_S:
            samples.append(_waiting_in_server(session))
            await asyncio.sleep(0.05)
        ended = time.monotonic()
        dropped = session.track.frames_dropped
        latency = _latencies(source, collector)
    finally:
        await pc.close()
        source.stop()
    sent = sum(1 for handed in list(source.produced.values()) if started <= handed < ended)
    received = sum(1 for arrived, _, _ in collector.frames if started <= arrived < ended)
    seconds = ended - started
    return SlowRun(samples, sent / seconds, received / seconds, dropped, latency)


def test_slow_consumer_keeps_queues_short_and_latency_flat(tmp_path: Path) -> None:
    with running_server(Settings(data_dir=tmp_path)) as server:
        run = asyncio.run(_slow_consumer(server))
    decoded = [waiting for waiting, _ in run.samples]
    encoded = [waiting for _, waiting in run.samples]
    # A queue instead of the latest-frame slot holds (in - out) frames more every second.
    assert max(decoded) <= 2, run.samples
    # Encoded frames waiting for aiortc's decoder come and go; they must not pile up.
    third = max(len(encoded) // 3, 1)
    assert statistics.mean(encoded) < 2.0, run.samples
    assert statistics.mean(encoded[-third:]) <= statistics.mean(encoded[:third]) + 1.0, encoded
    # The precondition, measured at the peer (what the server counts is what is under test):
    # input clearly faster than processing. A fast host's effect may keep up with the peer.
    if run.sent_fps < 1.15 * run.received_fps:
        pytest.skip(
            f"the effect keeps up here ({run.received_fps:.1f} fps back of "
            f"{run.sent_fps:.1f} sent): nothing to drop"
        )
    assert run.dropped > 0
    latency = run.latencies
    third = max(len(latency) // 3, 3)
    early, late = statistics.median(latency[:third]), statistics.median(latency[-third:])
    # A queue would add (sent - received) / received s of latency per second, over the
    # ~2/3 of the run between the thirds' middles: at least 0.8 s with input 1.15x faster.
    queued_rise = (run.sent_fps / run.received_fps - 1) * RUN_S * 2 / 3
    assert late <= early + max(0.5 * queued_rise, 0.4), (early, late, queued_rise)
    assert late < 5.0, (early, late)


def _fps(collector: FrameCollector, since: float, until: float) -> float:
    count = sum(1 for arrived, _, _ in collector.frames if since <= arrived < until)
    return count / (until - since)


async def _flood(url: str, sdp: str, seconds: float) -> list[httpx.Response]:
    """Concurrent offers, 8 at a time, for `seconds`."""
    answers: list[httpx.Response] = []
    body = {"sdp": sdp, "type": "offer", "effect": {"name": "sketch"}}
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            answers += await asyncio.gather(*(client.post("/offer", json=body) for _ in range(8)))
    return answers


async def _flood_run(server: RunningServer, cap: int) -> None:
    frames = _moving_frames(320, 240, 30)
    sources = [ClipTrack(frames, fps=20, loop=True) for _ in range(cap)]
    peers = [await connect(server.url, source, {"name": "sketch"}) for source in sources]
    try:
        for _, collector, _ in peers:
            await collector.wait_for(10, timeout=30)
        calm_start = time.monotonic()
        await asyncio.sleep(3.0)
        calm_end = time.monotonic()
        answers = await _flood(server.url, await offer_sdp_async(), 3.0)
        flood_end = time.monotonic()
    finally:
        for pc, _, _ in peers:
            await pc.close()
        for source in sources:
            source.stop()
    refused = [answer for answer in answers if answer.status_code == 429]
    assert len(answers) >= 40 and len(refused) == len(answers), {a.status_code for a in answers}
    assert all(int(answer.headers["retry-after"]) > 0 for answer in refused)
    for _, collector, _ in peers:
        calm = _fps(collector, calm_start, calm_end)
        flooded = _fps(collector, calm_end, flood_end)
        assert calm >= 5, calm  # 20 fps in; about 20 back on an idle or a loaded host
        # The flooding client shares this process (and its GIL) with the peers: it costs them
        # up to 20% on a loaded 2-core host. Refusals that hold the server's event loop for
        # 20 ms each take half.
        assert flooded >= 0.6 * calm, (calm, flooded)


def test_flood_of_offers_gets_429_and_sessions_keep_their_frame_rate(tmp_path: Path) -> None:
    cap = 2
    settings = Settings(data_dir=tmp_path, max_sessions=cap, max_sessions_per_client=10)
    with running_server(settings) as server:
        asyncio.run(_flood_run(server, cap))
