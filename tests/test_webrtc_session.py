"""A real aiortc peer on localhost against a real server: offer, effect switch, delete."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import load_rgb, portrait_path
from server_helpers import running_server
from synthetic import linear_path, make_clip
from webrtc_helpers import ClipTrack, connect, saturation

from stream.settings import Settings

pytestmark = pytest.mark.timeout(180)


def clip_frames(count: int) -> list[np.ndarray]:
    portrait = load_rgb(portrait_path("kate_siegel"), 640)
    return make_clip(
        portrait, linear_path(count, (220, 240), (420, 240)), portrait_height=300
    ).frames


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


async def test_offer_patch_delete_round_trip(tmp_path: Path) -> None:
    frames = clip_frames(150)
    with running_server(Settings(data_dir=tmp_path)) as server:
        source = ClipTrack(frames, fps=30)
        pc, collector, session_id = await connect(
            server.url, source, {"name": "none", "params": {}}
        )
        await collector.wait_for(20, timeout=30)

        # `none` gives back the camera image (up to codec loss), in colour.
        _, _, image = collector.frames[-1]
        assert min(mean_abs_diff(image, sent) for sent in frames[: len(source.sent_pts)]) < 12
        assert saturation(image) > 20

        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            switched_at = len(collector.frames)
            response = await client.patch(
                f"/sessions/{session_id}", json={"effect": {"name": "sketch"}}
            )
            assert response.status_code == 200, response.text
            assert response.json()["effect"]["name"] == "sketch"
            await collector.wait_for(switched_at + 15, timeout=30)
            later = [img for _, _, img in collector.frames[switched_at:]]
            # Within a few frames the output is a grey pencil drawing.
            first_grey = next(i for i, img in enumerate(later) if saturation(img) < 6)
            assert first_grey <= 5
            assert all(saturation(img) < 6 for img in later[first_grey + 2 :])

            bad = await client.patch(
                f"/sessions/{session_id}", json={"effect": {"name": "no-such"}}
            )
            assert bad.status_code == 422 and "no-such" in bad.json()["detail"]

            # Frames keep coming for the whole clip, with the input's timing: RTP shifts every
            # timestamp by one constant, so steps between received frames are whole frame steps
            # (to the 90 kHz clock's rounding).
            await collector.wait_for(100, timeout=30)
            received_pts = np.array([p for _, p, _ in collector.frames], dtype=np.int64)
            steps = np.diff(received_pts)
            assert (steps > 0).all()
            whole_steps = np.round(steps / 3000) * 3000
            assert (np.abs(steps - whole_steps) <= 3).all(), steps

            session = server.app.state.services.sessions.get(session_id)
            response = await client.delete(f"/sessions/{session_id}")
            assert response.status_code == 204
            assert (await client.get(f"/sessions/{session_id}")).status_code == 404
            health = (await client.get("/healthz")).json()
            assert health["sessions"] == 0
            metrics = (await client.get("/metrics")).text
            assert "facestream_frames_out_total" in metrics
            # No peer connection, track or reader task of the session is left behind.
            assert session.pc.connectionState == "closed"
            assert session.track is not None and session.track.readyState == "ended"
            deadline = time.monotonic() + 30
            while not session.track.reader_done:  # the reader task ends, soon
                assert time.monotonic() < deadline, "the track's reader task outlived it"
                await asyncio.sleep(0.05)
        await pc.close()
        source.stop()
    # The server's own threads (worker, uvicorn) end with it.
    deadline = time.monotonic() + 10
    while _server_threads() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not _server_threads()


def _server_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("facestream")]


async def test_the_control_channel_changes_the_effect(tmp_path: Path) -> None:
    """The page's data channel: an effect object or a bare name is applied and answered
    with the message's id; a bad one is refused in words; a ping is answered."""
    import json

    from aiortc import RTCPeerConnection, RTCSessionDescription
    from webrtc_helpers import FrameCollector

    with running_server(Settings(data_dir=tmp_path, warm_up=False)) as server:
        pc = RTCPeerConnection()
        collector = FrameCollector()
        replies: list[dict[str, object]] = []
        channel = pc.createDataChannel("control")
        channel.on("message", lambda message: replies.append(json.loads(message)))
        pc.addTrack(ClipTrack(clip_frames(300), fps=30))
        pc.on("track", collector.attach)
        await pc.setLocalDescription(await pc.createOffer())
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            body = {"sdp": pc.localDescription.sdp, "type": "offer", "effect": "none"}
            answer = (await client.post("/offer", json=body)).json()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        try:
            await collector.wait_for(5, timeout=60)
            sent = [
                {"id": 1, "effect": "sketch"},
                {"id": "two", "effect": {"name": "blur", "params": {"strength": 0.8}}},
                {"id": 3, "effect": {"name": "no-such"}},
                {"ping": 12.5},
            ]
            for message in sent:
                channel.send(json.dumps(message))
            deadline = time.monotonic() + 30
            while len(replies) < len(sent) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            by_id = {reply.get("id"): reply for reply in replies if "id" in reply}
            assert by_id[1] == {"id": 1, "ok": True, "effect": "sketch"}
            assert by_id["two"] == {"id": "two", "ok": True, "effect": "blur"}
            assert by_id[3]["ok"] is False and "no-such" in str(by_id[3]["detail"])
            assert {"pong": 12.5} in replies
            session = server.app.state.services.sessions.get(answer["session_id"])
            assert session.pipeline.spec.name == "blur"
        finally:
            await pc.close()
