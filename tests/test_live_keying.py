"""The key-colour background on a real keyed frame: a real portrait, the real detector's face."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load_rgb, portrait_path

from engines.effects.filters import NoEffect
from engines.types import Face
from stream.keying import KeyedBackground, parse_key_colour


@pytest.fixture(scope="module")
def portrait_frame() -> tuple[np.ndarray, list[Face]]:
    """A 320x240 RGB frame with a portrait in it, and the detector's face on it."""
    from engines.detection import FaceDetector

    portrait = load_rgb(portrait_path("kate_siegel"), 240)
    frame = np.full((240, 320, 3), 60, np.uint8)
    left = 160 - portrait.shape[1] // 2
    frame[:, left : left + portrait.shape[1]] = portrait[:240]
    found = FaceDetector(device="cpu").detect([frame])[0]
    assert len(found.boxes) == 1
    face = Face(
        track_id=1,
        box=np.asarray(found.boxes[0], np.float32),
        landmarks5=np.asarray(found.landmarks[0], np.float32),
    )
    return frame, [face]


def key_leaning_share(image: np.ndarray, pixels: np.ndarray, key: np.ndarray) -> float:
    """Of `pixels` (HxW bool), the share that lean strongly toward the key colour: their
    channels where the key is high exceed those where it is low by more than 40."""
    rgb = image.astype(np.int16)
    high, low = key > 127, key <= 127
    lean = rgb[:, :, high].min(axis=2) - rgb[:, :, low].max(axis=2) > 40
    return float((lean & pixels).sum() / max(int(pixels.sum()), 1))


@pytest.mark.parametrize("background", ["green", "ff00ff", "0000ff"])
def test_keyed_frame_has_no_key_colour_mixed_into_the_head(
    portrait_frame: tuple[np.ndarray, list[Face]], background: str
) -> None:
    """Every pixel is either exactly the key colour or exactly the effect's picture: none is
    a mix, so a keyer makes each one either transparent or clean (before: the soft edge
    blended the head into the key; 68% of the non-key pixels leaned strongly green)."""
    frame, faces = portrait_frame
    colour = parse_key_colour(background)
    key = np.asarray(colour, np.uint8)
    out = KeyedBackground(NoEffect(), colour).apply(frame.copy(), faces)
    is_key = (out == key).all(axis=2)
    kept = ~is_key
    assert 1500 < kept.sum() < 0.5 * kept.size, "the head region is missing or too large"
    assert (out[kept] == frame[kept]).all(), "pixels of the head are mixed with the key colour"
    assert key_leaning_share(out, kept, key) <= key_leaning_share(frame, kept, key) + 0.01
    x1, y1, x2, y2 = (int(v) for v in faces[0].box)
    assert not is_key[(y1 + y2) // 2, (x1 + x2) // 2], "the face itself is keyed out"
