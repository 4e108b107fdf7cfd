"""FaceTracker: Kalman-smoothed face tracks with stable ids.

Per frame: predict every track, match the frame's detections to the predictions
(IoU, Hungarian; then centre distance for coasting tracks), correct the matched
tracks, start tentative tracks from the unmatched detections and age the rest.

Lifecycle: a new track is TENTATIVE until it has `min_hits` hits in a row (or one
detection scoring at least `confirm_score`); it then gets the next id and is
CONFIRMED. A confirmed track that misses a frame is LOST and coasts on its
prediction; a hit makes it CONFIRMED again with the same id. A tentative track
that misses, or a lost track that misses more than `max_misses` frames in a row,
is REMOVED.

Time: given each frame's time (`time_s`), the filters advance by the time that
passed, in steps of 1/`frame_rate` s (the rate the noise model is tuned for), so
the smoothing is the same at any frame rate and a skipped frame is predicted two
steps ahead; without times every frame is one step. Counts (age, misses) stay in
frames.

numpy, scipy and filterpy only. Boxes are x1, y1, x2, y2 float pixels.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

import numpy as np

from tracking.association import associate, iou_matrix
from tracking.kalman import BoxFilter, LandmarkAnchor, LandmarkSmoother, SmoothingConfig

logger = logging.getLogger(__name__)

DEFAULT_FRAME_RATE = 30.0  # the rate the noise model (SmoothingConfig) is tuned for
MIN_STEPS = 0.05  # filter steps between two frames with times: at most 600 fps ...
MAX_STEPS = 10.0  # ... and a gap of at most 1/3 s at 30 fps is predicted in full


class TrackState(enum.Enum):
    TENTATIVE = "tentative"
    CONFIRMED = "confirmed"
    LOST = "lost"
    REMOVED = "removed"


@dataclass(frozen=True)
class Track:
    """One face track after an update (a snapshot; the tracker keeps its own state).

    id: stable id (from 1), -1 while tentative. box: (4,) float32 smoothed box.
    landmarks: (5, 2) float32 smoothed landmarks. score: last detection score.
    age: frames since the track started. hits: detections matched so far.
    misses: frames in a row without a detection. velocity: (2,) float32 centre
    velocity, pixels per step (per frame without frame times, else per 1/frame_rate s).
    """

    id: int
    box: np.ndarray
    landmarks: np.ndarray
    score: float
    state: TrackState
    age: int
    hits: int
    misses: int
    velocity: np.ndarray

    @property
    def is_confirmed(self) -> bool:
        return self.state in (TrackState.CONFIRMED, TrackState.LOST)


class _LiveTrack:
    """The mutable state of one track."""

    def __init__(
        self, box: np.ndarray, score: float, landmarks: np.ndarray, config: SmoothingConfig
    ) -> None:
        self.anchor = LandmarkAnchor(box, landmarks)
        self.filter = BoxFilter(self.anchor.steady_box(box, landmarks), config)
        self.landmarks = LandmarkSmoother(landmarks, box, config.landmark_alpha)
        self.raw_box = np.asarray(box, np.float64)
        self.raw_landmarks = np.asarray(landmarks, np.float64)
        self.id = -1
        self.score = float(score)
        self.state = TrackState.TENTATIVE
        self.age = 0
        self.hits = 1
        self.streak = 1
        self.misses = 0
        self.since_hit = 0.0  # steps predicted since the last detection

    def predict(self, steps: float) -> None:
        self.filter.predict(steps)
        self.since_hit += steps
        self.age += 1

    def hit(self, box: np.ndarray, score: float, landmarks: np.ndarray) -> None:
        self.filter.update(self.anchor.steady_box(box, landmarks))
        self.landmarks.update(landmarks, box, self.since_hit)
        self.since_hit = 0.0
        self.raw_box, self.raw_landmarks = (
            np.asarray(box, np.float64),
            np.asarray(landmarks, np.float64),
        )
        self.score = float(score)
        self.hits += 1
        self.streak += 1
        self.misses = 0

    def snapshot(self, raw: bool) -> Track:
        box = self.raw_box if raw and self.misses == 0 else self.filter.box
        marks = self.raw_landmarks if raw and self.misses == 0 else self.landmarks.landmarks(box)
        return Track(
            id=self.id,
            box=box.astype(np.float32),
            landmarks=marks.astype(np.float32),
            score=self.score,
            state=self.state,
            age=self.age,
            hits=self.hits,
            misses=self.misses,
            velocity=self.filter.centre_velocity.astype(np.float32),
        )


class FaceTracker:
    """Tracks faces across frames from per-frame detections.

    smoothing: 0 = raw detected boxes, 1 = heaviest smoothing (0.5 is a good default).
    iou_threshold: least IoU between a prediction and a detection to match them.
    min_hits: hits in a row that confirm a tentative track.
    confirm_score: a detection at least this confident confirms a track at once.
    max_misses: frames a confirmed track coasts without detections before removal.
    visible_misses: frames a coasting track is still returned by `update`.
    min_score: detections below this score start no track.
    max_distance, max_scale_ratio: gates of the second, centre-distance match for
        coasting tracks (distance in face scales; size ratio).
    frame_rate: frames per second the noise model is tuned for; with frame times, one
        step of the filters is 1/frame_rate s (see the module docstring).
    """

    def __init__(
        self,
        smoothing: float = 0.5,
        iou_threshold: float = 0.3,
        min_hits: int = 3,
        confirm_score: float = 0.98,
        max_misses: int = 30,
        visible_misses: int = 5,
        min_score: float = 0.8,
        max_distance: float = 1.0,
        max_scale_ratio: float = 1.5,
        frame_rate: float = DEFAULT_FRAME_RATE,
    ) -> None:
        if min_hits < 1 or max_misses < 0 or visible_misses < 0:
            raise ValueError("min_hits must be >= 1 and max_misses, visible_misses >= 0")
        if not frame_rate > 0:
            raise ValueError(f"frame_rate must be positive, got {frame_rate}")
        self.frame_rate = frame_rate
        self.config = SmoothingConfig.from_strength(smoothing)
        self.smoothing = smoothing
        self.iou_threshold = iou_threshold
        self.min_hits = min_hits
        self.confirm_score = confirm_score
        self.max_misses = max_misses
        self.visible_misses = visible_misses
        self.min_score = min_score
        self.max_distance = max_distance
        self.max_scale_ratio = max_scale_ratio
        self._tracks: list[_LiveTrack] = []
        self._next_id = 1
        self._predicted = False
        self._last_time: float | None = None
        self.frame_count = 0

    def reset(self) -> None:
        """Forget every track; ids start again from 1."""
        self._tracks = []
        self._next_id = 1
        self._predicted = False
        self._last_time = None
        self.frame_count = 0

    @property
    def tracks(self) -> list[Track]:
        """Every live track (tentative, confirmed and coasting), as snapshots."""
        return [t.snapshot(self.smoothing == 0) for t in self._tracks]

    def predict(self, time_s: float | None = None) -> list[Track]:
        """Advance every track to the coming frame; returns their predicted snapshots.

        time_s: the coming frame's presentation time in seconds (None: one step on).
        Optional: `update` predicts by itself when this was not called for the frame.
        """
        if not self._predicted:
            steps = self._steps(time_s)
            for track in self._tracks:
                track.predict(steps)
            self._predicted = True
        return [t.snapshot(False) for t in self._tracks]

    def _steps(self, time_s: float | None) -> float:
        """Filter steps from the last frame to one at `time_s`: the time between them
        times frame_rate, within [MIN_STEPS, MAX_STEPS] (a long gap is not extrapolated
        in full); 1 without times, or when the time did not go forward."""
        last, self._last_time = self._last_time, time_s
        if time_s is None or last is None or time_s <= last:
            return 1.0
        return min(max((time_s - last) * self.frame_rate, MIN_STEPS), MAX_STEPS)

    def update(
        self,
        boxes: np.ndarray,
        scores: np.ndarray,
        landmarks: np.ndarray,
        time_s: float | None = None,
    ) -> list[Track]:
        """Feed one frame's detections; returns the visible tracks.

        boxes: (N, 4) float x1, y1, x2, y2 pixels; scores: (N,); landmarks: (N, 5, 2).
        time_s: the frame's presentation time in seconds, None when unknown (see
        `predict`). Visible: confirmed tracks matched in this frame, and those coasting
        for at most `visible_misses` frames; sorted by id.
        """
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        landmarks = np.asarray(landmarks, np.float64)
        landmarks = (
            landmarks.reshape(len(boxes), -1, 2) if landmarks.size else np.zeros((len(boxes), 5, 2))
        )
        if not (len(boxes) == len(scores) == len(landmarks)):
            raise ValueError(
                f"boxes, scores and landmarks differ in length: {len(boxes)}, {len(scores)}, {len(landmarks)}"
            )
        self.predict(time_s)
        self._predicted = False
        self.frame_count += 1
        predicted = np.array([t.filter.box for t in self._tracks]).reshape(-1, 4)
        lost = np.array([t.state is TrackState.LOST for t in self._tracks], bool)
        matches = associate(
            predicted, boxes, lost, self.iou_threshold, self.max_distance, self.max_scale_ratio
        )
        for track_index, det_index in matches.pairs:
            self._tracks[track_index].hit(boxes[det_index], scores[det_index], landmarks[det_index])
        for track_index in matches.unmatched_tracks:
            self._miss(self._tracks[track_index])
        self._start_tracks(boxes, scores, landmarks, matches.unmatched_detections)
        for track in self._tracks:
            self._promote(track)
        self._tracks = [t for t in self._tracks if t.state is not TrackState.REMOVED]
        return self._visible()

    def _miss(self, track: _LiveTrack) -> None:
        track.misses += 1
        track.streak = 0
        if track.state is TrackState.TENTATIVE or track.misses > self.max_misses:
            track.state = TrackState.REMOVED
            logger.debug("track %d removed after %d misses", track.id, track.misses)
        else:
            track.state = TrackState.LOST

    def _start_tracks(
        self, boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray, candidates: np.ndarray
    ) -> None:
        """Tentative tracks from unmatched, confident detections that no live track covers."""
        live = np.array([t.filter.box for t in self._tracks]).reshape(-1, 4)
        for index in candidates:
            if scores[index] < self.min_score:
                continue
            if len(live) and iou_matrix(boxes[index : index + 1], live).max() > 0.5:
                continue
            track = _LiveTrack(boxes[index], scores[index], landmarks[index], self.config)
            self._tracks.append(track)
            live = np.concatenate([live, boxes[index : index + 1]])

    def _promote(self, track: _LiveTrack) -> None:
        """A track hit in this frame: confirm it when it has earned it."""
        if track.misses or track.state is TrackState.REMOVED:
            return
        if track.state is TrackState.TENTATIVE:
            if track.streak < self.min_hits and track.score < self.confirm_score:
                return
            track.id = self._next_id
            self._next_id += 1
            logger.debug("track %d confirmed", track.id)
        track.state = TrackState.CONFIRMED

    def _visible(self) -> list[Track]:
        raw = self.smoothing == 0
        shown = [
            t.snapshot(raw) for t in self._tracks if t.id >= 0 and t.misses <= self.visible_misses
        ]
        return sorted(shown, key=lambda track: track.id)
