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
:class:`MediaRejected` with a one-line reason a user can act on. The limits, the
allowed demuxers and MediaRejected are in stream.media_limits; what a probe finds
(MediaInfo, describe) is in stream.media_info. :func:`check_running` holds an input
that did not declare its length to the same limits while it is decoded.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import av
import av.container

from stream.media_info import MediaInfo, describe, main_video
from stream.media_limits import ALLOWED_DEMUXERS, MediaLimits, MediaRejected, open_options
from stream.media_matroska import matroska_segment_end
from stream.media_mp4 import truncation

logger = logging.getLogger(__name__)

# Text signatures of playlist and list formats, refused even before FFmpeg sees them.
_REFUSED_SIGNATURES = (b"#EXTM3U", b"ffconcat", b"<?xml", b"<MPD", b"v=0\r\n", b"v=0\n")

# Index entries read from the end of each stream's index by check_complete. Samples are
# stored in decode order, so the last ones end furthest into the file; a window rather
# than the last entry alone tolerates edit lists and small reorderings, and keeps the
# check O(1) however many samples a (possibly hostile) index announces.
INDEX_TAIL = 64


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
        container = av.open(str(path), mode="r", options=open_options(limits))
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
