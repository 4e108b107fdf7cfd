"""The reader and writer threads of a file conversion (PyAV), and the pump joining them.

FrameReader demuxes and decodes the input in its own thread and hands over upright RGB
frames (HxWx3 uint8, host memory, the display matrix applied: stream.convert_frames)
and untouched packets of every audio and subtitle track, in file order, through a
bounded queue. FrameWriter owns the output container in its own thread: it encodes
processed RGB frames (H.264, the input's timestamps and pixel aspect ratio) and writes
every audio track, copied or re-encoded to AAC where the container cannot hold it
(stream.convert_audio), every subtitle track it can carry, copied or converted to
its text codec (stream.convert_subtitles), and the attached files and cover pictures
it can hold (stream.convert_attachments); all decided before anything is decoded.
Pump connects both to the thread that runs the pipeline, keeps each frame's timestamp
with it, and shuts everything down on error or cancellation.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from stream.convert_attachments import add_attachments, attached_streams, plan_attachments
from stream.convert_audio import AacEncoder, AudioRoute, plan_audio
from stream.convert_frames import encodable_size, rgb_frame, upright_rgb
from stream.convert_subtitles import SubtitleRoute, SubtitleTrack, plan_subtitles
from stream.convert_tags import kept_tags
from stream.media_damage import DamagedVideo
from stream.media_probe import require_video

logger = logging.getLogger(__name__)

QUEUE_FRAMES = 6
_POLL_S = 0.1
_SLOW_STOP_S = 30.0  # a thread not stopped after this long is logged (and still waited for)
_END = ("end", None, None)
_PACKET_KINDS = ("audio", "subtitle")  # passed through to the writer as packets


class _Stopped(Exception):
    """The other side stopped; unwind quietly (its own error is reported instead)."""


def _put(target: queue.Queue[Any], item: Any, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            target.put(item, timeout=_POLL_S)
            return
        except queue.Full:
            continue
    raise _Stopped


def _get(source: queue.Queue[Any], stop: threading.Event, alive: threading.Thread) -> Any:
    while True:
        try:
            return source.get(timeout=_POLL_S)
        except queue.Empty:
            if stop.is_set() or not alive.is_alive():
                raise _Stopped from None


def stamp_seconds(pts: int | None, time_base: Fraction | None) -> float | None:
    """A frame's presentation time in seconds, pts * time_base; None when either is missing."""
    if pts is None or time_base is None:
        return None
    return float(pts * Fraction(time_base))


class FrameReader:
    """Decodes video[0] of an open input container (upright, see upright_rgb); passes
    on the packets of every audio and subtitle stream. A few frames lost to damaged
    data are skipped with a warning, more end it with DamagedMedia (stream.media_damage).

    Items on `items`: ("video", rgb, (pts, time_base)), ("audio", packet, None),
    ("subtitle", packet, None), then ("end", None, None), or ("error", exception, None).
    """

    def __init__(self, container: Any, stop: threading.Event) -> None:
        self._container = container
        self._stop = stop
        self.video_stream = require_video(container, container.name)
        self.video_stream.thread_type = "AUTO"
        self.audio_streams: tuple[Any, ...] = tuple(container.streams.audio)
        self.audio_stream = self.audio_streams[0] if self.audio_streams else None
        self.subtitle_streams: tuple[Any, ...] = tuple(container.streams.subtitles)
        self.attachment_streams = attached_streams(container, self.video_stream)  # not demuxed
        self.items: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_FRAMES)
        self.thread = threading.Thread(
            target=self._run, name="facestream-convert-read", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            self._read()
            _put(self.items, _END, self._stop)
        except _Stopped:
            pass
        except Exception as error:
            logger.debug("reader failed", exc_info=True)
            with contextlib.suppress(_Stopped):
                _put(self.items, ("error", error, None), self._stop)

    def _read(self) -> None:
        streams = (self.video_stream, *self.audio_streams, *self.subtitle_streams)
        video = DamagedVideo(self.video_stream, self._container.name)  # skips a few lost frames
        for packet in video.packets(self._container.demux(*streams)):
            if self._stop.is_set():
                raise _Stopped
            kind = packet.stream.type
            if kind in _PACKET_KINDS:
                if packet.dts is not None and packet.size > 0:
                    _put(self.items, (kind, packet, None), self._stop)
                continue
            for frame in video.decode(packet):
                rgb = upright_rgb(frame)
                _put(self.items, ("video", rgb, (frame.pts, frame.time_base)), self._stop)
        video.finish()


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
        except _Stopped:
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
            kind, payload, stamp = _get_until_stopped(self.items, self._stop)
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


def _get_until_stopped(source: queue.Queue[Any], stop: threading.Event) -> Any:
    while True:
        try:
            return source.get(timeout=_POLL_S)
        except queue.Empty:
            if stop.is_set():
                raise _Stopped from None


class Pump:
    """Joins reader, pipeline thread and writer; see the module docstring."""

    def __init__(self, reader: FrameReader, writer: FrameWriter, stop: threading.Event) -> None:
        self._reader = reader
        self._writer = writer
        self._stop = stop
        self._stamps: list[tuple[int | None, Fraction | None]] = []
        writer.start()
        # The writer copies the input's stream parameters into the output's: the
        # reader starts demuxing (which may update them) only after that.
        writer.opened.wait()
        reader.start()

    def _to_writer(self, item: Any) -> None:
        while self._writer.thread.is_alive():
            try:
                self._writer.items.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue
        if not self._writer.finished:
            self._raise_writer_error()

    def _raise_writer_error(self) -> None:
        error = self._writer.error
        if error is None:
            raise RuntimeError("the video writer stopped unexpectedly")
        raise error

    def frames(self) -> Iterator[np.ndarray]:
        """RGB frames in file order; audio and subtitle packets are passed to the writer
        on the way."""
        while True:
            try:
                kind, payload, stamp = _get(self._reader.items, self._stop, self._reader.thread)
            except _Stopped:
                raise RuntimeError("the video reader stopped unexpectedly") from None
            if kind == "end":
                return
            if kind == "error":
                raise payload
            if kind in _PACKET_KINDS:
                self._to_writer((kind, payload, stamp))
                continue
            self._stamps.append(stamp)
            yield payload

    def timed_frames(self) -> Iterator[tuple[np.ndarray, float | None]]:
        """frames(), each with its presentation time in seconds (stamp_seconds)."""
        for rgb in self.frames():
            yield rgb, stamp_seconds(*self._stamps[-1])

    def send(self, rgb: np.ndarray) -> None:
        """The processed frame for the oldest frame handed out by frames()."""
        self._to_writer(("video", rgb, self._stamps.pop(0)))

    def finish(self) -> None:
        """Flush the encoder and close the output; raises what stopped the writer."""
        self._to_writer(_END)
        self._writer.thread.join()
        if not self._writer.finished:
            self._raise_writer_error()

    def close(self) -> None:
        """Stop both threads and wait until they have ended (no-op after a clean finish).

        Both see the stop within one packet or frame. They are waited for however long
        that takes: the caller closes the input container next, and closing it under a
        thread still inside FFmpeg would crash the process (the server, for a job).
        """
        self._stop.set()
        for thread in (self._reader.thread, self._writer.thread):
            while True:
                thread.join(timeout=_SLOW_STOP_S)
                if not thread.is_alive():
                    break
                logger.warning("%s has not stopped after %g s; waiting", thread.name, _SLOW_STOP_S)
