"""FaceStage (detection policy + tracking) and the debug effect, with the real detector."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load_rgb, portrait_path
from detection_helpers import face_truth, tracking_clip
from synthetic import make_clip

from engines.detection import FaceDetector
from engines.effects.base import EffectResources
from engines.effects.debug import track_colour
from engines.effects.registry import build_effect, get_effect_spec
from engines.types import Face
from stream.face_stage import FaceStage
from stream.pipeline import EffectPipeline, FrameContext, StageFactories
from tracking.metrics import box_centres, centre_error, jitter

FRAMES = 40


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(min_face_size=60)


@pytest.fixture(scope="module")
def clip() -> object:
    return tracking_clip(load_rgb(portrait_path("paul_rudd"), 640), frames=FRAMES)


def _run(stage: FaceStage, frames: list[np.ndarray]) -> list[list[Face]]:
    faces = []
    for index, frame in enumerate(frames):
        ctx = FrameContext(image=frame.copy(), index=index)
        stage.process(ctx)
        faces.append(ctx.faces)
    return faces


@pytest.mark.parametrize("detect_every", [1, 5, 12])
def test_full_detection_runs_every_n_frames_and_tracks_follow_in_between(
    detect_every: int, detector: FaceDetector, clip: object
) -> None:
    stage = FaceStage(detector, detect_every=detect_every, smoothing=0.5)
    faces = _run(stage, clip.frames)  # type: ignore[attr-defined]
    stats = stage.stats
    assert stats.frames == FRAMES and stats.lost_triggers == 0, "no occlusion in these frames"
    assert stats.full_detections == -(-FRAMES // detect_every)
    assert stats.region_detections == FRAMES - stats.full_detections
    assert all(len(f) == 1 and f[0].track_id == 1 for f in faces), "one face, one id, every frame"
    centres = np.array([box_centres(f[0].box[None])[0] for f in faces])
    truth = face_truth(centres, clip.centres, np.zeros(FRAMES, bool))  # type: ignore[attr-defined]
    assert centre_error(centres, truth) < 3.0
    assert jitter(centres) < 1.5
    face = faces[-1][0]
    assert face.box.shape == (4,) and face.landmarks5.shape == (5, 2) and 0.9 < face.score <= 1.0


def test_a_face_that_jumps_away_triggers_a_full_detection_at_once(detector: FaceDetector) -> None:
    portrait = load_rgb(portrait_path("paul_rudd"), 640)
    centres = np.array([[200.0 + 2 * t, 230.0] for t in range(6)] + [[470.0, 250.0]] * 3)
    frames = make_clip(portrait, centres, portrait_height=300).frames
    stage = FaceStage(detector, detect_every=30)
    faces = _run(stage, frames)
    assert stage.stats.lost_triggers >= 1
    jumped = [f for f in faces[6] if f.track_id >= 0]
    assert jumped, "the face is reported where it went, on the frame it got there"
    assert abs(box_centres(jumped[-1].box[None])[0][0] - 470) < 60


def test_no_face_is_reported_where_the_person_no_longer_is(detector: FaceDetector) -> None:
    """After a jump (a cut, a loop), the old track coasts in the tracker but no effect may be
    drawn at its predicted place: only the face where the person now is gets reported."""
    portrait = load_rgb(portrait_path("paul_rudd"), 640)
    centres = np.array([[200.0 + 2 * t, 230.0] for t in range(6)] + [[470.0, 250.0]] * 6)
    frames = make_clip(portrait, centres, portrait_height=300).frames
    faces = _run(FaceStage(detector, detect_every=30), frames)
    for index in range(6, len(frames)):
        xs = [box_centres(f.box[None])[0][0] for f in faces[index]]
        assert xs, f"frame {index}: the face where the person is must be reported"
        assert all(abs(x - 470) < 60 for x in xs), f"frame {index}: a face reported at {xs}"


def test_reset_forgets_the_tracks(detector: FaceDetector, clip: object) -> None:
    stage = FaceStage(detector, detect_every=5)
    _run(stage, clip.frames[:8])  # type: ignore[attr-defined]
    stage.reset()
    assert stage.tracker.tracks == [] and stage.stats.frames == 0
    faces = _run(stage, clip.frames[:1])  # type: ignore[attr-defined]
    assert [f.track_id for f in faces[0]] == [1]


def test_an_empty_scene_runs_the_detector_every_n_frames_only(detector: FaceDetector) -> None:
    frames = [np.full((240, 320, 3), 90, np.uint8)] * 10
    stage = FaceStage(detector, detect_every=5)
    assert _run(stage, frames) == [[]] * 10
    assert stage.stats.full_detections == 2 and stage.stats.region_detections == 0


def test_the_debug_effect_draws_tracked_faces_in_a_pipeline(
    detector: FaceDetector, clip: object
) -> None:
    spec = get_effect_spec("debug")
    assert spec.needs_faces
    effect = build_effect("debug", {"thickness": 3}, EffectResources())
    pipeline = EffectPipeline(spec, effect, StageFactories(face=lambda: FaceStage(detector)))
    frame = clip.frames[0]  # type: ignore[attr-defined]
    ctx = pipeline.process(frame.copy())
    assert [f.track_id for f in ctx.faces] == [1]
    x1, y1, x2, y2 = (round(float(v)) for v in ctx.faces[0].box)
    colour = np.array(track_colour(1))
    assert (ctx.image[(y1 + y2) // 2, x1 - 1 : x1 + 2] == colour).all(axis=1).any(), (
        "box edge drawn"
    )
    lx, ly = (round(float(v)) for v in ctx.faces[0].landmarks5[2])
    assert (ctx.image[ly, lx] == colour).all(), "nose landmark drawn"
    outside = np.ones(frame.shape[:2], bool)
    outside[max(y1 - 40, 0) : y2 + 5, max(x1 - 5, 0) : x2 + 5] = False
    assert (ctx.image[outside] == frame[outside]).all(), "nothing drawn away from the face"


def test_the_debug_effect_draws_68_landmarks_and_untracked_faces() -> None:
    effect = build_effect("debug", {"labels": False}, EffectResources())
    frame = np.zeros((200, 200, 3), np.uint8)
    dense = np.stack([np.linspace(50, 150, 68), np.full(68, 120.0)], axis=1).astype(np.float32)
    face = Face(
        track_id=-1,
        box=np.array([40, 40, 160, 160], np.float32),
        landmarks5=np.full((5, 2), 100, np.float32),
        landmarks68=dense,
    )
    out = effect.apply(frame, [face])
    assert (out[120, 50:151:10] == 255).all(), "68 landmarks drawn, white for untracked faces"
    assert (out[40, 60:140] > 0).all(), "box drawn"
