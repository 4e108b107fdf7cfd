"""neural_style: availability, the model files (both formats, broken ones), the trainer,
and the effect on a generated webcam frame."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.effects.base import EffectResources
from engines.effects.neural_style import NeuralStyle, processing_size
from engines.effects.registry import build_effect, describe_effects
from engines.errors import EffectUnavailable, ModelLoadError
from engines.style_net import (
    FORMAT_NAME,
    StyleNet,
    StyleNetConfig,
    load_style_model,
    save_style_model,
    shared_style_model,
)
from engines.style_train import StyleTrainConfig, train_style_model
from tests.conftest import load_rgb, portrait_path
from tests.synthetic import linear_path, make_clip

TINY = StyleNetConfig(width=0.25, residual_blocks=1, train_size=64)


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    """A 320x240 webcam-like RGB frame: a real portrait over a textured background."""
    face = load_rgb(portrait_path("paul_rudd"), max_side=400)
    clip = make_clip(face, linear_path(1, (160, 120), (160, 120)), (320, 240), 180)
    return clip.frames[0]


def random_model(path: Path, config: StyleNetConfig, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    return save_style_model(StyleNet(config), path, {"made_by": "test"})


# The classic PyTorch fast-neural-style example's TransformerNet, as key -> shape,
# written out from its published layer list (not derived from StyleNet).
def classic_shapes() -> dict[str, tuple[int, ...]]:
    convs = {"conv1": (32, 3, 9), "conv2": (64, 32, 3), "conv3": (128, 64, 3)}
    convs |= {"deconv1": (64, 128, 3), "deconv2": (32, 64, 3), "deconv3": (3, 32, 9)}
    for block in range(1, 6):
        convs |= {f"res{block}.conv1": (128, 128, 3), f"res{block}.conv2": (128, 128, 3)}
    shapes: dict[str, tuple[int, ...]] = {}
    for name, (out, inp, k) in convs.items():
        shapes[f"{name}.conv2d.weight"] = (out, inp, k, k)
        shapes[f"{name}.conv2d.bias"] = (out,)
    norms = {"in1": 32, "in2": 64, "in3": 128, "in4": 64, "in5": 32}
    norms |= {f"res{b}.in{i}": 128 for b in range(1, 6) for i in (1, 2)}
    for name, channels in norms.items():
        shapes[f"{name}.weight"] = shapes[f"{name}.bias"] = (channels,)
    return shapes


def classic_state(extra: dict[str, tuple[int, ...]] | None = None) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    shapes = classic_shapes() | {"in1.running_mean": (32,), "in1.running_var": (32,)}
    shapes |= extra or {}
    return {key: torch.randn(shape, generator=generator) * 0.05 for key, shape in shapes.items()}


def style_effect(path: Path, **params: float) -> NeuralStyle:
    effect = build_effect(
        "neural_style", params, EffectResources(weights_dir=path.parent, model_path=path)
    )
    assert isinstance(effect, NeuralStyle)
    return effect


@pytest.mark.parametrize(
    "layout",
    ["no_weights_dir", "empty_style_dir", "style_dir_without_models", "missing_model_path"],
)
def test_unavailable_without_a_model(tmp_path: Path, layout: str) -> None:
    model_path = None
    if layout != "no_weights_dir":
        (tmp_path / "style").mkdir()
    if layout == "style_dir_without_models":
        (tmp_path / "style" / "notes.txt").write_text("not a model")
    if layout == "missing_model_path":
        model_path = tmp_path / "style" / "gone.pth"
    resources = EffectResources(weights_dir=tmp_path, model_path=model_path)
    entry = next(e for e in describe_effects(resources) if e["name"] == "neural_style")
    assert entry["available"] is False
    expected = "does not exist" if model_path else f"no style model in {tmp_path / 'style'}"
    assert expected in entry["reason"] and "style_train" in entry["reason"]
    with pytest.raises(EffectUnavailable, match="neural_style"):
        build_effect("neural_style", {}, resources)


def test_available_with_a_model_in_weights_style(tmp_path: Path) -> None:
    random_model(tmp_path / "style" / "b.pth", TINY)
    random_model(tmp_path / "style" / "a.pth", TINY, seed=1)
    resources = EffectResources(weights_dir=tmp_path)
    entry = next(e for e in describe_effects(resources) if e["name"] == "neural_style")
    assert entry["available"] is True and entry["reason"] is None
    assert set(entry["params"]) == {"strength", "scale"}
    effect = build_effect("neural_style", {}, resources)
    assert isinstance(effect, NeuralStyle)
    assert effect.model.path.name == "a.pth"  # the first by name


@pytest.mark.parametrize(
    ("config", "scale"),
    [
        (TINY, 0.5),
        (StyleNetConfig(width=0.25, residual_blocks=3), 0.25),  # SMALL without the skip
        (StyleNetConfig(width=0.25, residual_blocks=3), 1.0),
        (StyleNetConfig(width=1.0, residual_blocks=5), 0.25),
    ],
)
def test_random_model_changes_the_frame(
    tmp_path: Path, frame: np.ndarray, config: StyleNetConfig, scale: float
) -> None:
    path = random_model(tmp_path / "style" / "random.pth", config)
    effect = style_effect(path, scale=scale)
    out = effect.apply(frame.copy(), [])
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert np.abs(out.astype(np.int16) - frame).mean() > 2.0
    first_conv = dict(effect.model.net.named_parameters())["down.0.conv.weight"]
    assert first_conv.is_contiguous(memory_format=torch.channels_last)


def test_strength_blends_with_the_original(tmp_path: Path, frame: np.ndarray) -> None:
    path = random_model(tmp_path / "style" / "random.pth", TINY)
    full = style_effect(path, strength=1.0).apply(frame.copy(), [])
    half = style_effect(path, strength=0.5).apply(frame.copy(), [])
    none = style_effect(path, strength=0.0).apply(frame.copy(), [])
    assert np.array_equal(none, frame)
    expected = (full.astype(np.float32) + frame) / 2
    assert np.abs(half - expected).max() <= 1.0


@pytest.mark.parametrize(
    ("size", "scale", "expected"),
    [((640, 480), 0.5, (320, 240)), ((641, 479), 1.0, (640, 480)), ((30, 20), 0.25, (16, 16))],
)
def test_processing_size(size: tuple[int, int], scale: float, expected: tuple[int, int]) -> None:
    assert processing_size(*size, scale) == expected


def test_trained_model_runs_and_takes_the_style_colour(tmp_path: Path, frame: np.ndarray) -> None:
    red = np.zeros((64, 64, 3), np.uint8)
    red[..., 0] = 220
    red[::8] = (120, 10, 10)  # stripes: some texture
    losses: list[float] = []
    net = dataclasses.replace(TINY, input_skip=True)
    config = StyleTrainConfig(iterations=12, batch_size=1, size=64, style_size=64, net=net)
    path = train_style_model(
        red,
        [frame],
        tmp_path / "style" / "red.pth",
        config,
        tmp_path,
        lambda i, x: losses.append(x),
    )
    assert len(losses) == 12 and all(np.isfinite(losses))
    model = load_style_model(path)
    assert model.source == "facestream" and model.metadata["features"] == "random"
    assert model.config.train_size == 64 and model.config.input_skip
    out = style_effect(path).apply(frame.copy(), [])
    assert out.shape == frame.shape and out.dtype == np.uint8
    redness_before = frame[..., 0].mean() - frame[..., 1:].mean()
    redness_after = out[..., 0].mean() - out[..., 1:].mean()
    assert redness_after > redness_before + 6.0  # about +14 measured


def test_classic_example_state_dict_loads(tmp_path: Path, frame: np.ndarray) -> None:
    state = classic_state()
    path = tmp_path / "style" / "classic.pth"
    path.parent.mkdir()
    torch.save(state, path)
    model = load_style_model(path)
    assert model.source == "pytorch-example"
    assert (model.config.width, model.config.residual_blocks) == (1.0, 5)
    loaded = model.net.state_dict()
    placed = {
        "conv1.conv2d.weight": "down.0.conv.weight",
        "in3.bias": "down_norms.2.bias",
        "res5.conv2.conv2d.weight": "residuals.4.conv_b.conv.weight",
        "res2.in1.weight": "residuals.1.norm_a.weight",
        "deconv2.conv2d.bias": "up.1.conv.bias",
        "in4.weight": "up_norms.0.weight",
        "deconv3.conv2d.weight": "out.conv.weight",
    }
    for key, name in placed.items():
        assert torch.equal(state[key], loaded[name]), key
    out = style_effect(path, scale=0.25).apply(frame.copy(), [])
    assert out.shape == frame.shape and out.dtype == np.uint8


def _corrupt(path: Path) -> None:
    path.write_bytes(b"PK\x03\x04 not really a torch file" + bytes(range(256)))


def _truncated(path: Path) -> None:
    random_model(path, TINY)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _mismatched(path: Path) -> None:
    random_model(path, TINY)
    payload = torch.load(path, weights_only=True)
    payload["config"] = json.dumps({"width": 0.5, "residual_blocks": 1, "train_size": 64})
    torch.save(payload, path)


def _foreign(path: Path) -> None:
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, path)


def _classic_with_extra_layer(path: Path) -> None:
    torch.save(classic_state({"res6.conv3.conv2d.weight": (4,)}), path)


def _classic_with_a_note(path: Path) -> None:
    torch.save({**classic_state(), "note": "trained on mosaic.jpg"}, path)


def _future_version(path: Path) -> None:
    torch.save({"format": FORMAT_NAME, "version": 99, "config": "{}", "state_dict": {}}, path)


def _pickled_code(path: Path) -> None:
    torch.save({"format": FORMAT_NAME, "net": StyleNet(TINY)}, path)


@pytest.mark.parametrize(
    ("writer", "message"),
    [
        (_corrupt, "not a readable style model"),
        (_truncated, "not a readable style model"),
        (_mismatched, "do not match the style network config"),
        (_foreign, "neither a facestream style model nor a fast-neural-style state dict"),
        (_classic_with_extra_layer, "unexpected key 'res6.conv3.conv2d.weight'"),
        (_classic_with_a_note, "non-tensor values"),
        (_future_version, "format version 99"),
        (_pickled_code, "not a readable style model"),
    ],
)
def test_bad_model_files(tmp_path: Path, writer: Callable[[Path], None], message: str) -> None:
    path = tmp_path / "style" / "bad.pth"
    path.parent.mkdir()
    writer(path)
    with pytest.raises(ModelLoadError, match=message) as caught:
        load_style_model(path)
    assert str(path) in str(caught.value)
    with pytest.raises(EffectUnavailable, match=message):
        build_effect("neural_style", {}, EffectResources(weights_dir=tmp_path))


def test_models_are_shared_until_the_file_changes(tmp_path: Path) -> None:
    path = random_model(tmp_path / "style" / "shared.pth", TINY)
    first = style_effect(path).model
    assert style_effect(path).model is first
    random_model(path, TINY, seed=5)
    assert shared_style_model(path) is not first


def test_trainer_uses_a_perceptual_network_when_present(tmp_path: Path, frame: np.ndarray) -> None:
    from torchvision.models import resnet18

    (tmp_path / "perceptual").mkdir()
    torch.save(resnet18(weights=None).state_dict(), tmp_path / "perceptual" / "resnet18.pth")
    config = StyleTrainConfig(iterations=2, batch_size=1, size=64, style_size=64, net=TINY)
    path = train_style_model(frame, [frame], tmp_path / "p.pth", config, tmp_path)
    assert load_style_model(path).metadata["features"] == "perceptual"


def test_training_command_line(tmp_path: Path, frame: np.ndarray) -> None:
    import cv2

    from engines.style_train import main

    cv2.imwrite(str(tmp_path / "style.png"), np.ascontiguousarray(frame[::4, ::4, ::-1]))
    (tmp_path / "photos").mkdir()
    cv2.imwrite(str(tmp_path / "photos" / "a.jpg"), np.ascontiguousarray(frame[:, :, ::-1]))
    out = tmp_path / "weights" / "style" / "cli.pth"
    argv = ["--style", str(tmp_path / "style.png"), "--content", str(tmp_path / "photos")]
    argv += ["--out", str(out), "--iters", "2", "--size", "64", "--batch", "1", "--blocks", "1"]
    assert main([*argv, "--weights-dir", str(tmp_path / "weights")]) == 0
    model = load_style_model(out)
    assert (model.config.residual_blocks, model.config.train_size) == (1, 64)
    assert main([*argv[:2], "--content", str(tmp_path / "nothing"), *argv[4:]]) == 2
