"""The /convert page on a server that requires Bearer tokens (as it does off loopback).

The page takes the token from `?token=` once and sends it only as an
`Authorization: Bearer` header: the upload, the progress stream (read with fetch,
since EventSource cannot send headers) and the result (fetched into a Blob URL,
since a plain link cannot either). No API request carries the token in its URL
or Referer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from browser_helpers import chromium, save_download
from convert_helpers import cut_clip, summarise
from playwright.sync_api import Page, Request
from server_helpers import RunningServer, running_server

from stream.settings import Settings

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

TOKEN = "convert-page-test-token-0123456789"
FRAMES = 12


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 frames of video.mp4 at 160x90 with its AAC audio."""
    return cut_clip(tmp_path_factory.mktemp("page") / "clip.mp4", frames=FRAMES, size=(160, 90))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("data"),
        require_auth=True,
        api_tokens=[TOKEN],
        warm_up=False,  # sketch needs no face model
    )
    with running_server(settings) as running:
        refused = httpx.post(running.url + "/jobs", files={"file": ("a.mp4", b"x")}, timeout=10)
        assert refused.status_code == 401, refused.text  # the server really requires a token
        yield running


def _api_requests(page: Page) -> list[Request]:
    seen: list[Request] = []
    page.on("request", lambda request: seen.append(request) if "/jobs" in request.url else None)
    return seen


def _start(page: Page, server: RunningServer, clip: Path, query: str) -> None:
    page.goto(f"{server.url}/convert?effect=sketch{query}")
    page.wait_for_selector("#effect option[value=sketch]", state="attached")
    assert page.input_value("#effect") == "sketch"
    page.set_input_files("#file", str(clip))
    page.click("#start")


def test_page_with_a_token_converts_and_downloads_the_result(
    server: RunningServer, clip: Path, tmp_path: Path
) -> None:
    with chromium() as browser:
        page = browser.new_page(accept_downloads=True)
        requests = _api_requests(page)
        _start(page, server, clip, f"&token={TOKEN}")
        assert "token" not in page.url and "effect=sketch" in page.url  # out of the address bar
        page.wait_for_selector("#download:not([hidden])", timeout=120_000)
        assert page.text_content("#frames") == f"{FRAMES} / {FRAMES}"
        assert page.get_attribute("#progress", "value") == "1"
        assert page.text_content("#status") == "done"
        assert page.is_hidden("#error")
        href = page.get_attribute("#download", "href") or ""
        assert href.startswith("blob:"), href  # fetched with the header, not a plain link
        saved = save_download(page, "#download", "clip-sketch.mp4", tmp_path / "result.mp4")
    kinds = {
        (request.method, request.url.rsplit("/", 1)[-1] if "/jobs/" in request.url else "jobs")
        for request in requests
    }
    assert {("POST", "jobs"), ("GET", "events"), ("GET", "result")} <= kinds, kinds
    for request in requests:
        assert request.headers.get("authorization") == f"Bearer {TOKEN}", request.url
        assert TOKEN not in request.url, request.url
        assert TOKEN not in request.headers.get("referer", ""), request.url
    result, source = summarise(saved), summarise(clip)
    assert len(result.pts) == len(source.pts) == FRAMES
    assert [a.data for a in result.audio] == [a.data for a in source.audio]
    assert "sketch" in result.metadata["comment"]


def test_page_without_a_token_says_how_to_give_one(server: RunningServer, clip: Path) -> None:
    with chromium() as browser:
        page = browser.new_page()
        _start(page, server, clip, "")
        page.wait_for_selector("#error:not([hidden])", timeout=30_000)
        message = page.text_content("#error") or ""
        assert "?token=" in message and "Authorization: Bearer" in message, message
        assert page.text_content("#status") == "failed"
        assert page.is_hidden("#download")
