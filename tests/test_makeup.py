"""makeup: only the face changes, lips take the chosen hue, texture and teeth are kept;
on the real portraits, the group photo and a moving clip."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import PORTRAITS, SHARED_DATA, load_rgb, portrait_path
from effects_helpers import faces_in, grown_boxes_mask, points68, track_clip
from synthetic import make_clip

from engines.effects.base import EffectResources
from engines.effects.makeup import REGIONS
from engines.effects.registry import build_effect, get_effect_spec
from engines.errors import InvalidParams
from engines.face_geometry import INNER_LIPS, OUTER_LIPS, erode, face_scale, fill_polygons
from engines.landmarks import HogFaceDetector
from engines.types import Face
from stream.models import SharedModels
from stream.pipeline import EffectPipeline
from stream.settings import Settings

ONLY_LIPS: dict[str, object] = {
    f"{region}_intensity": 0.0 for region in REGIONS if region != "lips"
}


def makeup(params: dict[str, object] | None = None):
    return build_effect("makeup", params or {}, EffectResources())


def lips_core(shape: tuple[int, ...], points: np.ndarray) -> np.ndarray:
    """bool mask of the lips (outer minus opening), shrunk away from the feathered edge."""
    size = (shape[0], shape[1])
    lips = fill_polygons(size, [points[OUTER_LIPS]]) * (
        1 - fill_polygons(size, [points[INNER_LIPS]])
    )
    return erode((lips > 0.99).astype(np.float32), 0.03 * face_scale(points)) > 0.5


def mean_hue_degrees(rgb_pixels: np.ndarray) -> float:
    """Circular mean hue (0-360) of (N, 3) uint8 RGB pixels, weighted by saturation."""
    hsv = (
        cv2.cvtColor(rgb_pixels.reshape(-1, 1, 3), cv2.COLOR_RGB2HSV_FULL)
        .reshape(-1, 3)
        .astype(np.float64)
    )
    angle = hsv[:, 0] / 256.0 * 2 * np.pi
    weight = hsv[:, 1]
    return float(
        np.degrees(np.arctan2((np.sin(angle) * weight).sum(), (np.cos(angle) * weight).sum())) % 360
    )


def hue_gap(a: float, b: float) -> float:
    return abs((a - b + 180) % 360 - 180)


def colour_hue(rgb: tuple[int, int, int]) -> float:
    return mean_hue_degrees(np.array([rgb], np.uint8))


@pytest.fixture(scope="module")
def scenes() -> dict[str, tuple[np.ndarray, list[Face]]]:
    images = {name: load_rgb(portrait_path(name), 640) for name in PORTRAITS}
    images["multiface"] = load_rgb(SHARED_DATA / "multiface.jpg")
    return {name: (image, faces_in(image)) for name, image in images.items()}


@pytest.mark.parametrize("scene", [*PORTRAITS, "multiface"])
def test_makeup_changes_only_the_faces(
    scenes: dict[str, tuple[np.ndarray, list[Face]]], scene: str
) -> None:
    image, faces = scenes[scene]
    out = makeup().apply(image.copy(), faces)
    changed = np.any(out != image, axis=2)
    assert not changed[~grown_boxes_mask(image.shape, faces, 0.2)].any()
    for face in faces:  # every face got some makeup
        x1, y1, x2, y2 = face.box.astype(int)
        assert changed[y1:y2, x1:x2].mean() > 0.01


@pytest.mark.parametrize("colour", [(150, 0, 0), (40, 70, 210), (30, 150, 60), (150, 40, 160)])
@pytest.mark.parametrize("scene", ["angelina_jolie", "paul_rudd"])
def test_lips_take_the_lip_colour(
    scenes: dict[str, tuple[np.ndarray, list[Face]]], scene: str, colour: tuple[int, int, int]
) -> None:
    image, faces = scenes[scene]
    out = makeup({**ONLY_LIPS, "lips_color": colour, "lips_intensity": 1.0}).apply(
        image.copy(), faces
    )
    core = lips_core(image.shape, points68(faces[0]))
    assert core.sum() > 100
    assert hue_gap(mean_hue_degrees(out[core]), colour_hue(colour)) < 20
    # Texture kept: the lightness still varies over the lips (creases, highlights).
    lightness_before = cv2.cvtColor(image, cv2.COLOR_RGB2Lab)[..., 0][core].std()
    lightness_after = cv2.cvtColor(out, cv2.COLOR_RGB2Lab)[..., 0][core].std()
    assert lightness_after > 0.5 * lightness_before


def test_teeth_are_left_alone(scenes: dict[str, tuple[np.ndarray, list[Face]]]) -> None:
    image, faces = scenes["multiface"]
    openings = [fill_polygons(image.shape[:2], [points68(f)[INNER_LIPS]]) > 0.99 for f in faces]
    widest = int(np.argmax([o.sum() for o in openings]))
    mouth = (
        erode(openings[widest].astype(np.float32), 0.05 * face_scale(points68(faces[widest]))) > 0.5
    )
    assert mouth.sum() > 30  # a smile that shows teeth
    out = makeup({"lips_intensity": 1.0}).apply(image.copy(), faces)
    difference = np.abs(out.astype(int) - image.astype(int)).max(axis=2)
    assert difference[mouth].mean() < 2.0


def test_zero_intensity_changes_nothing(scenes: dict[str, tuple[np.ndarray, list[Face]]]) -> None:
    image, faces = scenes["paul_rudd"]
    off: dict[str, object] = {f"{region}_intensity": 0.0 for region in REGIONS}
    np.testing.assert_array_equal(makeup(off).apply(image.copy(), faces), image)


def test_makeup_on_a_moving_clip() -> None:
    """Each frame: only the face changes, and the true lips (the portrait's landmarks
    moved along the known trajectory) are blue: the paint follows the moving face."""
    portrait = load_rgb(portrait_path("paul_rudd"), 600)
    _, _, (truth0,) = HogFaceDetector(upsample=0, max_side=2000).detect_68(portrait)
    count = 12
    t = np.linspace(0, 1, count)
    centres = np.stack([200 + 240 * t, 240 + 40 * np.sin(2 * np.pi * t)], axis=1)
    scales = 1.0 + 0.25 * t
    clip = make_clip(portrait, centres, portrait_height=300, scales=scales)
    tracked = track_clip(clip.frames, centres, scales)
    effect = makeup({"lips_color": (40, 70, 210), "lips_intensity": 1.0})
    blue = colour_hue((40, 70, 210))
    for frame, faces, centre, scale in zip(clip.frames, tracked, centres, scales, strict=True):
        out = effect.apply(frame.copy(), faces)
        changed = np.any(out != frame, axis=2)
        assert not changed[~grown_boxes_mask(frame.shape, faces, 0.2)].any()
        factor = 300 * scale / portrait.shape[0]
        truth = (truth0 - np.array(portrait.shape[1::-1]) / 2) * factor + centre
        core = lips_core(frame.shape, truth)
        assert core.sum() > 20
        assert hue_gap(mean_hue_degrees(out[core]), blue) < 25


def test_makeup_through_the_whole_pipeline() -> None:
    """The server's own stages (MTCNN + Kalman tracking, landmarks, makeup) on a moving
    clip: faces are found and tracked, and the lips (truth from the known trajectory)
    turn blue on the tracked frames, with nothing changed outside the faces."""
    portrait = load_rgb(portrait_path("angelina_jolie"), 600)
    _, _, (truth0,) = HogFaceDetector(upsample=0, max_side=2000).detect_68(portrait)
    count = 12
    centres = np.stack([180 + 20.0 * np.arange(count), 240 + 4.0 * np.arange(count)], axis=1)
    clip = make_clip(portrait, centres, portrait_height=320)
    models = SharedModels(Settings(device="cpu"), "cpu")
    spec = get_effect_spec("makeup")
    effect = build_effect(
        "makeup", {"lips_color": (40, 70, 210), "lips_intensity": 1.0}, EffectResources()
    )
    pipeline = EffectPipeline(spec, effect, models.stage_factories())
    blue, tracked = colour_hue((40, 70, 210)), 0
    for frame, centre in zip(clip.frames, centres, strict=True):
        ctx = pipeline.process(frame.copy())
        changed = np.any(ctx.image != frame, axis=2)
        assert not changed[~grown_boxes_mask(frame.shape, ctx.faces, 0.2)].any()
        if not ctx.faces:
            continue
        tracked += 1
        truth = (truth0 - np.array(portrait.shape[1::-1]) / 2) * (320 / portrait.shape[0]) + centre
        assert hue_gap(mean_hue_degrees(ctx.image[lips_core(frame.shape, truth)]), blue) < 25
    assert tracked >= count - 2


@pytest.mark.parametrize(
    ("params", "ok"),
    [
        ({"lips_color": "#aa0033"}, True),
        ({"eyebrows_color": "68,54,39", "eyes_intensity": 0.3}, True),
        ({"lips_intensity": 1.5}, False),
        ({"lips_color": "red"}, False),
        ({"blush": 1}, False),
    ],
)
def test_makeup_params(params: dict[str, object], ok: bool) -> None:
    spec = get_effect_spec("makeup")
    assert spec.needs_landmarks68 and not spec.changes_identity
    if ok:
        assert spec.validate(params)["lips_color"] in {(0xAA, 0x00, 0x33), (150, 0, 0)}
    else:
        with pytest.raises(InvalidParams):
            spec.validate(params)


def test_makeup_defaults_are_the_original_design() -> None:
    params = get_effect_spec("makeup").params
    assert params["eyebrows_color"].default == (68, 54, 39)
    assert params["lips_color"].default == (150, 0, 0)
    assert params["eyes_color"].default == (255, 255, 255)
