"""The reader thread of a file conversion (PyAV), and the pump joining it to the writer.

FrameReader demuxes and decodes the input in its own thread and hands over upright RGB
frames (HxWx3 uint8, host memory, the display matrix applied: stream.convert_frames)
and untouched packets of every audio and subtitle track, in file order, through a
bounded queue (stream.convert_queue). The writer, FrameWriter, is in
stream.convert_writer. Pump connects both to the thread that runs the pipeline, keeps
each frame's timestamp with it, and shuts everything down on error or cancellation.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import numpy as np

from stream.convert_attachments import attached_streams
from stream.convert_frames import upright_rgb
from stream.convert_queue import (
    POLL_S,
    QUEUE_FRAMES,
    Stopped,
    get_while_alive,
    put_until_stopped,
)
from stream.convert_writer import FrameWriter
from stream.media_damage import DamagedVideo
from stream.media_info import require_video

logger = logging.getLogger(__name__)

_SLOW_STOP_S = 30.0  # a thread not stopped after this long is logged (and still waited for)
_END = ("end", None, None)
_PACKET_KINDS = ("audio", "subtitle")  # passed through to the writer as packets


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
            put_until_stopped(self.items, _END, self._stop)
        except Stopped:
            pass
        except Exception as error:
            logger.debug("reader failed", exc_info=True)
            with contextlib.suppress(Stopped):
                put_until_stopped(self.items, ("error", error, None), self._stop)

    def _read(self) -> None:
        streams = (self.video_stream, *self.audio_streams, *self.subtitle_streams)
        video = DamagedVideo(self.video_stream, self._container.name)  # skips a few lost frames
        for packet in video.packets(self._container.demux(*streams)):
            if self._stop.is_set():
                raise Stopped
            kind = packet.stream.type
            if kind in _PACKET_KINDS:
                if packet.dts is not None and packet.size > 0:
                    put_until_stopped(self.items, (kind, packet, None), self._stop)
                continue
            for frame in video.decode(packet):
                rgb = upright_rgb(frame)
                put_until_stopped(
                    self.items, ("video", rgb, (frame.pts, frame.time_base)), self._stop
                )
        video.finish()


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
                self._writer.items.put(item, timeout=POLL_S)
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
                kind, payload, stamp = get_while_alive(
                    self._reader.items, self._stop, self._reader.thread
                )
            except Stopped:
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
