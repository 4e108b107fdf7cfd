"""68-point landmarks on MTCNN faces, tilted heads, and per-track temporal smoothing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import PORTRAITS, SHARED_DATA, load_rgb, portrait_path
from effects_helpers import detector, landmarker, moved_face
from synthetic import make_clip

from engines.landmark_filter import LandmarkSmoother
from engines.landmarks import HogFaceDetector, dlib_model_path, landmarks5_from_68
from engines.types import Face
from stream.landmark_stage import LandmarkStage
from stream.pipeline import FrameContext


def eye_distance(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[36:42].mean(axis=0) - points[42:48].mean(axis=0)))


def largest_face(image: np.ndarray) -> Face:
    return max(Face.from_detections(detector().detect([image])[0]), key=lambda f: f.width)


@pytest.fixture(scope="module")
def hog() -> HogFaceDetector:
    return HogFaceDetector(upsample=1)


def test_dlib_models_are_found() -> None:
    for name in ("landmarks68", "landmarks5", "encoder"):
        assert dlib_model_path(name).is_file()


@pytest.mark.parametrize("name", PORTRAITS)
@pytest.mark.parametrize("roll", [0.0, 35.0])
def test_landmarks_match_dlibs_own_framing(hog: HogFaceDetector, name: str, roll: float) -> None:
    """Landmarks from MTCNN's box agree with dlib's on its own HOG box (within 1.5 % of
    the eye distance), also on a head tilted by 35 degrees."""
    image = load_rgb(portrait_path(name), 640)
    _, _, reference = hog.detect_68(image)
    reference = reference[0]
    rotation = cv2.getRotationMatrix2D(tuple(map(float, reference.mean(axis=0))), roll, 1.0)
    tilted = np.ascontiguousarray(
        cv2.warpAffine(image, rotation, image.shape[1::-1], borderMode=cv2.BORDER_REFLECT)
    )
    expected = reference @ rotation[:, :2].T + rotation[:, 2]
    predicted = landmarker().predict_faces(tilted, [largest_face(tilted)])[0]
    error = np.abs(predicted - expected).mean() / eye_distance(expected)
    assert error < 0.015


def test_hog_detector_finds_the_group(hog: HogFaceDetector) -> None:
    found = hog.detect([load_rgb(SHARED_DATA / "multiface.jpg")])[0]
    assert len(found) == 6
    assert found.landmarks.shape == (6, 5, 2)


def test_landmarks5_from_68_order() -> None:
    points = np.zeros((68, 2), np.float32)
    points[36:42] = (10, 20)
    points[42:48] = (30, 20)
    points[30] = (20, 30)
    points[48], points[54] = (12, 40), (28, 40)
    np.testing.assert_allclose(
        landmarks5_from_68(points), [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]]
    )


@pytest.fixture(scope="module")
def noisy_clip() -> tuple[list[np.ndarray], np.ndarray]:
    """30 frames: 12 still, then moving; sensor noise on every frame. Returns the
    frames and the true 68 points per frame (dlib on the portrait, moved exactly)."""
    portrait = load_rgb(portrait_path("paul_rudd"), 600)
    _, _, truth0 = HogFaceDetector(upsample=0, max_side=2000).detect_68(portrait)
    count, still = 30, 12
    t = np.clip((np.arange(count) - still) / (count - still), 0, None)
    centres = np.stack([320 + 100 * np.sin(np.pi * t), 240 + 30 * t], axis=1)
    clip = make_clip(portrait, centres, portrait_height=300)
    rng = np.random.default_rng(1)
    frames = [np.clip(f + rng.normal(0, 4, f.shape), 0, 255).astype(np.uint8) for f in clip.frames]
    height, width = 300, 300 * portrait.shape[1] / portrait.shape[0]
    factor = np.array([width / portrait.shape[1], height / portrait.shape[0]])
    truth = np.stack([truth0[0] * factor + (cx - width / 2, cy - height / 2) for cx, cy in centres])
    return frames, truth


def test_smoothing_removes_jitter_without_lag(
    noisy_clip: tuple[list[np.ndarray], np.ndarray],
) -> None:
    frames, truth = noisy_clip
    first = largest_face(frames[0])
    centres = truth.mean(axis=1)
    faces = [moved_face(first, c - centres[0], 1.0, centres[0]) for c in centres]
    raw = np.stack(
        [landmarker().predict_faces(f, [face])[0] for f, face in zip(frames, faces, strict=True)]
    )
    smoother = LandmarkSmoother()
    smoothed = np.stack([smoother(p, i / 30) for i, p in enumerate(raw)])
    unit = eye_distance(truth[0])

    def jitter(points: np.ndarray, part: slice) -> float:
        error = points[part] - truth[part]
        return float(np.abs(error[2:] - 2 * error[1:-1] + error[:-2]).mean() / unit)

    def error(points: np.ndarray, part: slice) -> float:
        return float(np.abs(points[part] - truth[part]).mean() / unit)

    still, moving = slice(0, 12), slice(12, None)
    assert jitter(smoothed, still) < 0.5 * jitter(raw, still)
    assert jitter(smoothed, moving) < jitter(raw, moving)
    assert error(smoothed, moving) < error(raw, moving) + 0.005  # no visible lag


def test_landmark_stage_smooths_per_track_and_forgets() -> None:
    image = load_rgb(portrait_path("shea_whigham"), 480)
    face = largest_face(image)
    stage = LandmarkStage(landmarker(), forget_after=3)
    for index in range(3):
        ctx = FrameContext(image=image, index=index, faces=[Face(7, face.box, face.landmarks5)])
        stage.process(ctx)
        assert ctx.faces[0].landmarks68 is not None and ctx.faces[0].landmarks68.shape == (68, 2)
    assert set(stage._smoothers) == {7}
    stage.process(FrameContext(image=image, index=10, faces=[]))
    assert stage._smoothers == {}
    stage.process(FrameContext(image=image, index=11, faces=[Face(8, face.box, face.landmarks5)]))
    stage.reset()
    assert stage._smoothers == {}


def test_one_predictor_serves_several_threads_at_once() -> None:
    """With cross-session batching each live session's pipeline runs in its own worker
    thread, all sharing one dlib predictor: concurrent calls give the serial results."""
    from concurrent.futures import ThreadPoolExecutor

    images = [load_rgb(portrait_path(name), 480) for name in PORTRAITS]
    faces = [[largest_face(image)] for image in images]
    predictor = landmarker()
    serial = [
        predictor.predict_faces(image, face) for image, face in zip(images, faces, strict=True)
    ]
    jobs = [i % len(images) for i in range(64)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda i: predictor.predict_faces(images[i], faces[i]), jobs))
    for i, got in zip(jobs, together, strict=True):
        np.testing.assert_array_equal(got, serial[i])


_HOG_THREADS_SCRIPT = """
import sys
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from engines.landmarks import HogFaceDetector

photo = cv2.cvtColor(cv2.imread(sys.argv[1]), cv2.COLOR_BGR2RGB)
images = [photo] + [cv2.resize(photo, None, fx=f, fy=f) for f in (0.5, 0.3)]
hog = HogFaceDetector()
serial = [hog.detect_68(image) for image in images]
with ThreadPoolExecutor(max_workers=6) as pool:
    together = list(pool.map(lambda i: hog.detect_68(images[i % 3]), range(60)))
for i, got in enumerate(together):
    for a, b in zip(got, serial[i % 3], strict=True):
        np.testing.assert_array_equal(a, b)
print(len(serial[0][0]))
"""


def test_one_hog_detector_serves_several_threads_at_once() -> None:
    """The face store's one HOG detector is shared by concurrent uploads; dlib's
    detector crashed the process (segfault) when two threads ran it at once on images
    of different sizes. Run in a child process so a crash fails this test instead of
    ending the test run."""
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run(
        [sys.executable, "-c", _HOG_THREADS_SCRIPT, str(SHARED_DATA / "multiface.jpg")],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip()) >= 4
