"""The writer thread of a file conversion (PyAV), and what it writes.

FrameWriter owns the output container in its own thread: it encodes processed RGB
frames (H.264, the input's timestamps and pixel aspect ratio) and writes every audio
track, copied or re-encoded to AAC where the container cannot hold it
(stream.convert_audio), every subtitle track it can carry, copied or converted to
its text codec (stream.convert_subtitles), and the attached files and cover pictures
it can hold (stream.convert_attachments); all decided before anything is decoded.
OutputSpec says what it produces. Items reach it through a bounded queue
(stream.convert_queue) from stream.convert_io.Pump. public_name and renamed keep the
temporary ``OUTPUT.part-XXXX`` name out of messages.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from stream.convert_attachments import add_attachments, plan_attachments
from stream.convert_audio import AacEncoder, AudioRoute, plan_audio
from stream.convert_frames import encodable_size, rgb_frame
from stream.convert_queue import QUEUE_FRAMES, Stopped, get_until_stopped
from stream.convert_subtitles import SubtitleRoute, SubtitleTrack, plan_subtitles
from stream.convert_tags import kept_tags

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputSpec:
    """What the writer produces. width/height: the input's upright picture (cropped by
    a pixel for a side that `pix_fmt`'s chroma subsampling cannot hold; logged).

    time_base: the input video's time base; frame timestamps are written in it.
    audio_templates: the input audio streams to write, in order.
    subtitle_templates: the input subtitle streams to write where possible, in order.
    attachment_templates: the input attachment streams and cover pictures to write
    where possible, in order (stream.convert_attachments.attached_streams).
    sample_aspect_ratio: the input's pixel aspect ratio (None: square).
    """

    path: Path
    format_name: str
    codec: str
    crf: int
    preset: str
    pix_fmt: str
    width: int
    height: int
    frame_rate: Fraction
    time_base: Fraction
    audio_templates: tuple[Any, ...] = ()
    subtitle_templates: tuple[Any, ...] = ()
    attachment_templates: tuple[Any, ...] = ()
    sample_aspect_ratio: Fraction | None = None
    metadata: dict[str, str] = field(default_factory=dict)


class FrameWriter:
    """Encodes RGB frames and writes audio and subtitle packets into `spec.path` in
    its own thread.

    Items on `items`: ("video", rgb, (pts, time_base)), ("audio", packet, None),
    ("subtitle", packet, None), ("end", None, None). `error` holds what stopped it, if
    anything; audio_packets: the audio packets written so far. Construction decides
    each audio track's route (copy or AAC) and raises AudioNotWritable at once for one
    that fits neither, and each subtitle track's (copy, convert, or left out with a
    warning), and which attachments it keeps (the others named in one warning);
    nothing has been decoded then.
    """

    def __init__(self, spec: OutputSpec, stop: threading.Event) -> None:
        self.spec = spec
        self._stop = stop
        self.items: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_FRAMES)
        self.error: BaseException | None = None
        self.finished = False
        # Set once the output's streams are made from the input's (or that failed).
        self.opened = threading.Event()
        self.audio_packets = 0
        self.audio_routes: list[AudioRoute] = plan_audio(
            spec.audio_templates, spec.format_name, public_name(spec.path)
        )
        self.subtitle_routes: list[SubtitleRoute] = plan_subtitles(
            spec.subtitle_templates, spec.format_name, public_name(spec.path)
        )
        self.attachments = plan_attachments(
            spec.attachment_templates, spec.format_name, public_name(spec.path)
        )
        self.width, self.height = encodable_size(spec.width, spec.height, spec.pix_fmt)
        if (self.width, self.height) != (spec.width, spec.height):
            logger.warning(
                "%s: the %dx%d picture is written as %dx%d (%s cannot hold odd sides)",
                public_name(spec.path),
                spec.width,
                spec.height,
                self.width,
                self.height,
                spec.pix_fmt,
            )
        self._last_pts: int | None = None
        self._step = max(round(1 / (spec.frame_rate * spec.time_base)), 1) if spec.frame_rate else 1
        self.thread = threading.Thread(
            target=self._run, name="facestream-convert-write", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def _open(self) -> tuple[Any, Any, dict[int, Any]]:
        """(output, video stream, {input index: output audio stream, AacEncoder or
        SubtitleTrack})."""
        spec = self.spec
        options = {"movflags": "+faststart"} if spec.format_name in ("mp4", "mov") else {}
        output = av.open(str(spec.path), mode="w", format=spec.format_name, options=options)
        try:
            output.metadata.update(spec.metadata)
            video: Any = output.add_stream(
                spec.codec,
                rate=spec.frame_rate,
                options={"crf": str(spec.crf), "preset": spec.preset},
            )
            video.width, video.height = self.width, self.height
            video.pix_fmt = spec.pix_fmt
            video.time_base = spec.time_base
            video.codec_context.time_base = spec.time_base
            if spec.sample_aspect_ratio:
                video.codec_context.sample_aspect_ratio = spec.sample_aspect_ratio
            tracks = {
                route.template.index: self._add_audio(output, route) for route in self.audio_routes
            }
            for subtitle in self.subtitle_routes:
                tracks[subtitle.template.index] = SubtitleTrack(output, subtitle)
            for packet in add_attachments(output, self.attachments, spec.format_name):
                output.mux(packet)  # a cover picture; writes the header
        except BaseException:
            output.close()
            raise
        return output, video, tracks

    @staticmethod
    def _add_audio(output: Any, route: AudioRoute) -> Any:
        """The output stream for `route` (copied), or an AacEncoder (re-encoded)."""
        target: Any = AacEncoder(output, route.template) if route.reencode else None
        stream = (
            target.stream if target is not None else output.add_stream_from_template(route.template)
        )
        stream.metadata.update(kept_tags(route.template))
        return target if target is not None else stream

    def _run(self) -> None:
        try:
            output, video, audio = self._open()
        except Exception as error:
            self.error = renamed(error, self.spec.path)
            return
        finally:
            self.opened.set()
        try:
            self._write(output, video, audio)
            self.finished = True
        except Stopped:
            pass
        except Exception as error:
            logger.debug("writer failed", exc_info=True)
            self.error = renamed(error, self.spec.path)
        finally:
            try:
                output.close()
            except Exception as error:
                self.error = self.error or renamed(error, self.spec.path)
                self.finished = False

    def _write(self, output: Any, video: Any, tracks: dict[int, Any]) -> None:
        while True:
            kind, payload, stamp = get_until_stopped(self.items, self._stop)
            if kind == "end":
                break
            if kind == "audio":
                self._write_audio(output, tracks[payload.stream.index], payload)
                continue
            if kind == "subtitle":
                track = tracks.get(payload.stream.index)  # None: left out (plan_subtitles)
                if track is not None:
                    track.write(output, payload)
                continue
            for packet in video.encode(self._frame(payload, stamp)):
                output.mux(packet)
        for packet in video.encode(None):
            output.mux(packet)
        for target in tracks.values():
            if isinstance(target, AacEncoder | SubtitleTrack):  # what they still hold
                held = target.flush()
                output.mux(held)
                self.audio_packets += len(held) if isinstance(target, AacEncoder) else 0

    def _write_audio(self, output: Any, target: Any, packet: Any) -> None:
        """Writes `packet` (copied) or what the AAC encoder makes of it; audio_packets
        counts the packets written (re-encoding changes their number)."""
        if isinstance(target, AacEncoder):
            encoded = target.encode(packet)
            output.mux(encoded)
            self.audio_packets += len(encoded)
            return
        packet.stream = target
        output.mux(packet)
        self.audio_packets += 1

    def _frame(self, rgb: np.ndarray, stamp: tuple[int | None, Fraction | None]) -> av.VideoFrame:
        height, width = self.height, self.width
        if rgb.shape[0] != height or rgb.shape[1] != width:
            rgb = np.ascontiguousarray(rgb[:height, :width])
        frame = rgb_frame(rgb, self.spec.pix_fmt)
        pts, time_base = stamp
        if pts is not None and time_base is not None and time_base != self.spec.time_base:
            pts = round(pts * time_base / self.spec.time_base)
        if pts is None or (self._last_pts is not None and pts <= self._last_pts):
            pts = 0 if self._last_pts is None else self._last_pts + self._step
        self._last_pts = pts
        frame.pts = pts
        frame.time_base = self.spec.time_base
        return frame


def public_name(path: Path) -> str:
    """How messages call an output being written to `path`: its final name, without
    the temporary ``.part-XXXX`` suffix (stream.convert writes OUTPUT.part-XXXX)."""
    name = path.name
    return str(path.with_name(name.split(".part-", 1)[0])) if ".part-" in name else str(path)


def renamed(error: BaseException, path: Path) -> BaseException:
    """`error`, with an FFmpeg error about the temporary `path` retold about the output's
    final name, so no message shows the temporary file."""
    if isinstance(error, av.error.FFmpegError) and error.filename == str(path):
        return type(error)(error.errno or 0, error.strerror or "", public_name(path))
    return error
