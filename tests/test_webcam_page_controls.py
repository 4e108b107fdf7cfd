"""The webcam page's controls in real headless Chromium: the effect menu always shows the
effect the server applies, parameters and the uploaded face are remembered, Start/Stop and
tab close end sessions cleanly, readable errors, and a phone-sized layout.

One server and one browser serve the whole module; each test opens its own browser context.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from browser_helpers import OPTIONS_LOADED, PageFactory, chromium, page_opener
from conftest import load_rgb, portrait_path
from PIL import Image
from playwright.sync_api import Browser, Page
from server_helpers import RunningServer, running_server
from synthetic import linear_path, make_clip, write_y4m
from webrtc_helpers import saturation

from stream.settings import Settings

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    data = tmp_path_factory.mktemp("webcam-data")
    with running_server(Settings(data_dir=data, max_sessions_per_client=20)) as running:
        yield running


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    portrait = load_rgb(portrait_path("angelina_jolie"), 640)
    clip = make_clip(portrait, linear_path(60, (250, 240), (390, 240)), portrait_height=320)
    camera = tmp_path_factory.mktemp("webcam-camera") / "camera.y4m"
    write_y4m(str(camera), clip.frames, fps=30)
    with chromium(camera) as running:
        yield running


@pytest.fixture
def open_page(browser: Browser, server: RunningServer) -> Iterator[PageFactory]:
    """open_page(query="", width=1000, height=800): a fresh context's / page with the menu loaded."""
    with page_opener(browser, server.url, "/") as opener:
        yield lambda query="", width=1000, height=800: opener(query, width, height)


def start_stream(page: Page) -> str:
    """Press Start and wait for processed video; the session id."""
    page.click("#start")
    return wait_for_stream(page)


def wait_for_stream(page: Page) -> str:
    """Wait for processed video; the session id."""
    page.wait_for_function("document.getElementById('remote').currentTime > 0.3", timeout=60_000)
    page.wait_for_function("document.getElementById('session').textContent.length > 8")
    return page.locator("#session").inner_text()


def session_effect(server: RunningServer, session_id: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/sessions/{session_id}", timeout=10)
    response.raise_for_status()
    effect: dict[str, Any] = response.json()["effect"]
    return effect


def wait_for_effect(
    server: RunningServer, session_id: str, name: str, timeout: float = 10.0
) -> dict[str, Any]:
    """The server-side effect of the session once it is `name` (or fail after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        effect = session_effect(server, session_id)
        if effect["name"] == name or time.monotonic() > deadline:
            assert effect["name"] == name, f"the server applies {effect}, not {name}"
            return effect
        time.sleep(0.1)


def remote_pixels(page: Page) -> np.ndarray:
    png = page.locator("#remote").screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def upload_face(page: Page, name: str = "paul_rudd") -> None:
    page.set_input_files("#face-file", str(portrait_path(name)))
    page.check("#face-consent")
    page.click("#face-send")
    page.wait_for_function(
        "document.getElementById('face-status').textContent === 'face ready'", timeout=60_000
    )


def menu(page: Page) -> str:
    return page.locator("#effect").input_value()


def test_effect_chosen_while_connecting_is_applied(
    open_page: PageFactory, server: RunningServer
) -> None:
    """A change made while the offer is on its way reaches the server once the channel opens."""
    page = open_page()
    assert menu(page) == "none"
    with page.expect_request("**/offer"):
        page.click("#start")
    page.select_option("#effect", "sketch")
    session_id = wait_for_stream(page)
    wait_for_effect(server, session_id, "sketch")
    assert menu(page) == "sketch"
    page.wait_for_timeout(800)  # frames processed with the new effect
    assert saturation(remote_pixels(page)) < 5, "the processed video is not a pencil sketch"
    page.click("#stop")
    page.wait_for_function("document.getElementById('status').textContent === 'idle'")


def test_swap_waits_for_a_face_keeps_it_and_reverts_when_refused(
    open_page: PageFactory, server: RunningServer
) -> None:
    """Start with swap and no face: the session runs (unfiltered) and swap starts once a face is
    uploaded; the face survives switching away and back; a refused change puts the menu back."""
    page = open_page("?effect=swap")
    assert menu(page) == "swap"
    session_id = start_stream(page)
    assert session_effect(server, session_id)["name"] == "none"
    assert page.locator("#effect-pending").is_visible()
    assert "upload a face photo below" in page.locator("#effect-pending").inner_text()
    assert not page.locator("#error").is_visible()
    assert page.locator("#face-upload").is_visible()

    upload_face(page)
    swapped = wait_for_effect(server, session_id, "swap")
    face_id = swapped["params"]["source_face"]
    assert face_id and not page.locator("#effect-pending").is_visible()

    page.select_option("#effect", "makeup")
    wait_for_effect(server, session_id, "makeup")
    page.select_option("#effect", "swap")
    assert wait_for_effect(server, session_id, "swap")["params"]["source_face"] == face_id
    assert page.locator("[data-face-param]").input_value() == face_id

    # The stored face goes away: the server refuses swap, and the menu returns to makeup.
    page.select_option("#effect", "makeup")
    wait_for_effect(server, session_id, "makeup")
    httpx.delete(f"{server.url}/faces/{face_id}", timeout=10).raise_for_status()
    page.select_option("#effect", "swap")
    page.wait_for_selector("#error:not([hidden])", timeout=10_000)
    page.wait_for_function("document.getElementById('effect').value === 'makeup'")
    assert "upload the photo again" in page.locator("#error").inner_text()
    assert "POST /faces" not in page.locator("#error").inner_text()
    assert page.locator("#face-status").inner_text() != "face ready"
    assert page.locator("#params input[name=lips_intensity]").count() == 1
    assert session_effect(server, session_id)["name"] == "makeup"
    page.click("#stop")


def test_deleting_the_face_mid_swap_stops_it_and_says_why(
    open_page: PageFactory, server: RunningServer
) -> None:
    """The uploader withdraws consent (DELETE /faces/{id}) while the page swaps: the
    server switches the session to none and the page shows that, says why, forgets the
    face, and the video goes on."""
    page = open_page("?effect=swap")
    session_id = start_stream(page)
    upload_face(page)
    face_id = wait_for_effect(server, session_id, "swap")["params"]["source_face"]
    httpx.delete(f"{server.url}/faces/{face_id}", timeout=10).raise_for_status()
    assert session_effect(server, session_id)["name"] == "none"
    page.wait_for_function("document.getElementById('effect').value === 'none'", timeout=10_000)
    error = page.locator("#error").inner_text()
    assert "source face was deleted" in error and "Upload a face photo again" in error
    assert page.locator("#face-status").inner_text() != "face ready"
    played = page.evaluate("document.getElementById('remote').currentTime")
    page.wait_for_function(
        f"document.getElementById('remote').currentTime > {played} + 0.5", timeout=30_000
    )
    page.click("#stop")


PARAM_CHANGES = [
    # effect, parameter, new value, the effect visited in between
    ("sketch", "blur", 20.0, "cartoon"),
    ("stylize", "saturation", 0.5, "none"),
    ("cartoon", "levels", 4, "sketch"),
]


def test_parameters_survive_switching_effects(
    open_page: PageFactory, server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    page = open_page()
    session_id = start_stream(page)
    for effect, param, value, other in PARAM_CHANGES:
        page.select_option("#effect", effect)
        wait_for_effect(server, session_id, effect)
        caplog.clear()
        with caplog.at_level("DEBUG", logger="stream.sessions"):
            page.locator(f"#params input[name={param}]").fill(str(value))
            page.wait_for_timeout(400)
        changes = [r for r in caplog.records if "now uses effect" in r.getMessage()]
        assert changes and all(r.levelname == "DEBUG" for r in changes), "param-only: DEBUG"
        page.select_option("#effect", other)
        wait_for_effect(server, session_id, other)
        page.select_option("#effect", effect)
        applied = wait_for_effect(server, session_id, effect)
        assert applied["params"][param] == value, (effect, param, applied)
        shown = page.locator(f"#params input[name={param}]").input_value()
        assert float(shown) == value, (effect, param, shown)
    page.click("#stop")


def test_stop_restart_and_a_session_ended_by_the_server(
    open_page: PageFactory, server: RunningServer
) -> None:
    """Stop's DELETE finds its session; readouts reset; when the server ends the session the
    page stops and Start works again; the fps readout is never negative after a restart."""
    page = open_page()
    deletes: list[int] = []
    page.on(
        "response",
        lambda r: deletes.append(r.status) if r.request.method == "DELETE" else None,
    )
    first = start_stream(page)
    page.wait_for_function("document.getElementById('rtt').textContent !== '–'", timeout=10_000)
    page.click("#stop")
    page.wait_for_function("document.getElementById('status').textContent === 'idle'")
    page.wait_for_timeout(300)
    assert deletes == [204]
    assert page.locator("#session").inner_text() == "–"
    assert page.locator("#rtt").inner_text() == "–"
    # The session ended moments ago: a second DELETE is harmless; an unknown id is still 404.
    assert httpx.delete(f"{server.url}/sessions/{first}", timeout=10).status_code == 204
    unknown = httpx.delete(f"{server.url}/sessions/{uuid.uuid4().hex}", timeout=10)
    assert unknown.status_code == 404

    second = start_stream(page)
    readings = []
    for _ in range(8):
        readings.append(int(page.locator("#fps").inner_text()))
        page.wait_for_timeout(250)
    assert min(readings) >= 0 and max(readings) > 0, readings

    httpx.delete(f"{server.url}/sessions/{second}", timeout=10).raise_for_status()
    page.wait_for_function(
        "document.getElementById('status').textContent === 'idle'", timeout=15_000
    )
    assert page.locator("#start").is_enabled()
    assert "Start" in page.locator("#error").inner_text()
    assert page.locator("#session").inner_text() == "–"
    start_stream(page)
    assert not page.locator("#error").is_visible()
    page.click("#stop")


def sessions_now(server: RunningServer) -> int:
    count: int = httpx.get(f"{server.url}/healthz", timeout=10).json()["sessions"]
    return count


def test_phone_layout_and_closing_the_tab_frees_the_session(
    open_page: PageFactory, server: RunningServer
) -> None:
    """At 390 px the page does not scroll sideways (a long session id wraps; the consent
    checkbox sits beside its text); closing the tab ends its session at once."""
    page = open_page(width=390, height=844)
    before = sessions_now(server)
    start_stream(page)
    page.select_option("#effect", "swap")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width} px wide at a 390 px viewport"
    box = page.locator("#face-consent").bounding_box()
    text = page.locator("#face-consent + span").bounding_box()
    assert box and text
    assert box["x"] + box["width"] <= text["x"] and abs(box["y"] - text["y"]) < 12, (box, text)
    assert sessions_now(server) == before + 1

    page.close()  # no beforeunload: only pagehide runs (the old page then held it ~30 s)
    deadline = time.monotonic() + 5
    while sessions_now(server) > before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sessions_now(server) == before, "the closed tab still holds its session"


NOTICE_CASES = [
    # ?effect=, text the notice must contain
    ("bogus", 'The address asks for the effect "bogus"'),
    ("UNAVAILABLE", "is not available here"),
]


@pytest.mark.parametrize(("wanted", "notice"), NOTICE_CASES)
def test_effect_notices(
    open_page: PageFactory, server: RunningServer, wanted: str, notice: str
) -> None:
    effects = httpx.get(f"{server.url}/effects", timeout=10).json()
    unavailable = [e for e in effects if not e["available"]]
    if wanted == "UNAVAILABLE":
        if not unavailable:
            pytest.skip("every effect is available on this machine")
        wanted = unavailable[0]["name"]
    page = open_page(f"?effect={wanted}")
    notes = page.locator("#effect-notes")
    assert notes.is_visible()
    assert notice in notes.inner_text() and menu(page) == "none"
    for effect in unavailable:
        option = page.locator(f"#effect option[value={effect['name']}]")
        assert effect["reason"] in (option.get_attribute("title") or "")
        assert effect["name"] in notes.locator("summary").inner_text()
    if unavailable:
        notes.locator("summary").click()  # the reasons, one click away
        assert all(effect["reason"] in notes.inner_text() for effect in unavailable)


def test_sliders_sit_on_their_defaults_with_readable_labels(
    open_page: PageFactory, server: RunningServer
) -> None:
    effects = httpx.get(f"{server.url}/effects", timeout=10).json()
    page = open_page()
    checked = 0
    for effect in (e for e in effects if e["available"]):
        page.select_option("#effect", effect["name"])
        for name, spec in effect["params"].items():
            row = page.locator(f"#params label.param:has([name={name}])")
            assert row.locator("span").first.inner_text() == name.replace("_", " ")
            if spec.get("help") and spec["type"] != "face":
                assert spec["help"] in row.inner_text()
            if spec["type"] in ("float", "int"):
                shown = float(row.locator("input").input_value())
                assert shown == spec["default"], (effect["name"], name, shown)
                checked += 1
    assert checked >= 10


def test_errors_read_as_plain_text_and_no_favicon_404(
    open_page: PageFactory, server: RunningServer, tmp_path: Path
) -> None:
    failed: list[str] = []
    page = open_page("?effect=swap")
    page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
    page.reload()
    page.wait_for_function(OPTIONS_LOADED)
    text_file = tmp_path / "face.jpg"
    text_file.write_bytes(b"just some words, not a photo\n" * 20)
    page.set_input_files("#face-file", str(text_file))
    page.check("#face-consent")
    page.click("#face-send")
    page.wait_for_function(
        "document.getElementById('face-status').textContent.startsWith('rejected')"
    )
    status = page.locator("#face-status").inner_text()
    assert status.startswith("rejected: the uploaded file"), status
    assert "not an image file" in status and '"' not in status
    assert failed == [f"{server.url}/faces"]
    validation = [{"loc": ["body", "effect", "name"], "msg": "Field required", "type": "missing"}]
    joined = page.evaluate("(d) => facestreamEffects.detailText(d)", validation)
    assert joined == "effect.name: Field required"

    huge = io.BytesIO()
    Image.new("1", (7000, 6000)).save(huge, format="PNG")
    response = httpx.post(
        f"{server.url}/faces",
        files={"file": ("big.png", huge.getvalue(), "image/png")},
        data={"consent": "true"},
        timeout=30,
    )
    assert response.status_code == 422 and "make it smaller" in response.json()["detail"]
    favicon = httpx.get(f"{server.url}/favicon.ico", timeout=10)
    assert favicon.status_code == 200 and favicon.headers["content-type"].startswith("image/svg")
