"""One processed frame, several encoders: each viewer's encoder gets its own VideoFrame.

A session's processed track is relayed to every viewer (the webcam page, the OBS overlay,
WHEP players), and aiortc encodes each viewer's frames in a thread of its own. Encoding
changes the frame it is given: PyAV rebases `pts`/`time_base` to the codec's time base
(1/30 s for aiortc's H.264) and the H.264 encoder sets `pict_type`. With one frame object
shared, an H.264 viewer rebased the timestamps under a VP8 viewer, whose stream then froze
for good (measured: VP8 players next to H.264 ones froze after 10-20 s). So every viewer
gets a copy of every frame (0.06 ms at 720p).

(`VideoFrame.from_numpy_buffer` would share the pixels without a copy, but PyAV 18's
yuv420p frames made that way encode wrongly with libx264: 14 against 3.7 grey levels of
error on the same picture.)
"""

from __future__ import annotations

import asyncio
import logging

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

logger = logging.getLogger(__name__)


def own_frame(frame: av.VideoFrame) -> av.VideoFrame:
    """A copy of `frame` (picture, pts, time_base) that no other encoder holds."""
    copy = av.VideoFrame(frame.width, frame.height, frame.format.name)
    for source, target in zip(frame.planes, copy.planes, strict=True):
        row = min(source.line_size, target.line_size)
        rows = np.frombuffer(memoryview(source), np.uint8).reshape(-1, source.line_size)
        into = np.frombuffer(memoryview(target), np.uint8).reshape(-1, target.line_size)
        into[: target.height, :row] = rows[: source.height, :row]
    copy.pts = frame.pts
    if frame.time_base is not None:
        copy.time_base = frame.time_base
    copy.colorspace, copy.color_range = frame.colorspace, frame.color_range
    return copy


class ViewerTracks:
    """The viewers of one processed track: `subscribe` gives each a track of its own.

    One reader takes the source's frames while at least one viewer is receiving and hands
    each viewer its own copy of the newest frame (a slow viewer skips frames, nothing
    queues). When the last viewer stops, reading stops too, after the frame in hand: the
    source does its work on `recv`, so a stream nobody watches costs nothing.
    (aiortc's MediaRelay went on reading, so a WHIP stream whose players had all left was
    still processed at full rate.)
    """

    def __init__(self) -> None:
        self._receiving: set[_ViewerTrack] = set()
        self._reader: asyncio.Future[None] | None = None

    def subscribe(self, source: MediaStreamTrack) -> MediaStreamTrack:
        """A new viewer's track of `source`; reading starts with its first `recv`."""
        return _ViewerTrack(self, source)

    @property
    def reading(self) -> bool:
        return self._reader is not None and not self._reader.done()

    def _start(self, viewer: _ViewerTrack) -> None:
        self._receiving.add(viewer)
        if not self.reading:
            self._reader = asyncio.ensure_future(self._read(viewer.source))

    def _leave(self, viewer: _ViewerTrack) -> None:
        self._receiving.discard(viewer)

    async def _read(self, source: MediaStreamTrack) -> None:
        while self._receiving:
            frame: av.VideoFrame | None
            try:
                received = await source.recv()
                frame = received if isinstance(received, av.VideoFrame) else None
            except MediaStreamError:
                frame = None
            except Exception:
                logger.exception("the processed track failed; its viewers end")
                frame = None
            for viewer in list(self._receiving):
                viewer.hand(None if frame is None else own_frame(frame))
            if frame is None:
                return


class _ViewerTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, viewers: ViewerTracks, source: MediaStreamTrack) -> None:
        super().__init__()
        self.source = source
        self._viewers = viewers
        self._frame: av.VideoFrame | None = None
        self._arrived = asyncio.Event()

    def hand(self, frame: av.VideoFrame | None) -> None:
        """The newest frame for this viewer (None: the source ended); replaces an unread one."""
        self._frame = frame
        self._arrived.set()

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        self._viewers._start(self)
        await self._arrived.wait()
        self._arrived.clear()
        frame, self._frame = self._frame, None
        if frame is None:
            self.stop()
            raise MediaStreamError
        return frame

    def stop(self) -> None:
        super().stop()
        self._viewers._leave(self)
