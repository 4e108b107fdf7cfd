"""What an input video file may be, and the error for one that is not.

MediaLimits bounds an input's picture size, frame rate, length and frame count, and
the work FFmpeg may do probing it. ALLOWED_DEMUXERS is the short list of plain
container demuxers facestream opens; open_options turns both into the options that
hold FFmpeg to them (only the `file` protocol, no playlists or network inputs).
MediaRejected is raised, with a one-line reason a user can act on, for a file that
breaks any of them (stream.media_probe, stream.media_info).
"""

from __future__ import annotations

from dataclasses import dataclass

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


def open_options(limits: MediaLimits) -> dict[str, str]:
    """av.open options: local files only, ALLOWED_DEMUXERS only, `limits`' probing bounds."""
    return {
        "protocol_whitelist": "file",
        "format_whitelist": ",".join(ALLOWED_DEMUXERS),
        "probesize": str(limits.probesize),
        "analyzeduration": str(limits.analyzeduration_us),
    }
