"""WHIP in, WHEP out: real aiortc peers and headless Chromium against a real server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from browser_helpers import BASE_FLAGS, CHROMIUM, require_chromium
from conftest import load_rgb, portrait_path
from server_helpers import RunningServer, running_server
from synthetic import linear_path, make_clip
from webrtc_helpers import ClipTrack, saturation
from whip_helpers import SDP, bearer, offer_sdp, whep_play, whip_publish

from stream.settings import Settings

pytestmark = pytest.mark.timeout(180)

TOKEN = "whip-test-token-0123456789"
SIZE = (320, 240)


def clip_frames(count: int, size: tuple[int, int] = SIZE) -> list[np.ndarray]:
    portrait = load_rgb(portrait_path("kate_siegel"), 480)
    width, height = size
    path = linear_path(count, (width * 0.4, height * 0.5), (width * 0.6, height * 0.5))
    return make_clip(portrait, path, size=size, portrait_height=int(height * 0.8)).frames


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("whip"), whip_token=TOKEN)
    with running_server(settings) as running:
        yield running


async def test_whep_player_receives_the_processed_whip_stream(server: RunningServer) -> None:
    frames = clip_frames(60)
    source = ClipTrack(frames, fps=15, loop=True)
    publisher = await whip_publish(server.url, source, "?effect=sketch&stream=studio", TOKEN)
    assert publisher.location == f"/whip/{publisher.session_id}"
    player = await whep_play(server.url, "studio", TOKEN)  # by stream name
    try:
        await player.collector.wait_for(12, timeout=60)
        received = [image for _, _, image in player.collector.frames[-8:]]
        # The published clip is in colour; what the player gets is the grey pencil sketch of it.
        assert min(saturation(f) for f in frames) > 20
        assert all(saturation(image) < 6 for image in received)
        assert all(image.shape == (SIZE[1], SIZE[0], 3) for image in received)
        # ... of the moving picture (not a frozen or blank frame).
        assert np.std(received[-1].astype(np.float32)) > 10
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            session = await client.get(f"/sessions/{publisher.session_id}", headers=bearer(TOKEN))
            assert session.json()["frames_out"] >= 12
            assert (await client.delete(player.location, headers=bearer(TOKEN))).status_code == 200
            gone = await client.delete(player.location, headers=bearer(TOKEN))
            assert gone.status_code == 404
            ended = await client.delete(publisher.location, headers=bearer(TOKEN))
            assert ended.status_code == 200
            late = await client.post(
                f"/whep/{publisher.session_id}",
                content=await offer_sdp("recvonly"),
                headers={"Content-Type": SDP, **bearer(TOKEN)},
            )
            assert late.status_code == 404, late.text
    finally:
        await player.pc.close()
        await publisher.pc.close()


async def test_several_players_watch_one_stream_at_once(server: RunningServer) -> None:
    """Three WHEP players of one stream share each processed frame: every one keeps getting
    frames, and the server lives (an rgb24 frame shared by several encoder threads crashed
    libswscale or froze a player within seconds)."""
    source = ClipTrack(clip_frames(60), fps=30, loop=True)
    publisher = await whip_publish(server.url, source, "?effect=none&stream=crowd", TOKEN)
    players = [await whep_play(server.url, "crowd", TOKEN) for _ in range(3)]
    try:
        for player in players:
            await player.collector.wait_for(10, timeout=60)
        counts = [len(player.collector.frames) for player in players]
        # 30 more frames each (about 1-2 s at 15-30 fps; a generous ceiling for a loaded
        # host): a frozen player never gets them.
        for player, before in zip(players, counts, strict=True):
            await player.collector.wait_for(before + 30, timeout=60)
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            assert (await client.get("/healthz")).json()["status"] == "ok"
    finally:
        for player in players:
            await player.pc.close()
        await publisher.pc.close()


async def test_an_effect_change_keeps_the_key_background(server: RunningServer) -> None:
    """PATCH /sessions/{id} (with the WHIP token) to a new effect: the frames stay keyed."""
    source = ClipTrack(clip_frames(60), fps=15, loop=True)
    query = "?effect=none&stream=rekeyed&background=ff00ff"
    publisher = await whip_publish(server.url, source, query, TOKEN)
    player = await whep_play(server.url, "rekeyed", TOKEN)

    def corner_is_key(image: np.ndarray) -> bool:
        corner = image[:16, :16].reshape(-1, 3).astype(np.int16).mean(axis=0)
        return bool(np.abs(corner - (255, 0, 255)).max() < 40)

    try:
        await player.collector.wait_for(6, timeout=60)
        assert corner_is_key(player.collector.frames[-1][2])
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            changed = await client.patch(
                f"/sessions/{publisher.session_id}",
                json={"effect": {"name": "sketch", "params": {}}},
                headers=bearer(TOKEN),
            )
            assert changed.status_code == 200, changed.text
            assert changed.json()["effect"]["name"] == "sketch"
        seen = len(player.collector.frames)
        await player.collector.wait_for(seen + 10, timeout=60)
        latest = [image for _, _, image in player.collector.frames[-4:]]
        assert all(corner_is_key(image) for image in latest)  # still keyed, not the sketch
    finally:
        await player.pc.close()
        await publisher.pc.close()


async def test_a_stream_nobody_watches_is_not_processed(server: RunningServer) -> None:
    """Frames are processed while a player watches, and not before or after (a WHIP
    publisher whose players have left costs no face detection)."""
    source = ClipTrack(clip_frames(60), fps=15, loop=True)
    publisher = await whip_publish(server.url, source, "?effect=sketch&stream=unwatched", TOKEN)
    path = f"/sessions/{publisher.session_id}"
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:

            async def frames_out() -> int:
                return int((await client.get(path, headers=bearer(TOKEN))).json()["frames_out"])

            await asyncio.sleep(1.5)
            assert await frames_out() == 0
            player = await whep_play(server.url, "unwatched", TOKEN)
            await player.collector.wait_for(10, timeout=60)
            assert (await client.delete(player.location, headers=bearer(TOKEN))).status_code == 200
            await player.pc.close()
            # Processing winds down: frames_out stops changing (a frame in hand may finish).
            deadline = time.monotonic() + 30
            left, previous = await frames_out(), -1
            while left != previous:
                assert time.monotonic() < deadline, f"still processing: {left} frames out"
                await asyncio.sleep(1.0)
                left, previous = await frames_out(), left
            await asyncio.sleep(2.5)
            assert await frames_out() - left <= 1  # at most the frame in hand
            again = await whep_play(server.url, "unwatched", TOKEN)  # a new player: it resumes
            await again.collector.wait_for(5, timeout=60)
            await again.pc.close()
    finally:
        await publisher.pc.close()


async def test_a_new_publisher_replaces_the_old_one_on_the_same_stream(
    server: RunningServer,
) -> None:
    first = await whip_publish(
        server.url, ClipTrack(clip_frames(10), loop=True), "?stream=re", TOKEN
    )
    second = await whip_publish(
        server.url, ClipTrack(clip_frames(10), loop=True), "?stream=re", TOKEN
    )
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            deadline = time.monotonic() + 10
            while (
                await client.get(f"/sessions/{first.session_id}", headers=bearer(TOKEN))
            ).status_code != 404:
                assert time.monotonic() < deadline, "the replaced publisher's session is still live"
                await asyncio.sleep(0.1)
            still = await client.get(f"/sessions/{second.session_id}", headers=bearer(TOKEN))
            assert still.status_code == 200
            assert (await client.delete(second.location, headers=bearer(TOKEN))).status_code == 200
    finally:
        await first.pc.close()
        await second.pc.close()


REFUSALS = [
    # (method, path, content type, token, body kind, expected status, detail fragment)
    ("POST", "/whip", SDP, None, "sendonly", 401, "Bearer"),
    ("POST", "/whip", SDP, "wrong-token-123456789", "sendonly", 401, "not valid"),
    ("POST", "/whip", "application/json", TOKEN, "sendonly", 415, "application/sdp"),
    ("POST", "/whip", SDP, TOKEN, "garbage", 400, "v=0"),
    ("POST", "/whip?effect=no-such", SDP, TOKEN, "sendonly", 422, "no-such"),
    ("POST", "/whip?effect=cartoon&levels=999", SDP, TOKEN, "sendonly", 422, "levels"),
    ("POST", "/whip?stream=bad%20name", SDP, TOKEN, "sendonly", 422, "stream"),
    ("PATCH", "/whip/abc", "application/trickle-ice-sdpfrag", TOKEN, "garbage", 405, "trickle"),
    ("DELETE", "/whip/abc", None, TOKEN, None, 404, "abc"),
    ("POST", "/whep/nobody", SDP, TOKEN, "recvonly", 404, "nobody"),
    ("POST", "/whep/nobody", SDP, None, "recvonly", 401, "Bearer"),
    ("PATCH", "/whep/abc/def", "application/trickle-ice-sdpfrag", TOKEN, "garbage", 405, "trickle"),
    ("DELETE", "/whep/abc/def", None, TOKEN, None, 404, "def"),
]


@pytest.mark.parametrize(
    ("method", "path", "content_type", "token", "body", "status", "fragment"), REFUSALS
)
async def test_whip_and_whep_refuse_bad_requests(
    server: RunningServer,
    method: str,
    path: str,
    content_type: str | None,
    token: str | None,
    body: str | None,
    status: int,
    fragment: str,
) -> None:
    content = {None: None, "garbage": "hello", "sendonly": None, "recvonly": None}[body]
    if body in ("sendonly", "recvonly"):
        content = await offer_sdp(body)
    headers = {**bearer(token), **({"Content-Type": content_type} if content_type else {})}
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        response = await client.request(method, path, content=content, headers=headers)
    assert response.status_code == status, response.text
    assert fragment in response.json()["detail"]
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_whip_is_open_without_a_token_configured(tmp_path: Path) -> None:
    async def publish_and_end(url: str) -> int:
        publisher = await whip_publish(url, ClipTrack(clip_frames(5), loop=True), "?effect=none")
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            status = (await client.delete(publisher.location)).status_code
        await publisher.pc.close()
        return status

    with running_server(Settings(data_dir=tmp_path)) as open_server:
        assert asyncio.run(publish_and_end(open_server.url)) == 200


@pytest.mark.browser
async def test_overlay_page_plays_the_processed_stream_in_chromium(server: RunningServer) -> None:
    from playwright.async_api import async_playwright

    require_chromium()
    source = ClipTrack(clip_frames(60), fps=15, loop=True)
    publisher = await whip_publish(server.url, source, "?effect=sketch&stream=obs", TOKEN)
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM, args=list(BASE_FLAGS)
            )
            try:
                page = await browser.new_page(viewport={"width": 640, "height": 480})
                await page.goto(f"{server.url}/overlay?session=obs&token={TOKEN}")
                await page.wait_for_function(
                    "window.overlayState && window.overlayState.frames > 15", timeout=60_000
                )
                video = await page.evaluate(
                    "(() => { const v = document.querySelector('video');"
                    " return {w: v.videoWidth, h: v.videoHeight, controls: v.controls, muted: v.muted}; })()"
                )
                assert video == {"w": SIZE[0], "h": SIZE[1], "controls": False, "muted": True}
                shot = await page.screenshot(type="png")
            finally:
                await browser.close()
    finally:
        await publisher.pc.close()
    image = _decode_png(shot)
    centre = image[120:360, 160:480]  # inside the letterboxed video
    assert np.std(centre.astype(np.float32)) > 10, "the overlay shows a blank picture"
    assert saturation(centre) < 8, "the overlay shows the unprocessed (coloured) stream"


def _decode_png(data: bytes) -> np.ndarray:
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise AssertionError("the screenshot is not a PNG")
    return np.ascontiguousarray(image[:, :, ::-1])


@pytest.mark.parametrize(
    ("background", "key"), [("green", (0, 255, 0)), ("#ff00ff", (255, 0, 255))]
)
def test_keyed_background_keeps_only_the_heads(background: str, key: tuple[int, int, int]) -> None:
    from engines.effects.filters import NoEffect
    from engines.types import Face
    from stream.keying import KeyedBackground, parse_key_colour

    frame = np.full((240, 320, 3), 90, np.uint8)
    face = Face(
        track_id=1,
        box=np.array([130, 80, 190, 160], np.float32),
        landmarks5=np.zeros((5, 2), np.float32),
    )
    out = KeyedBackground(NoEffect(), parse_key_colour(background)).apply(frame.copy(), [face])
    assert tuple(out[5, 5]) == key and tuple(out[230, 310]) == key  # far from the head: key colour
    assert tuple(out[120, 160]) == (90, 90, 90)  # the face itself: untouched
    nothing = KeyedBackground(NoEffect(), parse_key_colour(background)).apply(frame.copy(), [])
    assert (nothing == np.asarray(key, np.uint8)).all()  # no face: nothing to show


def green_screen_frames(count: int) -> list[np.ndarray]:
    """The portrait pasted in the middle of a pure green (key colour) frame."""
    import cv2

    portrait = cv2.resize(
        load_rgb(portrait_path("paul_rudd"), 480), (120, 150), interpolation=cv2.INTER_AREA
    )
    frames = []
    for _ in range(count):
        frame = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
        frame[:, :, 1] = 255
        frame[45:195, 100:220] = portrait
        frames.append(frame)
    return frames


@pytest.mark.browser
async def test_overlay_makes_the_key_colour_transparent(server: RunningServer) -> None:
    from playwright.async_api import async_playwright

    require_chromium()
    source = ClipTrack(green_screen_frames(30), fps=15, loop=True)
    publisher = await whip_publish(server.url, source, "?effect=none&stream=keyed", TOKEN)
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM, args=list(BASE_FLAGS)
            )
            try:
                page = await browser.new_page(viewport={"width": 320, "height": 240})
                await page.goto(
                    f"{server.url}/overlay?session=keyed&token={TOKEN}&background=transparent"
                )
                await page.wait_for_function(
                    "window.overlayState && window.overlayState.frames > 10", timeout=60_000
                )
                await asyncio.sleep(0.5)
                shot = await page.screenshot(type="png", omit_background=True)
            finally:
                await browser.close()
    finally:
        await publisher.pc.close()
    import cv2

    rgba = cv2.imdecode(np.frombuffer(shot, np.uint8), cv2.IMREAD_UNCHANGED)
    assert rgba is not None and rgba.shape == (240, 320, 4)
    alpha = rgba[:, :, 3]
    assert alpha[10:35, 10:90].max() < 40, "the green background is not transparent"
    assert alpha[80:160, 130:190].min() > 215, "the face is not opaque"
