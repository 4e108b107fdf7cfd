"""The face stage of the pipeline: detection policy plus tracking.

The full detector (the MTCNN pyramid over the whole frame) runs every
`detect_every` frames, and on the frame where a visible track is not found any
more (unless the full detector ran on the frame before: the face is then hidden,
not moved; and not for faces below the detector's minimum size). On the frames in between each track is followed cheaply: the detector's
R-Net/O-Net refinement runs only around the track's predicted box. Either way the
detections feed one FaceTracker, whose smoothed tracks become `ctx.faces`.

The policy depends only on the frame sequence, not on time, so a file conversion
(every frame, in order) and a live session follow the same rules; the tracker's
filters advance by each frame's time (`ctx.time_s`) when it is known. Runs in the
model worker thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from engines.types import Detections, Face
from stream.batched_detector import Detector
from stream.pipeline import FrameContext
from tracking import FaceTracker, Track, TrackState
from tracking.association import iou_matrix

logger = logging.getLogger(__name__)


@dataclass
class FaceStageStats:
    """How often each kind of detection ran since the last reset."""

    frames: int = 0
    full_detections: int = 0
    region_detections: int = 0
    lost_triggers: int = 0


class FaceStage:
    """Detection + tracking for one session or file.

    detector: the worker's face detector (an engines.detection.FaceDetector, or a
        BatchedDetector when sessions share batched calls).
    detect_every: run the full detector every N frames (1 = every frame).
    smoothing: tracker smoothing, 0 = raw boxes, 1 = heaviest.
    follow: follow tracks between full detections by region refinement; when
        False those frames get no detections and tracks coast on their prediction.
    tracker: a configured FaceTracker (default: one with `smoothing`).
    """

    name = "faces"

    def __init__(
        self,
        detector: Detector,
        detect_every: int = 5,
        smoothing: float = 0.5,
        follow: bool = True,
        tracker: FaceTracker | None = None,
    ) -> None:
        if detect_every < 1:
            raise ValueError(f"detect_every must be at least 1, got {detect_every}")
        self.detector = detector
        self.detect_every = detect_every
        self.follow = follow
        self.tracker = tracker if tracker is not None else FaceTracker(smoothing=smoothing)
        self.stats = FaceStageStats()
        self._since_full: int | None = None
        self._refuted: set[int] = set()  # ids a full detection missed and nothing matched since

    def process(self, ctx: FrameContext) -> None:
        """Find and track the faces of `ctx.image` (HxWx3 uint8 RGB); sets `ctx.faces`."""
        full_before = self.stats.full_detections
        detections = self._detections(ctx.image, ctx.time_s)
        tracks = self.tracker.update(
            detections.boxes, detections.scores, detections.landmarks, ctx.time_s
        )
        missing = {track.id for track in tracks if track.misses > 0}
        if self.stats.full_detections > full_before:
            # The whole frame was searched: a track nothing matched is not there (a cut, a
            # jump, the person left). It stays hidden until a detection matches it again,
            # so no effect is drawn where its prediction points.
            self._refuted = missing
        else:
            self._refuted &= missing
        tracks = [track for track in tracks if track.id not in self._refuted]
        ctx.faces = [to_face(track) for track in tracks]
        self.stats.frames += 1

    def reset(self) -> None:
        self.tracker.reset()
        self.stats = FaceStageStats()
        self._since_full = None
        self._refuted = set()

    def _detections(self, image: np.ndarray, time_s: float | None) -> Detections:
        due = self._since_full is None or self._since_full + 1 >= self.detect_every
        live = self.tracker.predict(time_s)
        if not due:
            if not live or not self.follow:
                self._since_full = (self._since_full or 0) + 1
                return Detections.empty()
            found = self.detector.detect_in_regions(image, np.stack([t.box for t in live]))
            self.stats.region_detections += 1
            if self._since_full == 0 or not _newly_lost(
                live, found, self.tracker.iou_threshold, self.detector.min_face_size
            ):
                self._since_full = (self._since_full or 0) + 1
                return found
            self.stats.lost_triggers += 1
            logger.debug("a track was lost: full detection")
        self._since_full = 0
        self.stats.full_detections += 1
        return self.detector.detect([image])[0]


def _newly_lost(
    live: list[Track], found: Detections, iou_threshold: float, min_size: float
) -> bool:
    """Whether a track that was visible on the last frame has no detection near it now.

    Faces smaller than the detector's minimum size are not watched: the detector finds
    them only sometimes, and each miss would cost a full detection.
    """
    watched = [
        t
        for t in live
        if t.state is TrackState.CONFIRMED
        and np.sqrt(max(t.box[2] - t.box[0], 0) * max(t.box[3] - t.box[1], 0)) >= min_size
    ]
    if not watched:
        return False
    if len(found) == 0:
        return True
    overlap = iou_matrix(np.stack([t.box for t in watched]), found.boxes)
    return bool((overlap.max(axis=1) < iou_threshold).any())


def to_face(track: Track) -> Face:
    """The effects' view of a track."""
    return Face(track_id=track.id, box=track.box, landmarks5=track.landmarks, score=track.score)
