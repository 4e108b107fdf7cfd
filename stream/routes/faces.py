"""POST /faces (upload a swap source), DELETE /faces/{id}, POST /similarity.

POST /faces: multipart with a file field `file` (JPEG, PNG or WebP) and a form field
`consent` that must be true ("true", "on", "1" or "yes": the uploader confirms they
may use this person's face) -> {"face_id"}. 422 when the photo holds no face or
more than one, 413 over `max_image_bytes`, 415 when the file is not an image.

POST /similarity: multipart `image_a`, `image_b` -> {"distance", "same_person",
"threshold"} between the largest face of each (dlib 128-d encodings).
"""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Annotated, Any

import cv2
import numpy as np
from fastapi import APIRouter, File, Form, HTTPException, Request, Response, UploadFile

from engines.errors import NoFaceFound
from engines.types import Face
from stream.deps import ServicesDep, client_of
from stream.face_store import ConsentRequired
from stream.security.image_size import MAX_IMAGE_PIXELS, pixel_size
from stream.security.uploads import check_upload
from stream.services import Services

logger = logging.getLogger(__name__)

router = APIRouter()

# Faces are compared on copies of at most this many pixels a side (encodings use a
# 150 px face chip; detection on a full-size phone photo would take seconds).
_SIMILARITY_SIDE = 1280
_TRUE = {"true", "on", "1", "yes"}


async def read_image(upload: UploadFile, limit: int, field: str) -> np.ndarray:
    """An uploaded image as HxWx3 uint8 RGB (EXIF rotation applied).

    413 over `limit` bytes, 415 when not JPEG/PNG/WebP, 422 when it does not decode."""
    await check_upload(upload, "image")
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(
            413,
            detail=f"{field}: the image is larger than the limit of {_megabytes(limit)}: "
            "make it smaller (a lower resolution or a stronger JPEG compression) and upload it again",
        )
    return await asyncio.to_thread(_decode, data, field)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:g} MB" if size >= 1_000_000 else f"{size} bytes"


def _decode(data: bytes, field: str) -> np.ndarray:
    """JPEG/PNG/WebP bytes as HxWx3 uint8 RGB; 422 over MAX_IMAGE_PIXELS (checked on the
    header, before Pillow opens it) or when the image does not decode."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    size = pixel_size(data)
    if size is not None:
        _check_pixels(*size, field=field)
    try:
        with Image.open(io.BytesIO(data)) as image:
            _check_pixels(*image.size, field=field)
            rgb = ImageOps.exif_transpose(image).convert("RGB")
            return np.array(rgb, dtype=np.uint8)  # a writable copy
    except Image.DecompressionBombError:  # a size the header check did not read
        raise HTTPException(
            422, detail=f"{field}: the photo has more pixels than {_PIXEL_LIMIT_ADVICE}"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise HTTPException(
            422, detail=f"{field}: the image could not be decoded ({error})"
        ) from None


_PIXEL_LIMIT_ADVICE = (
    f"the limit of {MAX_IMAGE_PIXELS / 1e6:g} megapixels: make it smaller "
    "(for example 2000 pixels on the longer side) and upload it again"
)


def _check_pixels(width: int, height: int, field: str) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise HTTPException(
            422,
            detail=f"{field}: the photo is {width}x{height} pixels, more than {_PIXEL_LIMIT_ADVICE}",
        )


def _consented(value: str | None) -> bool:
    return value is not None and value.strip().lower() in _TRUE


@router.post("/faces")
async def upload_face(
    services: ServicesDep,
    request: Request,
    file: Annotated[UploadFile, File(description="the photo of one face (JPEG, PNG or WebP)")],
    consent: Annotated[
        str | None, Form(description="true: you have the right to use this person's face")
    ] = None,
) -> dict[str, str]:
    if not _consented(consent):
        raise ConsentRequired(
            "consent is required: send the form field consent=true to confirm that you "
            "have the right to use this person's face"
        )
    image = await read_image(file, services.settings.max_image_bytes, "file")
    face_id = await services.worker.run(_store_face, services, image)
    services.audit.record("face.upload", client=client_of(request), face_id=face_id, consent=True)
    return {"face_id": face_id}


def _store_face(services: Services, image: np.ndarray) -> str:
    """In the worker thread: count faces with the shared MTCNN and store the upload."""
    return services.faces.add(image, consent=True, detector=services.models.detector)


@router.delete("/faces/{face_id}", status_code=204)
async def delete_face(face_id: str, services: ServicesDep, request: Request) -> Response:
    """Delete the face and stop every session and job using it (consent withdrawn)."""
    if not await services.delete_face(face_id, client_of(request)):
        raise HTTPException(404, detail=f"no stored face {face_id!r}")
    return Response(status_code=204)


@router.post("/similarity")
async def similarity(
    services: ServicesDep,
    image_a: Annotated[UploadFile, File(description="the first photo (JPEG, PNG or WebP)")],
    image_b: Annotated[UploadFile, File(description="the second photo (JPEG, PNG or WebP)")],
) -> dict[str, Any]:
    limit = services.settings.max_image_bytes
    first = await read_image(image_a, limit, "image_a")
    second = await read_image(image_b, limit, "image_b")
    return await services.worker.run(_compare, services, first, second)


def _compare(services: Services, first: np.ndarray, second: np.ndarray) -> dict[str, Any]:
    """In the worker thread: largest face of each image, encodings, distance."""
    from engines.similarity import compare, shared_encoder

    encoder = shared_encoder()
    encodings = []
    for field, full in (("image_a", first), ("image_b", second)):
        image = _at_most(full, _SIMILARITY_SIDE)
        face = _largest_face(services, image, field)
        encodings.append(encoder.encode_faces(image, [face])[0])
    result = compare(encodings[0], encodings[1])
    return {
        "distance": result.distance,
        "same_person": result.same_person,
        "threshold": result.threshold,
    }


def _at_most(image: np.ndarray, side: int) -> np.ndarray:
    """`image` scaled down so its longer side is at most `side` pixels."""
    scale = side / max(image.shape[:2])
    if scale >= 1.0:
        return image
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def _largest_face(services: Services, image: np.ndarray, field: str) -> Face:
    found = services.models.detector.detect([image])[0]
    if not len(found):
        raise NoFaceFound(f"{field}: no face found; use a photo with a clearly visible face")
    faces = Face.from_detections(found)
    face = max(faces, key=lambda f: f.width * f.height)
    return Face(
        face.track_id,
        face.box,
        face.landmarks5,
        face.score,
        services.models.landmarker.predict_faces(image, [face])[0],
    )
