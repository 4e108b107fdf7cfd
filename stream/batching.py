"""Cross-session batching for the event loop: await one item, share the engine call.

Sessions run on the event loop; the engines run in threads. :class:`AsyncBatcher`
wraps an :class:`engines.batching.BatchScheduler` so a session can `await` the
result of one item (a frame to detect on, a face to swap) while the scheduler
batches it with the items of every other session. Cancelling the await (the
session ended, or a newer frame made this one stale) withdraws the item if its
batch has not started yet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

from engines.batching import BatchScheduler, BatchStats

T = TypeVar("T")
R = TypeVar("R")


class AsyncBatcher(Generic[T, R]):
    """`await batcher.run(item, session=id)` -> that item's result.

    Owns its scheduler: `close()` shuts it down (finishing queued items).
    Raises what the item raised alone, or engines.errors.BatchRejected when the
    queue is full (drop the frame) or the batcher is closed.
    """

    def __init__(self, scheduler: BatchScheduler[T, R]) -> None:
        self.scheduler = scheduler

    @classmethod
    def create(
        cls,
        run_batch: Callable[[Sequence[T]], Sequence[R]],
        *,
        max_batch: int = 16,
        max_wait_ms: float = 4.0,
        max_queue: int = 256,
        group_key: Callable[[T], Hashable] | None = None,
        name: str = "batch",
    ) -> AsyncBatcher[T, R]:
        """A batcher around a new BatchScheduler (same arguments)."""
        return cls(
            BatchScheduler(
                run_batch,
                max_batch=max_batch,
                max_wait_ms=max_wait_ms,
                max_queue=max_queue,
                group_key=group_key,
                name=name,
            )
        )

    async def run(self, item: T, *, session: Hashable | None = None) -> R:
        future = self.scheduler.submit(item, session=session)
        return await asyncio.wrap_future(future)

    @property
    def stats(self) -> BatchStats:
        return self.scheduler.stats

    async def aclose(self) -> None:
        """Finish queued items and stop, without blocking the event loop."""
        await asyncio.to_thread(self.scheduler.close)

    def close(self) -> None:
        self.scheduler.close()
