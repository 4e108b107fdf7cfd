"""One processed frame, several encoders: each viewer's encoder gets its own VideoFrame.

A session's processed track is relayed to every viewer (the webcam page, the OBS overlay,
WHEP players), and aiortc encodes each viewer's frames in a thread of its own. Encoding
changes the frame it is given: PyAV rebases `pts`/`time_base` to the codec's time base
(1/30 s for aiortc's H.264, 1/90000 for VP8) and the H.264 encoder sets `pict_type`.
With one frame object shared, an H.264 viewer rebased the timestamps under a VP8
viewer, whose encoder then stopped for good (measured: VP8 players next to H.264 ones
froze after 10-20 s). So every subscriber gets a frame of its own: a new frame object
over the same I420 pixels when the frame carries them (stream.convert_frames.rgb_frame,
0.01 ms), else a copy of the planes (0.5 ms at 720p).
"""

from __future__ import annotations

import av
import numpy as np
from aiortc.mediastreams import MediaStreamTrack


def own_frame(frame: av.VideoFrame) -> av.VideoFrame:
    """A VideoFrame with `frame`'s picture and timing that no other encoder holds."""
    pixels = frame.opaque
    if (
        frame.format.name == "yuv420p"
        and isinstance(pixels, np.ndarray)
        and pixels.shape == (frame.height * 3 // 2, frame.width)
    ):
        mine = av.VideoFrame.from_numpy_buffer(pixels, format="yuv420p")
        mine.opaque = pixels
    else:
        mine = _copy_planes(frame)
    mine.pts = frame.pts
    if frame.time_base is not None:
        mine.time_base = frame.time_base
    return mine


def _copy_planes(frame: av.VideoFrame) -> av.VideoFrame:
    copy = av.VideoFrame(frame.width, frame.height, frame.format.name)
    for source, target in zip(frame.planes, copy.planes, strict=True):
        row = min(source.line_size, target.line_size)
        rows = np.frombuffer(memoryview(source), np.uint8).reshape(-1, source.line_size)[
            : source.height
        ]
        into = np.frombuffer(memoryview(target), np.uint8).reshape(-1, target.line_size)[
            : target.height
        ]
        into[:, :row] = rows[:, :row]
    return copy


class OwnFrameTrack(MediaStreamTrack):
    """A viewer's video track: `source`'s frames (a relay subscription), each its own."""

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
