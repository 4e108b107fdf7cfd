"""What an input video file holds, read from its open container (PyAV).

describe turns an open input (stream.media_probe.open_input) into a MediaInfo: picture
size as shown, frame rate, time base, duration and frame count (from the container, a
Matroska tag, or duration x frame rate), codecs, the display rotation and the pixel
aspect ratio. It reads no packet of the container it is given; the rotation comes from
the first frame of a second, short-lived opening of the file (display_rotation).
main_video and require_video pick the stream a conversion, a probe or the face
process reads: the first video stream that is not a cover picture (is_cover).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.container

from stream.media_limits import MediaLimits, MediaRejected, open_options
from stream.media_matroska import tag_int, tag_seconds

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MediaInfo:
    """What the checks found in one input file.

    frame_rate: the video stream's average frame rate (frames per second, exact).
    time_base: the video stream's time base (seconds per pts tick).
    frames: frames in the video stream, from the container or estimated from
        the video stream's duration x frame rate.
    width, height: the picture as it is shown, i.e. after `rotation`.
    rotation: counter-clockwise degrees (0, 90, 180 or 270) the display matrix turns
        the coded picture by; the conversion applies it (stream.convert_frames).
    sample_aspect_ratio: the pixels' width:height as shown (None: square or unknown).
    """

    path: Path
    format_name: str
    width: int
    height: int
    frame_rate: Fraction
    time_base: Fraction
    duration_s: float
    frames: int
    video_codec: str
    audio_codec: str | None
    rotation: int = 0
    sample_aspect_ratio: Fraction | None = None
    audio_codecs: tuple[str, ...] = ()

    @property
    def fps(self) -> float:
        return float(self.frame_rate)


def is_cover(stream: Any) -> bool:
    """A video stream that is a cover picture (attached_pic: an MP4's covr, a music
    file's album art), not video to convert."""
    return stream.type == "video" and bool(stream.disposition & av.stream.Disposition.attached_pic)


def main_video(container: Any) -> Any | None:
    """The video stream a conversion, a probe or the face process reads: the first one
    that is not a cover picture; None when there is none."""
    return next((s for s in container.streams.video if not is_cover(s)), None)


def require_video(container: Any, name: str) -> Any:
    """main_video(container); MediaRejected naming input `name` when it has none."""
    video = main_video(container)
    if video is None:
        only = " (only a cover picture)" if container.streams.video else ""
        raise MediaRejected(f"input {name} has no video stream{only}")
    return video


def describe(
    container: av.container.InputContainer, path: Path, name: str | None = None
) -> MediaInfo:
    """MediaInfo of an open container; raises MediaRejected when it has no usable video.

    Reads no packet of `container`; the display rotation is read from the first frame
    of a second, short-lived opening of `path` (see display_rotation).
    """
    name = name or str(path)
    video = require_video(container, name)
    context = video.codec_context
    if video.time_base is None:
        raise MediaRejected(f"input {name} has a video stream without a time base")
    rate = video.average_rate or video.guessed_rate or video.base_rate
    frame_rate = Fraction(rate) if rate else Fraction(0)
    duration_s = _duration_s(container, video)
    frames = _frame_count(video, _video_duration_s(video) or duration_s, frame_rate)
    width, height = int(context.width or 0), int(context.height or 0)
    turns = display_rotation(path, width, height) // 90
    sar = _sample_aspect_ratio(video)
    if turns % 2:
        width, height = height, width
        sar = 1 / sar if sar else None
    audio_codecs = tuple(stream.codec_context.name for stream in container.streams.audio)
    return MediaInfo(
        path=path,
        format_name=container.format.name,
        width=width,
        height=height,
        frame_rate=frame_rate,
        time_base=Fraction(video.time_base),
        duration_s=duration_s,
        frames=frames,
        video_codec=context.name,
        audio_codec=audio_codecs[0] if audio_codecs else None,
        rotation=turns * 90,
        sample_aspect_ratio=sar,
        audio_codecs=audio_codecs,
    )


def _sample_aspect_ratio(video: av.VideoStream) -> Fraction | None:
    sar = video.sample_aspect_ratio or video.codec_context.sample_aspect_ratio
    if not sar or sar <= 0 or sar == 1:
        return None
    return Fraction(sar)


# The display matrix is read from a decoded frame only up to this coded size (larger
# inputs are refused by `check` anyway) and within this many packets of the start.
_ROTATION_MAX_PIXELS = 8192 * 8192
_ROTATION_MAX_PACKETS = 256


def display_rotation(path: Path, width: int, height: int) -> int:
    """Counter-clockwise degrees (0, 90, 180, 270) of the first video frame's display
    matrix; 0 when it has none or cannot be read (the conversion reports that later).

    PyAV 18 exposes the matrix only on decoded frames (``VideoFrame.rotation``), so
    this decodes the first frame of a separate opening of `path` (width x height: the
    coded size, to skip absurdly large ones).
    """
    from stream.convert_frames import frame_orientation

    if not 0 < width * height <= _ROTATION_MAX_PIXELS:
        return 0
    try:
        with av.open(str(path), mode="r", options=open_options(MediaLimits())) as container:
            stream = main_video(container)
            if stream is None:
                return 0
            for count, packet in enumerate(container.demux(stream)):
                for frame in packet.decode():
                    return frame_orientation(frame)[0] * 90
                if count >= _ROTATION_MAX_PACKETS:
                    break
    except (av.error.FFmpegError, OSError, IndexError, ValueError):
        logger.debug("no display rotation read from %s", path, exc_info=True)
    return 0


def _frame_count(video: av.VideoStream, duration_s: float, frame_rate: Fraction) -> int:
    """Frames in `video`: the container's count, a Matroska NUMBER_OF_FRAMES tag, or
    the video's duration x its frame rate (rounded up, ignoring float noise)."""
    frames = int(video.frames or 0)
    if frames <= 0:
        frames = tag_int(video.metadata, "NUMBER_OF_FRAMES")
    if frames <= 0 and frame_rate > 0:
        frames = math.ceil(duration_s * float(frame_rate) - 1e-6)
    return frames


def _duration_s(container: av.container.InputContainer, video: av.VideoStream) -> float:
    """The length the limits are checked against: the video stream's duration, else the
    container's (as declared: a file claiming 1000 hours is refused up front)."""
    if video.duration is not None and video.time_base is not None:
        return float(video.duration * video.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0


def _video_duration_s(video: av.VideoStream) -> float | None:
    """The video stream's own length where it says: its duration, else its Matroska
    DURATION tag. The container's duration also spans audio running past the last
    frame, so a frame count estimated from it comes out high."""
    if video.duration is not None and video.time_base is not None:
        return float(video.duration * video.time_base)
    return tag_seconds(video.metadata, "DURATION")
