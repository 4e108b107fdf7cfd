"""The bounded queues between a conversion's threads, and how each side waits on them.

A conversion (stream.convert) runs a reader (stream.convert_io.FrameReader), the
pipeline thread, and a writer (stream.convert_writer.FrameWriter). Each hand-over goes
through a queue of at most QUEUE_FRAMES items; every wait on one polls every POLL_S
seconds so that a stop (a threading.Event set on error or cancellation) or a side that
has died ends it with Stopped instead of hanging.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

QUEUE_FRAMES = 6
POLL_S = 0.1


class Stopped(Exception):
    """The other side stopped; unwind quietly (its own error is reported instead)."""


def put_until_stopped(target: queue.Queue[Any], item: Any, stop: threading.Event) -> None:
    """Put `item` on `target`, waiting while it is full; Stopped once `stop` is set."""
    while not stop.is_set():
        try:
            target.put(item, timeout=POLL_S)
            return
        except queue.Full:
            continue
    raise Stopped


def get_while_alive(
    source: queue.Queue[Any], stop: threading.Event, alive: threading.Thread
) -> Any:
    """The next item of `source`; Stopped once `stop` is set or the thread `alive` (the
    one filling it) has ended with `source` empty."""
    while True:
        try:
            return source.get(timeout=POLL_S)
        except queue.Empty:
            if stop.is_set() or not alive.is_alive():
                raise Stopped from None


def get_until_stopped(source: queue.Queue[Any], stop: threading.Event) -> Any:
    """The next item of `source`, waiting while it is empty; Stopped once `stop` is set."""
    while True:
        try:
            return source.get(timeout=POLL_S)
        except queue.Empty:
            if stop.is_set():
                raise Stopped from None
