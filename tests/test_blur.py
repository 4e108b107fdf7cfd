"""blur (privacy): every face is hidden well enough that dlib no longer recognises it,
and nothing outside the grown face boxes changes."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import PORTRAITS, SHARED_DATA, load_rgb, portrait_path
from effects_helpers import faces_in, grown_boxes_mask

from engines.effects.base import EffectResources
from engines.effects.registry import build_effect, get_effect_spec
from engines.errors import InvalidParams
from engines.similarity import SAME_PERSON_THRESHOLD, face_distance, shared_encoder
from engines.types import Face


@pytest.fixture(scope="module")
def scenes() -> dict[str, tuple[np.ndarray, list[Face]]]:
    images = {name: load_rgb(portrait_path(name), 480) for name in PORTRAITS[2:]}
    images["multiface"] = load_rgb(SHARED_DATA / "multiface.jpg")
    return {name: (image, faces_in(image)) for name, image in images.items()}


@pytest.mark.parametrize("mode", ["pixelate", "gaussian"])
@pytest.mark.parametrize("scene", [*PORTRAITS[2:], "multiface"])
def test_blur_hides_every_face(
    scenes: dict[str, tuple[np.ndarray, list[Face]]], scene: str, mode: str
) -> None:
    image, faces = scenes[scene]
    margin = 0.2
    out = build_effect("blur", {"mode": mode, "margin": margin}, EffectResources()).apply(
        image.copy(), faces
    )
    changed = np.any(out != image, axis=2)
    assert not changed[~grown_boxes_mask(image.shape, faces, 2 * margin)].any()
    # The same landmarks on the blurred image no longer give the same person.
    encoder = shared_encoder()
    before, after = encoder.encode_faces(image, faces), encoder.encode_faces(out, faces)
    assert np.all(face_distance(before, after) > SAME_PERSON_THRESHOLD)


def test_margin_grows_the_hidden_area(scenes: dict[str, tuple[np.ndarray, list[Face]]]) -> None:
    image, faces = scenes["paul_rudd"]
    areas = []
    for margin in (0.0, 0.2, 0.5):
        out = build_effect("blur", {"margin": margin}, EffectResources()).apply(image.copy(), faces)
        areas.append(int(np.any(out != image, axis=2).sum()))
    assert areas[0] < areas[1] < areas[2]


@pytest.mark.parametrize(
    ("params", "ok"),
    [
        ({"mode": "gaussian", "strength": 1.0}, True),
        ({"mode": "mosaic"}, False),
        ({"margin": -0.1}, False),
    ],
)
def test_blur_params(params: dict[str, object], ok: bool) -> None:
    spec = get_effect_spec("blur")
    assert spec.needs_faces and not spec.needs_landmarks68
    if ok:
        assert spec.validate(params)["mode"] == params["mode"]
    else:
        with pytest.raises(InvalidParams):
            spec.validate(params)
