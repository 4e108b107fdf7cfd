"""Safe opening and up-front checks of untrusted video files (PyAV).

Every file that facestream decodes for a user (CLI `convert`, HTTP jobs) is opened
through :func:`open_input`: only the `file` protocol, only a short list of plain
container demuxers (no playlists, no concat lists, no image-sequence patterns, no
SDP/RTP/device inputs that would make FFmpeg open other files or the network),
bounded probing. :func:`probe` then checks resolution, frame rate, duration and
frame count, and that the container's index fits inside the file (a truncated
faststart MP4 still has its whole sample table; a Matroska Segment declares its
size), before a single frame is decoded, and raises :class:`MediaRejected` with a
one-line reason a user can act on. :func:`check_running` holds an input that did
not declare its length to the same limits while it is decoded.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.container

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
        duration x frame rate.
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
        raise MediaRejected(f"input {name} is not a readable video: {_reason(error)}") from None
    name_parts = set(container.format.name.split(","))
    if not name_parts & set(ALLOWED_DEMUXERS):  # defence in depth; FFmpeg already refused others
        container.close()
        raise MediaRejected(
            f"input {name} has container format {container.format.name!r}, which is not allowed"
        )
    return container


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
    sample; decoding it would silently stop where the data does. A Matroska file
    keeps its index (cues) at the end, so a cut one is found by its Segment's
    declared size instead.
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


_EBML_ID = 0x1A45DFA3
_SEGMENT_ID = 0x18538067


def _ebml_number(data: bytes, at: int, keep_marker: bool) -> tuple[int, int, bool]:
    """EBML variable-length number at data[at]: (value, its length, all value bits set).

    IDs keep their length marker bit (keep_marker); sizes drop it. All value bits
    set means "unknown size". Raises IndexError/ValueError on bytes that are no number.
    """
    first = data[at]
    length = 9 - first.bit_length()
    if not 1 <= length <= 8:
        raise ValueError("not an EBML number")
    value = first if keep_marker else first & (0xFF >> length)
    for byte in data[at + 1 : at + length]:
        value = (value << 8) | byte
    if at + length > len(data):
        raise IndexError("EBML number cut short")
    unknown = value == (1 << (7 * length)) - 1 and not keep_marker
    return value, length, unknown


def matroska_segment_end(path: Path) -> int:
    """The byte offset where a Matroska file's first Segment declares it ends; 0 if unknown.

    0 when the Segment's size is "unknown" (a live recording never finalised) or the
    header cannot be read. Reads the first 4 KiB only.
    """
    with path.open("rb") as file:
        head = file.read(4096)
    try:
        at = 0
        for expected in (_EBML_ID, _SEGMENT_ID):
            element, id_length, _ = _ebml_number(head, at, keep_marker=True)
            size, size_length, unknown = _ebml_number(head, at + id_length, keep_marker=False)
            if element != expected:
                return 0
            at += id_length + size_length
            if expected == _SEGMENT_ID:
                return 0 if unknown else at + size
            at += size
    except (IndexError, ValueError):
        return 0
    return 0


def describe(
    container: av.container.InputContainer, path: Path, name: str | None = None
) -> MediaInfo:
    """MediaInfo of an open container; raises MediaRejected when it has no usable video."""
    name = name or str(path)
    if not container.streams.video:
        raise MediaRejected(f"input {name} has no video stream")
    video = container.streams.video[0]
    context = video.codec_context
    if video.time_base is None:
        raise MediaRejected(f"input {name} has a video stream without a time base")
    rate = video.average_rate or video.guessed_rate or video.base_rate
    frame_rate = Fraction(rate) if rate else Fraction(0)
    duration_s = _duration_s(container, video)
    frames = int(video.frames or 0)
    if frames <= 0 and frame_rate > 0:
        frames = math.ceil(duration_s * float(frame_rate))
    audio = container.streams.audio[0] if container.streams.audio else None
    return MediaInfo(
        path=path,
        format_name=container.format.name,
        width=int(context.width or 0),
        height=int(context.height or 0),
        frame_rate=frame_rate,
        time_base=Fraction(video.time_base),
        duration_s=duration_s,
        frames=frames,
        video_codec=context.name,
        audio_codec=audio.codec_context.name if audio is not None else None,
    )


def _duration_s(container: av.container.InputContainer, video: av.VideoStream) -> float:
    if video.duration is not None and video.time_base is not None:
        return float(video.duration * video.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0


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
