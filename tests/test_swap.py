"""swap (classic): the output shows the source identity (dlib encodings), on a moving
clip and on several faces at once; it is stable over time, keeps the mouth opening
and refuses unusable sources clearly."""

from __future__ import annotations

import dataclasses
import itertools

import cv2
import numpy as np
import pytest
from conftest import SHARED_DATA, load_rgb, portrait_path
from effects_helpers import (
    detector,
    faces_in,
    grown_boxes_mask,
    landmarker,
    moved_face,
    points68,
    track_clip,
)
from synthetic import background, make_clip

from engines.effects.base import Effect, EffectResources
from engines.effects.registry import build_effect, get_effect_spec
from engines.errors import InvalidParams, NoFaceFound
from engines.face_geometry import INNER_LIPS, erode, face_scale, fill_polygons
from engines.similarity import face_distance, shared_encoder
from engines.types import Face
from stream.landmark_stage import LandmarkStage
from stream.pipeline import FrameContext


def swap_from(source: np.ndarray, **params: object) -> Effect:
    resources = EffectResources(source_faces={"source": source})
    return build_effect("swap", {"source_face": "source", **params}, resources)


def encode(image: np.ndarray, faces: list[Face]) -> np.ndarray:
    """Encodings from landmarks predicted afresh on `image` (not the ones the swap used)."""
    fresh = [dataclasses.replace(face, landmarks68=None) for face in faces]
    return shared_encoder().encode_faces(image, fresh)


def identity_of(name: str) -> np.ndarray:
    image = load_rgb(portrait_path(name), 640)
    return encode(image, faces_in(image)[:1])[0]


@pytest.mark.parametrize(
    ("source", "target"), [("angelina_jolie", "paul_rudd"), ("paul_rudd", "shea_whigham")]
)
def test_swap_shows_the_source_on_a_moving_clip(source: str, target: str) -> None:
    count = 10
    t = np.linspace(0, 1, count)
    centres = np.stack([220 + 200 * t, 240 + 30 * np.sin(2 * np.pi * t)], axis=1)
    scales = 1.0 + 0.3 * t
    clip = make_clip(
        load_rgb(portrait_path(target), 600), centres, portrait_height=320, scales=scales
    )
    tracked = track_clip(clip.frames, centres, scales)
    effect = swap_from(load_rgb(portrait_path(source), 1024))
    wanted, original = identity_of(source), identity_of(target)
    closer = []
    for frame, faces in zip(clip.frames, tracked, strict=True):
        out = effect.apply(frame.copy(), faces)
        assert not np.any(out != frame, axis=2)[~grown_boxes_mask(frame.shape, faces)].any()
        code = encode(out, faces)[0]
        closer.append(face_distance(code, wanted) < face_distance(code, original))
    assert np.mean(closer) >= 0.9


def test_swap_several_faces_at_once() -> None:
    group = load_rgb(SHARED_DATA / "multiface.jpg")
    faces = faces_in(group)
    assert len(faces) == 6
    out = swap_from(load_rgb(portrait_path("shea_whigham"), 1024)).apply(group.copy(), faces)
    assert not np.any(out != group, axis=2)[~grown_boxes_mask(group.shape, faces)].any()
    wanted = identity_of("shea_whigham")
    originals = encode(group, faces)
    swapped = encode(out, faces)
    assert np.all(face_distance(swapped, wanted) < face_distance(swapped, originals))


def test_swap_keeps_the_targets_mouth_opening() -> None:
    group = load_rgb(SHARED_DATA / "multiface.jpg")
    faces = faces_in(group)
    openings = [fill_polygons(group.shape[:2], [points68(f)[INNER_LIPS]]) > 0.99 for f in faces]
    widest = int(np.argmax([o.sum() for o in openings]))
    mouth = (
        erode(openings[widest].astype(np.float32), 0.06 * face_scale(points68(faces[widest]))) > 0.5
    )
    assert mouth.sum() > 30
    out = swap_from(load_rgb(portrait_path("paul_rudd"), 1024)).apply(group.copy(), faces)
    difference = np.abs(out.astype(int) - group.astype(int)).max(axis=2)
    assert difference[mouth].mean() < 3.0
    assert difference[grown_boxes_mask(group.shape, [faces[widest]], 0.0)].mean() > 10.0


def test_small_faces_are_not_aliased() -> None:
    """A 1024 px source on 35-46 px faces: sampled from a matching pyramid level, the
    swapped faces are no noisier (Laplacian) than the faces they replace."""
    group = load_rgb(SHARED_DATA / "multiface.jpg")
    group = np.ascontiguousarray(
        cv2.resize(group, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    )
    faces = faces_in(group)
    out = swap_from(load_rgb(portrait_path("shea_whigham"), 1024)).apply(group.copy(), faces)

    def detail(image: np.ndarray) -> float:
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
        laplacian = np.abs(cv2.Laplacian(grey, cv2.CV_32F))
        inner = [f.box.astype(int) + np.array([1, 1, -1, -1]) * int(f.width) // 4 for f in faces]
        return float(np.mean([laplacian[y1:y2, x1:x2].mean() for x1, y1, x2, y2 in inner]))

    assert len(faces) == 6
    assert detail(out) < 1.3 * detail(group)


@pytest.mark.parametrize("effect", ["swap", "makeup", "blur"])
@pytest.mark.parametrize("shift", [(-0.45, 0.0), (0.0, -0.5), (0.4, 0.45), (-2.0, 0.0)])
def test_faces_at_and_beyond_the_frame_edge(effect: str, shift: tuple[float, float]) -> None:
    """A face half out of the frame (or wholly, as a track may coast out) is handled:
    no error, same frame size, nothing changed outside the grown face box."""
    image = load_rgb(portrait_path("paul_rudd"), 480)
    face = faces_in(image)[0]
    offset = np.array(shift, np.float32) * np.array(image.shape[1::-1], np.float32)
    moved = dataclasses.replace(
        face,
        box=face.box + np.tile(offset, 2),
        landmarks5=face.landmarks5 + offset,
        landmarks68=points68(face) + offset,
    )
    resources = EffectResources(
        source_faces={"source": load_rgb(portrait_path("kate_siegel"), 1024)}
    )
    params = {"source_face": "source"} if effect == "swap" else {}
    out = build_effect(effect, params, resources).apply(image.copy(), [moved])
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.any(out != image, axis=2)[~grown_boxes_mask(image.shape, [moved], 0.4)].any()


def flicker(smoothing: float) -> float:
    """Mean change between consecutive output faces on a noisy clip moving 4 px a frame
    (aligned by the known motion, so a perfectly stable swap changes nothing)."""
    count = 12
    centres = np.stack([200 + 4.0 * np.arange(count), np.full(count, 240.0)], axis=1)
    clip = make_clip(load_rgb(portrait_path("paul_rudd"), 600), centres, portrait_height=300)
    rng = np.random.default_rng(0)
    frames = [np.clip(f + rng.normal(0, 3, f.shape), 0, 255).astype(np.uint8) for f in clip.frames]
    first = max(Face.from_detections(detector().detect([frames[0]])[0]), key=lambda f: f.width)
    first = dataclasses.replace(first, track_id=0)
    stage = LandmarkStage(landmarker(), smoothing=smoothing)
    effect = swap_from(load_rgb(portrait_path("angelina_jolie"), 1024))
    crops = []
    for index, frame in enumerate(frames):
        shift = centres[index] - centres[0]
        ctx = FrameContext(
            image=frame, index=index, faces=[moved_face(first, shift, 1.0, centres[0])]
        )
        stage.process(ctx)
        out = effect.apply(frame.copy(), ctx.faces)
        inset = np.array([10, 10, -10, -10])
        x1, y1, x2, y2 = (first.box + np.tile(shift, 2)).astype(int) + inset
        crops.append(out[y1:y2, x1:x2].astype(np.float32))
    return float(np.mean([np.abs(b - a).mean() for a, b in itertools.pairwise(crops)]))


def test_swap_is_stable_from_frame_to_frame() -> None:
    smoothed, raw = flicker(1.0), flicker(0.0)
    assert smoothed < 0.8 * raw
    assert smoothed < 3.0  # below the camera noise of the input itself (about 3.4)


@pytest.mark.parametrize(
    ("params", "faces", "error", "message"),
    [
        ({}, {}, InvalidParams, "POST /faces"),
        ({"source_face": "nobody"}, {}, InvalidParams, "unknown source face"),
        ({"source_face": "wall"}, {"wall": background(400, 400)}, NoFaceFound, "no face"),
        ({"source_face": "x", "identity": 2}, {}, InvalidParams, "identity"),
    ],
)
def test_swap_refuses_unusable_sources(
    params: dict[str, object], faces: dict[str, np.ndarray], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        build_effect("swap", params, EffectResources(source_faces=faces))


def test_swap_is_labelled_as_identity_changing() -> None:
    spec = get_effect_spec("swap")
    assert spec.changes_identity and spec.needs_landmarks68 and spec.needs_faces
    assert spec.params["source_face"].type == "face"
