"""The cross-session batching scheduler: routing, order, bounded wait, failure isolation."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
import torch
from backends_helpers import TinyNet, example_input

from engines.backends import EagerBackend, compile_module
from engines.batching import BatchScheduler
from engines.errors import BatchRejected
from stream.batching import AsyncBatcher


@dataclass(frozen=True)
class Item:
    session: int
    seq: int
    size: int = 0  # stands for a frame size: items of different sizes cannot share a batch


class Recorder:
    """A batch function that records every call and can be held to let the queue fill.

    `entered` is set when the dispatcher first calls it (the items of that call have left
    the queue); with `gate` cleared the dispatcher is then held there.
    """

    def __init__(self, delay: float = 0.0, bad: set[int] | None = None) -> None:
        self.calls: list[list[Item]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.delay = delay
        self.bad = bad or set()

    def __call__(self, items: Sequence[Item]) -> list[tuple[int, int]]:
        self.entered.set()
        self.gate.wait(60)
        self.calls.append(list(items))
        if any(item.seq in self.bad for item in items):
            raise ValueError(f"bad item among {[item.seq for item in items]}")
        time.sleep(self.delay)
        return [(item.session, item.seq * 10) for item in items]


def completion_log(futures: list, lock: threading.Lock, log: list) -> None:
    for tag, future in futures:
        future.add_done_callback(lambda _f, tag=tag: _append(lock, log, tag))


def _append(lock: threading.Lock, log: list, tag: object) -> None:
    with lock:
        log.append(tag)


def test_results_go_to_the_right_session_in_order() -> None:
    recorder = Recorder(delay=0.002)
    sessions, per_session = 6, 25
    done: list[tuple[int, int]] = []
    lock = threading.Lock()
    futures: dict[int, list] = {s: [] for s in range(sessions)}
    with BatchScheduler(recorder, max_batch=8, max_wait_ms=3) as scheduler:

        def session(sid: int) -> None:
            for seq in range(per_session):
                future = scheduler.submit(Item(sid, seq), session=sid)
                completion_log([((sid, seq), future)], lock, done)
                futures[sid].append(future)
                time.sleep(0.0005)

        threads = [threading.Thread(target=session, args=(s,)) for s in range(sessions)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        results = {s: [f.result(timeout=10) for f in futures[s]] for s in range(sessions)}
        stats = scheduler.stats
    for sid in range(sessions):
        assert results[sid] == [(sid, seq * 10) for seq in range(per_session)]
        assert [seq for s, seq in done if s == sid] == list(range(per_session))
    assert stats.items == sessions * per_session and stats.failed_batches == 0
    assert stats.largest_batch > 1, "sessions' items were never batched together"
    assert stats.largest_batch <= 8


@pytest.mark.parametrize(
    ("max_wait_ms", "max_batch", "items", "at_least_s", "at_most_s"),
    [
        # Upper bounds leave a loaded host a second for the thread hand-overs.
        (100.0, 8, 1, 0.095, 0.100 + 1.0),  # a lone item waits for company, but not long
        (0.0, 8, 1, 0.0, 1.0),  # no wait window: dispatched at once
        (5000.0, 4, 4, 0.0, 2.0),  # a full batch does not wait for the window
        (5000.0, 4, 9, 0.0, 2.0),  # nor do two full batches; the ninth item...
    ],
)
def test_wait_is_bounded(
    max_wait_ms: float, max_batch: int, items: int, at_least_s: float, at_most_s: float
) -> None:
    recorder = Recorder()
    with BatchScheduler(recorder, max_batch=max_batch, max_wait_ms=max_wait_ms) as scheduler:
        started = time.monotonic()
        futures = [scheduler.submit(Item(0, i)) for i in range(items)]
        leftover = items % max_batch if items > max_batch else 0
        for future in futures[: items - leftover]:
            future.result(timeout=10)
        elapsed = time.monotonic() - started
        if leftover:  # ...waits out the window: its batch is not full
            assert not futures[-1].done()
            scheduler.close(drain=False)
            with pytest.raises(BatchRejected):
                futures[-1].result(timeout=10)
    assert at_least_s <= elapsed <= at_most_s, elapsed
    assert all(len(call) <= max_batch for call in recorder.calls)


@pytest.mark.parametrize("bad_seqs", [{3}, {0, 5}, {7}])
def test_a_failing_item_fails_only_its_own_request(bad_seqs: set[int]) -> None:
    recorder = Recorder(bad=bad_seqs)
    recorder.gate.clear()
    # A long wait: all eight items share one batch (it goes when full), however slowly they come.
    with BatchScheduler(recorder, max_batch=8, max_wait_ms=5000) as scheduler:
        futures = [scheduler.submit(Item(seq % 2, seq), session=seq % 2) for seq in range(8)]
        recorder.gate.set()
        for seq, future in enumerate(futures):
            if seq in bad_seqs:
                with pytest.raises(ValueError, match="bad item"):
                    future.result(timeout=10)
            else:
                assert future.result(timeout=10) == (seq % 2, seq * 10)
        stats = scheduler.stats
    assert len(recorder.calls[0]) == 8 and stats.failed_batches == 1
    assert [len(call) for call in recorder.calls[1:]] == [1] * 8  # each retried alone


def test_a_batch_function_returning_too_few_results_is_caught() -> None:
    def drops_one(items: Sequence[int]) -> list[int]:
        return [i * 2 for i in items][: max(1, len(items) - 1)]

    with BatchScheduler(drops_one, max_batch=4, max_wait_ms=5000) as scheduler:  # one full batch
        futures = [scheduler.submit(i) for i in range(4)]
        assert [f.result(timeout=10) for f in futures] == [0, 2, 4, 6]  # retried one by one
        assert scheduler.stats.failed_batches >= 1


def test_groups_never_mix_and_a_session_keeps_its_order() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    done: list[tuple[int, int]] = []
    lock = threading.Lock()
    with BatchScheduler(
        recorder, max_batch=8, max_wait_ms=20, group_key=lambda item: item.size
    ) as scheduler:
        blocker = scheduler.submit(Item(9, 0, size=720))
        assert recorder.entered.wait(30)  # the dispatcher is now stuck in the blocker's batch
        plan = [
            Item(1, 1, 720),
            Item(1, 2, 1080),
            Item(1, 3, 720),
            Item(2, 4, 720),
            Item(2, 5, 1080),
        ]
        futures = [((i.session, i.seq), scheduler.submit(i, session=i.session)) for i in plan]
        completion_log(futures, lock, done)
        recorder.gate.set()
        blocker.result(timeout=10)
        for _, future in futures:
            future.result(timeout=10)
    batches = [[(i.session, i.seq) for i in call] for call in recorder.calls[1:]]
    for call in recorder.calls:
        assert len({i.size for i in call}) == 1
    # Session 1's third item (720) may not overtake its second (1080): it waits.
    assert batches[0] == [(1, 1), (2, 4)]
    assert [seq for s, seq in done if s == 1] == [1, 2, 3]
    assert [seq for s, seq in done if s == 2] == [4, 5]


def test_queue_is_bounded_and_close_rejects() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    scheduler = BatchScheduler(recorder, max_batch=2, max_wait_ms=0, max_queue=2)
    first = scheduler.submit(Item(0, 0))
    assert recorder.entered.wait(30)  # taken by the dispatcher, which is now held
    queued = [scheduler.submit(Item(0, 1)), scheduler.submit(Item(0, 2))]
    with pytest.raises(BatchRejected, match="full"):
        scheduler.submit(Item(0, 3))
    recorder.gate.set()
    scheduler.close(drain=True)
    assert [f.result(timeout=1) for f in [first, *queued]] == [(0, 0), (0, 10), (0, 20)]
    with pytest.raises(BatchRejected, match="shut down"):
        scheduler.submit(Item(0, 4))


def test_a_cancelled_request_is_not_run() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    with BatchScheduler(recorder, max_batch=4, max_wait_ms=30) as scheduler:
        blocker = scheduler.submit(Item(0, 0))
        assert recorder.entered.wait(30)  # the blocker's batch has gone; the rest queue
        futures = [scheduler.submit(Item(0, seq)) for seq in (1, 2, 3)]
        assert futures[1].cancel()
        recorder.gate.set()
        blocker.result(timeout=10)
        assert futures[0].result(timeout=10) == (0, 10) and futures[2].result(timeout=10) == (0, 30)
    assert [[i.seq for i in call] for call in recorder.calls] == [[0], [1, 3]]


def test_batches_of_a_real_engine_give_each_face_its_own_result() -> None:
    module = TinyNet()
    engine = compile_module(
        module, [example_input(4)], EagerBackend("cpu"), name="tiny", dynamic_batch=(1, 4, 8)
    )

    def run(crops: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        _, pooled = engine(torch.stack(list(crops)))
        return list(pooled)

    crops = list(example_input(12, seed=5))
    with BatchScheduler(run, max_batch=8, max_wait_ms=20) as scheduler:
        futures = [scheduler.submit(crop, session=i % 3) for i, crop in enumerate(crops)]
        results = [f.result(timeout=10) for f in futures]
        assert scheduler.stats.largest_batch > 1
    with torch.no_grad():
        for crop, result in zip(crops, results, strict=True):
            torch.testing.assert_close(result, module(crop[None])[1][0], atol=1e-5, rtol=1e-5)


async def test_async_sessions_share_batches_and_get_their_own_results() -> None:
    recorder = Recorder(delay=0.003)
    batcher = AsyncBatcher.create(recorder, max_batch=8, max_wait_ms=5, name="faces")

    async def session(sid: int) -> list[tuple[int, int]]:
        return [await batcher.run(Item(sid, seq), session=sid) for seq in range(10)]

    results = await asyncio.gather(*(session(s) for s in range(8)))
    await batcher.aclose()
    for sid, got in enumerate(results):
        assert got == [(sid, seq * 10) for seq in range(10)]
    assert batcher.stats.largest_batch > 1


async def test_cancelling_an_await_leaves_other_sessions_alone() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    batcher = AsyncBatcher.create(recorder, max_batch=4, max_wait_ms=30)
    blocker = asyncio.ensure_future(batcher.run(Item(0, 0)))
    assert await asyncio.to_thread(recorder.entered.wait, 30)  # the dispatcher holds the blocker
    stale = asyncio.ensure_future(batcher.run(Item(1, 1), session=1))
    fresh = asyncio.ensure_future(batcher.run(Item(2, 2), session=2))
    while batcher.scheduler.pending() < 2:  # both queued behind the held blocker
        await asyncio.sleep(0.01)
    stale.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stale  # by now its item is withdrawn too; then the dispatcher may go on
    recorder.gate.set()
    assert await fresh == (2, 20) and await blocker == (0, 0)
    await batcher.aclose()
    assert [[i.seq for i in call] for call in recorder.calls] == [[0], [2]]
