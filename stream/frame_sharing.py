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

import av
import numpy as np
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack


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
    """The viewers of one processed track: `subscribe` gives each a track of its own."""

    def __init__(self) -> None:
        self._relay = MediaRelay()

    def subscribe(self, source: MediaStreamTrack) -> MediaStreamTrack:
        """A new viewer's track of `source`: the newest frame only, each one its own copy."""
        return _ViewerTrack(self._relay.subscribe(source, buffered=False))


class _ViewerTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self._source = source

    async def recv(self) -> av.VideoFrame:
        frame = await self._source.recv()
        assert isinstance(frame, av.VideoFrame)
        return own_frame(frame)

    def stop(self) -> None:
        super().stop()
        self._source.stop()
