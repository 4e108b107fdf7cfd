"""Viewers of one session each encode a frame of their own (stream.frame_sharing)."""

from __future__ import annotations

import asyncio
from fractions import Fraction
from types import SimpleNamespace

import av
import pytest
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from conftest import load_rgb, portrait_path

from stream.convert_frames import rgb_frame
from stream.frame_sharing import ViewerTracks, own_frame
from stream.sessions import Session

RTP_CLOCK = Fraction(1, 90000)


def processed(width: int = 320, height: int = 240, pts: int = 0) -> av.VideoFrame:
    """A frame as the session's processed track makes it."""
    import cv2

    rgb = cv2.resize(load_rgb(portrait_path("kate_siegel"), 480), (width, height))
    frame = rgb_frame(rgb, "yuv420p")
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    frame.pts, frame.time_base = pts, RTP_CLOCK
    return frame


def test_own_frame_copies_the_picture_and_the_timing() -> None:
    frame = processed(pts=3003)
    mine = own_frame(frame)
    assert mine is not frame
    assert (mine.to_ndarray() == frame.to_ndarray()).all()
    assert (mine.pts, mine.time_base) == (3003, RTP_CLOCK)
    mine.pts, mine.time_base = 1, Fraction(1, 30)
    mine.planes[0].update(bytes(mine.planes[0].buffer_size))
    assert (frame.pts, frame.time_base) == (3003, RTP_CLOCK)
    assert frame.to_ndarray().any()


def test_a_frame_with_odd_sides_is_copied() -> None:
    frame = processed(width=321, height=241, pts=7)  # odd sides: swscale made it
    mine = own_frame(frame)
    assert mine is not frame and (mine.width, mine.height) == (321, 241)
    assert (mine.to_ndarray(format="rgb24") == frame.to_ndarray(format="rgb24")).all()
    assert mine.pts == 7


class Frames(MediaStreamTrack):
    kind = "video"

    def __init__(self, count: int) -> None:
        super().__init__()
        self.sent = [processed(pts=i * 3000) for i in range(count)]

        self.taken = 0

    async def recv(self) -> av.VideoFrame:
        await asyncio.sleep(0.01)
        if not self.sent:
            raise MediaStreamError
        self.taken += 1
        return self.sent.pop(0)


@pytest.mark.timeout(60)
async def test_an_h264_viewer_does_not_change_the_frames_of_a_vp8_viewer() -> None:
    """aiortc's H.264 encoder rebases its frame to 1/30 s; with one frame object shared,
    the VP8 viewer's frame lost its RTP timing (and its encoder stalled in a live test)."""
    session = SimpleNamespace(track=Frames(8), viewers=ViewerTracks())
    h264_view, vp8_view = Session.subscribe(session), Session.subscribe(session)  # type: ignore[arg-type]
    h264, vp8 = H264Encoder(), Vp8Encoder()
    try:
        for index in range(3):
            for_h264, for_vp8 = await asyncio.gather(h264_view.recv(), vp8_view.recv())
            sent = for_vp8.pts
            assert for_h264.pts == sent and sent % 3000 == 0  # the same source frame
            h264.encode(for_h264, force_keyframe=index == 0)
            assert for_h264 is not for_vp8
            assert (for_vp8.pts, for_vp8.time_base) == (sent, RTP_CLOCK)
            payloads, timestamp = vp8.encode(for_vp8, force_keyframe=index == 0)
            assert payloads and abs(timestamp - sent) <= 90  # its own rebase rounds (1 ms)
    finally:
        h264_view.stop()
        vp8_view.stop()


@pytest.mark.timeout(60)
async def test_the_source_is_read_only_while_someone_receives() -> None:
    source = Frames(40)
    viewers = ViewerTracks()
    first, second = viewers.subscribe(source), viewers.subscribe(source)
    await asyncio.sleep(0.1)
    assert source.taken == 0  # nobody has asked yet
    await asyncio.gather(first.recv(), second.recv())
    first.stop()
    await second.recv()
    second.stop()
    stopped_at = source.taken
    await asyncio.sleep(0.2)  # 20 frames' time
    assert source.taken <= stopped_at + 1 and not viewers.reading
    third = viewers.subscribe(source)
    await third.recv()
    assert viewers.reading
    third.stop()


@pytest.mark.timeout(60)
async def test_viewers_end_when_the_source_ends() -> None:
    source = Frames(2)
    viewers = ViewerTracks()
    one, two = viewers.subscribe(source), viewers.subscribe(source)
    with pytest.raises(MediaStreamError):
        for _ in range(5):
            await asyncio.gather(one.recv(), two.recv())
    assert one.readyState == "ended" or two.readyState == "ended"
