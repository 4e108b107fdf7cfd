"""Conversion jobs over HTTP: a bounded queue, one runner thread, progress events, retention.

Jobs never touch the live sessions' model worker. They run one at a time in their own
thread with their own lazily loaded models (a second MTCNN and landmark predictor, a
few tens of MB), and that thread lowers its own CPU priority (nice +10, Linux; it is
inherited by the decoder/encoder threads it starts), so on a shared CPU the live
sessions get the cores first and a conversion soaks up what is left.

Files: settings.data_dir/jobs/<job_id>/ holds the upload while the job waits and runs,
and the result and the job's record afterwards; a finished job's folder is removed
`retention_s` after it finished. A restarted server takes back the finished jobs it
finds recorded (stream.job_types); jobs cut off by the stop are recorded as failed,
saying so. Folders without a record are removed once older than the retention time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from engines.effects.base import EffectResources
from engines.effects.registry import get_effect_spec
from engines.errors import EngineError, SourceWithdrawn
from stream.audit import AuditLog
from stream.convert import ConvertCancelled, ConvertProgress, EncodeOptions, convert_file
from stream.face_process import FaceProcess
from stream.face_process import wanted as face_process_wanted
from stream.job_types import (
    TERMINAL,
    Job,
    JobFailed,
    JobNotFinished,
    JobNotFound,
    JobQueueFull,
    JobState,
    read_record,
    write_record,
)
from stream.media_limits import MediaRejected
from stream.media_probe import probe
from stream.models import SharedModels
from stream.settings import Settings

logger = logging.getLogger(__name__)

_NOTIFY_EVERY_S = 0.25
_JOB_NICE = 10


class JobManager:
    """Accepts, runs, reports and expires conversion jobs of one server.

    Build in the app's lifespan, then `start()`; `shutdown()` cancels what runs.
    max_pending: jobs that may wait (the running one not counted); beyond: JobQueueFull.
    """

    def __init__(
        self,
        settings: Settings,
        resources: EffectResources,
        max_pending: int,
        retention_s: float,
        encode: EncodeOptions | None = None,
    ) -> None:
        self.settings = settings
        self.resources = resources
        self.root = settings.data_dir / "jobs"
        self.max_pending = max_pending
        self.retention_s = retention_s
        self._encode = encode or EncodeOptions()
        self._models = SharedModels(settings, resources.device)
        self._faces: FaceProcess | None = None  # started by the first job that needs faces
        self._jobs: dict[str, Job] = {}
        self._audit = AuditLog.for_data_dir(settings.data_dir)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="facestream-jobs", initializer=_lower_priority
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        """Create the jobs folder, take back the finished jobs of an earlier run (within
        their retention time), remove stale leftovers and start the retention sweeper."""
        self._loop = asyncio.get_running_loop()
        self.root.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._reload_finished)
        await asyncio.to_thread(self._remove_stale_folders)
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def shutdown(self) -> None:
        """Cancel waiting and running jobs (each is recorded as failed, saying why, for
        after a restart) and stop the runner thread."""
        self._stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for job in self._jobs.values():
            job.cancel.set()
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        for job in list(self._jobs.values()):
            if job.state not in TERMINAL:  # still queued: its run was cancelled unstarted
                self._finish_cancelled(job)
        if self._faces is not None:
            await asyncio.to_thread(self._faces.close)
            self._faces = None

    def __len__(self) -> int:
        return len(self._jobs)

    def pending(self) -> int:
        return sum(1 for job in self._jobs.values() if job.state == "queued")

    def check_capacity(self) -> None:
        """Raise JobQueueFull when no job can be queued now (checked before an upload is read)."""
        if self.pending() >= self.max_pending:
            raise JobQueueFull(
                f"{self.max_pending} conversion jobs are already waiting; try again later"
            )

    def new_folder(self) -> tuple[str, Path]:
        """A fresh job id and its (created) folder, for the upload to be written into."""
        job_id = uuid.uuid4().hex
        folder = self.root / job_id
        folder.mkdir(parents=True)
        return job_id, folder

    def submit(
        self,
        job_id: str,
        folder: Path,
        input_path: Path,
        filename: str,
        effect: str,
        params: Mapping[str, Any],
        client: str = "unknown",
        frames_total: int = 0,
    ) -> Job:
        """Queue a job whose upload is already at `input_path` (inside `folder`);
        frames_total: the upload's frame count as probed (an estimate), 0 if unknown."""
        self.check_capacity()
        job = Job(job_id, folder, input_path, filename, effect, dict(params))
        job.frames_total = max(frames_total, 0)
        face_ids = get_effect_spec(effect).face_ids(job.params)
        self._audit.record(
            "job.start",
            client=client,
            effect=effect,
            job_id=job_id,
            face_id=face_ids[0] if face_ids else None,
        )
        self._jobs[job_id] = job
        self._executor.submit(self._run, job)
        logger.info("job %s queued: %s with effect %s", job_id, filename, effect)
        return job

    def get(self, job_id: str) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise JobNotFound(
                f"no job {job_id!r} (unknown, or removed after its retention time)"
            ) from None

    def result(self, job_id: str) -> Job:
        """The job, when its result file is ready; JobNotFinished while it waits or runs,
        JobFailed when it failed or was cancelled."""
        job = self.get(job_id)
        if job.state == "failed":
            raise JobFailed(f"job {job_id} failed: {job.error}; there is nothing to download")
        if job.state == "cancelled":
            raise JobFailed(f"job {job_id} was cancelled; there is nothing to download")
        if job.state != "done":
            raise JobNotFinished(f"job {job_id} is {job.state}; its result is not ready yet")
        return job

    async def cancel(self, job_id: str) -> None:
        """Stop a job (if it runs or waits) and remove it with its files."""
        job = self._jobs.pop(self.get(job_id).id)
        job.cancel.set()
        if job.state in TERMINAL:
            await asyncio.to_thread(shutil.rmtree, job.folder, True)
        logger.info("job %s removed", job_id)

    def withdraw_face(self, face_id: str) -> int:
        """Stop every queued or running job that uses a deleted swap source (its uploader
        withdrew consent): each fails saying so, and keeps no output. Finished results
        stay until they expire. Returns how many were stopped."""
        stopped = 0
        for job in list(self._jobs.values()):
            uses = get_effect_spec(job.effect).face_ids(job.params)
            if job.state not in TERMINAL and face_id in uses:
                job.withdrawn = True
                job.cancel.set()
                stopped += 1
        return stopped

    async def events(
        self, job_id: str, keepalive_s: float = 15.0
    ) -> AsyncIterator[dict[str, Any] | None]:
        """Snapshots of the job on every change; None when nothing changed for keepalive_s.

        Ends after the snapshot of a finished (done, failed, cancelled) job.
        """
        job = self.get(job_id)
        seen = -1
        while True:
            if job.version != seen:
                seen = job.version
                snapshot = job.describe()
                yield snapshot
                if snapshot["state"] in TERMINAL:
                    return
                continue
            try:
                await asyncio.wait_for(job.changed.wait(), timeout=keepalive_s)
            except TimeoutError:
                yield None

    # -- runner thread ------------------------------------------------------------

    def _notify(self, job: Job) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(job.bump)

    def _run(self, job: Job) -> None:
        if job.cancel.is_set():
            self._finish_cancelled(job)
            return
        job.state = "running"
        self._notify(job)
        last = [0.0]

        def on_progress(progress: ConvertProgress) -> None:
            job.frames_done, job.frames_total = progress.frames_done, progress.frames_total
            job.fps, job.eta_s = progress.fps, progress.eta_s
            now = time.monotonic()
            if now - last[0] >= _NOTIFY_EVERY_S:
                last[0] = now
                self._notify(job)

        try:
            convert_file(
                job.input_path,
                job.output_path,
                job.effect,
                job.params,
                self.resources,
                self.settings,
                progress=on_progress,
                encode=self._encode,
                models=self._models,
                cancel=job.cancel,
                faces=self._face_process(job),
                job_id=job.id,
                source_name=job.filename,
            )
        except ConvertCancelled:
            self._finish_cancelled(job)
        except (MediaRejected, EngineError, ValueError) as error:
            # a job whose face was deleted while it started fails for that reason
            withdrawn = job.withdrawn or isinstance(error, SourceWithdrawn)
            self._finish(job, "failed", _WITHDRAWN if withdrawn else self._public(job, str(error)))
        except Exception as error:
            logger.exception("job %s failed", job.id)
            message = f"conversion failed: {type(error).__name__}: {error}"
            self._finish(job, "failed", self._public(job, message))
        else:
            job.frames_total = job.frames_done  # the container's count was an estimate
            self._finish(job, "done", None)

    def _face_process(self, job: Job) -> FaceProcess | None:
        """The runner's face process for a job whose effect needs faces: the running one,
        or a new one when Settings.face_process wants it for this file (a dead one is
        replaced); None otherwise. Runner thread only."""
        spec = get_effect_spec(job.effect)
        if not (spec.needs_faces or spec.needs_landmarks68):
            return None
        if self._faces is not None and not self._faces.alive:
            self._faces.close()
            self._faces = None
        if self._faces is None:
            frames = probe(job.input_path).frames
            if not face_process_wanted(self.settings, self.resources.device, frames):
                return None
            self._faces = FaceProcess(self.settings)
        return self._faces

    @staticmethod
    def _public(job: Job, message: str) -> str:
        """`message` with the server's file paths replaced by the uploaded file's name."""
        message = message.replace(str(job.input_path), job.filename)
        return message.replace(str(job.output_path), "result.mp4").replace(str(job.folder), "")

    def _finish_cancelled(self, job: Job) -> None:
        if job.withdrawn:
            self._finish(job, "failed", _WITHDRAWN)
        elif self._stopping and job.id in self._jobs:
            self._finish(job, "failed", _STOPPED)
        else:
            self._finish(job, "cancelled", "the job was cancelled")

    def _finish(self, job: Job, state: JobState, error: str | None) -> None:
        job.input_path.unlink(missing_ok=True)
        job.state, job.error, job.finished = state, error, time.time()
        job.eta_s = None
        if state != "done":
            job.fps = 0.0
        if job.cancel.is_set() and job.id not in self._jobs:
            shutil.rmtree(job.folder, ignore_errors=True)
        else:
            write_record(job)
        logger.info("job %s %s%s", job.id, state, f": {error}" if error else "")
        try:
            self._audit.record("job.end", effect=job.effect, job_id=job.id, state=state)
        finally:
            self._notify(job)

    # -- retention ----------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        interval = min(max(self.retention_s / 4, 0.5), 60.0)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except Exception:
                logger.exception("removing expired jobs failed")

    async def sweep(self) -> list[str]:
        """Remove finished jobs older than the retention time; returns their ids."""
        now = time.time()
        expired = [
            job
            for job in self._jobs.values()
            if job.state in TERMINAL
            and job.finished is not None
            and now - job.finished >= self.retention_s
        ]
        for job in expired:
            self._jobs.pop(job.id, None)
            await asyncio.to_thread(shutil.rmtree, job.folder, True)
            logger.info("job %s expired and removed", job.id)
        return [job.id for job in expired]

    def _reload_finished(self) -> None:
        """Finished jobs of an earlier run whose folder and record are still there and
        whose retention time has not passed: they answer GET again (a done one with its
        result). Runs before any job is submitted."""
        now = time.time()
        for folder in sorted(self.root.iterdir()):
            job = read_record(folder)
            if job is None or job.finished is None:
                continue  # not a finished job's folder: the age rule below removes it
            if now - job.finished >= self.retention_s:
                shutil.rmtree(folder, ignore_errors=True)  # expired while the server was down
                continue
            if job.state == "done" and not job.output_path.is_file():
                continue
            self._jobs[job.id] = job
        if self._jobs:
            logger.info("%d finished jobs of the last run are kept", len(self._jobs))

    def _remove_stale_folders(self) -> None:
        cutoff = time.time() - self.retention_s
        for folder in self.root.iterdir():
            if (
                folder.is_dir()
                and folder.name not in self._jobs
                and folder.stat().st_mtime < cutoff
            ):
                shutil.rmtree(folder, ignore_errors=True)


_STOPPED = (
    "the server stopped before this conversion finished, so nothing was kept: upload the "
    "video again"
)


_WITHDRAWN = (
    "the source face was deleted (its uploader withdrew consent), so the conversion "
    "stopped and nothing was kept"
)


def _lower_priority() -> None:
    """Make the calling thread (and threads it starts) yield the CPU to live sessions."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _JOB_NICE)
    except (AttributeError, OSError):
        logger.debug("could not lower the job thread's priority", exc_info=True)
