"""Deleting an uploaded face withdraws its uploader's consent: every live session and
every conversion job using it stops using it, the page is told why, the audit log
keeps both the upload and the deletion. A real server, real aiortc peers, real
conversions."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from conftest import SHARED_DATA, load_rgb, portrait_path
from convert_helpers import cut_clip
from effects_helpers import faces_in
from server_helpers import running_server
from synthetic import linear_path, make_clip
from webrtc_helpers import ClipTrack, connect

from engines.effects.base import EffectResources
from engines.effects.registry import build_effect
from engines.errors import SourceWithdrawn
from stream.audit import AuditLog
from stream.settings import Settings

pytestmark = pytest.mark.timeout(240)


def _photo(name: str) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.imread(str(portrait_path(name))))
    assert ok
    return data.tobytes()


def _upload_face(client: httpx.Client, name: str = "paul_rudd") -> str:
    response = client.post(
        "/faces",
        files={"file": (f"{name}.jpg", _photo(name), "image/jpeg")},
        data={"consent": "true"},
    )
    assert response.status_code == 200, response.text
    face_id: str = response.json()["face_id"]
    return face_id


def test_the_swap_effect_stops_once_its_source_is_withdrawn(tmp_path: Path) -> None:
    """The effect's own check (for a session or job that started as the face was being
    deleted): the first frame after says so, every later one is left as it is. A face
    evicted to make room in the store is not withdrawn: the swap goes on."""
    from stream.face_store import FaceStore

    group = load_rgb(SHARED_DATA / "multiface.jpg")
    faces = faces_in(group)
    store = FaceStore(tmp_path, max_faces=1)
    paul = store.add(load_rgb(portrait_path("paul_rudd"), 1024), consent=True)
    effect = build_effect("swap", {"source_face": paul}, EffectResources(source_faces=store))
    assert np.any(effect.apply(group.copy(), faces) != group)
    store.add(load_rgb(portrait_path("shea_whigham"), 1024), consent=True)  # evicts paul
    assert paul not in store and np.any(effect.apply(group.copy(), faces) != group)
    other = build_effect(
        "swap", {"source_face": next(iter(store))}, EffectResources(source_faces=store)
    )
    assert store.remove(next(iter(store)))
    with pytest.raises(SourceWithdrawn, match="deleted"):
        other.apply(group.copy(), faces)
    for _ in range(2):
        np.testing.assert_array_equal(other.apply(group.copy(), faces), group)


async def test_a_live_swap_stops_when_its_face_is_deleted(tmp_path: Path) -> None:
    portrait = load_rgb(portrait_path("kate_siegel"), 640)
    frames = make_clip(
        portrait, linear_path(600, (300, 240), (340, 240)), portrait_height=300
    ).frames
    with running_server(Settings(data_dir=tmp_path)) as server:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            face_id = _upload_face(client)
            other_id = _upload_face(client, "shea_whigham")
        control: list[str] = []
        swap = {"name": "swap", "params": {"source_face": face_id}}
        pc, collector, session_id = await connect(
            server.url, ClipTrack(frames, fps=30), swap, control=control
        )
        other_pc, other_collector, other_session = await connect(
            server.url,
            ClipTrack(frames, fps=30),
            {"name": "swap", "params": {"source_face": other_id}},
        )
        try:
            await collector.wait_for(10, timeout=60)
            await other_collector.wait_for(10, timeout=60)
            sessions = server.app.state.services.sessions
            assert sessions.get(session_id).pipeline.spec.name == "swap"
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                assert (await client.delete(f"/faces/{face_id}")).status_code == 204
                described = (await client.get(f"/sessions/{session_id}")).json()
                assert described["effect"]["name"] == "none"
                assert sessions.get(session_id).pipeline.spec.name == "none"
                # another person's face is not touched
                assert sessions.get(other_session).pipeline.spec.name == "swap"
                deadline = time.monotonic() + 30
                while not control and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                message = json.loads(control[0])
                assert message["withdrawn"] == face_id and message["effect"] == "none"
                assert "deleted" in message["detail"]
                # the session goes on, unprocessed
                count = len(collector.frames)
                await collector.wait_for(count + 10, timeout=60)
                refused = await client.patch(f"/sessions/{session_id}", json={"effect": swap})
                assert refused.status_code == 422 and "unknown source face" in refused.text
        finally:
            await pc.close()
            await other_pc.close()
    audit = AuditLog.for_data_dir(tmp_path).records("face.")
    assert [(r["event"], r["face_id"]) for r in audit] == [
        ("face.upload", face_id),
        ("face.upload", other_id),
        ("face.delete", face_id),
    ]
    assert audit[-1]["sessions_stopped"] == 1


@pytest.mark.parametrize("when", ["at once", "mid-conversion"])
def test_a_conversion_stops_when_its_face_is_deleted(tmp_path: Path, when: str) -> None:
    clip = cut_clip(tmp_path / "crowd.mp4", frames=120, size=(640, 360))
    settings = Settings(data_dir=tmp_path / "data")
    with (
        running_server(settings) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        face_id = _upload_face(client)
        effect = json.dumps({"name": "swap", "params": {"source_face": face_id}})
        accepted = client.post(
            "/jobs",
            files={"file": ("crowd.mp4", clip.read_bytes(), "video/mp4")},
            data={"effect": effect},
        )
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        deadline = time.monotonic() + 120
        while when == "mid-conversion" and client.get(f"/jobs/{job_id}").json()["frames_done"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.delete(f"/faces/{face_id}").status_code == 204
        while (job := client.get(f"/jobs/{job_id}").json())["state"] in ("queued", "running"):
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
        assert job["state"] == "failed"
        assert "source face was deleted" in job["error"] and "nothing was kept" in job["error"]
        assert client.get(f"/jobs/{job_id}/result").status_code == 409
        folder = tmp_path / "data" / "jobs" / job_id
        assert not list(folder.glob("*.mp4"))
    deleted = AuditLog.for_data_dir(tmp_path / "data").records("face.delete")
    assert deleted[0]["jobs_stopped"] == 1
