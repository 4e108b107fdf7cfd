"""The /convert page in real headless Chromium, as a user meets it: a conversion and its
download, a failed upload that leaves nothing of the earlier run on screen, the swap face
shown as a photo (never its internal id) and Convert refused without one, a phone-sized
face upload block, a job that survives a reload and can be cancelled, Convert held back while
a reload looks for the last job, a flaky progress stream followed to the end (a lost one said
in words), and a Cancel between the last byte sent and the 202 that still removes the job.

One server and one browser serve the whole module; each test opens its own browser context.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from browser_helpers import OPTIONS_LOADED, PageFactory, chromium, page_opener, save_download
from conftest import portrait_path
from convert_helpers import cut_clip, summarise
from playwright.sync_api import Browser, Page, Route
from server_helpers import RunningServer, running_server

from stream.settings import Settings

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

FRAMES = 12
MAX_VIDEO_BYTES = 4_000_000  # a 413 for the "too large" case; the clips are smaller
SETTLED = (
    "['done', 'failed', 'cancelled', 'not started']"
    ".includes(document.getElementById('status').textContent)"
)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 frames of video.mp4 at 320x180 with its AAC audio."""
    return cut_clip(tmp_path_factory.mktemp("page") / "clip.mp4", frames=FRAMES, size=(320, 180))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), max_video_bytes=MAX_VIDEO_BYTES)
    with running_server(settings) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


@pytest.fixture
def open_page(browser: Browser, server: RunningServer) -> Iterator[PageFactory]:
    """open_page(query="", width=1000, height=900): a fresh context's /convert page with the menu loaded."""
    with page_opener(browser, server.url, "/convert") as opener:
        yield lambda query="", width=1000, height=900: opener(query, width, height)


def convert(page: Page, video: Path, timeout: float = 120_000) -> str:
    """Choose `video`, press Convert, wait until the page settles; the status it shows."""
    page.set_input_files("#file", str(video))
    page.click("#start")
    page.wait_for_function(SETTLED, timeout=timeout)
    return page.locator("#status").inner_text()


def readouts(page: Page) -> dict[str, object]:
    return {
        "progress": page.evaluate("document.getElementById('progress').value"),
        "frames": page.locator("#frames").inner_text(),
        "fps": page.locator("#fps").inner_text(),
        "eta": page.locator("#eta").inner_text(),
        "download": page.locator("#download").is_visible(),
        "href": page.get_attribute("#download", "href"),
    }


NOTHING_YET = {
    "progress": 0,
    "frames": "0 / 0",
    "fps": "0",
    "eta": "–",
    "download": False,
    "href": None,
}


def test_a_conversion_offers_a_download_that_is_the_result(
    open_page: PageFactory, clip: Path, tmp_path: Path
) -> None:
    page = open_page("?effect=sketch")
    assert convert(page, clip) == "done"
    shown = readouts(page)
    assert (shown["progress"], shown["frames"], shown["download"]) == (
        1,
        f"{FRAMES} / {FRAMES}",
        True,
    )
    assert shown["eta"] == "–"  # nothing is left: no "0 s"
    assert page.locator("#job").inner_text() == "clip.mp4 with sketch"
    saved = save_download(page, "#download", "clip-sketch.mp4", tmp_path / "result.mp4")
    result = summarise(saved)
    assert len(result.pts) == FRAMES and (result.width, result.height) == (320, 180)
    assert "sketch" in result.metadata["comment"]


def _text_file(folder: Path) -> Path:
    path = folder / "notes.mp4"
    path.write_bytes(b"just some words, not a video\n" * 40)
    return path


def _truncated(folder: Path, clip: Path) -> Path:
    path = folder / "cut-short.mp4"
    path.write_bytes(clip.read_bytes()[:3000])
    return path


def _too_large(folder: Path, clip: Path) -> Path:
    path = folder / "huge.mp4"
    path.write_bytes(clip.read_bytes() * (2 * MAX_VIDEO_BYTES // clip.stat().st_size + 1))
    return path


FAILED_UPLOADS = [
    # id, the file, words of the message the page shows
    ("not-a-video", lambda folder, clip: _text_file(folder), "not a video file"),
    ("unreadable", _truncated, "is truncated"),
    ("too-large", _too_large, "too large for this server"),
]


@pytest.mark.parametrize(
    ("make", "message"), [case[1:] for case in FAILED_UPLOADS], ids=[c[0] for c in FAILED_UPLOADS]
)
def test_a_failed_upload_leaves_nothing_of_the_earlier_run(
    open_page: PageFactory,
    clip: Path,
    tmp_path: Path,
    make: Callable[[Path, Path], Path],
    message: str,
) -> None:
    page = open_page("?effect=sketch")
    assert convert(page, clip) == "done" and readouts(page)["download"]
    assert convert(page, make(tmp_path, clip)) == "failed"
    assert readouts(page) == NOTHING_YET
    assert not page.locator("#job").is_visible()
    assert message in page.locator("#error").inner_text()
    assert page.locator("#start").is_enabled() and not page.locator("#cancel").is_visible()


def test_swap_shows_the_photo_not_its_id_and_waits_for_a_face(
    open_page: PageFactory, server: RunningServer, clip: Path
) -> None:
    page = open_page("?effect=swap")
    posted: list[str] = []
    page.on("request", lambda r: posted.append(r.url) if r.method == "POST" else None)
    # The face parameter is no text field: the user sees the upload block and a status.
    assert page.locator("#params input:visible:not([type=range])").count() == 0
    assert page.locator("#face-upload").is_visible()
    choice = page.locator("[data-face-choice]")
    assert choice.inner_text() == "no face yet: upload a photo below"

    assert convert(page, clip) == "not started"
    error = page.locator("#error").inner_text()
    assert "swap needs a face" in error and "Upload face" in error, error
    assert "POST /faces" not in error and "face_id" not in error
    assert posted == [], "the page sent a job the server would refuse"

    page.set_input_files("#face-file", str(portrait_path("paul_rudd")))
    page.check("#face-consent")
    page.click("#face-send")
    page.wait_for_function(
        "document.getElementById('face-status').textContent === 'face ready'", timeout=60_000
    )
    face_id = page.locator("[data-face-param]").input_value()
    assert face_id and face_id not in page.locator("body").inner_text()
    assert choice.inner_text() == "paul_rudd.jpg (ready)"
    assert not page.locator("#error").is_visible(), "the answered refusal is still shown"

    assert convert(page, clip) == "done"
    href = page.get_attribute("#download", "href") or ""
    job = httpx.get(server.url + href.removesuffix("/result"), timeout=10).json()
    assert job["effect"] == {"name": "swap", "params": {"source_face": face_id}}


def test_face_upload_block_at_phone_width(open_page: PageFactory) -> None:
    """At 390 px: nothing scrolls sideways; photo, consent and button stack in that order,
    the checkbox beside (not above or below) the first line of its text."""
    page = open_page("?effect=swap", width=390)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    photo = page.locator("#face-file").bounding_box()
    box = page.locator("#face-consent").bounding_box()
    text = page.locator("#face-consent + span").bounding_box()
    button = page.locator("#face-send").bounding_box()
    block = page.locator("#face-upload").bounding_box()
    assert photo and box and text and button and block
    assert box["x"] + box["width"] <= text["x"] and abs(box["y"] - text["y"]) < 12, (box, text)
    assert photo["y"] + photo["height"] <= min(box["y"], text["y"]), (photo, box, text)
    assert text["y"] + text["height"] <= button["y"], (text, button)
    for part in (photo, text, button):
        assert part["x"] + part["width"] <= block["x"] + block["width"], (part, block)


def test_a_job_survives_a_reload_and_cancel_stops_it(
    open_page: PageFactory, server: RunningServer, tmp_path: Path
) -> None:
    """Reloading mid-job picks the job up again; Cancel removes it on the server and
    leaves no readout of it."""
    long_clip = cut_clip(tmp_path / "long.mp4", frames=105, size=(960, 540))  # ~5 s of makeup
    page = open_page("?effect=makeup")
    page.set_input_files("#file", str(long_clip))
    with page.expect_response("**/jobs") as posted:
        page.click("#start")
    job_id = posted.value.json()["job_id"]
    running = "document.getElementById('status').textContent.startsWith('converting')"
    page.wait_for_function(running, timeout=120_000)
    page.reload()
    page.wait_for_function(running, timeout=30_000)
    assert page.locator("#job").inner_text() == "long.mp4 with makeup"
    assert page.locator("#cancel").is_visible() and page.locator("#start").is_disabled()
    page.click("#cancel")
    page.wait_for_function(SETTLED, timeout=30_000)
    assert page.locator("#status").inner_text() == "cancelled"
    assert readouts(page) == NOTHING_YET and not page.locator("#error").is_visible()
    assert httpx.get(f"{server.url}/jobs/{job_id}", timeout=10).status_code == 404
    page.reload()  # a cancelled job is not picked up again
    page.wait_for_function(OPTIONS_LOADED)
    page.wait_for_timeout(300)
    assert page.locator("#status").inner_text() == "choose a file"


def test_convert_waits_while_a_reload_looks_for_the_last_job(
    open_page: PageFactory, server: RunningServer, clip: Path
) -> None:
    """While the reloaded page asks the server about this tab's last job, Convert does
    nothing: one run at a time, so Cancel always reaches the job on screen."""
    with clip.open("rb") as video:
        made = httpx.post(
            f"{server.url}/jobs",
            files={"file": ("earlier.mp4", video, "video/mp4")},
            data={"effect": '{"name": "sketch", "params": {}}'},
            timeout=30,
        )
    job_id = made.json()["job_id"]
    page = open_page("?effect=sketch")
    page.evaluate(f"sessionStorage.setItem('facestream-convert-job', '{job_id}')")
    held: list[Route] = []
    # resume's look-up of the job waits until the test lets it go
    page.route(f"**/jobs/{job_id}", lambda route: held.append(route))
    posted: list[str] = []
    page.on("request", lambda r: posted.append(r.url) if r.method == "POST" else None)
    page.reload()
    page.wait_for_function(OPTIONS_LOADED)
    while not held:
        page.wait_for_timeout(20)
    page.set_input_files("#file", str(clip))
    assert page.locator("#start").is_disabled()
    page.evaluate("document.getElementById('start').click()")  # a click on a disabled button
    held[0].continue_()
    page.wait_for_selector("#download", state="visible", timeout=60_000)  # the resumed job's
    assert posted == [], "a second run started beside the resumed one"
    assert page.locator("#status").inner_text() == "done"
    assert page.locator("#job").inner_text() == "earlier.mp4 with sketch"
    assert page.locator("#start").is_enabled()


RUNNING = {"state": "running", "progress": 0.5, "frames_done": 6, "frames_total": 12, "fps": 9.0}
DROPPED = f"event: progress\ndata: {json.dumps(RUNNING | {'eta_s': 1.0})}\n\n"


def _run_fast_timers(page: Page) -> None:
    """Convert with the page's own timers (the reconnect waits) run at once."""
    page.clock.install()
    page.click("#start")
    while not page.evaluate(SETTLED):
        page.clock.run_for(10_000)
        page.wait_for_timeout(30)


def test_a_flaky_progress_stream_is_followed_to_the_end(open_page: PageFactory, clip: Path) -> None:
    """Nine reconnects, each after a dropped stream that brought news or a 502/503/504
    from a proxy: the budget is for reconnects in a row that bring nothing."""
    answers = ["503", "drop", "drop", "502", "drop", "drop", "drop", "504", "drop"]

    def flaky(route: Route) -> None:
        if not answers:
            route.continue_()
        elif (answer := answers.pop(0)) == "drop":
            route.fulfill(status=200, content_type="text/event-stream", body=DROPPED)
        else:
            route.fulfill(status=int(answer), content_type="text/html", body="<h1>Bad gateway</h1>")

    page = open_page("?effect=sketch")
    page.route("**/jobs/*/events", flaky)
    page.set_input_files("#file", str(clip))
    _run_fast_timers(page)
    assert not page.locator("#error").is_visible(), page.locator("#error").inner_text()
    page.wait_for_selector("#download", state="visible")
    assert page.locator("#status").inner_text() == "done" and answers == []


def test_a_lost_progress_stream_is_said_in_words_and_a_reload_looks_again(
    open_page: PageFactory, clip: Path
) -> None:
    page = open_page("?effect=sketch")
    page.route("**/jobs/*/events", lambda route: route.abort("connectionrefused"))
    page.set_input_files("#file", str(clip))
    _run_fast_timers(page)
    assert page.locator("#status").inner_text() == "failed"
    error = page.locator("#error").inner_text()
    assert "Failed to fetch" not in error and "goes on" in error and "reload" in error, error
    page.unroute("**/jobs/*/events")
    page.reload()
    page.wait_for_selector("#download", state="visible", timeout=60_000)
    assert page.locator("#status").inner_text() == "done"


def test_cancel_after_the_upload_was_sent_removes_the_job(
    open_page: PageFactory, server: RunningServer, clip: Path
) -> None:
    """Cancel between the last byte sent and the 202 (held back 1.5 s by emulated
    latency): the page waits for the job id and deletes the job."""
    jobs = server.app.state.services.jobs
    before = len(jobs)
    page = open_page("?effect=sketch")
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    slow = {"offline": False, "latency": 1500, "downloadThroughput": -1, "uploadThroughput": -1}
    cdp.send("Network.emulateNetworkConditions", slow)
    page.set_input_files("#file", str(clip))
    page.click("#start")
    page.wait_for_function("document.getElementById('status').textContent === 'uploading 100%'")
    page.click("#cancel")
    cdp.send("Network.emulateNetworkConditions", slow | {"latency": 0})
    page.wait_for_function(SETTLED, timeout=30_000)
    assert page.locator("#status").inner_text() == "cancelled"
    assert readouts(page) == NOTHING_YET and not page.locator("#error").is_visible()
    page.wait_for_timeout(500)  # the server has long had the whole upload
    assert len(jobs) == before, "the job the server made of the upload was left running"
