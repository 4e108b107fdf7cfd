"""The model worker of one device: the threads that run frames, off the event loop.

The event loop never runs model work; it awaits `ModelWorker.run`. By default one
thread per device keeps models single-owner (no locks inside engines) and stops
several sessions from fighting over the same cores. With cross-session batching on
(stream.models.serving_models), the worker has a small pool instead, about one thread
per active session: each session's pipeline runs in its own thread and the model
calls of all of them meet in the batch schedulers, whose threads own the engines.
Calls for the same owner (one session's pipeline) never overlap: `run_for`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import ParamSpec, TypeVar

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class ModelWorker:
    """The worker threads of one device.

    threads: 1 (default) runs everything in one thread, in submission order; more
        start on demand, up to that many, when calls overlap.
    on_shutdown: called after the threads have stopped (e.g. closing batch schedulers
        that in-flight frames were still waiting on).
    """

    def __init__(
        self,
        device: str,
        threads: int = 1,
        on_shutdown: Sequence[Callable[[], None]] = (),
    ) -> None:
        if threads < 1:
            raise ValueError(f"a model worker needs at least one thread, got {threads}")
        self.device = device
        self.threads = threads
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix=f"facestream-{device.replace(':', '')}"
        )
        self._on_shutdown = tuple(on_shutdown)
        self._owner_locks: weakref.WeakKeyDictionary[object, threading.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._owner_locks_guard = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"ModelWorker({self.device!r}, threads={self.threads})"

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn(*args, **kwargs)` in a worker thread and await its result."""
        if self._closed:
            raise RuntimeError("the model worker is shut down")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def run_for(
        self, owner: object, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Like `run`, but never at the same time as another call for `owner` (a session's
        pipeline: its frames, its effect switch and its close). `owner` must be weakly
        referenceable; with one thread every call is serial anyway."""
        if self.threads == 1:
            return await self.run(fn, *args, **kwargs)
        lock = self._owner_lock(owner)

        def exclusive() -> T:
            with lock:
                return fn(*args, **kwargs)

        return await self.run(exclusive)

    def _owner_lock(self, owner: object) -> threading.Lock:
        with self._owner_locks_guard:
            lock = self._owner_locks.get(owner)
            if lock is None:
                lock = self._owner_locks[owner] = threading.Lock()
            return lock

    def submit(
        self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        """Run `fn` in a worker thread from synchronous code."""
        return self._executor.submit(fn, *args, **kwargs)

    def shutdown(self) -> None:
        """Finish running work, drop queued work, stop the threads, then run on_shutdown."""
        self._closed = True
        self._executor.shutdown(wait=True, cancel_futures=True)
        for hook in self._on_shutdown:
            try:
                hook()
            except Exception:
                logger.exception("closing %r after the model worker stopped failed", hook)
