"""The attachments of a file conversion: attached files (fonts, ...) and cover pictures.

An attachment stream of the input (a font its ASS subtitles use, any other attached
file of a Matroska input) goes into a Matroska output byte for byte, with its file name
and MIME type; MP4/MOV hold no attached files, so there it is left out. A cover picture
(a video stream with the attached_pic disposition: an MP4's covr, an image attached to
a Matroska file) is never the video being converted: it goes into Matroska as an image
attachment and into MP4 as its cover, the same bytes either way, and is left out where
the output cannot hold it (MOV). Whatever is left out is named in one WARNING, which
says a .mkv keeps it. :func:`plan_attachments` decides this before a single frame is
decoded, by writing each attachment into an in-memory file of the output's format (a
cover is also read back: the MOV muxer drops one without an error).
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av

from stream.media_info import is_cover
from stream.media_probe import open_input

logger = logging.getLogger(__name__)

# A cover's file name extension and MIME type by codec, for a cover that has neither
# (MP4's covr); Matroska stores them with every attachment.
_COVER_TYPES = {
    "mjpeg": ("jpg", "image/jpeg"),
    "png": ("png", "image/png"),
    "bmp": ("bmp", "image/bmp"),
    "gif": ("gif", "image/gif"),
    "webp": ("webp", "image/webp"),
    "tiff": ("tif", "image/tiff"),
}
_UNKNOWN_TYPE = "application/octet-stream"
_COVERS_WITHIN = 64  # packets of a second opening read to find the cover pictures


@dataclass(frozen=True)
class Attachment:
    """One attached file of the input.

    index: its input stream index. name, mimetype: its file name and MIME type (for a
    cover without them, "cover.jpg"/"image/jpeg" and so on by its codec). data: its
    bytes. cover: the input attached_pic video stream of a cover picture; None for an
    attachment stream.
    """

    index: int
    name: str
    mimetype: str
    data: bytes
    cover: Any = None

    def describe(self) -> str:
        """How messages name it: 'font.ttf', 'cover picture cover.jpg'."""
        return self.name if self.cover is None else f"cover picture {self.name}"


def attached_streams(container: Any, video: Any) -> tuple[Any, ...]:
    """The attachment streams and cover pictures of an open input, in stream order;
    `video`, the stream being converted, is never one of them."""
    return tuple(
        stream
        for stream in container.streams
        if stream.index != video.index and (stream.type == "attachment" or is_cover(stream))
    )


def plan_attachments(
    streams: Sequence[Any], format_name: str, output_name: str
) -> list[Attachment]:
    """The attachments of `streams` (see attached_streams) a `format_name` output keeps,
    in order; the others are named in one WARNING (none when all are kept).

    format_name: the output muxer ("mp4", "mov", "matroska"); output_name: how messages
    call the output. Reads the cover pictures from a second opening of the input
    (demuxed only, nothing decoded).
    """
    kept: list[Attachment] = []
    left_out: dict[str, list[str]] = {}  # why -> what
    for attachment in read_attachments(streams):
        reason = _why_not_kept(attachment, format_name)
        if reason is None:
            kept.append(attachment)
        else:
            left_out.setdefault(reason, []).append(attachment.describe())
    if left_out:
        groups = "; ".join(f"{', '.join(names)} ({why})" for why, names in left_out.items())
        hint = "" if format_name == "matroska" else "; write a .mkv to keep them"
        logger.warning("attachments left out of %s: %s%s", output_name, groups, hint)
    return kept


def read_attachments(streams: Sequence[Any]) -> list[Attachment]:
    """An Attachment for each of `streams`, with its bytes; a cover whose picture is
    not found near the start of the file gets empty data."""
    pictures = _cover_pictures([stream for stream in streams if is_cover(stream)])
    attachments = []
    for stream in streams:
        tags = {key.lower(): value for key, value in stream.metadata.items()}
        if not is_cover(stream):
            name = tags.get("filename") or f"attachment-{stream.index}"
            mimetype = stream.mimetype or tags.get("mimetype") or _UNKNOWN_TYPE
            attachments.append(Attachment(stream.index, name, mimetype, bytes(stream.data)))
            continue
        codec = stream.codec_context.name if stream.codec_context is not None else ""
        extension, mimetype = _COVER_TYPES.get(codec, ("bin", _UNKNOWN_TYPE))
        name = tags.get("filename") or f"cover.{extension}"
        mimetype = tags.get("mimetype") or mimetype
        data = pictures.get(stream.index, b"")
        attachments.append(Attachment(stream.index, name, mimetype, data, cover=stream))
    return attachments


def _cover_pictures(covers: Sequence[Any]) -> dict[int, bytes]:
    """{stream index: picture bytes} of `covers`, from a second opening of their file
    (FFmpeg hands a cover's picture out as the first packets read)."""
    if not covers:
        return {}
    wanted = {cover.index for cover in covers}
    pictures: dict[int, bytes] = {}
    with open_input(Path(covers[0].container.name)) as container:
        for count, packet in enumerate(container.demux()):
            if packet.stream.index in wanted and packet.size:
                pictures.setdefault(packet.stream.index, bytes(packet))
            if len(pictures) == len(wanted) or count >= _COVERS_WITHIN:
                break
    return pictures


def _why_not_kept(attachment: Attachment, format_name: str) -> str | None:
    """None when a `format_name` file holds `attachment`, else why not (tried in memory)."""
    if attachment.cover is not None and not attachment.data:
        return "its picture was not found"
    if attachment.cover is None and format_name != "matroska":
        return f"{format_name} cannot hold attached files"
    buffer = io.BytesIO()
    trial = av.open(buffer, mode="w", format=format_name)
    try:
        for packet in add_attachments(trial, [attachment], format_name):
            trial.mux(packet)
        trial.start_encoding()
        trial.close()
    except (av.error.FFmpegError, ValueError) as error:
        return str(getattr(error, "strerror", None) or error)
    finally:
        with contextlib.suppress(av.error.FFmpegError, ValueError, OSError):
            trial.close()
    if format_name != "matroska" and not _has_cover(buffer):
        return f"{format_name} cannot hold a cover picture"
    return None


def _has_cover(buffer: io.BytesIO) -> bool:
    buffer.seek(0)
    try:
        with av.open(buffer, mode="r") as written:
            return any(is_cover(stream) for stream in written.streams)
    except av.error.FFmpegError:
        return False


def add_attachments(output: Any, attachments: Sequence[Attachment], format_name: str) -> list[Any]:
    """Adds `attachments` (planned for `format_name`) to `output`, whose header is not
    written yet: attached files into Matroska, covers into MP4 as attached_pic streams.
    Returns the covers' packets, to mux once every stream is added."""
    packets = []
    for attachment in attachments:
        if attachment.cover is None or format_name == "matroska":
            output.add_attachment(attachment.name, attachment.mimetype, attachment.data)
            continue
        stream = output.add_stream_from_template(attachment.cover)
        stream.disposition = attachment.cover.disposition
        packet = av.Packet(attachment.data)
        packet.stream = stream
        packets.append(packet)
    return packets
