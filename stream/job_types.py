"""A conversion job's state, what GET /jobs/{id} shows of it, and its record on disk.

A finished job's folder keeps a record (job.json) next to its result, so a restarted
server can answer for it until its retention time has passed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"done", "failed", "cancelled"})


class JobNotFound(LookupError):
    """No job has this id (never existed, or removed after its retention time)."""


class JobQueueFull(RuntimeError):
    """As many jobs wait as the queue holds; try again when one has finished."""


class JobNotFinished(RuntimeError):
    """The job's result is asked for before the job is done."""


class JobFailed(RuntimeError):
    """The job's result is asked for, but the job failed or was cancelled: there is none."""


@dataclass
class Job:
    """One conversion: its files, its state and its progress (mutated by the manager only)."""

    id: str
    folder: Path
    input_path: Path
    filename: str
    effect: str
    params: dict[str, Any]
    state: JobState = "queued"
    frames_done: int = 0
    frames_total: int = 0
    fps: float = 0.0
    eta_s: float | None = None
    error: str | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    withdrawn: bool = False  # cancelled because its source face was deleted
    version: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def bump(self) -> None:
        """Wake every listener (event loop only): set the current event, start a new one."""
        self.version += 1
        self.changed.set()
        self.changed = asyncio.Event()

    @property
    def output_path(self) -> Path:
        return self.folder / "result.mp4"

    @property
    def download_name(self) -> str:
        return f"{Path(self.filename).stem or 'video'}-{self.effect}.mp4"

    def record(self) -> dict[str, Any]:
        """What is kept of a finished job in its folder (job.json), for after a restart."""
        return {
            "job_id": self.id,
            "filename": self.filename,
            "effect": self.effect,
            "params": self.params,
            "state": self.state,
            "frames_done": self.frames_done,
            "frames_total": self.frames_total,
            "fps": self.fps,
            "error": self.error,
            "created": self.created,
            "finished": self.finished,
        }

    @classmethod
    def from_record(cls, folder: Path, record: Mapping[str, Any]) -> Job:
        """A finished job as `record` (Job.record) left it in `folder`."""
        state = record["state"]
        if state not in TERMINAL:
            raise ValueError(f"a job record in state {state!r}")
        return cls(
            id=folder.name,
            folder=folder,
            input_path=folder / "input",
            filename=str(record["filename"]),
            effect=str(record["effect"]),
            params=dict(record["params"]),
            state=state,
            frames_done=int(record["frames_done"]),
            frames_total=int(record["frames_total"]),
            fps=float(record["fps"]),
            error=None if record["error"] is None else str(record["error"]),
            created=float(record["created"]),
            finished=float(record["finished"]),
        )

    def describe(self) -> dict[str, Any]:
        """The GET /jobs/{id} body (also each server-sent event)."""
        fraction = self.frames_done / self.frames_total if self.frames_total else 0.0
        if self.state == "done":
            fraction = 1.0
        return {
            "job_id": self.id,
            "state": self.state,
            "effect": {"name": self.effect, "params": self.params},
            "filename": self.filename,
            "progress": round(min(fraction, 1.0), 4),
            "frames_done": self.frames_done,
            "frames_total": self.frames_total,
            "fps": round(self.fps, 2),
            "eta_s": None if self.eta_s is None else round(self.eta_s, 1),
            "error": self.error,
            "result": f"/jobs/{self.id}/result" if self.state == "done" else None,
        }


_RECORD_FILE = "job.json"


def write_record(job: Job) -> None:
    """Keep the finished job's record in its folder (best effort: it only matters after
    a restart)."""
    try:
        (job.folder / _RECORD_FILE).write_text(json.dumps(job.record()))
    except OSError:
        logger.warning("could not keep the record of job %s", job.id, exc_info=True)


def read_record(folder: Path) -> Job | None:
    """The finished job recorded in `folder`, or None (no record, or not readable)."""
    path = folder / _RECORD_FILE
    if not path.is_file():
        return None
    try:
        return Job.from_record(folder, json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        logger.warning("ignoring the unreadable job record %s", path, exc_info=True)
        return None
