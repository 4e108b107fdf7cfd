"""The audio of a file conversion: which tracks are copied, which re-encoded to AAC.

Every audio track of the input is kept, in order, with its language and title (an
MP4's "name" tag too: stream.convert_tags). A track whose codec the output container
can hold is copied packet for packet; one it cannot (PCM or ADPCM from an AVI into
MP4, Opus or Vorbis into MOV) is decoded and re-encoded to AAC with its timestamps.
:func:`plan_audio` decides this before a single frame is decoded, by muxing the
track's first packet into an in-memory container of the output's format (the only
test that catches every muxer's rules: MP4 accepts PCM with an unordered channel
layout at its header and refuses it at its trailer).
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from stream.media_limits import MediaRejected
from stream.media_probe import open_input

logger = logging.getLogger(__name__)

AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)
AAC_BIT_RATE = 64_000  # per channel
# Default layouts by channel count (FFmpeg's av_channel_layout_default), for tracks
# whose layout is only a count ("2 channels"), which the AAC encoder does not take.
_DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "4.0", 5: "5.0", 6: "5.1", 8: "7.1"}
_FIRST_PACKET_WITHIN = 512  # packets of the input read to find a track's first packet


class AudioNotWritable(MediaRejected):
    """An audio track the output container cannot hold and that cannot be re-encoded."""


@dataclass(frozen=True)
class AudioRoute:
    """One input audio track's way into the output: copied, or re-encoded to AAC."""

    template: Any  # the input av.AudioStream
    reencode: bool


def plan_audio(streams: Sequence[Any], format_name: str, output_name: str) -> list[AudioRoute]:
    """A route per input audio track, in order; raises AudioNotWritable (naming the
    codec and suggesting .mkv) for a track neither copyable nor re-encodable.

    format_name: the output muxer ("mp4", "mov", "matroska"); output_name: how
    messages call the output.
    """
    routes = []
    for stream in streams:
        if can_copy(stream, format_name):
            routes.append(AudioRoute(stream, reencode=False))
            continue
        codec = stream.codec_context.name
        reason = _why_not_encodable(stream)
        if reason is not None:
            raise AudioNotWritable(
                f"output {output_name} cannot hold the input's {codec} audio (track "
                f"{stream.index}) and it cannot be re-encoded to AAC ({reason}); "
                "write a .mkv instead"
            )
        logger.info(
            "audio track %d (%s) is re-encoded to AAC for %s", stream.index, codec, format_name
        )
        routes.append(AudioRoute(stream, reencode=True))
    return routes


def can_copy(stream: Any, format_name: str) -> bool:
    """Whether `stream`'s packets can be muxed unchanged into a `format_name` file."""
    trial = av.open(io.BytesIO(), mode="w", format=format_name)
    try:
        out = trial.add_stream_from_template(stream)
        trial.start_encoding()
        packet = _first_packet(stream)
        if packet is not None:
            packet.stream = out
            trial.mux(packet)
        trial.close()
    except (av.error.FFmpegError, ValueError):
        logger.debug("%s audio cannot be copied into %s", stream.codec_context.name, format_name)
        return False
    finally:
        _close_quietly(trial)
    return True


def _close_quietly(container: Any) -> None:
    with contextlib.suppress(av.error.FFmpegError, ValueError, OSError):
        container.close()


def _first_packet(stream: Any) -> Any:
    """The first packet of `stream`, from a second opening of its file; None if none is
    found near the start (demuxed only, nothing decoded)."""
    with open_input(Path(stream.container.name)) as container:
        for count, packet in enumerate(container.demux(container.streams[stream.index])):
            if packet.dts is not None and packet.size > 0:
                return packet
            if count >= _FIRST_PACKET_WITHIN:
                break
    return None


def _why_not_encodable(stream: Any) -> str | None:
    """None when `stream` can be decoded and re-encoded to AAC, else why not."""
    if "aac" not in av.codecs_available:
        return "this FFmpeg has no AAC encoder"
    channels = stream.codec_context.channels
    if aac_layout(stream) is None:
        return f"{channels} channels"
    return None


def aac_layout(stream: Any) -> str | None:
    """The layout to encode `stream` with: its own when named, else the default for its
    channel count; None for counts the AAC encoder has no layout for."""
    layout = stream.codec_context.layout
    if layout.name in _DEFAULT_LAYOUTS.values():
        return str(layout.name)
    return _DEFAULT_LAYOUTS.get(layout.nb_channels)


class AacEncoder:
    """Decodes one input audio track's packets and encodes them to AAC in `output`.

    Timestamps follow the decoded frames (the input's, rescaled to 1/sample rate), so
    the track stays in sync. Runs in the writer's thread, which alone decodes this track.
    """

    def __init__(self, output: Any, template: Any) -> None:
        context = template.codec_context
        rate = context.sample_rate if context.sample_rate in AAC_RATES else 48000
        layout = aac_layout(template) or "stereo"
        self._template = template
        self.stream: Any = output.add_stream("aac", rate=rate, layout=layout)
        self.stream.bit_rate = AAC_BIT_RATE * av.AudioLayout(layout).nb_channels
        self.stream.time_base = Fraction(1, rate)

    def encode(self, packet: Any) -> list[Any]:
        """Encoded AAC packets for one input packet (often none yet: the encoder buffers)."""
        packets = []
        for frame in self._template.codec_context.decode(packet):
            packets.extend(self.stream.encode(frame))
        return packets

    def flush(self) -> list[Any]:
        """The packets still held by the decoder and the encoder, at the end."""
        packets = self.encode(None)
        packets.extend(self.stream.encode(None))
        return packets
