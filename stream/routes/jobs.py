"""Conversion jobs: POST /jobs, GET /jobs/{id}, /events (server-sent), /result, DELETE.

POST /jobs takes multipart/form-data with a file field `file` (the video) and a text
field `effect`: JSON {"name": "makeup", "params": {...}} (a bare effect name also
works). It answers 202 {"job_id", "status": "/jobs/{id}", "events": ..., "result": ...}
once the upload is on disk and has passed the media checks.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Container, Mapping
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from engines.effects.base import EffectSpec
from engines.effects.registry import get_effect_spec
from stream.deps import ServicesDep, client_of
from stream.jobs import JobFailed, JobManager, JobNotFinished, JobNotFound, JobQueueFull
from stream.media_limits import MediaRejected
from stream.media_probe import probe
from stream.security.uploads import SNIFF_BYTES, check_signature
from stream.services import Services
from stream.sessions import EffectChoice
from stream.uploads import BadUpload, UploadTooLarge, content_disposition, receive_upload

router = APIRouter()

_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (JobNotFound, 404),
    (JobNotFinished, 409),
    (JobFailed, 409),
    (JobQueueFull, 429),
    (UploadTooLarge, 413),
    (MediaRejected, 422),
    (BadUpload, 422),
)


def _http_error(error: Exception) -> HTTPException:
    for kind, status in _STATUS:
        if isinstance(error, kind):
            headers = {"Retry-After": "30"} if status == 429 else None
            return HTTPException(status, detail=str(error), headers=headers)
    raise error


def _jobs(services: Services) -> JobManager:
    return services.jobs


def parse_effect_field(raw: str | None) -> EffectChoice:
    """The form field `effect`: JSON {"name", "params"} or a bare name; ValueError otherwise."""
    if raw is None or not raw.strip():
        raise ValueError('the form needs a field "effect", e.g. {"name": "makeup", "params": {}}')
    text = raw.strip()
    if not text.startswith("{"):
        return EffectChoice(text)
    try:
        body = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"the effect field is not valid JSON: {error.msg}") from None
    return EffectChoice.parse(body)


def check_source_faces(spec: EffectSpec, values: Mapping[str, Any], faces: Container[str]) -> None:
    """422 unless every face parameter names a stored face (checked at submit, so a job
    is never queued only to fail on a face that is not there)."""
    for name, param in spec.params.items():
        face_id = str(values.get(name) or "")
        if param.type != "face" or face_id in faces:
            continue
        problem = (
            f"unknown source face {face_id!r} (never uploaded, or removed since)"
            if face_id
            else f"effect {spec.name!r} needs a source face"
        )
        raise HTTPException(
            422,
            detail=f"{problem}: upload the face photo with POST /faces first "
            f"and pass its face_id in params.{name}",
        )


@router.post("/jobs", status_code=202)
async def create_job(request: Request, services: ServicesDep) -> JSONResponse:
    jobs = _jobs(services)
    try:
        jobs.check_capacity()
    except JobQueueFull as error:
        raise _http_error(error) from None
    job_id, folder = await asyncio.to_thread(jobs.new_folder)
    try:
        return await _accept(request, services, jobs, job_id, folder)
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, folder, True)
        raise


def _head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(SNIFF_BYTES)


async def _accept(
    request: Request, services: ServicesDep, jobs: JobManager, job_id: str, folder: Path
) -> JSONResponse:
    try:
        upload = await receive_upload(
            request, "file", folder / "input", services.settings.max_video_bytes
        )
        choice = parse_effect_field(upload.fields.get("effect"))
    except (UploadTooLarge, BadUpload) as error:
        raise _http_error(error) from None
    except ValueError as error:
        raise HTTPException(422, detail=str(error)) from None
    # Not a video container facestream takes -> 415 (stream.security's signature check).
    check_signature(
        await asyncio.to_thread(_head, upload.path), "video", upload.content_type, upload.filename
    )
    spec = get_effect_spec(choice.name)  # UnknownEffect -> 422 via the app's handlers
    check_source_faces(spec, spec.validate(choice.params), services.faces)  # InvalidParams: 422
    reason = spec.unavailable_reason(jobs.resources)
    if reason is not None:
        raise HTTPException(422, detail=f"effect {choice.name!r} is not available here: {reason}")
    try:
        info = await asyncio.to_thread(probe, upload.path, None, upload.filename)
        job = jobs.submit(
            job_id,
            folder,
            upload.path,
            upload.filename,
            choice.name,
            dict(choice.params),
            client_of(request),
            frames_total=info.frames,
        )
    except (MediaRejected, JobQueueFull) as error:
        raise _http_error(error) from None
    body = {
        "job_id": job.id,
        "status": f"/jobs/{job.id}",
        "events": f"/jobs/{job.id}/events",
        "result": f"/jobs/{job.id}/result",
    }
    return JSONResponse(body, status_code=202, headers={"Location": f"/jobs/{job.id}"})


@router.get("/jobs/{job_id}")
async def get_job(job_id: str, services: ServicesDep) -> dict[str, Any]:
    try:
        return _jobs(services).get(job_id).describe()
    except JobNotFound as error:
        raise _http_error(error) from None


@router.get("/jobs/{job_id}/events")
async def job_events(job_id: str, services: ServicesDep) -> StreamingResponse:
    jobs = _jobs(services)
    try:
        jobs.get(job_id)
    except JobNotFound as error:
        raise _http_error(error) from None

    async def stream() -> AsyncIterator[bytes]:
        async for snapshot in jobs.events(job_id):
            if snapshot is None:
                yield b": keep-alive\n\n"
                continue
            event = "progress" if snapshot["state"] in ("queued", "running") else snapshot["state"]
            yield f"event: {event}\ndata: {json.dumps(snapshot)}\n\n".encode()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


@router.get("/jobs/{job_id}/result")
async def job_result(job_id: str, services: ServicesDep) -> FileResponse:
    try:
        job = _jobs(services).result(job_id)
    except (JobNotFound, JobNotFinished, JobFailed) as error:
        raise _http_error(error) from None
    if not job.output_path.is_file():
        raise HTTPException(404, detail=f"the result of job {job_id} was removed")
    headers = {"Content-Disposition": content_disposition(job.download_name)}
    return FileResponse(job.output_path, media_type="video/mp4", headers=headers)


@router.delete("/jobs/{job_id}", status_code=204)
async def delete_job(job_id: str, services: ServicesDep) -> Response:
    try:
        await _jobs(services).cancel(job_id)
    except JobNotFound as error:
        raise _http_error(error) from None
    return Response(status_code=204)
