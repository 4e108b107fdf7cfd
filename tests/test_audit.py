"""The audit log: one JSON line per swap session start/end/switch and per job."""

from __future__ import annotations

import asyncio
import json
import stat
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import portrait_path
from security_helpers import offer_sdp_async, write_clip
from server_helpers import running_server

from stream.audit import AUDIT_FILE_NAME, AuditLog
from stream.settings import Settings

pytestmark = pytest.mark.timeout(180)


def test_record_is_one_json_line(tmp_path: Path) -> None:
    log = AuditLog.for_data_dir(tmp_path)
    written = log.record(
        "session.start", client="10.0.0.7", effect="swap", face_id="f1", session_id="s1"
    )
    lines = (tmp_path / AUDIT_FILE_NAME).read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record == written
    assert record["event"] == "session.start" and record["client"] == "10.0.0.7"
    assert record["time"].endswith("Z")
    assert stat.S_IMODE((tmp_path / AUDIT_FILE_NAME).stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("value", "check"),
    [
        ('evil\n{"event": "forged"}', lambda v: v.startswith("evil\n")),
        ("x" * 10_000, lambda v: len(v) == 512),
        ({"nested": ["a", 1, None]}, lambda v: v == {"nested": ["a", 1, None]}),
        (Path("/tmp/x"), lambda v: v == "/tmp/x"),
    ],
)
def test_hostile_values_stay_inside_their_line(tmp_path: Path, value: Any, check: Any) -> None:
    log = AuditLog.for_data_dir(tmp_path)
    log.record("job.start", client=value)
    lines = (tmp_path / AUDIT_FILE_NAME).read_text().splitlines()
    assert len(lines) == 1
    assert check(json.loads(lines[0])["client"])


def test_concurrent_writers_never_interleave(tmp_path: Path) -> None:
    per_thread, threads = 300, 8

    def write(worker: int) -> None:
        log = AuditLog.for_data_dir(tmp_path)  # separate instances share the path's lock
        for index in range(per_thread):
            log.record("job.start", job_id=f"{worker}-{index}", padding="p" * (index % 400))

    workers = [threading.Thread(target=write, args=(w,)) for w in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    records = AuditLog.for_data_dir(tmp_path).records("job.")
    assert len(records) == per_thread * threads
    assert len({r["job_id"] for r in records}) == per_thread * threads


def test_append_only_across_instances(tmp_path: Path) -> None:
    AuditLog.for_data_dir(tmp_path).record("session.start", session_id="a")
    AuditLog.for_data_dir(tmp_path).record("session.end", session_id="a")
    events = [r["event"] for r in AuditLog.for_data_dir(tmp_path)]
    assert events == ["session.start", "session.end"]


async def _offer(url: str, effect: dict[str, Any]) -> str:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        body = {"sdp": await offer_sdp_async(), "type": "offer", "effect": effect}
        response = await client.post("/offer", json=body)
        assert response.status_code == 200, response.text
        return str(response.json()["session_id"])


def _upload_face(url: str) -> str:
    image = portrait_path("paul_rudd").read_bytes()
    files = {"file": ("paul.jpg", image, "image/jpeg")}
    response = httpx.post(url + "/faces", files=files, data={"consent": "true"}, timeout=120)
    assert response.status_code == 200, response.text
    return str(response.json()["face_id"])


def test_swap_sessions_are_audited_other_sessions_not(tmp_path: Path) -> None:
    pytest.importorskip(
        "stream.face_stage", reason="the face stage (detection + tracking) is not in the tree yet"
    )
    with running_server(Settings(data_dir=tmp_path)) as server:
        face_id = _upload_face(server.url)
        swap = {"name": "swap", "params": {"source_face": face_id}}
        plain = asyncio.run(_offer(server.url, {"name": "cartoon"}))
        swapped = asyncio.run(_offer(server.url, swap))
        switched = asyncio.run(_offer(server.url, {"name": "sketch"}))
        assert (
            httpx.patch(
                f"{server.url}/sessions/{switched}", json={"effect": swap}, timeout=60
            ).status_code
            == 200
        )
        for session_id in (plain, swapped, switched):
            assert httpx.delete(f"{server.url}/sessions/{session_id}").status_code == 204
    records = AuditLog.for_data_dir(tmp_path).records("session.")
    by_session: dict[str, list[str]] = {}
    for record in records:
        by_session.setdefault(record["session_id"], []).append(record["event"])
    assert plain not in by_session
    assert by_session[swapped] == ["session.start", "session.end"]
    assert by_session[switched] == ["session.effect", "session.end"]
    start = next(r for r in records if r["session_id"] == swapped)
    assert (
        start["client"] == "127.0.0.1" and start["effect"] == "swap" and start["face_id"] == face_id
    )


def test_jobs_are_audited(tmp_path: Path) -> None:
    frames = [np.full((96, 128, 3), 40 * i % 255, np.uint8) for i in range(6)]
    clip = write_clip(tmp_path / "clip.mp4", frames)
    with running_server(Settings(data_dir=tmp_path)) as server:
        with clip.open("rb") as handle:
            response = httpx.post(
                server.url + "/jobs",
                files={"file": ("clip.mp4", handle, "video/mp4")},
                data={"effect": json.dumps({"name": "sketch"})},
                timeout=60,
            )
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        deadline = time.monotonic() + 60
        while httpx.get(f"{server.url}/jobs/{job_id}").json()["state"] not in (
            "done",
            "failed",
            "cancelled",
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    events = [
        (r["event"], r.get("job_id")) for r in AuditLog.for_data_dir(tmp_path).records("job.")
    ]
    assert events == [("job.start", job_id), ("job.end", job_id)]
    start = AuditLog.for_data_dir(tmp_path).records("job.start")[0]
    assert start["client"] == "127.0.0.1" and start["effect"] == "sketch"
