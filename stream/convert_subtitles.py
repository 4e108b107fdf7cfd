"""The subtitles of a file conversion: which tracks are copied, converted or left out.

Every subtitle track of the input is kept, in order, with its language, title and
disposition (default, forced, ...), and its packets keep their timestamps, so cues stay
where they were against the video (whose timestamps the converter keeps too). A track
whose codec the output container can hold is copied packet for packet (mov_text into
MP4/MOV; SubRip, ASS, WebVTT, DVD, PGS... into Matroska). A text track it cannot hold is
decoded and re-encoded to the output's text codec (SubRip/ASS/WebVTT into MP4/MOV as
mov_text; mov_text into Matroska as SubRip), cue by cue with the input's times; as
mov_text samples cannot overlap, cues that do are cut into pieces that show the texts
of all the cues on screen then (stream.subtitle_cues). A track this FFmpeg cannot
decode (TTML in MP4) is copied where the output holds its codec. Any other track
(bitmap subtitles into MP4/MOV) is left out with one WARNING naming it and saying why
(and pointing to .mkv where a .mkv would keep it). :func:`plan_subtitles` decides all
this before a single frame is decoded, by writing the track into an in-memory
container of the output's format: the header alone, as a track's first cue may lie
anywhere in the file.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av

from stream.convert_tags import kept_tags
from stream.subtitle_cues import CueOutOfOrder, CueTimeline, Piece

logger = logging.getLogger(__name__)

# The text codec each output format gets for text subtitles it cannot hold as they are.
TEXT_CODECS = {"mp4": "mov_text", "mov": "mov_text", "matroska": "subrip"}
_MS = Fraction(1, 1000)  # the unit of a decoded subtitle's display times


@dataclass(frozen=True)
class SubtitleRoute:
    """One input subtitle track's way into the output.

    template: the input av.SubtitleStream. codec: None when its packets are copied,
    else the text codec ("mov_text", "subrip") its cues are re-encoded to.
    """

    template: Any
    codec: str | None = None


def plan_subtitles(
    streams: Sequence[Any], format_name: str, output_name: str
) -> list[SubtitleRoute]:
    """A route per input subtitle track the output can carry, in order; each other
    track is left out with one WARNING (track, codec, language, why).

    format_name: the output muxer ("mp4", "mov", "matroska"); output_name: how
    messages call the output. Opens the decoder of a track to be converted (its ASS
    header is the encoder's); reads no packet.
    """
    routes = []
    for stream in streams:
        if _can_copy(stream, format_name):
            routes.append(SubtitleRoute(stream))
            continue
        target = TEXT_CODECS.get(format_name)
        reason = _why_not_convertible(stream, format_name, target)
        if reason is None and target is not None:
            logger.info(
                "subtitle %s is converted to %s for %s", describe_track(stream), target, format_name
            )
            routes.append(SubtitleRoute(stream, target))
            continue
        hint = "; write a .mkv to keep it" if _kept_by_matroska(stream, format_name) else ""
        logger.warning(
            "subtitle %s is left out of %s: %s%s", describe_track(stream), output_name, reason, hint
        )
    return routes


def describe_track(stream: Any) -> str:
    """How messages name a subtitle track: 'track 2 (subrip, eng, "Commentary")'."""
    tags = kept_tags(stream)
    parts = [codec_name(stream), tags.get("language", "")]
    parts.append(f'"{tags["title"]}"' if "title" in tags else "")
    return f"track {stream.index} ({', '.join(part for part in parts if part)})"


def codec_name(stream: Any) -> str:
    """The codec's FFmpeg name (hdmv_pgs_subtitle, subrip), not its decoder's (pgssub, srt)."""
    context = stream.codec_context
    if context is None:
        return _undecodable_codec_name(stream) or "unknown codec"
    codec = context.codec
    return str(getattr(codec, "canonical_name", None) or codec.name)


def _undecodable_codec_name(stream: Any) -> str | None:
    """The codec name of a track this FFmpeg has no decoder for (PyAV gives it no codec
    context): its parameters copied onto a data stream of an in-memory file, whose
    name is its codec descriptor's."""
    trial = av.open(io.BytesIO(), mode="w", format="matroska")
    try:
        data = trial.add_data_stream()
        av.BitStreamFilterContext("null", stream, data)
        return str(data.name) if data.name else None
    except (av.error.FFmpegError, ValueError):
        return None
    finally:
        _close_quietly(trial)


def _add_copy(output: Any, template: Any) -> Any:
    """A stream in `output` that takes `template`'s packets unchanged. ValueError (or an
    FFmpegError) when the output's format cannot hold its codec."""
    if template.codec_context is not None:
        return output.add_stream_from_template(template)
    stream = output.add_mux_stream(codec_name(template))  # ValueError: "unknown codec"
    stream.time_base = template.time_base
    av.BitStreamFilterContext("null", template, stream)  # its codec parameters (extradata)
    return stream


def _kept_by_matroska(stream: Any, format_name: str) -> bool:
    """Whether a .mkv, unlike the `format_name` output, would keep `stream`."""
    if format_name == "matroska":
        return False
    if _can_copy(stream, "matroska"):
        return True
    return _why_not_convertible(stream, "matroska", TEXT_CODECS["matroska"]) is None


def _can_copy(stream: Any, format_name: str) -> bool:
    """Whether a `format_name` file takes `stream`'s packets unchanged (header and
    trailer of an in-memory file; no packet is read)."""
    trial = av.open(io.BytesIO(), mode="w", format=format_name)
    try:
        _add_copy(trial, stream)
        trial.start_encoding()
        trial.close()
    except (av.error.FFmpegError, ValueError):
        logger.debug("%s subtitles cannot be copied into %s", codec_name(stream), format_name)
        return False
    finally:
        _close_quietly(trial)
    return True


def _why_not_convertible(stream: Any, format_name: str, target: str | None) -> str | None:
    """None when `stream`'s cues can be re-encoded to `target` in `format_name`, else why not."""
    context = stream.codec_context
    codec = codec_name(stream)
    if context is None:
        return f"{format_name} cannot hold {codec} subtitles, and this FFmpeg cannot decode them"
    if target is None:
        return f"{format_name} holds no {codec} subtitles"
    cannot_hold = f"{format_name} cannot hold {codec} subtitles"
    if not context.codec.text_sub:
        kind = "bitmap" if context.codec.bitmap_sub else "non-text"
        return f"{cannot_hold}, and {kind} subtitles cannot be converted to {target}"
    if target not in av.codecs_available:
        return f"{cannot_hold}, and this FFmpeg has no {target} encoder"
    try:
        context.open(strict=False)
        trial = av.open(io.BytesIO(), mode="w", format=format_name)
        try:
            _add_encoder(trial, stream, target)
            trial.start_encoding()
        finally:
            _close_quietly(trial)
    except (av.error.FFmpegError, ValueError) as error:
        return f"{cannot_hold}, and they cannot be converted to {target} ({error})"
    return None


def _add_encoder(output: Any, template: Any, codec: str) -> Any:
    """A `codec` stream in `output` for `template`'s cues: its time base, its decoder's
    ASS header (styles; the text encoders need one)."""
    stream = output.add_stream(codec)
    stream.time_base = template.time_base
    stream.codec_context.time_base = template.time_base
    stream.codec_context.subtitle_header = template.codec_context.subtitle_header
    return stream


def _close_quietly(container: Any) -> None:
    with contextlib.suppress(av.error.FFmpegError, ValueError, OSError):
        container.close()


class SubtitleTrack:
    """One subtitle track of the output: added to `output` for `route` with the input's
    tags and disposition; :meth:`write` muxes an input packet's cue into it, :meth:`flush`
    gives the packets it still holds at the end (overlapping cues into mov_text).

    Runs in the writer's thread, which alone decodes the input track (when converted).
    """

    def __init__(self, output: Any, route: SubtitleRoute) -> None:
        self._template = route.template
        self._convert = route.codec is not None
        if route.codec is not None:
            self.stream: Any = _add_encoder(output, route.template, route.codec)
        else:
            self.stream = _add_copy(output, route.template)
        self.stream.metadata.update(kept_tags(route.template))
        self.stream.disposition = route.template.disposition
        self._mov_text = codec_name(route.template) == "mov_text"
        self._warned = False
        # Cues into mov_text, whose samples cannot overlap, go through a timeline.
        self._timeline: CueTimeline[_Text] | None = (
            CueTimeline() if route.codec == "mov_text" else None
        )

    def write(self, output: Any, packet: Any) -> None:
        """Mux `packet`'s cue, copied or converted, into `output` at its time. A cue the
        muxer refuses (one timed before the track's last) is left out with a warning
        (once per track); other errors, such as a full disk, are raised."""
        for cue in self.packets(packet):
            try:
                output.mux(cue)
            except av.error.ArgumentError as error:  # EINVAL
                self._warn_once(packet, error)

    def packets(self, packet: Any) -> list[Any]:
        """The packets for `self.stream` carrying `packet`'s cue at its time (none for an
        empty one: MP4's gap fillers, or a cue that could not be converted; into
        mov_text, the pieces of overlapping cues final by `packet`'s time)."""
        if self._mov_text and bytes(packet)[:2] == b"\x00\x00":
            return []  # a gap: the MP4 muxer writes its own (copied, they come out twice)
        if not self._convert:
            packet.stream = self.stream
            return [packet]
        start = packet.pts if packet.pts is not None else packet.dts
        try:
            cue = self._template.codec_context.decode2(packet)
            if cue is None or len(cue) == 0:
                return []
            duration = packet.duration or round(cue.end_display_time * _MS / packet.time_base)
            if self._timeline is not None:
                text = _Text.of(cue)
                pieces = self._timeline.add(start, start + duration, text) if text else []
                return [self._piece_packet(piece) for piece in pieces]
            out = self.stream.codec_context.encode_subtitle(cue)
        except (av.error.FFmpegError, CueOutOfOrder) as error:
            self._warn_once(packet, error)
            return []
        out.pts = out.dts = start
        out.duration = duration
        out.time_base = packet.time_base
        out.stream = self.stream
        return [out]

    def flush(self) -> list[Any]:
        """The packets of the cues still held, at the end of the track."""
        if self._timeline is None:
            return []
        return [self._piece_packet(piece) for piece in self._timeline.flush()]

    def _piece_packet(self, piece: Piece[_Text]) -> Any:
        """A mov_text packet showing the texts of `piece`'s cues, one under the other."""
        line = piece.cues[0].fields + b"\\N".join(text.text for text in piece.cues)
        cue = av.subtitles.subtitle.SubtitleSet.create(line, 0, piece.end - piece.start)
        out = self.stream.codec_context.encode_subtitle(cue)
        out.pts = out.dts = piece.start
        out.duration = piece.end - piece.start
        out.time_base = self._template.time_base
        out.stream = self.stream
        return out

    def _warn_once(self, packet: Any, error: Exception) -> None:
        at = packet.pts if packet.pts is not None else packet.dts
        seconds = float(at * packet.time_base) if at is not None and packet.time_base else 0.0
        log = logger.debug if self._warned else logger.warning
        reason = getattr(error, "strerror", None) or error  # FFmpeg's words, no file name
        log(
            "subtitle %s: a cue at %.3f s is left out (%s)",
            describe_track(self._template),
            seconds,
            reason,
        )
        self._warned = True


@dataclass(frozen=True)
class _Text:
    """A decoded cue's text: `fields`, its ASS dialogue up to the text (read order,
    layer, style...: its first line's), and `text`, its lines' texts (ASS markup kept)."""

    fields: bytes
    text: bytes

    @staticmethod
    def of(cue: Any) -> _Text | None:
        lines = [rect.ass.split(b",", 8) for rect in cue.rects if rect.type == b"ass"]
        lines = [line for line in lines if len(line) == 9]
        if not lines:
            return None
        fields = b",".join(lines[0][:8]) + b","
        return _Text(fields, b"\\N".join(line[8] for line in lines))
