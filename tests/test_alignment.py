"""Five-point alignment: the similarity fit, crops, and pasting back."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from conftest import load_rgb, portrait_path

from engines.alignment import (
    DEFAULT_PADDING,
    TEMPLATE_5PT,
    border_feather,
    crop_bounds_in_frame,
    estimate_alignment,
    invert_affine,
    paste_back,
    template_points,
    transform_points,
    umeyama_similarity,
    warp_to_crop,
)


def similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    angle = math.radians(angle_deg)
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]])


@pytest.mark.parametrize(
    ("angle", "scale", "tx", "ty"),
    [(0, 1, 0, 0), (15, 2.5, 100, -40), (-30, 0.4, 7, 300), (179, 1.3, -50, 20)],
)
def test_umeyama_recovers_a_known_similarity(
    angle: float, scale: float, tx: float, ty: float
) -> None:
    src = np.random.default_rng(1).uniform(0, 200, (5, 2))
    matrix = similarity(angle, scale, tx, ty)
    dst = transform_points(src, matrix)
    np.testing.assert_allclose(umeyama_similarity(src, dst), matrix, atol=1e-3)


def test_umeyama_never_returns_a_reflection() -> None:
    src = np.random.default_rng(2).uniform(0, 100, (5, 2))
    mirrored = src * [-1, 1]
    matrix = umeyama_similarity(src, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0
    exact = umeyama_similarity(src, transform_points(src, similarity(30, 2, 5, 5)))
    assert np.linalg.det(exact[:, :2]) == pytest.approx(4.0, rel=1e-3)


@pytest.mark.parametrize(
    ("landmarks", "message"),
    [
        (np.zeros((4, 2)), "five"),
        (np.full((5, 2), np.nan), "finite"),
        (np.ones((5, 2)), "all the same"),
    ],
)
def test_estimate_alignment_rejects_bad_landmarks(landmarks: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        estimate_alignment(landmarks, 64)


@pytest.mark.parametrize("size", [64, 128, 256])
def test_alignment_maps_landmarks_onto_the_template(size: int) -> None:
    frame_points = transform_points(TEMPLATE_5PT * 90, similarity(-20, 1.7, 300, 120))
    alignment = estimate_alignment(frame_points, size)
    np.testing.assert_allclose(
        transform_points(frame_points, alignment.matrix),
        template_points(size, DEFAULT_PADDING),
        atol=1e-3,
    )
    back = transform_points(transform_points(frame_points, alignment.matrix), alignment.inverse)
    np.testing.assert_allclose(back, frame_points, atol=1e-3)
    np.testing.assert_allclose(invert_affine(alignment.inverse), alignment.matrix, atol=1e-9)


@pytest.mark.parametrize("padding", [0.0, 0.2, 0.5])
def test_padding_shrinks_the_template_about_the_centre(padding: float) -> None:
    points = template_points(100, padding)
    np.testing.assert_allclose(points.mean(axis=0)[0], 50.0, atol=1e-9)
    eye_distance = points[1, 0] - points[0, 0]
    assert eye_distance == pytest.approx(32.0 / (1 + 2 * padding))


def test_warp_to_crop_puts_marked_points_at_the_template() -> None:
    frame = np.zeros((480, 640, 3), np.uint8)
    landmarks = transform_points(TEMPLATE_5PT * 120, similarity(25, 1.0, 260, 140))
    for x, y in landmarks:
        cv2.circle(frame, (round(float(x)), round(float(y))), 4, (255, 255, 255), -1)
    alignment = estimate_alignment(landmarks, 128)
    crop = warp_to_crop(frame, alignment)
    for x, y in template_points(128):
        assert crop[round(y), round(x)].min() > 150, (
            "a marked landmark missed its template position"
        )


def test_paste_back_touches_only_the_crop_footprint() -> None:
    frame = np.random.default_rng(0).integers(0, 255, (300, 400, 3), np.uint8)
    before = frame.copy()
    alignment = estimate_alignment(
        transform_points(TEMPLATE_5PT * 80, similarity(10, 1, 150, 100)), 64
    )
    crop = np.full((64, 64, 3), (250, 10, 10), np.uint8)
    paste_back(frame, crop, border_feather(64, 0.1), alignment)
    x0, y0, x1, y1 = crop_bounds_in_frame(alignment, frame.shape)  # type: ignore[misc]
    outside = np.ones(frame.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(frame[outside], before[outside])
    centre = transform_points(np.array([[32.0, 32.0]]), alignment.inverse)[0].round().astype(int)
    assert tuple(frame[centre[1], centre[0]]) == (250, 10, 10)


def test_crop_far_outside_the_frame_is_ignored() -> None:
    frame = np.zeros((100, 100, 3), np.uint8)
    alignment = estimate_alignment(TEMPLATE_5PT * 50 + 1000, 64)
    assert crop_bounds_in_frame(alignment, frame.shape) is None
    paste_back(frame, np.full((64, 64, 3), 255, np.uint8), np.ones((64, 64), np.float32), alignment)
    assert not frame.any()


@pytest.mark.parametrize(("fraction", "edge_max"), [(0.0, 1.0), (0.1, 0.05), (0.25, 0.01)])
def test_border_feather_fades_to_the_edge(fraction: float, edge_max: float) -> None:
    weights = border_feather(64, fraction)
    assert weights[32, 32] == pytest.approx(1.0)
    assert weights[0, 32] <= edge_max and weights[32, 0] <= edge_max
    assert np.all(np.diff(weights[32, :32]) >= 0)


def test_a_real_face_aligns_to_the_template() -> None:
    """MTCNN on a portrait, align, MTCNN again on the crop: landmarks sit on the template."""
    from engines.detection import FaceDetector

    detector = FaceDetector(device="cpu", min_face_size=20)
    image = load_rgb(portrait_path("paul_rudd"), 640)
    found = detector.detect([image])[0]
    assert len(found) == 1
    alignment = estimate_alignment(found.landmarks[0], 160)
    crop = warp_to_crop(image, alignment)
    again = detector.detect([np.ascontiguousarray(crop)])[0]
    assert len(again) >= 1
    error = np.linalg.norm(again.landmarks[0] - template_points(160), axis=1)
    assert error.max() < 160 * 0.04, f"landmarks off the template by {error.round(1)} px"
