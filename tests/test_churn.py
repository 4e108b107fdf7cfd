"""Churn: 100 connect/close cycles of real aiortc peers through a real server leak nothing.

Each cycle connects a peer, waits for processed video, then ends the session one
of two ways: the peer closes its connection, or the client sends DELETE. The
server must free the session within 2 s (19 in 20 cycles; every one within 5 s, as a
loaded CI host can stall a few). After the cycles, memory (RSS) is
within 20 MB of the start (after a warm-up), and the server's asyncio tasks, the
process's threads and its open file descriptors are back at their start counts.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from security_helpers import POOL_THREAD_BOUND, ResourceCounts, count_resources
from server_helpers import RunningServer, running_server
from webrtc_helpers import ClipTrack, connect

from stream.settings import Settings

pytestmark = [pytest.mark.timeout(400), pytest.mark.slow]

CYCLES = 100
WARM_UP = 40  # RSS settles (allocator arenas, codec tables) within ~40 cycles
RSS_SLACK = 20 * 2**20
FREE_WITHIN_S = 2.0  # 95th percentile of the cycles' times to free their session
FREE_AT_MOST_S = 5.0  # the slowest cycle (ICE consent or the connect deadline take 20-30 s)


def _frames() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    return [np.roll(base, 4 * i, axis=1) for i in range(15)]


async def _wait_sessions_gone(server: RunningServer, session_id: str, timeout: float) -> float:
    sessions = server.app.state.services.sessions
    started = time.monotonic()
    while True:
        try:
            sessions.get(session_id)
        except LookupError:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"session {session_id} still alive after {timeout} s")
        await asyncio.sleep(0.01)


async def _cycle(server: RunningServer, http: httpx.AsyncClient, index: int) -> float:
    source = ClipTrack(_frames(), fps=30, loop=True)
    effect: dict[str, object] = {"name": "sketch" if index % 2 else "none"}
    pc, collector, session_id = await connect(server.url, source, effect)
    try:
        await collector.wait_for(3, timeout=20)
        if index % 2:
            response = await http.delete(f"/sessions/{session_id}")
            assert response.status_code == 204
            freed = await _wait_sessions_gone(server, session_id, 2 * FREE_AT_MOST_S)
            await pc.close()
        else:
            await pc.close()
            freed = await _wait_sessions_gone(server, session_id, 2 * FREE_AT_MOST_S)
    finally:
        await pc.close()
        source.stop()
        if collector.task is not None:
            await asyncio.wait_for(collector.task, 5)
    return freed


def _server_tasks(server: RunningServer) -> int:
    loop = server.server.servers[0].get_loop()

    async def count() -> int:
        return sum(1 for task in asyncio.all_tasks() if not task.done()) - 1  # minus this one

    return asyncio.run_coroutine_threadsafe(count(), loop).result(10)


async def _settled(
    server: RunningServer, start: ResourceCounts, start_tasks: int
) -> tuple[ResourceCounts, int]:
    """Counts once threads, fds and tasks are back at the start (or after 15 s)."""
    deadline = time.monotonic() + 15
    while True:
        await asyncio.sleep(0.2)
        now, tasks = count_resources(asyncio.get_running_loop()), _server_tasks(server)
        back = (
            now.threads == start.threads
            and now.fds <= start.fds
            and (now.tasks, tasks) == (start.tasks, start_tasks)
        )
        if back or time.monotonic() > deadline:
            return now, tasks


async def _churn(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for index in range(WARM_UP):
            await _cycle(server, http, index)
        await asyncio.sleep(1.0)
        start = count_resources(asyncio.get_running_loop())
        start_tasks = _server_tasks(server)
        freed = [await _cycle(server, http, index) for index in range(CYCLES)]
        end, end_tasks = await _settled(server, start, start_tasks)
    assert len(server.app.state.services.sessions) == 0
    assert statistics.quantiles(freed, n=20)[-1] <= FREE_WITHIN_S, sorted(freed)
    assert max(freed) <= FREE_AT_MOST_S, sorted(freed)
    report = f"{start.describe()} -> {end.describe()}"
    assert end.rss - start.rss <= RSS_SLACK, report
    assert end.threads == start.threads, report
    assert end.pool_threads <= POOL_THREAD_BOUND, report
    assert end.fds <= start.fds, report
    assert end.tasks == start.tasks, report
    assert end_tasks == start_tasks, f"server tasks {start_tasks} -> {end_tasks}"


def test_100_connect_close_cycles_leak_nothing(tmp_path: Path) -> None:
    with running_server(Settings(data_dir=tmp_path)) as server:
        asyncio.run(_churn(server))
