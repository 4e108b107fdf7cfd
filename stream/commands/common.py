"""What several commands share: usage errors, file names, one-line messages, the device
check, stop signals."""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

# Signals that end a command the way Ctrl-C does, so its cleanup runs (half-written
# files removed, child processes closed). SIGINT keeps Python's own KeyboardInterrupt.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class UsageError(ValueError):
    """A command-line value that cannot be used; exit status 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: unwinds like Ctrl-C; the exit status is 128 + signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def interrupt_status(error: KeyboardInterrupt) -> int:
    """Exit status for an interrupted command: 130 for Ctrl-C, 128 + N for signal N."""
    return 128 + (error.signum if isinstance(error, Terminated) else signal.SIGINT)


def describe_interrupt(error: KeyboardInterrupt) -> str:
    """'interrupted' (Ctrl-C) or 'stopped by SIGTERM' (the signal's name)."""
    if isinstance(error, Terminated):
        return f"stopped by {signal.Signals(error.signum).name}"
    return "interrupted"


def _raise_terminated(signum: int, _frame: FrameType | None) -> None:
    # A second signal during the cleanup ends the process at once (as the default would).
    for stop in STOP_SIGNALS:
        signal.signal(stop, signal.SIG_DFL)
    raise Terminated(signum)


@contextmanager
def stop_signals_raise() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise Terminated in the main thread.

    The previous handlers come back afterwards. Outside the main thread (where Python
    cannot set handlers) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {stop: signal.getsignal(stop) for stop in STOP_SIGNALS}
    for stop in STOP_SIGNALS:
        signal.signal(stop, _raise_terminated)
    try:
        yield
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, handler)


# scheme://... (RFC 3986 scheme), as in http://, rtsp://, file://
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def local_path(text: str, role: str) -> Path:
    """`text` (a command-line file name) as a Path; UsageError for a URL, named as given
    (`role`: "input", "output", ...), since commands read and write local files only."""
    if _URL.match(text):
        action = "download it first" if role == "input" else "give a local file name"
        raise UsageError(f"{role} {text} is a URL: only local files are accepted; {action}")
    return Path(text)


def one_line(error: Exception) -> str:
    """`error` as one line for 'facestream: ...': a pydantic setting error as 'bad setting
    NAME: ...', an OS or FFmpeg error as 'Permission denied: PATH' (not '[Errno 13] ...')."""
    from av.error import FFmpegError
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        first = error.errors()[0]
        return f"bad setting {'.'.join(map(str, first['loc']))}: {first['msg']}"
    if isinstance(error, OSError | FFmpegError) and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        return " ".join(f"{error.strerror}{where}".split())
    text = " ".join(str(error).split())
    return text or type(error).__name__


def check_device(device: str) -> str:
    """`device` ('cpu' or 'cuda', as Settings.resolved_device gives it), or UsageError when
    it is 'cuda' and torch finds no usable CUDA device (checked before any model loads)."""
    if device != "cuda":
        return device
    import torch

    if not torch.cuda.is_available():
        raise UsageError(
            "CUDA is not available here (torch finds no CUDA device or driver): "
            "use --device cpu, or --device auto to pick what is there"
        )
    return device
