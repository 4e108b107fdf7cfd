"""The processed video track of one session: latest-frame-wins input, pipeline in the worker.

A reader task drains the incoming track as fast as frames arrive and keeps only
the newest one (aiortc's own receive queue is unbounded, so it must be drained).
`recv()` takes that newest frame, runs the pipeline in the model worker thread
and returns the result with the input frame's pts and time_base. The pipeline gets
each frame's presentation time (FrameClock), so smoothing follows real time across
the frames that were skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from fractions import Fraction
from typing import Any

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from engines.errors import SourceWithdrawn
from stream.convert_frames import rgb_frame
from stream.metrics import Metrics
from stream.pipeline import EffectPipeline
from stream.worker import ModelWorker

logger = logging.getLogger(__name__)


class LatestFrameSlot:
    """A one-frame mailbox: `put` replaces an unread frame (counted as dropped)."""

    def __init__(self) -> None:
        self._item: tuple[Any, float] | None = None
        self._ready = asyncio.Event()
        self.dropped = 0
        self.closed = False

    def put(self, frame: Any) -> bool:
        """Store `frame`; returns True when an unread frame was replaced."""
        replaced = self._item is not None
        if replaced:
            self.dropped += 1
        self._item = (frame, time.perf_counter())
        self._ready.set()
        return replaced

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    def __len__(self) -> int:
        return 0 if self._item is None else 1

    async def take(self) -> tuple[Any, float]:
        """Wait for the newest frame and its arrival time; raises MediaStreamError once closed."""
        while self._item is None:
            if self.closed:
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        item, self._item = self._item, None
        return item


RTP_CLOCK_WRAP = 1 << 32  # RTP timestamps (aiortc's received pts) are 32-bit


class FrameClock:
    """Presentation times in seconds of one track's frames: pts * time_base.

    Received WebRTC frames carry the 32-bit RTP timestamp as pts (90 kHz, from a random
    origin), which wraps around about every 13 hours; a pts that falls back by more
    than half the range is taken as a wrap and unwrapped, so time keeps going forward.
    Frames without pts or time_base get None.
    """

    def __init__(self) -> None:
        self._last_pts: int | None = None
        self._offset = 0

    def time_s(self, pts: int | None, time_base: Fraction | None) -> float | None:
        if pts is None or time_base is None:
            return None
        if self._last_pts is not None and 0 <= pts < RTP_CLOCK_WRAP:
            jump = pts - self._last_pts
            if jump < -RTP_CLOCK_WRAP // 2:
                self._offset += RTP_CLOCK_WRAP
            elif jump > RTP_CLOCK_WRAP // 2:  # a late frame from before the wrap
                self._offset -= RTP_CLOCK_WRAP
        self._last_pts = pts
        return float((pts + self._offset) * time_base)


def process_frame(
    pipeline: EffectPipeline, frame: VideoFrame, time_s: float | None = None
) -> VideoFrame:
    """Decode to RGB, run the pipeline and wrap the result; runs in the worker thread.

    time_s: the frame's presentation time in seconds (FrameClock), None when unknown.
    The result is yuv420p (converted with OpenCV, 0.3 ms at 720p against swscale's
    2.5 ms), what aiortc's encoders take: they then read it as it is.
    An rgb24 frame would be converted by each encoder, and when several viewers
    share one frame (a relay: webcam page plus overlay, two WHEP players) their
    threads would run one frame's converter at the same time, which crashes libswscale.
    """
    image: np.ndarray = frame.to_ndarray(format="rgb24")
    ctx = pipeline.process(image, time_s=time_s)
    out = rgb_frame(ctx.image, "yuv420p")
    if out.format.name != "yuv420p":  # odd sides: swscale converts (OpenCV needs even ones)
        out = out.reformat(format="yuv420p")
    out.pts = frame.pts
    out.time_base = frame.time_base
    return out


class ProcessedVideoTrack(MediaStreamTrack):
    """The answer's video track: `source` processed by `pipeline`."""

    kind = "video"

    def __init__(
        self,
        source: MediaStreamTrack,
        pipeline: EffectPipeline,
        worker: ModelWorker,
        metrics: Metrics,
    ) -> None:
        super().__init__()
        self.source = source
        self.pipeline = pipeline
        self._worker = worker
        self._metrics = metrics
        self._slot = LatestFrameSlot()
        self._clock = FrameClock()
        self._reader = asyncio.ensure_future(self._read_source())
        self.frames_in = 0
        self.frames_out = 0

    @property
    def frames_dropped(self) -> int:
        return self._slot.dropped

    @property
    def reader_done(self) -> bool:
        return self._reader.done()

    @property
    def queued(self) -> int:
        """Frames waiting to be processed: 0 or 1, never more."""
        return len(self._slot)

    async def _read_source(self) -> None:
        try:
            while True:
                frame = await self.source.recv()
                self.frames_in += 1
                self._metrics.frames_in.inc()
                if self._slot.put(frame):
                    self._metrics.frames_dropped.inc()
        except MediaStreamError:
            logger.debug("source track ended")
        except asyncio.CancelledError:
            pass
        finally:
            self._slot.close()

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        try:
            frame, arrived = await self._slot.take()
        except MediaStreamError:
            self.stop()
            raise
        time_s = self._clock.time_s(frame.pts, frame.time_base)
        try:
            out = await self._worker.run_for(
                self.pipeline, process_frame, self.pipeline, frame, time_s
            )
        except SourceWithdrawn as error:
            logger.info("%s; sending the frames unprocessed", error)  # deleted face: expected
            out = frame
        except Exception:
            # A failing effect must not end the call: pass the frame through and count it.
            self._metrics.errors.labels(kind="pipeline").inc()
            logger.warning("pipeline failed on a frame; sending it unprocessed", exc_info=True)
            out = frame
        self.frames_out += 1
        self._metrics.frames_out.inc()
        self._metrics.frame_seconds.observe(time.perf_counter() - arrived)
        return out

    def stop(self) -> None:
        super().stop()
        self._reader.cancel()
        self._slot.close()
