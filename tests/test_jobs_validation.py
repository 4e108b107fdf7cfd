"""POST /jobs and its results, as an HTTP caller meets them: refusals at submit, wording
for HTTP (never CLI flags), download names, results of failed jobs. A real server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from convert_helpers import cut_clip
from server_helpers import RunningServer, running_server

from stream.settings import Settings
from stream.uploads import human_size

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cut_clip(tmp_path_factory.mktemp("jobs") / "clip.mp4", frames=6)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), max_video_bytes=1 << 20)
    with running_server(settings) as running:
        yield running


def _post(url: str, files: dict[str, Any], effect: str) -> httpx.Response:
    return httpx.post(url + "/jobs", files=files, data={"effect": effect}, timeout=60)


def _swap(face_id: str | None) -> str:
    params = {} if face_id is None else {"source_face": face_id}
    return json.dumps({"name": "swap", "params": params})


REFUSALS = [
    # (file field, effect field, status, fragment of the detail)
    ("file", _swap(None), 422, "upload the face photo with POST /faces first"),
    ("file", _swap("0" * 32), 422, "unknown source face"),
    ("file", _swap("abc"), 422, "pass its face_id in params.source_face"),
    ("video", '{"name": "sketch"}', 422, "the video goes in the form field 'file'"),
]


@pytest.mark.parametrize(("field", "effect", "status", "fragment"), REFUSALS)
def test_jobs_refuses_at_submit_in_http_words(
    server: RunningServer, clip: Path, field: str, effect: str, status: int, fragment: str
) -> None:
    jobs = server.app.state.services.jobs
    before = len(jobs)
    files = {field: ("clip.mp4", clip.read_bytes(), "video/mp4")}
    response = _post(server.url, files, effect)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert fragment in detail and "--" not in detail, detail  # no command-line flags
    assert len(jobs) == before  # nothing queued


def test_too_large_upload_names_a_human_size(server: RunningServer) -> None:
    response = _post(server.url, {"file": ("big.mp4", bytes(2 << 20), "video/mp4")}, "sketch")
    assert response.status_code == 413
    detail = response.json()["detail"]
    assert (
        "2 MiB" in detail
        and "limit for a video on this server is 1 MiB" in detail
        and "bytes" not in detail
    ), detail
    assert human_size(512 << 20) == "512 MiB" and human_size((512 << 20) + (64 << 10)) == "512 MiB"
    assert human_size(1536) == "1.5 KiB" and human_size(1000) == "1000 bytes"


def test_a_size_just_over_the_limit_does_not_read_as_the_limit(server: RunningServer) -> None:
    limit = server.app.state.services.settings.max_video_bytes  # 1 MiB
    response = _post(server.url, {"file": ("big.mp4", bytes(limit + 100_000), "video/mp4")}, "x")
    assert response.status_code == 413
    detail = response.json()["detail"]
    assert detail.startswith("the request body is more than 1.1 MiB;"), detail


def test_an_upload_cut_off_by_the_client_is_no_server_error(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A browser that cancels its upload (or closes the tab) is logged as such, not as a crash,
    and the server goes on taking jobs."""
    import socket
    from urllib.parse import urlsplit

    address = urlsplit(server.url)
    jobs = server.app.state.services.jobs
    before = len(jobs)
    head = (
        "POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        "Content-Length: 500000\r\n\r\n--b\r\nContent-Disposition: form-data; "
        'name="file"; filename="a.mp4"\r\nContent-Type: video/mp4\r\n\r\n'
    )
    with caplog.at_level("INFO", logger="stream"):
        with socket.create_connection((address.hostname, address.port)) as raw:
            raw.sendall(head.encode() + bytes(100_000))
            time.sleep(0.3)
        deadline = time.monotonic() + 10
        while not any("client left" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
            time.sleep(0.05)
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert len(jobs) == before
    assert httpx.get(server.url + "/healthz").json()["status"] == "ok"


def _wait(url: str, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while (status := httpx.get(f"{url}/jobs/{job_id}").json())["state"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return status


NAMES = [
    # (uploaded name, name in the status, ASCII fallback of the download)
    ("Ünïcødé clip 😀.mp4", "Ünïcødé clip 😀.mp4", "Unicde clip -sketch.mp4"),
    ('say "hi".mp4', "say _hi_.mp4", "say _hi_-sketch.mp4"),
    ("../../etc/evil.mp4", "evil.mp4", "evil-sketch.mp4"),
]


@pytest.mark.parametrize(("name", "shown", "fallback"), NAMES)
def test_names_survive_into_status_and_download(
    server: RunningServer, clip: Path, name: str, shown: str, fallback: str
) -> None:
    files = {"file": (name, clip.read_bytes(), "video/mp4")}
    accepted = _post(server.url, files, '{"name": "sketch"}')
    assert accepted.status_code == 202, accepted.text
    status = _wait(server.url, accepted.json()["job_id"])
    assert status["state"] == "done" and status["filename"] == shown
    assert status["frames_total"] == status["frames_done"] == 6
    result = httpx.get(f"{server.url}/jobs/{status['job_id']}/result", timeout=60)
    header = result.headers["content-disposition"]
    plain, _, encoded = header.partition("; filename*=UTF-8''")
    assert plain == f'attachment; filename="{fallback}"', header
    assert unquote(encoded) == shown.removesuffix(".mp4") + "-sketch.mp4"


def test_result_of_a_failed_job_says_it_failed(server: RunningServer) -> None:
    jobs = server.app.state.services.jobs
    job_id, folder = jobs.new_folder()  # a job the route would refuse: its input is text
    (folder / "input").write_bytes(b"not a video\n" * 100)
    jobs.submit(job_id, folder, folder / "input", "notes.mp4", "sketch", {})
    status = _wait(server.url, job_id)
    assert status["state"] == "failed", status
    result = httpx.get(f"{server.url}/jobs/{job_id}/result")
    assert result.status_code == 409
    detail = result.json()["detail"]
    assert "failed" in detail and "nothing to download" in detail and "not ready" not in detail
    assert status["error"] in detail


def test_a_done_job_counts_the_frames_it_made(server: RunningServer, tmp_path: Path) -> None:
    # A Matroska file declares no frame count; with a gap in the frames (variable frame
    # rate) the estimate from its duration runs high (15 for 12).
    steps = [1] * 5 + [4] + [1] * 6
    mkv = cut_clip(tmp_path / "clip.mkv", frames=12, container="matroska", pts_steps=steps)
    accepted = _post(
        server.url, {"file": ("clip.mkv", mkv.read_bytes(), "video/x-matroska")}, "none"
    )
    assert accepted.status_code == 202, accepted.text
    status = _wait(server.url, accepted.json()["job_id"])
    assert status["state"] == "done" and status["progress"] == 1.0
    assert status["frames_total"] == status["frames_done"] == 12, status
