"""The /overlay page in real headless Chromium against a real server and real aiortc
publishers: it notices a stopped stream within seconds, plays the next publisher, says on
the page why it stays empty, and keys the green background out without a green rim."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import cv2
import httpx
import numpy as np
import pytest
from browser_helpers import BASE_FLAGS, CHROMIUM, require_chromium
from conftest import load_rgb, portrait_path
from playwright.async_api import Page, async_playwright
from server_helpers import RunningServer, running_server
from synthetic import linear_path, make_clip
from webrtc_helpers import ClipTrack, saturation
from whip_helpers import bearer, whip_publish

from stream.settings import Settings

pytestmark = [pytest.mark.timeout(240), pytest.mark.browser]

TOKEN = "overlay-token-0123456789"
SIZE = (320, 240)
STALL_S = 6.0  # docs/OBS.md: a new connection when no frame has arrived for 6 s


def clip(count: int = 30) -> ClipTrack:
    portrait = load_rgb(portrait_path("kate_siegel"), 480)
    width, height = SIZE
    path = linear_path(count, (width * 0.45, height * 0.5), (width * 0.55, height * 0.5))
    frames = make_clip(portrait, path, size=SIZE, portrait_height=int(height * 0.8)).frames
    return ClipTrack(frames, fps=15, loop=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("overlay"), whip_token=TOKEN)
    with running_server(settings) as running:
        yield running


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    require_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=list(BASE_FLAGS))
        try:
            yield await browser.new_page(viewport={"width": SIZE[0], "height": SIZE[1]})
        finally:
            await browser.close()


def decode(png: bytes, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(png, np.uint8), flags)
    if image is None:
        raise AssertionError("the screenshot is not a PNG")
    return image


async def test_overlay_reconnects_soon_after_the_publisher_stops(
    server: RunningServer, page: Page
) -> None:
    """After the publisher ends, the page starts a new connection within ~6-8 s (before:
    ~16 s, video.currentTime kept running on the frozen frame) and then plays the next
    publisher on the same stream name."""
    first = await whip_publish(server.url, clip(), "?effect=sketch&stream=b2", TOKEN)
    second = None
    try:
        await page.goto(f"{server.url}/overlay?session=b2&token={TOKEN}&debug=1")
        await page.wait_for_function("overlayState.frames > 10", timeout=60_000)
        grey = decode(await page.screenshot(type="png"))[60:180, 80:240]
        assert saturation(grey[:, :, ::-1]) < 8, "the overlay does not play the sketch stream"
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            assert (await client.delete(first.location, headers=bearer(TOKEN))).status_code == 200
        stopped = time.monotonic()
        await page.wait_for_function("!overlayState.connected", timeout=25_000)
        noticed = time.monotonic() - stopped
        state = await page.evaluate("({...overlayState})")
        status = await page.inner_text("#status")
        assert noticed < STALL_S + 2.5, f"the overlay noticed the stop after {noticed:.1f} s"
        assert not state["playing"] and "waiting" in status, (state, status)
        second = await whip_publish(server.url, clip(), "?effect=none&stream=b2", TOKEN)
        frames = int(state["frames"])
        await page.wait_for_function(
            f"overlayState.connected && overlayState.frames > {frames + 10}", timeout=60_000
        )
        colour = decode(await page.screenshot(type="png"))[60:180, 80:240]
        assert saturation(colour[:, :, ::-1]) > 10, "the overlay does not show the new stream"
    finally:
        await first.pc.close()
        if second is not None:
            await second.pc.close()


NOTICES = [
    # (query, seconds to wait, expected fragment of the notice or None for no notice)
    ("session=nobody&token=" + TOKEN + "&notice=2", 10.0, "nobody"),
    ("session=nobody&token=wrong-token-0123456", 6.0, "token"),
    ("session=nobody&token=wrong-token-0123456&notice=0", 4.0, None),
    ("session=nobody&token=" + TOKEN, 4.0, None),  # the default: quiet for 30 s
]


@pytest.mark.parametrize(("query", "wait_s", "fragment"), NOTICES)
async def test_overlay_says_why_it_stays_empty(
    server: RunningServer, page: Page, query: str, wait_s: float, fragment: str | None
) -> None:
    """Without debug=1 an OBS user sees only the page: a wrong token at once, and a missing
    stream after `notice` seconds, are said in small text (before: a silent black page)."""
    await page.goto(f"{server.url}/overlay?{query}")
    notice = page.locator("#notice")
    if fragment is None:
        await asyncio.sleep(wait_s)
        assert not await notice.is_visible()
        return
    await notice.wait_for(state="visible", timeout=wait_s * 1000)
    assert fragment in await notice.inner_text()


def strongly_green_share(rgba: np.ndarray) -> tuple[float, int]:
    """Of the opaque pixels (alpha > 200) of an RGBA screenshot, the share with G > max(R, B) + 40."""
    opaque = rgba[:, :, 3] > 200
    bgr = rgba[:, :, :3].astype(np.int16)
    green = bgr[:, :, 1] - np.maximum(bgr[:, :, 0], bgr[:, :, 2]) > 40
    return float((green & opaque).sum() / max(int(opaque.sum()), 1)), int(opaque.sum())


async def test_keyed_overlay_has_no_green_rim(server: RunningServer, page: Page) -> None:
    """A background=green publish seen through background=transparent: the heads are opaque
    and almost none of their pixels are strongly green (before: 40-70%, a green halo)."""
    publisher = await whip_publish(
        server.url, clip(), "?effect=none&stream=keyed&background=green", TOKEN
    )
    try:
        url = f"{server.url}/overlay?session=keyed&token={TOKEN}&background=transparent"
        await page.goto(url)
        await page.wait_for_function("overlayState.frames > 30", timeout=60_000)
        await asyncio.sleep(1.0)  # the first frames go out before the first face is found
        shot = await page.screenshot(type="png", omit_background=True)
    finally:
        await publisher.pc.close()
    rgba = decode(shot, cv2.IMREAD_UNCHANGED)
    share, opaque = strongly_green_share(rgba)
    assert opaque > 2000, f"only {opaque} opaque pixels: the head is missing"
    assert (rgba[:, :, 3] < 40).mean() > 0.5, "the background is not transparent"
    assert share < 0.03, f"{share:.1%} of the head's pixels are strongly green"
