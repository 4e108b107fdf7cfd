"""WHIP publisher and WHEP player clients built on aiortc, for tests against a real server."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from webrtc_helpers import FrameCollector

SDP = "application/sdp"


@dataclass
class WhipPublisher:
    pc: RTCPeerConnection
    location: str

    @property
    def session_id(self) -> str:
        return self.location.rsplit("/", 1)[-1]


@dataclass
class WhepPlayer:
    pc: RTCPeerConnection
    collector: FrameCollector
    location: str


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def whip_publish(
    base_url: str, source: MediaStreamTrack, query: str = "", token: str | None = None
) -> WhipPublisher:
    """Publish `source` (sendonly video) with POST /whip; raises AssertionError when refused."""
    pc = RTCPeerConnection()
    pc.addTransceiver(source, direction="sendonly")
    response = await _post_offer(pc, base_url, f"/whip{query}", token, "WHIP")
    assert response.headers["content-type"].startswith(SDP)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=response.text, type="answer"))
    return WhipPublisher(pc, response.headers["location"])


async def whep_play(base_url: str, session: str, token: str | None = None) -> WhepPlayer:
    """Play a session (recvonly video) with POST /whep/{session}."""
    pc = RTCPeerConnection()
    collector = FrameCollector()
    pc.addTransceiver("video", direction="recvonly")
    pc.on("track", collector.attach)
    response = await _post_offer(pc, base_url, f"/whep/{session}", token, "WHEP")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=response.text, type="answer"))
    return WhepPlayer(pc, collector, response.headers["location"])


async def _post_offer(
    pc: RTCPeerConnection, base_url: str, path: str, token: str | None, protocol: str
) -> httpx.Response:
    """POST `pc`'s offer to `path`; the 201 answer. Refused: `pc` closed, AssertionError."""
    await pc.setLocalDescription(await pc.createOffer())
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        response = await client.post(
            path,
            content=pc.localDescription.sdp,
            headers={"Content-Type": SDP, **bearer(token)},
        )
    if response.status_code != 201:
        await pc.close()
        raise AssertionError(f"{protocol} refused: {response.status_code} {response.text}")
    return response


async def offer_sdp(kind: str = "sendonly") -> str:
    """A valid aiortc video offer (sendonly for WHIP, recvonly for WHEP), peer closed after."""
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction=kind)
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp
