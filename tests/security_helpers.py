"""Helpers for the reliability and security tests: real offers, process resource counts."""

from __future__ import annotations

import asyncio
import gc
import os
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


@dataclass(frozen=True)
class ResourceCounts:
    """What a server leaks when sessions are not cleaned up."""

    rss: int
    threads: int
    fds: int
    tasks: int

    def describe(self) -> str:
        return f"rss={self.rss / 2**20:.1f} MiB threads={self.threads} fds={self.fds} tasks={self.tasks}"


def count_resources(loop: asyncio.AbstractEventLoop | None = None) -> ResourceCounts:
    """Counts after a garbage collection; `tasks`: unfinished tasks of `loop` (0 without one)."""
    gc.collect()
    tasks = 0
    if loop is not None:
        tasks = sum(1 for task in asyncio.all_tasks(loop) if not task.done())
    return ResourceCounts(
        rss=rss_bytes(), threads=threading.active_count(), fds=open_fds(), tasks=tasks
    )
