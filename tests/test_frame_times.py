"""Frame times: smoothing and tracking follow each frame's presentation time, not its index.

The pipeline gets every frame's time (pts * time_base) from its producer: a live
aiortc session, a file conversion (also at a variable frame rate). The landmark
smoother and the face tracker then behave the same in seconds at 15 and at 60 fps,
and across skipped frames; without times they fall back to one frame = 1/30 s.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import load_rgb, portrait_path
from convert_helpers import cut_clip, summarise
from effects_helpers import detector, landmarker
from server_helpers import running_server
from synthetic import background
from webrtc_helpers import ClipTrack, connect

from engines.effects.base import EffectResources
from engines.effects.registry import build_effect, get_effect_spec
from engines.types import Face
from stream.convert import convert_with_pipeline
from stream.landmark_stage import LandmarkStage
from stream.pipeline import EffectPipeline, FrameContext, StageFactories
from stream.provenance import ProvenanceInfo
from stream.session_track import RTP_CLOCK_WRAP, FrameClock
from stream.settings import Settings
from tracking import FaceTracker

pytestmark = pytest.mark.timeout(180)

# -- the landmark smoother at 15 and 60 fps ----------------------------------------------------

STILL_S, RAMP_S, HOLD_S = 0.5, 0.3, 0.7  # still face, then it stretches smoothly, then holds
STRETCH = 0.12  # the face grows 12 % taller (the shape changes, not just the pose)
SIZE = (480, 360)


@dataclasses.dataclass(frozen=True)
class StretchScene:
    """A portrait pasted into a frame; `stretch(t)` of its height about its centre."""

    portrait: np.ndarray
    face: Face  # the face in the unstretched frame (MTCNN), track id 1
    centre: tuple[float, float]
    height: float

    def stretch(self, time_s: float) -> float:
        u = min(max((time_s - STILL_S) / RAMP_S, 0.0), 1.0)
        return STRETCH * (0.5 - 0.5 * np.cos(np.pi * u))

    def frame(self, time_s: float, rng: np.random.Generator) -> tuple[np.ndarray, Face]:
        """The frame at `time_s` (RGB uint8, sensor noise) and its face, moved with it."""
        grow = 1.0 + self.stretch(time_s)
        cx, cy = self.centre
        ph, pw = self.height, self.height * self.portrait.shape[1] / self.portrait.shape[0]
        matrix = np.array(
            [
                [pw / self.portrait.shape[1], 0, cx - pw / 2],
                [0, ph * grow / self.portrait.shape[0], cy - ph * grow / 2],
            ],
            np.float32,
        )
        image = cv2.warpAffine(
            self.portrait,
            matrix,
            SIZE,
            dst=background(*SIZE).copy(),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_TRANSPARENT,
        )
        noisy = np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)
        scale = np.array([1.0, grow])
        box = self.face.box.reshape(2, 2)
        face = dataclasses.replace(
            self.face,
            box=((box - self.centre) * scale + self.centre).reshape(4).astype(np.float32),
            landmarks5=((self.face.landmarks5 - self.centre) * scale + self.centre).astype(
                np.float32
            ),
        )
        return noisy, face


@cache
def stretch_scene() -> StretchScene:
    portrait = load_rgb(portrait_path("paul_rudd"), 600)
    scene = StretchScene(portrait, Face(1, np.zeros(4), np.zeros((5, 2))), (240.0, 180.0), 300.0)
    image, _ = scene.frame(0.0, np.random.default_rng(0))
    found = Face.from_detections(detector().detect([image])[0])
    face = max(found, key=lambda f: f.width)
    return dataclasses.replace(scene, face=dataclasses.replace(face, track_id=1))


def height_ratio(points: np.ndarray) -> float:
    """How tall the 68 points are against how wide (std of y over std of x)."""
    return float(points[:, 1].std() / points[:, 0].std())


def landmark_lag_s(fps: int, with_times: bool) -> float:
    """The lag of the smoothed landmarks behind the raw ones while the face stretches,
    in seconds: the area between the two height-ratio curves over the change."""
    scene, rng = stretch_scene(), np.random.default_rng(fps)
    stage = LandmarkStage(landmarker())
    times = np.arange(round((STILL_S + RAMP_S + HOLD_S) * fps) + 1) / fps
    raw, smoothed = [], []
    for index, time_s in enumerate(times):
        image, face = scene.frame(float(time_s), rng)
        raw.append(height_ratio(landmarker().predict_faces(image, [face])[0]))
        ctx = FrameContext(
            image=image, index=index, time_s=float(time_s) if with_times else None, faces=[face]
        )
        stage.process(ctx)
        points = ctx.faces[0].landmarks68
        if points is None:
            raise AssertionError("the landmark stage left no landmarks")
        smoothed.append(height_ratio(points))
    raw_a, smoothed_a = np.array(raw), np.array(smoothed)
    change = raw_a[times > STILL_S + RAMP_S + 0.2].mean() - raw_a[times < STILL_S].mean()
    window = times >= STILL_S - 0.2
    return float(np.trapezoid(raw_a[window] - smoothed_a[window], times[window]) / change)


@pytest.fixture(scope="module")
def lags() -> dict[tuple[int, bool], float]:
    return {(fps, timed): landmark_lag_s(fps, timed) for fps in (15, 60) for timed in (True, False)}


def test_landmark_smoothing_lags_the_same_in_seconds_at_15_and_60_fps(
    lags: dict[tuple[int, bool], float],
) -> None:
    slow, fast = lags[15, True], lags[60, True]
    assert 0.01 < slow < 0.2 and 0.01 < fast < 0.2, lags  # there is smoothing, and little lag
    assert 0.7 < slow / fast < 1.4, lags


def test_without_times_a_frame_is_taken_for_a_thirtieth_of_a_second(
    lags: dict[tuple[int, bool], float],
) -> None:
    """The fallback (index / 30) smooths 15 fps much more and 60 fps much less in seconds:
    what the times fix, and what the test above would see without them."""
    assert lags[15, False] / lags[60, False] > 2.0, lags
    assert lags[15, False] > lags[15, True] and lags[60, False] < lags[60, True], lags


# -- the face tracker ------------------------------------------------------------------------

SPEED = np.array([120.0, -30.0])  # pixels per second


def moving_box(time_s: float) -> np.ndarray:
    x, y = np.array([200.0, 150.0]) + SPEED * time_s
    return np.array([x - 50, y - 60, x + 50, y + 60])


def feed(tracker: FaceTracker, times: np.ndarray, with_times: bool) -> None:
    for time_s in times:
        box = moving_box(float(time_s))
        marks = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]])
        landmarks = box[:2] + marks * (box[2:] - box[:2])
        tracker.update(
            box[None], np.array([0.99]), landmarks[None], float(time_s) if with_times else None
        )


def centre(box: np.ndarray) -> np.ndarray:
    return np.asarray((box[:2] + box[2:]) / 2, np.float64)


@pytest.mark.parametrize("fps", [15, 30, 60])
def test_track_velocity_is_per_thirtieth_of_a_second_at_any_frame_rate(fps: int) -> None:
    tracker = FaceTracker(smoothing=0.5)
    feed(tracker, np.arange(2 * fps) / fps, with_times=True)
    (track,) = tracker.tracks
    np.testing.assert_allclose(track.velocity, SPEED / 30, rtol=0.05, atol=0.05)


@pytest.mark.parametrize(
    ("skipped", "with_times", "max_error"),
    [
        (0, True, 1.0),
        (4, True, 1.0),  # 4 frames skipped: predicted 5 steps ahead
        (4, False, None),  # without times: predicted one step, 4 frames behind
    ],
)
def test_tracker_predicts_across_skipped_frames(
    skipped: int, with_times: bool, max_error: float | None
) -> None:
    tracker = FaceTracker(smoothing=0.5)
    feed(tracker, np.arange(30) / 30, with_times)
    next_time = (29 + 1 + skipped) / 30
    (predicted,) = tracker.predict(next_time if with_times else None)
    error = float(np.linalg.norm(centre(predicted.box) - centre(moving_box(next_time))))
    if max_error is not None:
        assert error < max_error
    else:
        assert error > 0.8 * skipped * np.linalg.norm(SPEED) / 30


# -- live sessions: the RTP clock --------------------------------------------------------------


@pytest.mark.parametrize(
    ("pts", "time_base", "expected"),
    [
        ([0, 3000, 9000], Fraction(1, 90000), [0.0, 1 / 30, 0.1]),
        ([RTP_CLOCK_WRAP - 3000, 0, 3000], Fraction(1, 90000), None),  # the 32-bit RTP wrap
        ([5, None, 7], Fraction(1, 10), [0.5, None, 0.7]),
        ([5], None, [None]),
    ],
)
def test_frame_clock(pts: list[int | None], time_base: Fraction | None, expected: Any) -> None:
    clock = FrameClock()
    times = [clock.time_s(p, time_base) for p in pts]
    if expected is None:  # across the wrap: whole steps of 1/30 s, always forward
        assert all(t is not None for t in times)
        np.testing.assert_allclose(np.diff(np.array(times, float)), [1 / 30, 1 / 30])
    else:
        assert times == pytest.approx(expected)


# -- file conversion: a variable frame rate ----------------------------------------------------

VFR_STEPS = [1, 2, 1, 3, 1, 1, 2, 1, 4, 1]  # in 1/25 s


class RecordingFaces:
    """A face stage that records the frames' times and gives one fixed face (track 1)."""

    name = "faces"

    def __init__(self) -> None:
        self.times: list[float | None] = []
        box = np.array([110.0, 30.0, 210.0, 150.0], np.float32)
        marks = np.array([[140, 75], [180, 75], [160, 100], [145, 125], [175, 125]], np.float32)
        self.face = Face(track_id=1, box=box, landmarks5=marks)

    def process(self, ctx: FrameContext) -> None:
        self.times.append(ctx.time_s)
        ctx.faces = [self.face]

    def reset(self) -> None:
        self.times = []


def test_a_variable_frame_rate_conversion_passes_each_frames_time(tmp_path: Path) -> None:
    clip = cut_clip(tmp_path / "vfr.mp4", frames=len(VFR_STEPS), audio=False, pts_steps=VFR_STEPS)
    faces, landmarks = RecordingFaces(), LandmarkStage(landmarker())
    spec = get_effect_spec("makeup")  # needs faces and 68 landmarks
    pipeline = EffectPipeline(
        spec,
        build_effect("makeup", {}, EffectResources()),
        StageFactories(face=lambda: faces, landmarks68=lambda: landmarks),
    )
    settings = Settings(data_dir=tmp_path / "data")
    provenance = ProvenanceInfo(effect="makeup", changes_identity=False)
    try:
        result = convert_with_pipeline(clip, tmp_path / "out.mp4", pipeline, settings, provenance)
    finally:
        pipeline.close()
    source = summarise(clip)
    expected = [float(p * source.time_base) for p in source.pts]
    assert result.frames == len(VFR_STEPS)
    assert faces.times == pytest.approx(expected, abs=1e-9)
    np.testing.assert_allclose(np.diff(expected), np.array(VFR_STEPS[:-1]) / 25, atol=1e-6)
    assert landmarks._smoothers[1]._last_time == pytest.approx(expected[-1], abs=1e-9)


# -- a live session --------------------------------------------------------------------------

LIVE_FPS = 15


async def test_a_live_session_gives_the_pipeline_each_frames_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frames = [background(320, 240, seed) for seed in range(4)]
    with running_server(Settings(data_dir=tmp_path)) as server:
        source = ClipTrack(frames, fps=LIVE_FPS, loop=True)
        pc, collector, session_id = await connect(
            server.url, source, {"name": "none", "params": {}}
        )
        try:
            await collector.wait_for(1, timeout=30)
            pipeline = server.app.state.services.sessions.get(session_id).pipeline
            seen: list[float | None] = []
            begin = pipeline.begin

            def recording_begin(image: np.ndarray, found: Any = None, time_s: Any = None) -> Any:
                seen.append(time_s)
                return begin(image, found, time_s)

            monkeypatch.setattr(pipeline, "begin", recording_begin)
            await collector.wait_for(len(collector.frames) + 2 * LIVE_FPS, timeout=30)
        finally:
            await pc.close()
    assert len(seen) >= LIVE_FPS
    assert all(t is not None for t in seen), seen
    steps = np.diff(np.array(seen, float)) * LIVE_FPS  # in camera frames (RTP: 90 kHz)
    assert (steps > 0.99).all(), steps
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
