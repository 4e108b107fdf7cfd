"""The landmark stage: dlib 68-point landmarks on every tracked face, smoothed per track.

Runs after the face stage for effects with `needs_landmarks68`. Smoothing state is
per track_id and per session (one stage per pipeline); tracks that have not been
seen for `forget_after` frames are dropped.
"""

from __future__ import annotations

import dataclasses
import logging

from engines.landmark_filter import LandmarkSmoother
from engines.landmarks import LandmarkPredictor
from stream.pipeline import FrameContext

logger = logging.getLogger(__name__)


class LandmarkStage:
    """Fills `Face.landmarks68` on `ctx.faces`.

    predictor: shared LandmarkPredictor (worker thread only). smoothing: strength of
    the temporal filter (0 = raw landmarks). The filter runs on the frames' own times
    (`ctx.time_s`), so it smooths alike at any frame rate, over variable frame rates
    and across frames a live session skipped; frame_rate (frames per second) is the
    fallback for frames without a time, whose time is then `ctx.index / frame_rate`.
    """

    name = "landmarks68"

    def __init__(
        self,
        predictor: LandmarkPredictor,
        smoothing: float = 1.0,
        frame_rate: float = 30.0,
        forget_after: int = 15,
    ) -> None:
        self.predictor = predictor
        self.smoothing = smoothing
        self.frame_rate = frame_rate
        self.forget_after = forget_after
        self._smoothers: dict[int, LandmarkSmoother] = {}
        self._last_seen: dict[int, int] = {}

    def process(self, ctx: FrameContext) -> None:
        if ctx.faces:
            points = self.predictor.predict_faces(ctx.image, ctx.faces)
            time_s = ctx.time_s if ctx.time_s is not None else ctx.index / self.frame_rate
            faces = []
            for face, face_points in zip(ctx.faces, points, strict=True):
                smoothed = face_points
                if face.track_id >= 0 and self.smoothing > 0:
                    smoother = self._smoothers.get(face.track_id)
                    if smoother is None:
                        smoother = self._smoothers[face.track_id] = LandmarkSmoother(self.smoothing)
                    smoothed = smoother(face_points, time_s)
                    self._last_seen[face.track_id] = ctx.index
                faces.append(dataclasses.replace(face, landmarks68=smoothed))
            ctx.faces = faces
        self._forget_stale(ctx.index)

    def _forget_stale(self, index: int) -> None:
        stale = [tid for tid, seen in self._last_seen.items() if index - seen > self.forget_after]
        for track_id in stale:
            del self._last_seen[track_id]
            self._smoothers.pop(track_id, None)
            logger.debug("landmark smoothing of track %d forgotten", track_id)

    def reset(self) -> None:
        self._smoothers.clear()
        self._last_seen.clear()
