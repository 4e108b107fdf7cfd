"""Safe opening and up-front checks of untrusted video files (PyAV).

Every file that facestream decodes for a user (CLI `convert`, HTTP jobs) is opened
through :func:`open_input`: only the `file` protocol, only a short list of plain
container demuxers (no playlists, no concat lists, no image-sequence patterns, no
SDP/RTP/device inputs that would make FFmpeg open other files or the network),
bounded probing; an MP4 with its index at the end, cut short, is told by its box
headers (stream.media_mp4). :func:`probe` then checks resolution, frame rate,
duration and frame count, and that the container's index fits inside the file (a
truncated faststart MP4 still has its whole sample table; a Matroska Segment
declares its size), before a single frame is decoded, and raises
:class:`MediaRejected` with a one-line reason a user can act on.
:func:`check_running` holds an input that did not declare its length to the same
limits while it is decoded.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.container

from stream.media_matroska import matroska_segment_end, tag_int, tag_seconds
from stream.media_mp4 import truncation

logger = logging.getLogger(__name__)

# FFmpeg demuxer names that may be opened. Matching is by name component, so "mov"
# admits "mov,mp4,m4a,3gp,3g2,mj2" and "matroska" admits "matroska,webm".
ALLOWED_DEMUXERS = (
    "mov",
    "matroska",
    "avi",
    "mpegts",
    "mpeg",
    "flv",
    "ogg",
    "asf",
    "ivf",
    "h264",
    "hevc",
    "m4v",
    "yuv4mpegpipe",
)

# Text signatures of playlist and list formats, refused even before FFmpeg sees them.
_REFUSED_SIGNATURES = (b"#EXTM3U", b"ffconcat", b"<?xml", b"<MPD", b"v=0\r\n", b"v=0\n")

# Index entries read from the end of each stream's index by check_complete. Samples are
# stored in decode order, so the last ones end furthest into the file; a window rather
# than the last entry alone tolerates edit lists and small reorderings, and keeps the
# check O(1) however many samples a (possibly hostile) index announces.
INDEX_TAIL = 64


class MediaRejected(ValueError):
    """An input file that facestream refuses to decode; the message says why in one line."""


@dataclass(frozen=True)
class MediaLimits:
    """What an input may be. Probing limits bound the work done before the checks."""

    max_width: int = 4096
    max_height: int = 4096
    max_fps: float = 240.0
    max_duration_s: float = 30 * 60.0
    max_frames: int = 30 * 60 * 60
    probesize: int = 32 * 1024 * 1024
    analyzeduration_us: int = 10_000_000


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


def _open_options(limits: MediaLimits) -> dict[str, str]:
    return {
        "protocol_whitelist": "file",
        "format_whitelist": ",".join(ALLOWED_DEMUXERS),
        "probesize": str(limits.probesize),
        "analyzeduration": str(limits.analyzeduration_us),
    }


def _check_readable(path: Path, name: str) -> None:
    if not path.exists():
        raise MediaRejected(f"input {name} does not exist")
    if not path.is_file():
        raise MediaRejected(f"input {name} is not a regular file")
    if not os.access(path, os.R_OK):
        raise MediaRejected(f"input {name} is not readable (permission denied)")
    if path.stat().st_size == 0:
        raise MediaRejected(f"input {name} is empty")
    with path.open("rb") as handle:
        head = handle.read(64).removeprefix(b"\xef\xbb\xbf").lstrip()
    if any(head.startswith(signature) for signature in _REFUSED_SIGNATURES):
        raise MediaRejected(
            f"input {name} is a playlist or list file, not a video; give the video itself"
        )


def open_input(
    path: str | Path, limits: MediaLimits | None = None, name: str | None = None
) -> av.container.InputContainer:
    """Open `path` for decoding with the restrictions above; raises MediaRejected.

    name: how messages call the file (default: its path). The caller owns the
    returned container and must close it.
    """
    limits = limits or MediaLimits()
    path = Path(path)
    name = name or str(path)
    _check_readable(path, name)
    try:
        container = av.open(str(path), mode="r", options=_open_options(limits))
    except av.error.ArgumentError:
        raise MediaRejected(
            f"input {name} is not a supported video container (allowed: mp4/mov, mkv/webm, avi, "
            "mpeg-ts/ps, flv, ogg, asf, ivf, raw h264/hevc, y4m)"
        ) from None
    except (av.error.FFmpegError, OSError) as error:
        cut = _mp4_cut(path, name)  # an MP4 with its index at the end, cut short
        raise cut or MediaRejected(
            f"input {name} is not a readable video: {_reason(error)}"
        ) from None
    name_parts = set(container.format.name.split(","))
    if not name_parts & set(ALLOWED_DEMUXERS):  # defence in depth; FFmpeg already refused others
        container.close()
        raise MediaRejected(
            f"input {name} has container format {container.format.name!r}, which is not allowed"
        )
    if "mov" in name_parts and main_video(container) is None and (cut := _mp4_cut(path, name)):
        container.close()  # cut inside its index: FFmpeg found no video in what is left
        raise cut
    return container


def _mp4_cut(path: Path, name: str | None, opened: bool = False) -> MediaRejected | None:
    """'input NAME is truncated: ...' when `path` is an MP4/MOV file cut short
    (stream.media_mp4.truncation; opened: FFmpeg opened it)."""
    missing = truncation(path, opened)
    if missing is None:
        return None
    return MediaRejected(
        f"input {name or path} is truncated: {missing}; upload or copy the complete file"
    )


def _reason(error: Exception) -> str:
    strerror = getattr(error, "strerror", None)
    return str(strerror or error).strip() or type(error).__name__


def probe(
    path: str | Path, limits: MediaLimits | None = None, name: str | None = None
) -> MediaInfo:
    """Open, inspect and close `path`; raises MediaRejected when it breaks a limit.

    name: how messages call the file (default: its path), e.g. the uploader's file name.
    """
    limits = limits or MediaLimits()
    container = open_input(path, limits, name)
    try:
        info = describe(container, Path(path), name)
        check(info, limits, name)
        check_complete(container, Path(path), name)
    finally:
        container.close()
    return info


def indexed_end(container: av.container.InputContainer) -> int:
    """The largest byte offset (position + size) among the tails of the streams' indexes.

    0 when no stream has an index (e.g. MPEG-TS, or Matroska without cues). Only the
    last INDEX_TAIL entries of each stream are read: O(1) in the sample count.
    """
    end = 0
    for stream in container.streams:
        entries = stream.index_entries
        count = len(entries)
        if count == 0:
            continue
        for entry in entries[max(0, count - INDEX_TAIL) : count]:
            if entry.pos >= 0:
                end = max(end, entry.pos + max(entry.size, 0))
    return end


def check_complete(
    container: av.container.InputContainer, path: Path, name: str | None = None
) -> None:
    """Raise MediaRejected when the container's index points past the end of `path`.

    A faststart MP4 (index at the front) cut short still opens and announces every
    sample; decoding it would silently stop where the data does. One with its index
    at the end, cut inside it, opens with what is left of it: its top-level boxes
    (stream.media_mp4) tell. A Matroska file keeps its index (cues) at the end, so a
    cut one is found by its Segment's declared size instead.
    """
    size = path.stat().st_size
    end = indexed_end(container)
    if "matroska" in container.format.name.split(","):
        end = max(end, matroska_segment_end(path))
    if end > size:
        raise MediaRejected(
            f"input {name or path} is truncated: its index needs {end} bytes but the file has "
            f"{size} ({end - size} missing); upload or copy the complete file"
        )
    if "mov" in container.format.name.split(",") and (cut := _mp4_cut(path, name, opened=True)):
        raise cut  # cut inside its index at the end: FFmpeg reads what is left of it


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
        with av.open(str(path), mode="r", options=_open_options(MediaLimits())) as container:
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


def _span(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def check(info: MediaInfo, limits: MediaLimits, name: str | None = None) -> None:
    """Raise MediaRejected with the first limit `info` breaks (`name`: the file in messages)."""
    where = f"input {name or info.path}"
    if info.width <= 0 or info.height <= 0:
        raise MediaRejected(f"{where}: the video stream has no frame size (corrupt or unsupported)")
    if info.width > limits.max_width or info.height > limits.max_height:
        raise MediaRejected(
            f"{where} is {info.width}x{info.height}; "
            f"at most {limits.max_width}x{limits.max_height} is accepted"
        )
    if info.frame_rate <= 0:
        raise MediaRejected(f"{where}: the video stream has no frame rate")
    if info.fps > limits.max_fps:
        raise MediaRejected(
            f"{where} runs at {info.fps:.1f} fps; at most {limits.max_fps:g} fps is accepted"
        )
    if info.duration_s > limits.max_duration_s:
        raise MediaRejected(
            f"{where} lasts {_span(info.duration_s)}; "
            f"at most {_span(limits.max_duration_s)} is accepted"
        )
    if info.frames > limits.max_frames:
        raise MediaRejected(
            f"{where} has {info.frames} frames; at most {limits.max_frames} are accepted"
        )


def check_running(frames: int, span_s: float, limits: MediaLimits, name: str) -> None:
    """Raise MediaRejected when the frames decoded so far already break `limits`.

    frames: decoded so far; span_s: seconds from the first to the latest frame. For
    inputs whose container did not declare their length (check saw 0), at run time.
    """
    if frames > limits.max_frames or span_s > limits.max_duration_s:
        raise MediaRejected(
            f"input {name} is longer than accepted: more than {limits.max_frames} frames "
            f"or {_span(limits.max_duration_s)} (its container did not say how long it is)"
        )
