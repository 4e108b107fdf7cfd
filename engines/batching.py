"""Dynamic batching: requests from many sessions, one engine call.

A :class:`BatchScheduler` owns one engine (e.g. the swap model on one GPU). Any
thread submits one item (e.g. one aligned face) and gets a Future; a dispatcher
thread gathers queued items into a batch until `max_batch` items are there or
the oldest has waited `max_wait_ms`, runs the batch function once, and hands each
item its own result. Guarantees:

- Order: items are dispatched first-in first-out, and the items of one session are
  never reordered, even when `group_key` sends them to different batches.
- Bounded wait: no item waits longer than `max_wait_ms` for its batch to start,
  beyond the time the batch before it takes to run.
- Isolation: when a batch call raises, each item is retried alone, so only the
  items that fail on their own get the exception.
- Bounded queue: `submit` raises BatchRejected when `max_queue` items are waiting.
- No pointless wait (with `active_window_ms`): a batch goes at once when every session
  seen lately already has an item queued, so a lone session never waits for company.

A :class:`SchedulerPool` holds the schedulers of one server (one per engine, made on
first use with the same limits) and closes them together.

Threads only (no asyncio): stream/batching.py wraps it for the event loop.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from engines.errors import BatchRejected

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class BatchStats:
    """Counters since the scheduler started.

    batches: engine calls made for full batches; items: items that got a result or an error;
    failed_batches: batch calls that raised (their items were retried one by one);
    largest_batch: the most items one call carried; mean_batch: items per batch call.
    """

    batches: int
    items: int
    failed_batches: int
    largest_batch: int

    @property
    def mean_batch(self) -> float:
        return self.items / self.batches if self.batches else 0.0


@dataclass
class _Request(Generic[T, R]):
    item: T
    session: Hashable | None
    group: Hashable
    future: concurrent.futures.Future[R]
    enqueued: float


class BatchScheduler(Generic[T, R]):
    """Gathers items from many threads into batches for `run_batch`.

    run_batch: items -> one result per item, in the same order; runs in the
        dispatcher thread (so the engine has one owner thread).
    max_batch: most items in one call. max_wait_ms: longest time the oldest
        waiting item is held back to let a batch fill.
    max_queue: most items waiting; more are rejected (the caller drops the frame).
    group_key: items with different keys never share a batch (e.g. frame size).
    active_window_ms: when set, a session that submitted within this window counts as
        active, and a batch goes without waiting once every active session has an item
        queued (waiting longer could not fill it). None: always wait up to max_wait_ms.
    """

    def __init__(
        self,
        run_batch: Callable[[Sequence[T]], Sequence[R]],
        *,
        max_batch: int = 16,
        max_wait_ms: float = 4.0,
        max_queue: int = 256,
        group_key: Callable[[T], Hashable] | None = None,
        name: str = "batch",
        active_window_ms: float | None = None,
    ) -> None:
        check_limits(max_batch, max_wait_ms, max_queue, active_window_ms)
        self._run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self._group_key = group_key
        self.name = name
        self._active_window = None if active_window_ms is None else active_window_ms / 1000.0
        self._last_seen: dict[Hashable, float] = {}  # session -> last submit (monotonic)
        self._queue: collections.deque[_Request[T, R]] = collections.deque()
        self._condition = threading.Condition()
        self._closed = False
        self._counts = {"batches": 0, "items": 0, "failed_batches": 0, "largest_batch": 0}
        self._thread = threading.Thread(
            target=self._dispatch_forever, name=f"batch-{name}", daemon=True
        )
        self._thread.start()

    def __repr__(self) -> str:
        return f"BatchScheduler({self.name}, max_batch={self.max_batch}, max_wait_ms={self.max_wait * 1000:g})"

    def __enter__(self) -> BatchScheduler[T, R]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def stats(self) -> BatchStats:
        with self._condition:
            return BatchStats(**self._counts)

    def pending(self) -> int:
        with self._condition:
            return len(self._queue)

    def submit(self, item: T, *, session: Hashable | None = None) -> concurrent.futures.Future[R]:
        """Queue `item`; the Future gets its result (or its own exception).

        session: who asked; the items of one session complete in submission order.
        Raises BatchRejected when the queue is full or the scheduler is closed.
        """
        group = self._group_key(item) if self._group_key is not None else None
        future: concurrent.futures.Future[R] = concurrent.futures.Future()
        with self._condition:
            if self._closed:
                raise BatchRejected(f"the {self.name} scheduler is shut down")
            if len(self._queue) >= self.max_queue:
                raise BatchRejected(
                    f"the {self.name} queue is full ({self.max_queue} waiting); try again"
                )
            now = time.monotonic()
            self._queue.append(_Request(item, session, group, future, now))
            if self._active_window is not None and session is not None:
                self._last_seen[session] = now
            self._condition.notify()
        return future

    def close(self, *, drain: bool = True, timeout: float | None = 10.0) -> None:
        """Stop taking items; finish the queued ones (drain) or fail them with BatchRejected."""
        with self._condition:
            self._closed = True
            dropped = [] if drain else list(self._queue)
            if not drain:
                self._queue.clear()
            self._condition.notify_all()
        for request in dropped:
            if request.future.set_running_or_notify_cancel():
                request.future.set_exception(BatchRejected(f"the {self.name} scheduler shut down"))
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # --- the dispatcher thread -----------------------------------------------------------

    def _dispatch_forever(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._run(batch)

    def _next_batch(self) -> list[_Request[T, R]] | None:
        """Wait until a batch is due (see _batch_due, or its oldest item's wait is up), then
        take it."""
        with self._condition:
            while True:
                while not self._queue and not self._closed:
                    self._condition.wait()
                if not self._queue:
                    return None  # closed and drained
                deadline = self._queue[0].enqueued + self.max_wait
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0 or self._batch_due():
                    batch = self._take_batch()
                    if batch:
                        return batch
                    continue  # everything at the head was cancelled
                self._condition.wait(remaining)

    def _batch_due(self) -> bool:
        """Whether the next batch should go before its wait is up: it is full, or every
        active session already has an item queued (none could add one to it)."""
        if len(self._select(limit=self.max_batch)) >= self.max_batch:
            return True
        if self._active_window is None:
            return False
        since = time.monotonic() - self._active_window
        self._last_seen = {s: t for s, t in self._last_seen.items() if t >= since}
        queued = {request.session for request in self._queue}
        return all(session in queued for session in self._last_seen)

    def _select(self, limit: int) -> list[int]:
        """Queue indices of the next batch: the head's group, first-in first-out; a session
        whose earlier item is held back (other group) contributes nothing after it."""
        head_group = self._queue[0].group
        chosen: list[int] = []
        blocked: set[Hashable] = set()
        for index, request in enumerate(self._queue):
            if request.session is not None and request.session in blocked:
                continue
            if request.group != head_group:
                if request.session is not None:
                    blocked.add(request.session)
                continue
            chosen.append(index)
            if len(chosen) == limit:
                break
        return chosen

    def _take_batch(self) -> list[_Request[T, R]]:
        indices = set(self._select(limit=self.max_batch))
        taken = [r for i, r in enumerate(self._queue) if i in indices]
        self._queue = collections.deque(r for i, r in enumerate(self._queue) if i not in indices)
        # A cancelled Future (its caller gave up) is dropped; the rest are marked running.
        return [r for r in taken if r.future.set_running_or_notify_cancel()]

    def _run(self, batch: list[_Request[T, R]]) -> None:
        try:
            results = self._call([r.item for r in batch])
        except Exception as error:
            logger.warning(
                "%s batch of %d failed (%s: %s); retrying its items one by one",
                self.name,
                len(batch),
                type(error).__name__,
                error,
            )
            self._count(len(batch), failed=True)
            for request in batch:
                self._run_alone(request)
            return
        self._count(len(batch), failed=False)
        for request, result in zip(batch, results, strict=True):
            request.future.set_result(result)

    def _run_alone(self, request: _Request[T, R]) -> None:
        try:
            (result,) = self._call([request.item])
        except Exception as error:
            logger.debug("%s item failed alone: %s", self.name, error)
            request.future.set_exception(error)
        else:
            request.future.set_result(result)

    def _call(self, items: list[T]) -> Sequence[R]:
        results = self._run_batch(items)
        if len(results) != len(items):
            raise RuntimeError(
                f"{self.name} returned {len(results)} results for {len(items)} items"
            )
        return results

    def _count(self, size: int, *, failed: bool) -> None:
        with self._condition:
            self._counts["batches"] += 1
            self._counts["items"] += size
            self._counts["failed_batches"] += int(failed)
            self._counts["largest_batch"] = max(self._counts["largest_batch"], size)


def check_limits(
    max_batch: int, max_wait_ms: float, max_queue: int, active_window_ms: float | None = None
) -> None:
    """Raise ValueError unless the limits make a working scheduler."""
    if max_batch < 1 or max_queue < max_batch or max_wait_ms < 0:
        raise ValueError(
            f"need max_batch >= 1, max_queue >= max_batch and max_wait_ms >= 0, got "
            f"{max_batch}, {max_queue}, {max_wait_ms}"
        )
    if active_window_ms is not None and active_window_ms <= 0:
        raise ValueError(f"active_window_ms must be positive or None, got {active_window_ms}")


class SchedulerPool:
    """The batch schedulers of one server: one per engine, all with the same limits.

    `get(key, run_batch, name=...)` makes a key's scheduler on first use (later calls
    with that key get the same one; their run_batch is not used). `close()` drains and
    stops them all; `get` then raises BatchRejected. Thread-safe.
    """

    def __init__(
        self,
        *,
        max_batch: int = 16,
        max_wait_ms: float = 4.0,
        max_queue: int = 256,
        active_window_ms: float | None = None,
    ) -> None:
        check_limits(max_batch, max_wait_ms, max_queue, active_window_ms)
        self.max_batch = max_batch
        self.max_wait_ms = max_wait_ms
        self.max_queue = max_queue
        self.active_window_ms = active_window_ms
        self._lock = threading.Lock()
        self._schedulers: dict[Hashable, BatchScheduler[Any, Any]] = {}
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"SchedulerPool({len(self._schedulers)} schedulers, max_batch={self.max_batch}, "
            f"max_wait_ms={self.max_wait_ms:g})"
        )

    def get(
        self,
        key: Hashable,
        run_batch: Callable[[Sequence[T]], Sequence[R]],
        *,
        name: str,
        group_key: Callable[[T], Hashable] | None = None,
    ) -> BatchScheduler[T, R]:
        """The scheduler of `key` (an engine), made with `run_batch` on first use.

        name: shown in logs, thread names and metrics; made unique within the pool.
        """
        with self._lock:
            if self._closed:
                raise BatchRejected("the batch schedulers are shut down")
            scheduler = self._schedulers.get(key)
            if scheduler is None:
                taken = {s.name for s in self._schedulers.values()}
                unique = next(
                    n for n in (name, *(f"{name}-{i}" for i in range(2, 10_000))) if n not in taken
                )
                scheduler = BatchScheduler(
                    run_batch,
                    max_batch=self.max_batch,
                    max_wait_ms=self.max_wait_ms,
                    max_queue=self.max_queue,
                    group_key=group_key,
                    name=unique,
                    active_window_ms=self.active_window_ms,
                )
                self._schedulers[key] = scheduler
            return cast(BatchScheduler[T, R], scheduler)

    def stats(self) -> dict[str, BatchStats]:
        """Scheduler name -> its counters."""
        with self._lock:
            schedulers = list(self._schedulers.values())
        return {scheduler.name: scheduler.stats for scheduler in schedulers}

    def close(self) -> None:
        """Finish every queued item and stop every scheduler thread."""
        with self._lock:
            self._closed = True
            schedulers = list(self._schedulers.values())
        for scheduler in schedulers:
            scheduler.close()
