"""Pixel tests of the visible "AI-modified" label: present where a face was swapped, absent
where none was, on frames, on live video and in converted files."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import SHARED_DATA, load_rgb, portrait_path
from security_helpers import read_frames, write_clip
from synthetic import background, linear_path, make_clip

from engines.label import (
    DEFAULT_STYLE,
    LabelStyle,
    draw_label,
    has_label,
    label_score,
    render_badge,
)
from engines.types import Face
from stream.label_stage import LabelStage
from stream.pipeline import FrameContext
from stream.settings import Settings

pytestmark = pytest.mark.timeout(300)


def _real_images() -> list[np.ndarray]:
    images = [load_rgb(portrait_path(name), 640) for name in ("kate_siegel", "paul_rudd")]
    images.append(load_rgb(SHARED_DATA / "multiface.jpg"))
    images.append(background(640, 480, seed=4))
    return images


# --- the badge --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [(160, 120), (320, 240), (640, 480), (1280, 720), (1920, 1080), (480, 854)]
)
@pytest.mark.parametrize("corner", ["top-left", "top-right", "bottom-left", "bottom-right"])
def test_badge_is_readable_and_in_its_corner(size: tuple[int, int], corner: Any) -> None:
    width, height = size
    badge = render_badge(width, height, LabelStyle(corner=corner))
    assert badge.height >= max(0.025 * height, 16)
    assert badge.x >= 0 and badge.x + badge.width <= width
    assert badge.y >= 0 and badge.y + badge.height <= height
    assert (badge.x < width / 2) == corner.endswith("left")
    assert (badge.y < height / 2) == corner.startswith("top")
    assert badge.text_mask.max() > 0.9 and 0.05 < badge.text_mask.mean() < 0.5


@pytest.mark.parametrize("index", range(4))
def test_label_changes_only_its_corner_and_is_detected(index: int) -> None:
    image = _real_images()[index]
    assert not has_label(image)
    labelled = draw_label(image.copy())
    assert has_label(labelled) and label_score(labelled) > 0.9
    badge = render_badge(image.shape[1], image.shape[0])
    outside = np.ones(image.shape[:2], bool)
    outside[badge.y : badge.y + badge.height, badge.x : badge.x + badge.width] = False
    assert np.array_equal(labelled[outside], image[outside])
    region = labelled[badge.y : badge.y + badge.height, badge.x : badge.x + badge.width]
    text = badge.text_mask > 0.9
    assert region[text].min() >= 220  # (nearly) opaque white text
    box = badge.text_mask < 0.05
    assert region[box].max() <= 0.3 * 255 + 0.7 * 16 + 1  # a dark box on any background


@pytest.mark.parametrize("key", [(0, 255, 0), (0, 0, 255), (255, 0, 255)])
def test_badge_carries_no_key_colour(key: tuple[int, int, int]) -> None:
    """Over a chroma-key background the badge is grey and white: a keyer leaves it alone."""
    image = np.empty((480, 640, 3), np.uint8)
    image[...] = key
    draw_label(image)
    badge = render_badge(640, 480)
    region = image[badge.y : badge.y + badge.height, badge.x : badge.x + badge.width].astype(int)
    assert (region.max(axis=2) - region.min(axis=2)).max() <= 1
    assert has_label(image)


def test_label_survives_lossy_video_coding(tmp_path: Path) -> None:
    images = [cv2.resize(image, (640, 480)) for image in _real_images()] * 2
    frames = [draw_label(image.copy()) if i % 2 == 0 else image for i, image in enumerate(images)]
    decoded = read_frames(write_clip(tmp_path / "lossy.mp4", frames, crf=35))
    assert [has_label(f) for f in decoded] == [i % 2 == 0 for i in range(len(frames))]


# --- the stage --------------------------------------------------------------------------------

_FACE = Face(
    track_id=1, box=np.array([10, 10, 60, 60], np.float32), landmarks5=np.zeros((5, 2), np.float32)
)


@pytest.mark.parametrize(
    ("enabled", "faces", "labelled"),
    [(True, [_FACE], True), (True, [], False), (False, [_FACE], False), (False, [], False)],
)
def test_label_stage_labels_only_frames_with_changed_faces(
    enabled: bool, faces: list[Face], labelled: bool
) -> None:
    image = _real_images()[0]
    stage = LabelStage(enabled=enabled)
    ctx = FrameContext(image=image.copy(), index=0, faces=list(faces))
    stage.process(ctx)
    assert has_label(ctx.image) is labelled
    assert np.array_equal(ctx.image, image) is not labelled
    assert stage.labelled == int(labelled)


def test_label_stage_copes_with_read_only_frames() -> None:
    image = _real_images()[1]
    image.setflags(write=False)
    ctx = FrameContext(image=image, index=0, faces=[_FACE])
    LabelStage(enabled=True).process(ctx)
    assert has_label(ctx.image) and not has_label(image)


def test_operator_setting_reaches_the_stage(tmp_path: Path) -> None:
    from stream.models import SharedModels

    for enabled in (True, False):
        stage = (
            SharedModels(Settings(data_dir=tmp_path, label_swaps=enabled), "cpu")
            .stage_factories()
            .label
        )
        assert stage is not None
        built = stage()
        assert isinstance(built, LabelStage) and built.enabled is enabled


def test_no_swap_effect_has_a_label_switch() -> None:
    """Users choose effects and their parameters; the label is not one of them."""
    from engines.effects.registry import all_effects

    for spec in all_effects().values():
        if spec.changes_identity:
            switches = [p for p in spec.params if any(w in p for w in ("label", "mark", "prov"))]
            assert not switches, (spec.name, switches)


# --- swapped frames, live video and files (the real swap effect) -----------------------------


@pytest.fixture(scope="module")
def swap_setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    pytest.importorskip(
        "stream.face_stage", reason="the face stage (detection + tracking) is not in the tree yet"
    )
    from stream.face_store import FaceStore

    folder = tmp_path_factory.mktemp("swap")
    store = FaceStore(folder / "faces")
    face_id = store.add(load_rgb(portrait_path("paul_rudd"), 640), consent=True)
    portrait = load_rgb(portrait_path("kate_siegel"), 640)
    clip = make_clip(
        portrait, linear_path(8, (260, 240), (380, 240)), size=(640, 480), portrait_height=320
    )
    empty = [background(640, 480, seed=s) for s in range(4)]  # no face
    return {
        "folder": folder,
        "store": store,
        "face_id": face_id,
        "faces": clip.frames,
        "empty": empty,
    }


def _swap_pipeline(setup: dict[str, Any], label_swaps: bool) -> Any:
    from engines.effects.base import EffectResources
    from stream.convert import build_pipeline
    from stream.models import SharedModels

    settings = Settings(data_dir=setup["folder"], label_swaps=label_swaps)
    resources = EffectResources(device="cpu", source_faces=setup["store"])
    params = {"source_face": setup["face_id"]}
    return build_pipeline("swap", params, resources, SharedModels(settings, "cpu"))


@pytest.mark.parametrize("label_swaps", [True, False])
def test_swapped_frames_carry_the_label_unswapped_frames_do_not(
    swap_setup: dict[str, Any], label_swaps: bool
) -> None:
    pipeline = _swap_pipeline(swap_setup, label_swaps)
    try:
        # process() works in place on the array it is given: hand it copies
        with_faces = [pipeline.process(frame.copy()) for frame in swap_setup["faces"]]
        pipeline.reset()
        without = [pipeline.process(frame.copy()) for frame in swap_setup["empty"]]
    finally:
        pipeline.close()
    changed = [ctx for ctx in with_faces if ctx.faces]
    assert len(changed) >= len(with_faces) - 2  # the face is found on (almost) every frame
    assert all(has_label(ctx.image) is label_swaps for ctx in changed)
    assert all(not ctx.faces and not has_label(ctx.image) for ctx in without)
    assert all(
        np.array_equal(ctx.image, frame)
        for ctx, frame in zip(without, swap_setup["empty"], strict=True)
    )


def test_converted_swapped_file_is_labelled_and_tagged(
    swap_setup: dict[str, Any], tmp_path: Path
) -> None:
    from engines.effects.base import EffectResources
    from stream.convert import convert_file
    from stream.provenance import read_tags

    # After the face leaves, its track coasts (and is still swapped, and labelled) for up
    # to FaceTracker.visible_misses (5) frames; the frames after that are untouched.
    frames = swap_setup["faces"] + swap_setup["empty"] * 3
    source = write_clip(tmp_path / "in.mp4", frames, crf=18)
    output = tmp_path / "out.mp4"
    settings = Settings(data_dir=swap_setup["folder"])
    resources = EffectResources(device="cpu", source_faces=swap_setup["store"])
    convert_file(
        source, output, "swap", {"source_face": swap_setup["face_id"]}, resources, settings
    )
    decoded = read_frames(output)
    assert len(decoded) == len(frames)
    assert sum(has_label(f) for f in decoded[:8]) >= 6
    assert not any(has_label(f) for f in decoded[8 + 6 :])
    assert read_tags(output)["comment"].startswith("AI-modified by facestream: effect=swap")


def test_live_swapped_video_carries_the_label(swap_setup: dict[str, Any]) -> None:
    from server_helpers import running_server
    from webrtc_helpers import ClipTrack, connect

    settings = Settings(data_dir=swap_setup["folder"])

    async def run(url: str, face_id: str) -> list[np.ndarray]:
        source = ClipTrack(swap_setup["faces"], fps=15, loop=True)
        pc, collector, _ = await connect(
            url, source, {"name": "swap", "params": {"source_face": face_id}}
        )
        try:
            await collector.wait_for(15, timeout=90)
        finally:
            await pc.close()
            source.stop()
        return [image for _, _, image in collector.frames[5:]]

    with running_server(settings) as server:  # its face store is the fixture's folder
        received = asyncio.run(run(server.url, swap_setup["face_id"]))
    assert sum(has_label(image) for image in received) >= 0.8 * len(received)


def test_style_default_is_bottom_right() -> None:
    assert DEFAULT_STYLE.corner == "bottom-right" and DEFAULT_STYLE.text == "AI-modified"
