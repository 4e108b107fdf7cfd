"""Faces of a video file found in a process of their own, for conversions on a CPU.

On a CPU a conversion is bound by Python's global interpreter lock more than by the
cores: the face stage, dlib's landmarks and the effect take turns on it, so threads
alone keep about 1.4 of 2 cores busy. A :class:`FaceProcess` is a child interpreter
that decodes the same file itself and runs the face stage (detection + tracking, with
the parent's settings) on every frame, streaming each frame's faces back; the parent
decodes, adds landmarks and the effect and encodes. Nothing but the faces crosses the
pipe (decoding twice costs less than copying frames), and both processes use a core
each.

The child starts once (about 3 s: torch, the detector, a warm-up call) and serves one
file after another, so a job runner or a benchmark keeps it; `track` streams one file.
A one-off conversion starts one only for a long enough file (`wanted`).
Faces arrive for the frames in decoding order, the order FrameReader hands them out.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from engines.types import Face
from stream.settings import Settings

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0
_TORCH_THREADS = 1  # measured: a second intra-op thread gains nothing here


# Shorter files are converted faster without a child: its start (imports, the detector,
# beside the parent's own start) costs more than it saves (~15 ms a 720p makeup frame).
# Measured with the CLI on 2 cores (2026-12-02, benchmarks/RESULTS.md): 60 frames 8.1-8.3 s
# with it against 7.1-7.2 s without, 105 frames 9.5-9.9 against 9.4-9.9 s, 150 frames
# 11.7-11.9 against 12.3-12.4 s; break-even about 110 frames.
MIN_FRAMES = 150


def wanted(settings: Settings, device: str, frames: int | None = None) -> bool:
    """Whether a conversion of `frames` frames (None: unknown) on `device` should start a
    face process: "on" always, "off" never, "auto" on a CPU for files of MIN_FRAMES or more."""
    if settings.face_process == "auto":
        return device == "cpu" and (frames is None or frames >= MIN_FRAMES)
    return settings.face_process == "on"


class FaceProcessError(RuntimeError):
    """The face process failed or ended; the message says why."""


class FaceProcess:
    """A child process running the face stage over whole files (see the module docstring).

    settings: the parent's settings (detector size, detection interval, smoothing).
    Starts at once without waiting; `track` waits until the child is ready. One file
    at a time (`track` holds a lock until its stream is finished or closed).
    """

    def __init__(self, settings: Settings) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(
            target=_child_main,
            args=(child_conn, settings.model_dump()),
            name="facestream-faces",
            daemon=True,
        )
        with _sigint_ignored():  # inherited: the child ignores Ctrl-C from its first moment
            self._process.start()
        child_conn.close()
        self._ready = False
        self._lock = threading.Lock()

    @property
    def alive(self) -> bool:
        return self._process.is_alive()

    def cpu_seconds(self) -> float | None:
        """CPU time the child has used so far (Linux /proc; None elsewhere)."""
        try:
            fields = Path(f"/proc/{self._process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Block until the child has loaded its models; FaceProcessError if it cannot."""
        if self._ready:
            return
        if not self._conn.poll(timeout):
            raise FaceProcessError(f"the face process did not start within {timeout:.0f} s")
        message = self._receive()
        if message[0] != "ready":
            raise FaceProcessError(f"the face process did not start: {message[1:]}")
        self._ready = True

    def track(self, path: str | Path) -> FaceStream:
        """The faces of every frame of `path`, in decoding order; close the stream when done."""
        self._lock.acquire()
        try:
            self.wait_ready()
            self._conn.send(("track", str(path)))
        except (OSError, ValueError) as error:
            self._lock.release()
            raise FaceProcessError(
                f"the face process ended unexpectedly (exit code {self._process.exitcode})"
            ) from error
        except BaseException:
            self._lock.release()
            raise
        return FaceStream(self)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the child: asked to quit when it is ready (killed if it does not within
        `timeout`), killed at once while it is still starting."""
        if self._ready:
            with contextlib.suppress(OSError, ValueError):
                self._conn.send(("quit",))
            self._process.join(timeout)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)
        self._conn.close()

    def _receive(self) -> tuple[Any, ...]:
        try:
            message: tuple[Any, ...] = self._conn.recv()
        except (EOFError, OSError) as error:
            raise FaceProcessError(
                f"the face process ended unexpectedly (exit code {self._process.exitcode})"
            ) from error
        return message


class FaceStream:
    """Iterator over one file's faces: a list of Face per frame. close() stops early."""

    def __init__(self, owner: FaceProcess) -> None:
        self._owner = owner
        self._open = True
        self.frames = 0

    def __iter__(self) -> Iterator[list[Face]]:
        return self

    def __next__(self) -> list[Face]:
        if not self._open:
            raise StopIteration
        message = self._owner._receive()
        if message[0] == "faces":
            self.frames += 1
            faces: list[Face] = message[1]
            return faces
        self._release()
        if message[0] == "end":
            raise StopIteration
        raise FaceProcessError(f"finding faces failed: {message[1]}")

    def close(self) -> None:
        """Stop the child's work on this file and wait until it is idle again."""
        if not self._open:
            return
        try:
            self._owner._conn.send(("stop",))
            while self._owner._receive()[0] == "faces":
                pass  # faces already on their way
        except (FaceProcessError, OSError, ValueError):
            logger.debug("the face process ended while stopping", exc_info=True)
        finally:
            self._release()

    def _release(self) -> None:
        if self._open:
            self._open = False
            self._owner._lock.release()


# --- the child -----------------------------------------------------------------------------


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while a child is started (main thread only: elsewhere Python cannot
    set handlers, and a non-main thread never gets the KeyboardInterrupt anyway)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    import signal

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _child_main(conn: Connection, settings: dict[str, Any]) -> None:
    """Load the face stage's models, then serve ("track", path) until ("quit",).

    Ctrl-C reaches the whole process group; the child ignores it (no traceback of its
    own): the parent unwinds and closes it, or it sees the pipe end and returns.
    """
    import signal

    from stream.cli import quiet_openmp

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    quiet_openmp()
    import torch

    torch.set_num_threads(_TORCH_THREADS)
    try:
        import numpy as np

        from stream.models import SharedModels

        models = SharedModels(Settings(**settings), "cpu")
        models.detector.detect([np.zeros((480, 640, 3), np.uint8)])  # load and warm up
        make_stage = models.stage_factories().face
        if make_stage is None:
            raise RuntimeError("no face stage")
    except Exception as error:
        conn.send(("error", f"{type(error).__name__}: {error}"))
        return
    conn.send(("ready",))
    while True:
        try:
            command = conn.recv()
        except (EOFError, OSError):
            return
        if command[0] == "quit":
            return
        if command[0] == "track":
            _track(conn, Path(command[1]), make_stage())
        # a "stop" for a file that already ended needs no answer


def _track(conn: Connection, path: Path, stage: Any) -> None:
    """Send ("faces", [Face, ...]) for every frame of `path`, then ("end", frames);
    ("stopped",) after a ("stop",); ("error", message) when the file cannot be read.
    Frames are decoded in a thread of their own (FFmpeg runs without the interpreter
    lock), a few ahead of the face stage."""
    from stream.media_damage import DamagedMedia
    from stream.pipeline import FrameContext

    frames: queue.Queue[Any] = queue.Queue(maxsize=4)
    halt = threading.Event()
    decoder = threading.Thread(
        target=_decode, args=(path, frames, halt), name="facestream-faces-decode", daemon=True
    )
    decoder.start()
    index = 0
    try:
        while (item := frames.get()) is not None:
            if isinstance(item, DamagedMedia):  # the parent's reader breaks here too, and says so
                conn.send(("end", index))
                return
            if isinstance(item, BaseException):
                conn.send(("error", f"{type(item).__name__}: {item}"))
                return
            if conn.poll() and conn.recv()[0] == "stop":
                conn.send(("stopped",))
                return
            image, time_s = item
            ctx = FrameContext(image=image, index=index, time_s=time_s)
            stage.process(ctx)
            conn.send(("faces", ctx.faces))
            index += 1
        conn.send(("end", index))
    except Exception as error:
        logger.debug("face process: %s failed", path, exc_info=True)
        conn.send(("error", f"{type(error).__name__}: {error}"))
    finally:
        halt.set()
        while decoder.is_alive():  # unblock a decoder waiting on a full queue
            with contextlib.suppress(queue.Empty):
                frames.get(timeout=0.05)


def _decode(path: Path, frames: queue.Queue[Any], halt: threading.Event) -> None:
    """(RGB frame, time in seconds) of `path`'s first video stream onto `frames`, then
    None (or the error). Frames and times as the parent's FrameReader gives them: the
    same few frames lost to damaged data are skipped (it warns about them, not this)."""
    import av

    from stream.convert_frames import upright_rgb
    from stream.convert_io import stamp_seconds
    from stream.media_damage import DamagedVideo
    from stream.media_info import main_video

    try:
        with av.open(str(path)) as container:
            stream = main_video(container)
            if stream is None:
                raise ValueError(f"{path} has no video stream")
            stream.thread_type = "AUTO"
            video = DamagedVideo(stream, str(path), warn=False)
            for packet in video.packets(container.demux(stream)):
                for frame in video.decode(packet):
                    if halt.is_set():
                        return
                    time_s = stamp_seconds(frame.pts, frame.time_base)
                    frames.put((upright_rgb(frame), time_s))
            video.finish()
        frames.put(None)
    except Exception as error:
        frames.put(error)
