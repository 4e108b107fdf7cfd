"""Conversion over HTTP: upload, server-sent progress, result, bounded queue, retention, page."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser_helpers import BASE_FLAGS, CHROMIUM, require_chromium
from convert_helpers import cut_clip, summarise
from server_helpers import RunningServer, running_server

from stream.settings import Settings

pytestmark = pytest.mark.timeout(180)

SKETCH = json.dumps({"name": "sketch", "params": {"blur": 8}})


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cut_clip(tmp_path_factory.mktemp("jobs") / "clip.mp4", frames=20)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("data"), job_max_pending=1, max_video_bytes=1 << 20
    )
    with running_server(settings) as running:
        yield running


def upload(
    url: str, data: bytes, effect: str | None = SKETCH, name: str = "clip.mp4"
) -> httpx.Response:
    fields = {"effect": effect} if effect is not None else {}
    return httpx.post(
        url + "/jobs", files={"file": (name, data, "video/mp4")}, data=fields, timeout=60
    )


def events(url: str, job_id: str) -> tuple[str, list[dict[str, Any]]]:
    """(content type, every event's JSON) of GET /jobs/{id}/events, read until the server ends it."""
    payloads = []
    with httpx.stream("GET", f"{url}/jobs/{job_id}/events", timeout=120) as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                payloads.append(json.loads(line[5:]))
        return response.headers["content-type"], payloads


def test_job_round_trip(server: RunningServer, clip: Path, tmp_path: Path) -> None:
    accepted = upload(server.url, clip.read_bytes())
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    assert accepted.headers["location"] == f"/jobs/{job_id}"
    content_type, progress = events(server.url, job_id)
    assert content_type.startswith("text/event-stream")
    assert progress[-1]["state"] == "done" and progress[-1]["progress"] == 1.0
    fractions = [p["progress"] for p in progress]
    assert fractions == sorted(fractions)
    assert {p["state"] for p in progress[:-1]} <= {"queued", "running"}
    status = httpx.get(f"{server.url}/jobs/{job_id}").json()
    assert status["state"] == "done" and status["frames_done"] == 20 and status["fps"] > 0
    result = httpx.get(f"{server.url}/jobs/{job_id}/result", timeout=60)
    assert result.status_code == 200 and result.headers["content-type"] == "video/mp4"
    assert 'filename="clip-sketch.mp4"' in result.headers["content-disposition"]
    output = tmp_path / "result.mp4"
    output.write_bytes(result.content)
    source, converted = summarise(clip), summarise(output)
    assert converted.pts == source.pts
    assert [a.data for a in converted.audio] == [a.data for a in source.audio]
    assert "sketch" in converted.metadata["comment"]


def test_queue_is_bounded_and_results_wait_for_the_job(server: RunningServer, clip: Path) -> None:
    gate = threading.Event()
    jobs = server.app.state.services.jobs
    jobs._executor.submit(gate.wait, 60)  # occupy the single runner so jobs stay queued
    try:
        first = upload(server.url, clip.read_bytes())
        assert first.status_code == 202, first.text
        job_id = first.json()["job_id"]
        assert httpx.get(f"{server.url}/jobs/{job_id}").json()["state"] == "queued"
        early = httpx.get(f"{server.url}/jobs/{job_id}/result")
        assert early.status_code == 409 and "queued" in early.json()["detail"]
        full = upload(server.url, clip.read_bytes())
        assert full.status_code == 429 and full.headers["retry-after"]
        assert "waiting" in full.json()["detail"]
        assert httpx.delete(f"{server.url}/jobs/{job_id}").status_code == 204
        assert httpx.get(f"{server.url}/jobs/{job_id}").status_code == 404
    finally:
        gate.set()
    folder = jobs.root / job_id
    deadline = time.monotonic() + 30
    while folder.exists():
        assert time.monotonic() < deadline, "the cancelled job's folder was not removed"
        time.sleep(0.1)


def _wide_mp4(folder: Path) -> bytes:
    return cut_clip(folder / "wide.mp4", frames=2, size=(4112, 16), audio=False).read_bytes()


REFUSALS = [
    # (upload kind, effect field, status, fragment of the detail)
    ("clip", '{"name": "sketch"', 422, "not valid JSON"),
    ("clip", '{"name": "no-such"}', 422, "no-such"),
    ("clip", '{"name": "sketch", "params": {"blur": 999}}', 422, "blur"),
    ("clip", '{"name": "sketch", "params": {"nonsense": 1}}', 422, "nonsense"),
    ("clip", None, 422, '"effect"'),
    ("text", SKETCH, 415, "text file"),
    ("playlist", SKETCH, 415, "HLS playlist"),
    ("wide", SKETCH, 422, "at most 4096x4096"),
    ("big", SKETCH, 413, "limit"),
    ("none", SKETCH, 422, "no file"),
    ("json", SKETCH, 422, "multipart"),
]


@pytest.mark.parametrize(("kind", "effect", "status", "fragment"), REFUSALS)
def test_bad_uploads_are_refused(
    server: RunningServer,
    clip: Path,
    tmp_path: Path,
    kind: str,
    effect: str | None,
    status: int,
    fragment: str,
) -> None:
    if kind == "json":
        response = httpx.post(server.url + "/jobs", json={"effect": SKETCH})
    elif kind == "none":
        response = httpx.post(
            server.url + "/jobs", files={"effect": (None, SKETCH)}
        )  # multipart, no file
    else:
        data = {
            "clip": clip.read_bytes,
            "text": lambda: b"hello world\n" * 50,
            "playlist": lambda: b"#EXTM3U\n#EXTINF:1,\n/etc/passwd\n",
            "wide": lambda: _wide_mp4(tmp_path),
            "big": lambda: bytes(2 << 20),
        }[kind]()
        response = upload(server.url, data, effect)
    assert response.status_code == status, response.text
    assert fragment in response.json()["detail"]
    assert "/jobs/" not in response.json()["detail"]  # no server paths in messages
    leftovers = [
        p for p in server.app.state.services.jobs.root.iterdir() if not (p / "result.mp4").exists()
    ]
    assert leftovers == [], "a refused upload left files behind"


def test_chunked_upload_over_the_limit_is_cut_off(server: RunningServer) -> None:
    boundary = "facestreamtest"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="effect"\r\n\r\n{SKETCH}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()

    def body() -> Iterator[bytes]:  # no Content-Length: the server must count as it reads
        yield head
        for _ in range(64):
            yield bytes(64 * 1024)

    response = httpx.post(
        server.url + "/jobs",
        content=body(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        timeout=60,
    )
    assert response.status_code == 413, response.text


@pytest.mark.parametrize("path", ["/jobs/nope", "/jobs/nope/result", "/jobs/nope/events"])
def test_unknown_jobs_are_404(server: RunningServer, path: str) -> None:
    response = httpx.get(server.url + path)
    assert response.status_code == 404 and "nope" in response.json()["detail"]


def test_finished_jobs_are_removed_after_the_retention_time(tmp_path: Path, clip: Path) -> None:
    with running_server(Settings(data_dir=tmp_path, job_retention_s=1.0)) as quick:
        job_id = upload(quick.url, clip.read_bytes()).json()["job_id"]
        _, progress = events(quick.url, job_id)
        assert progress[-1]["state"] == "done"
        folder = tmp_path / "jobs" / job_id
        assert (folder / "result.mp4").is_file() and not (folder / "input").exists()
        deadline = time.monotonic() + 15
        while httpx.get(f"{quick.url}/jobs/{job_id}").status_code != 404:
            assert time.monotonic() < deadline, "the finished job was not removed"
            time.sleep(0.2)
        assert not folder.exists()


@pytest.mark.browser
def test_convert_page_uploads_follows_progress_and_offers_the_result(
    server: RunningServer, clip: Path
) -> None:
    from playwright.sync_api import sync_playwright

    require_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=list(BASE_FLAGS))
        try:
            page = browser.new_page()
            page.goto(f"{server.url}/convert?effect=sketch")
            page.wait_for_selector("#effect option[value=sketch]", state="attached")
            assert page.input_value("#effect") == "sketch"
            page.set_input_files("#file", str(clip))
            page.click("#start")
            page.wait_for_selector("#download:not([hidden])", timeout=90_000)
            assert page.text_content("#frames") == "20 / 20"
            href = page.get_attribute("#download", "href")
            size = page.evaluate(
                "async (url) => (await (await fetch(url)).arrayBuffer()).byteLength", href
            )
        finally:
            browser.close()
    assert href is not None and href.endswith("/result")
    assert size > 10_000
