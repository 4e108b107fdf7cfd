"""The webcam filter page in real headless Chromium with a fake camera."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from browser_helpers import chromium
from conftest import load_rgb, portrait_path
from PIL import Image
from server_helpers import running_server
from synthetic import linear_path, make_clip, write_y4m
from webrtc_helpers import saturation

from stream.settings import Settings

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]


def element_pixels(page: object, selector: str) -> np.ndarray:
    png = page.locator(selector).screenshot()  # type: ignore[attr-defined]
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_page_plays_processed_video(tmp_path: Path) -> None:
    portrait = load_rgb(portrait_path("angelina_jolie"), 640)
    clip = make_clip(portrait, linear_path(60, (250, 240), (390, 240)), portrait_height=320)
    camera = tmp_path / "camera.y4m"
    write_y4m(str(camera), clip.frames, fps=30)

    with running_server(Settings(data_dir=tmp_path)) as server, chromium(camera) as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(server.url + "/?effect=sketch")
        page.wait_for_function("document.querySelectorAll('#effect option').length > 3")
        assert page.locator("#effect").input_value() == "sketch"
        page.click("#start")
        page.wait_for_function(
            "document.getElementById('remote').currentTime > 0.5", timeout=60_000
        )
        first = page.evaluate("document.getElementById('remote').currentTime")
        # It plays on (about 1 s on an idle host; the ceiling is for a loaded one).
        page.wait_for_function(
            f"document.getElementById('remote').currentTime > {first} + 0.5", timeout=15_000
        )
        # The readouts: frames decoded in the last second, the control channel's round trip.
        page.wait_for_function(
            "Number(document.getElementById('fps').textContent) > 0", timeout=15_000
        )
        page.wait_for_function("document.getElementById('rtt').textContent !== '–'", timeout=30_000)
        assert page.locator("#session").inner_text() != "–"

        # The processed video is a grey pencil drawing; the camera preview is in colour.
        camera_view = element_pixels(page, "#local")
        processed = element_pixels(page, "#remote")
        assert saturation(camera_view) > 15
        assert saturation(processed) < 5

        # A live switch over the data channel brings colour back.
        page.select_option("#effect", "cartoon")
        deadline = time.monotonic() + 30  # about 1 s on an idle host
        while (colour := saturation(element_pixels(page, "#remote"))) <= 15:
            assert time.monotonic() < deadline, f"still grey after the switch: {colour:.1f}"
            page.wait_for_timeout(250)
        assert not page.locator("#error").is_visible()
        page.click("#stop")
        page.wait_for_function("document.getElementById('status').textContent === 'idle'")
        deadline = time.monotonic() + 10  # 'idle' comes after the DELETE's answer
        while len(server.app.state.services.sessions):
            assert time.monotonic() < deadline, "the session outlived the page's stop"
            page.wait_for_timeout(100)


def test_page_reports_refused_camera(tmp_path: Path) -> None:
    """Without a camera permission the page says so instead of failing silently."""
    with running_server(Settings(data_dir=tmp_path)) as server, chromium(None) as browser:
        context = browser.new_context(permissions=[])
        page = context.new_page()
        page.goto(server.url + "/")
        page.wait_for_function("document.querySelectorAll('#effect option').length > 3")
        page.click("#start")
        page.wait_for_selector("#error:not([hidden])", timeout=20_000)
        message = page.locator("#error").inner_text()
        assert "camera" in message.lower()


def test_page_with_a_token_streams_and_keeps_the_token_out_of_urls(tmp_path: Path) -> None:
    """On a server that requires tokens, `/?token=` works once: the offer and the effect
    list carry it as a Bearer header only, and it leaves the address bar."""
    token = "webcam-page-test-token-0123456789"
    portrait = load_rgb(portrait_path("angelina_jolie"), 640)
    clip = make_clip(portrait, linear_path(30, (250, 240), (390, 240)), portrait_height=320)
    camera = tmp_path / "camera.y4m"
    write_y4m(str(camera), clip.frames, fps=30)
    settings = Settings(data_dir=tmp_path, require_auth=True, api_tokens=[token], warm_up=False)
    with running_server(settings) as server, chromium(camera) as browser:
        page = browser.new_page()
        sent: list[tuple[str, str | None, str | None]] = []
        page.on(
            "request",
            lambda r: sent.append(
                (r.url, r.headers.get("authorization"), r.headers.get("referer"))
            ),
        )
        page.goto(f"{server.url}/?effect=sketch&token={token}")
        page.wait_for_function("document.querySelectorAll('#effect option').length > 3")
        assert "token" not in page.url and "effect=sketch" in page.url
        page.click("#start")
        page.wait_for_function(
            "document.getElementById('remote').currentTime > 0.3", timeout=60_000
        )
        offers = [s for s in sent if s[0].endswith("/offer")]
        assert offers and all(auth == f"Bearer {token}" for _, auth, _ in offers)
        after_load = sent[1:]  # the first is the page itself, opened with ?token=
        assert not any(token in url or token in (ref or "") for url, _, ref in after_load)
        page.click("#stop")
