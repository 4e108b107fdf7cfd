"""Live sessions batch their detector calls: real aiortc peers against a real server with
FACESTREAM_BATCH_SESSIONS forced on (on a CPU, where auto leaves it off)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import PORTRAITS, load_rgb, portrait_path
from server_helpers import running_server
from synthetic import linear_path, make_clip
from webrtc_helpers import ClipTrack, FrameCollector, connect

from engines.detection import FaceDetector
from stream.batched_detector import BatchedDetector
from stream.settings import Settings

pytestmark = pytest.mark.timeout(180)

SIZE = (256, 192)  # width, height
FACE = 70  # face width in the frames, pixels


def clip(person: int, detector: FaceDetector) -> tuple[list[np.ndarray], np.ndarray]:
    """A portrait scaled so its face is FACE px wide, swaying slightly in a small frame;
    and the face box (x1, y1, x2, y2) in the first frame."""
    portrait = load_rgb(portrait_path(PORTRAITS[person]), 640)
    x1, y1, x2, y2 = detector.detect([portrait])[0].boxes[0]
    scale = FACE / (x2 - x1)
    height = portrait.shape[0] * scale
    # Centres that put the face in the middle of the frame.
    face_x = ((x1 + x2) / 2 - portrait.shape[1] / 2) * scale
    face_y = ((y1 + y2) / 2 - portrait.shape[0] / 2) * scale
    centre = (SIZE[0] / 2 - face_x, SIZE[1] / 2 - face_y)
    sway = np.concatenate(
        [linear_path(15, (centre[0] - 4, centre[1]), (centre[0] + 4, centre[1]))] * 2
    )
    frames = make_clip(portrait, sway, size=SIZE, portrait_height=height).frames
    return frames, detector.detect([frames[0]])[0].boxes[0]


def face_hidden(collector: FrameCollector, frames: list[np.ndarray], box: np.ndarray) -> bool:
    """Whether the last received frames are pixelated where the face is (the blur effect
    ran) and unchanged, up to codec loss, away from it."""
    x1, y1, x2, y2 = box.astype(int)
    inner = (slice(y1 + 8, y2 - 8), slice(x1 + 8, x2 - 8))
    corner = (slice(0, 30), slice(0, 40))

    def change(rgb: np.ndarray, where: tuple[slice, slice]) -> float:
        """Mean difference from the nearest source frame (the clip sways) in `where`."""
        return min(float(np.abs(rgb[where].astype(np.int16) - f[where]).mean()) for f in frames)

    last = [image for _, _, image in collector.frames[-10:]]
    face = float(np.median([change(image, inner) for image in last]))
    return face > 10 and max(change(image, corner) for image in last) < 6


@pytest.mark.parametrize("sessions", [2, 3])
async def test_live_sessions_share_detector_batches(tmp_path: Path, sessions: int) -> None:
    settings = Settings(
        data_dir=tmp_path, batch_sessions="on", batch_max_wait_ms=60, detect_every=3
    )
    before = set(threading.enumerate())
    with running_server(settings) as server:
        services = server.app.state.services
        assert services.worker.threads > 1 and services.models.batching is not None
        detector = FaceDetector()
        clips = [clip(s, detector) for s in range(sessions)]
        sources = [ClipTrack(frames, fps=20, loop=True) for frames, _ in clips]
        peers = [
            await connect(server.url, s, {"name": "blur", "params": {"strength": 1.0}})
            for s in sources
        ]
        try:
            for _, collector, _ in peers:
                await collector.wait_for(30, timeout=60)
            for (_, collector, session_id), (frames, box) in zip(peers, clips, strict=True):
                pipeline = services.sessions.get(session_id).pipeline
                face_stage = pipeline._built["face"]
                assert isinstance(face_stage.detector, BatchedDetector)
                assert face_hidden(collector, frames, box), session_id
            stats = services.models.batch_stats()["detect"]
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
                metrics = (await http.get("/metrics")).text
        finally:
            for pc, collector, _ in peers:
                await pc.close()
                if collector.task is not None:
                    await asyncio.wait_for(collector.task, 5)
            for source in sources:
                source.stop()
    assert stats.largest_batch > 1, f"the sessions' detections were never batched: {stats}"
    assert stats.failed_batches == 0
    assert 'facestream_batch_mean_size{engine="detect"}' in metrics
    # The worker's threads and the schedulers' end with the server.
    deadline = time.monotonic() + 10
    while (left := _new_threads(before)) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not left, left


def _new_threads(before: set[threading.Thread]) -> list[str]:
    return [
        t.name
        for t in set(threading.enumerate()) - before
        if t.name.startswith(("facestream", "batch-"))
    ]
