"""The model worker: one thread per device that owns the models and runs frames.

The event loop never runs model work; it awaits `ModelWorker.run`. One thread per
device keeps models single-owner (no locks inside engines) and stops several
sessions from fighting over the same cores.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class ModelWorker:
    """A single worker thread for one device."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"facestream-{device.replace(':', '')}"
        )
        self._closed = False

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn(*args, **kwargs)` in the worker thread and await its result."""
        if self._closed:
            raise RuntimeError("the model worker is shut down")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def submit(
        self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        """Run `fn` in the worker thread from synchronous code."""
        return self._executor.submit(fn, *args, **kwargs)

    def shutdown(self) -> None:
        """Finish queued work and stop the thread."""
        self._closed = True
        self._executor.shutdown(wait=True, cancel_futures=True)
