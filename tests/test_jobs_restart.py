"""Conversion jobs across a server restart: finished jobs answer again (a done one with
its result) until their retention time; a job cut off by the stop says so; progress
fields are true from the first answer to the last. Real servers on one data folder."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from convert_helpers import cut_clip
from server_helpers import running_server

from stream.settings import Settings

pytestmark = pytest.mark.timeout(240)

SKETCH = json.dumps({"name": "sketch"})


def _submit(url: str, clip: Path) -> str:
    response = httpx.post(
        url + "/jobs",
        files={"file": ("clip.mp4", clip.read_bytes(), "video/mp4")},
        data={"effect": SKETCH},
        timeout=60,
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def _job(url: str, job_id: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/jobs/{job_id}", timeout=30)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _until_finished(url: str, job_id: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while (job := _job(url, job_id))["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    return job


def test_a_finished_job_and_its_result_survive_a_restart(tmp_path: Path) -> None:
    clip = cut_clip(tmp_path / "clip.mp4", frames=12)
    settings = Settings(data_dir=tmp_path / "data")
    with running_server(settings) as server:
        job_id = _submit(server.url, clip)
        first = _job(server.url, job_id)
        assert first["frames_total"] == 12  # known from the upload, before the first frame
        done = _until_finished(server.url, job_id)
        assert done["state"] == "done" and done["eta_s"] is None
        result = httpx.get(f"{server.url}/jobs/{job_id}/result", timeout=60)
        assert result.status_code == 200
    with running_server(settings) as server:
        again = _job(server.url, job_id)
        assert again == done
        kept = httpx.get(f"{server.url}/jobs/{job_id}/result", timeout=60)
        assert kept.status_code == 200 and kept.content == result.content
        assert httpx.delete(f"{server.url}/jobs/{job_id}", timeout=30).status_code == 204
    assert not (tmp_path / "data" / "jobs" / job_id).exists()


def test_a_job_cut_off_by_the_stop_says_so_after_a_restart(tmp_path: Path) -> None:
    clip = cut_clip(tmp_path / "clip.mp4", frames=240, size=(640, 360))
    settings = Settings(data_dir=tmp_path / "data")
    with running_server(settings) as server:
        job_id = _submit(server.url, clip)
        deadline = time.monotonic() + 120
        while _job(server.url, job_id)["frames_done"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    folder = tmp_path / "data" / "jobs" / job_id
    assert sorted(p.name for p in folder.iterdir()) == ["job.json"]  # no upload, no part
    with running_server(settings) as server:
        job = _job(server.url, job_id)
        assert job["state"] == "failed" and "server stopped" in job["error"]
        assert job["fps"] == 0 and job["eta_s"] is None and job["result"] is None
        assert httpx.get(f"{server.url}/jobs/{job_id}/result", timeout=30).status_code == 409


def test_expired_and_unreadable_records_are_not_taken_back(tmp_path: Path) -> None:
    clip = cut_clip(tmp_path / "clip.mp4", frames=6)
    settings = Settings(data_dir=tmp_path / "data", job_retention_s=3600)
    with running_server(settings) as server:
        old_id, broken_id = _submit(server.url, clip), _submit(server.url, clip)
        _until_finished(server.url, old_id)
        _until_finished(server.url, broken_id)
    jobs = tmp_path / "data" / "jobs"
    record = json.loads((jobs / old_id / "job.json").read_text())
    record["finished"] -= 7200  # finished two hours ago: past the retention time
    (jobs / old_id / "job.json").write_text(json.dumps(record))
    (jobs / broken_id / "job.json").write_text("{not json")
    with running_server(settings) as server:
        for job_id in (old_id, broken_id):
            assert httpx.get(f"{server.url}/jobs/{job_id}", timeout=30).status_code == 404
    assert not (jobs / old_id).exists()  # expired while the server was down: removed
