"""Real aiortc peers for tests: a camera-like track playing a clip, and a frame collector."""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Sequence

import httpx
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

VIDEO_TIME_BASE = fractions.Fraction(1, 90000)


class ClipTrack(MediaStreamTrack):
    """Plays RGB frames at `fps` in real time (looping when `loop`), like a webcam."""

    kind = "video"

    def __init__(self, frames: Sequence[np.ndarray], fps: float = 30.0, loop: bool = False) -> None:
        super().__init__()
        self._frames = frames
        self._fps = fps
        self._loop = loop
        self._index = 0
        self._start: float | None = None
        self.sent_pts: list[int] = []

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._index >= len(self._frames) and not self._loop:
            self.stop()
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._index / self._fps
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        frame = VideoFrame.from_ndarray(
            self._frames[self._index % len(self._frames)], format="rgb24"
        )
        frame.pts = int(self._index * 90000 / self._fps)
        frame.time_base = VIDEO_TIME_BASE
        self.sent_pts.append(frame.pts)
        self._index += 1
        return frame


class FrameCollector:
    """Receives a remote video track and keeps (arrival time, pts, RGB image) of every frame."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, int, np.ndarray]] = []
        self.task: asyncio.Task[None] | None = None

    def attach(self, track: MediaStreamTrack) -> None:
        self.task = asyncio.ensure_future(self._consume(track))

    async def _consume(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                self.frames.append((time.monotonic(), frame.pts, frame.to_ndarray(format="rgb24")))
        except MediaStreamError:
            pass

    async def wait_for(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.frames) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"received {len(self.frames)} of {count} frames in {timeout} s")
            await asyncio.sleep(0.05)


async def connect(
    base_url: str,
    source: MediaStreamTrack,
    effect: dict[str, object],
    headers: dict[str, str] | None = None,
    control: list[str] | None = None,
) -> tuple[RTCPeerConnection, FrameCollector, str]:
    """Offer `source` to POST /offer; returns the peer, the collector of processed frames, session id.

    control: when given, the peer opens the `control` data channel (as the page does)
    and every message the server sends on it is appended here."""
    pc = RTCPeerConnection()
    collector = FrameCollector()
    if control is not None:
        channel = pc.createDataChannel("control")
        channel.on("message", control.append)
    pc.addTrack(source)
    pc.on("track", collector.attach)
    await pc.setLocalDescription(await pc.createOffer())
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        response = await client.post(
            "/offer",
            json={"sdp": pc.localDescription.sdp, "type": "offer", "effect": effect},
            headers=headers or {},
        )
    if response.status_code != 200:
        await pc.close()
        raise AssertionError(f"offer refused: {response.status_code} {response.text}")
    body = response.json()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
    return pc, collector, body["session_id"]


def saturation(image: np.ndarray) -> float:
    """Mean per-pixel colour spread (max - min channel), 0 for a grey image."""
    as_int = image.astype(np.int16)
    return float((as_int.max(axis=2) - as_int.min(axis=2)).mean())
