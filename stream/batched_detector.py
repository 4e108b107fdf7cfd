"""Face detection shared by every live session on one device, batched across sessions.

With cross-session batching on, each session's face stage talks to a
:class:`BatchedDetector`: the same `detect` / `detect_in_regions` / `min_face_size`
surface as engines.detection.FaceDetector, but each call becomes a request to one
shared :class:`engines.batching.BatchScheduler`. The scheduler's thread is the only
one that touches the real detector (which is not thread-safe, and whose compiled
engines record CUDA graphs per thread); it runs the requests of all sessions that
arrived within the wait window as one batch (:func:`run_detections`) and hands each
session its own result, in order. A request that fails alone (a bad image) fails only
its caller.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from engines.batching import BatchScheduler
from engines.types import Detections


class Detector(Protocol):
    """What the face stage and the face store use of a face detector (FaceDetector's shape)."""

    @property
    def min_face_size(self) -> float: ...

    def detect(self, images: Sequence[np.ndarray] | np.ndarray) -> list[Detections]: ...

    def detect_in_regions(self, image: np.ndarray, boxes: np.ndarray) -> Detections: ...


@dataclass(frozen=True)
class DetectRequest:
    """One detection asked for by one session.

    image: HxWx3 uint8 RGB, host memory; the caller leaves it unchanged until answered.
    regions: None for a full detection (the whole MTCNN pyramid); else (K, 4) float
        x1, y1, x2, y2 pixels: refine only near these boxes (FaceDetector.detect_in_regions).
    """

    image: np.ndarray
    regions: np.ndarray | None = None


def run_detections(detector: Detector, requests: Sequence[DetectRequest]) -> list[Detections]:
    """One batch of requests, results in request order.

    Every full detection goes into one `detect(list)` call (the detector runs frames of
    the same size through one pyramid pass); region refinements run one after another
    (each reads only the area around its own boxes).
    """
    results: list[Detections | None] = [None] * len(requests)
    full = [index for index, request in enumerate(requests) if request.regions is None]
    if full:
        found = detector.detect([requests[index].image for index in full])
        for index, detections in zip(full, found, strict=True):
            results[index] = detections
    for index, request in enumerate(requests):
        if request.regions is not None:
            results[index] = detector.detect_in_regions(request.image, request.regions)
    return [Detections.empty() if r is None else r for r in results]


class BatchedDetector:
    """A face detector whose calls are batched with other sessions' by `scheduler`.

    scheduler: runs DetectRequests (see run_detections) in its own thread.
    min_face_size: the real detector's, pixels (read from the settings, so making a
        facade never loads the model).
    session: who asks (one per face stage): that session's requests keep their order,
        and the scheduler stops waiting for company once every active session has asked.
        None for one-off callers (an uploaded image).

    Thread-safe: any number of threads may call it; each call blocks until its result
    is there. Raises what the request raised on its own (e.g. InvalidImage), or
    BatchRejected when the scheduler's queue is full or it has shut down.
    """

    def __init__(
        self,
        scheduler: BatchScheduler[DetectRequest, Detections],
        min_face_size: float,
        session: Hashable | None = None,
    ) -> None:
        self.scheduler = scheduler
        self._min_face_size = float(min_face_size)
        self.session = session

    def __repr__(self) -> str:
        return f"BatchedDetector({self.scheduler!r}, min_face_size={self._min_face_size:g})"

    @property
    def min_face_size(self) -> float:
        return self._min_face_size

    def for_session(self, session: Hashable) -> BatchedDetector:
        """A facade on the same scheduler for another session."""
        return BatchedDetector(self.scheduler, self._min_face_size, session)

    def detect(self, images: Sequence[np.ndarray] | np.ndarray) -> list[Detections]:
        """Faces in each image (HxWx3 uint8 RGB numpy arrays; one such array, or a
        (B, H, W, 3) array); one Detections per image, in order."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        futures = [
            self.scheduler.submit(DetectRequest(image), session=self.session) for image in images
        ]
        return [future.result() for future in futures]

    def detect_in_regions(self, image: np.ndarray, boxes: np.ndarray) -> Detections:
        """Faces near `boxes` ((K, 4) float x1, y1, x2, y2 pixels) in `image` (HxWx3 uint8
        RGB): FaceDetector.detect_in_regions, batched."""
        regions = np.asarray(boxes, dtype=np.float32)
        request = DetectRequest(image, regions)
        return self.scheduler.submit(request, session=self.session).result()
