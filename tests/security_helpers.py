"""Helpers for the reliability and security tests: real offers, process resource counts."""

from __future__ import annotations

import asyncio
import gc
import os
import re
import threading
from dataclasses import dataclass
from functools import cache

import numpy as np
from aiortc import RTCPeerConnection
from webrtc_helpers import ClipTrack


async def offer_sdp_async(data_channel: bool = False) -> str:
    """The SDP of a real aiortc offer sending one video track (optionally a `control` channel)."""
    pc = RTCPeerConnection()
    try:
        pc.addTrack(ClipTrack([np.zeros((48, 64, 3), np.uint8)]))
        if data_channel:
            pc.createDataChannel("control")
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


@cache
def real_offer_sdp(data_channel: bool = False) -> str:
    """offer_sdp_async from synchronous code (its own event loop); cached per process."""
    return asyncio.run(offer_sdp_async(data_channel))


def rss_bytes() -> int:
    """Resident set size of this process, from /proc (Linux)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# Workers of bounded, on-demand thread pools (asyncio's and uvloop's default executors,
# AnyIO's worker threads, concurrent.futures pools): they grow up to a fixed size under
# load and then stay, so they are counted apart from the threads a session could leak.
_POOL_THREAD = re.compile(
    r"^(asyncio_\d+|uvloop_\d+|AnyIO worker thread|ThreadPoolExecutor-\d+_\d+)$"
)
POOL_THREAD_BOUND = 3 * min(32, (os.cpu_count() or 1) + 4)


@dataclass(frozen=True)
class ResourceCounts:
    """What a server leaks when sessions are not cleaned up.

    threads: threads other than pool workers; pool_threads: on-demand pool workers.
    """

    rss: int
    threads: int
    pool_threads: int
    fds: int
    tasks: int

    def describe(self) -> str:
        return (
            f"rss={self.rss / 2**20:.1f} MiB threads={self.threads}+{self.pool_threads} pooled "
            f"fds={self.fds} tasks={self.tasks}"
        )


def count_resources(loop: asyncio.AbstractEventLoop | None = None) -> ResourceCounts:
    """Counts after a garbage collection; `tasks`: unfinished tasks of `loop` (0 without one)."""
    gc.collect()
    tasks = 0
    if loop is not None:
        tasks = sum(1 for task in asyncio.all_tasks(loop) if not task.done())
    names = [thread.name for thread in threading.enumerate()]
    pooled = sum(1 for name in names if _POOL_THREAD.match(name))
    return ResourceCounts(
        rss=rss_bytes(),
        threads=len(names) - pooled,
        pool_threads=pooled,
        fds=open_fds(),
        tasks=tasks,
    )
