"""FaceTracker: quality on a clip with a known trajectory, lifecycle, association."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import PROJECT_ROOT, load_rgb, portrait_path
from detection_helpers import OCCLUDED_FRAMES, face_truth, tracking_clip

from tracking import FaceTracker, TrackState
from tracking.metrics import box_centres, centre_error, count_id_switches, jitter, link_boxes

LANDMARKS = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]])


def _face(cx: float, cy: float, size: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    """A box of `size` around (cx, cy) and landmarks placed in it."""
    box = np.array([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2])
    return box, box[:2] + LANDMARKS * size


def _feed(tracker: FaceTracker, faces: list[tuple[float, float]], score: float = 0.99) -> list:
    boxes, marks = zip(*(_face(x, y) for x, y in faces), strict=True) if faces else ((), ())
    return tracker.update(
        np.array(boxes).reshape(-1, 4),
        np.full(len(faces), score),
        np.array(marks).reshape(-1, 5, 2),
    )


@pytest.fixture(scope="module")
def clip_detections() -> dict[str, np.ndarray]:
    """Raw per-frame detections of our detector on the tracking clip (best face per frame)."""
    from engines.detection import FaceDetector

    clip = tracking_clip(load_rgb(portrait_path("paul_rudd"), 640))
    found = FaceDetector(min_face_size=60).detect(clip.frames)
    best = [d[np.argsort(-d.scores)[:1]] for d in found]
    return {
        "boxes": np.array([d.boxes[0] if len(d) else np.full(4, np.nan) for d in best]),
        "scores": np.array([d.scores[0] if len(d) else np.nan for d in best]),
        "landmarks": np.array(
            [d.landmarks[0] if len(d) else np.full((5, 2), np.nan) for d in best]
        ),
        "centres": clip.centres,
        "occluded": clip.occluded,
    }


def _track_clip(
    detections: dict[str, np.ndarray], smoothing: float
) -> tuple[np.ndarray, list[set[int]]]:
    tracker = FaceTracker(smoothing=smoothing)
    out = np.full((len(detections["boxes"]), 2), np.nan)
    ids = []
    for t, box in enumerate(detections["boxes"]):
        seen = np.isfinite(box).all()
        tracks = tracker.update(
            box[None] if seen else np.zeros((0, 4)),
            detections["scores"][t : t + 1] if seen else np.zeros(0),
            detections["landmarks"][t : t + 1] if seen else np.zeros((0, 5, 2)),
        )
        ids.append({track.id for track in tracks})
        if tracks:
            out[t] = box_centres(tracks[0].box[None])[0]
    return out, ids


def test_smoothing_removes_jitter_without_losing_accuracy(
    clip_detections: dict[str, np.ndarray],
) -> None:
    raw = box_centres(clip_detections["boxes"])
    truth = face_truth(raw, clip_detections["centres"], clip_detections["occluded"])
    tracked, ids = _track_clip(clip_detections, smoothing=0.5)
    assert not np.isfinite(raw[list(OCCLUDED_FRAMES)]).any(), "the occlusion hides the face"
    assert jitter(tracked) * 5 <= jitter(raw), (
        f"jitter {jitter(tracked):.3f} vs raw {jitter(raw):.3f}"
    )
    assert centre_error(tracked, truth) <= centre_error(raw, truth)
    assert set().union(*ids) == {1}, "one face, one id, through the occlusion"
    assert all(ids[t] == {1} for t in range(1, len(ids))), "visible on every frame after the first"


def test_no_smoothing_gives_the_raw_boxes(clip_detections: dict[str, np.ndarray]) -> None:
    raw = box_centres(clip_detections["boxes"])
    tracked, _ = _track_clip(clip_detections, smoothing=0.0)
    seen = np.isfinite(raw).all(axis=1)
    np.testing.assert_allclose(tracked[seen], raw[seen], atol=1e-3)


@pytest.mark.parametrize(
    ("score", "frames_seen", "visible"),
    [(0.85, 1, False), (0.85, 2, False), (0.85, 3, True), (0.99, 1, True)],
)
def test_tracks_are_confirmed_by_hits_or_a_confident_detection(
    score: float, frames_seen: int, visible: bool
) -> None:
    tracker = FaceTracker(min_hits=3, confirm_score=0.98)
    tracks: list = []
    for frame in range(frames_seen):
        tracks = _feed(tracker, [(100 + 2 * frame, 100)], score=score)
    assert bool(tracks) is visible
    assert len(tracker.tracks) == 1
    if visible:
        assert tracks[0].id == 1 and tracks[0].state is TrackState.CONFIRMED


@pytest.mark.parametrize(
    ("misses", "state", "shown", "alive"),
    [
        (1, TrackState.LOST, True, True),
        (5, TrackState.LOST, True, True),
        (6, TrackState.LOST, False, True),
        (31, None, False, False),
    ],
)
def test_a_lost_track_coasts_then_disappears(
    misses: int, state: TrackState | None, shown: bool, alive: bool
) -> None:
    tracker = FaceTracker(visible_misses=5, max_misses=30)
    for frame in range(5):
        _feed(tracker, [(100 + 3 * frame, 100)])
    for _ in range(misses):
        tracks = _feed(tracker, [])
    assert bool(tracks) is shown
    live = tracker.tracks
    assert bool(live) is alive
    if alive:
        assert live[0].state is state and live[0].misses == misses and live[0].id == 1
        assert live[0].box[0] > 100 + 3 * 4 - 50, "coasting goes on moving"


def test_a_tentative_track_that_misses_is_removed() -> None:
    tracker = FaceTracker(min_hits=3)
    _feed(tracker, [(100, 100)], score=0.85)
    _feed(tracker, [])
    assert tracker.tracks == []


def test_ids_survive_a_gap_and_restart_after_reset() -> None:
    tracker = FaceTracker()
    for frame in range(4):
        _feed(tracker, [(100 + 4 * frame, 100), (400, 300)])
    for _ in range(3):
        _feed(tracker, [(400, 300)])
    tracks = _feed(tracker, [(100 + 4 * 7, 100), (400, 300)])
    assert [t.id for t in tracks] == [1, 2]
    tracker.reset()
    assert [t.id for t in _feed(tracker, [(400, 300)])] == [1]


def test_crossing_faces_keep_their_ids() -> None:
    tracker = FaceTracker()
    for frame in range(40):
        a, b = (100 + 8 * frame, 200), (420 - 8 * frame, 215)
        tracks = _feed(tracker, [a, b])
        by_id = {t.id: box_centres(t.box[None])[0][0] for t in tracks}
        if frame > 2:
            assert by_id[1] == pytest.approx(a[0], abs=12) and by_id[2] == pytest.approx(
                b[0], abs=12
            )


def test_a_face_found_again_after_drifting_keeps_its_id() -> None:
    tracker = FaceTracker()
    for frame in range(10):
        _feed(tracker, [(100 + 10 * frame, 100)])
    for _ in range(4):
        _feed(tracker, [])
    # It stopped while hidden: far behind the prediction, IoU 0, but within a face size.
    tracks = _feed(tracker, [(200, 100)])
    assert [t.id for t in tracks] == [1]


def test_metrics() -> None:
    line = np.stack([np.arange(10.0) * 3, np.arange(10.0)], axis=1)
    assert jitter(line) == pytest.approx(0.0)
    assert centre_error(line + np.array([3.0, 4.0]), line) == pytest.approx(5.0)
    box = {1: np.array([0, 0, 10, 10.0])}
    other = {7: np.array([0, 0, 10, 10.0])}
    assert count_id_switches([box, box, box], [box, other, other]) == (1, 3)
    moved = np.array([[2, 0, 12, 10.0]])
    far = np.array([[50, 50, 60, 60.0]])
    assert [list(f) for f in link_boxes([box[1][None], moved, far, np.zeros((0, 4)), far])] == [
        [1],
        [1],
        [2],
        [],
        [3],
    ]


def test_tracking_imports_neither_torch_nor_engines() -> None:
    code = "import sys, tracking, tracking.metrics; print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'engines')))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
