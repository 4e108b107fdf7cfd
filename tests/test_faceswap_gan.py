"""faceswap-GAN: networks, augmentation, losses, a short real training run on faces
extracted from the crowd video and the portraits, resume, export, and `gan_swap`
in the pipeline and in `convert`."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, load_rgb, portrait_path
from faceswap_helpers import (
    TINY_MODEL,
    count_video_frames,
    extract_portrait_faces,
    extract_video_faces,
    stage_factories,
    tiny_train_config,
    write_mp4,
)
from synthetic import linear_path, make_clip

from engines.alignment import crop_bounds_in_frame, estimate_alignment
from engines.effects.base import EffectResources
from engines.effects.registry import build_effect, describe_effects, get_effect_spec
from engines.errors import EffectUnavailable, ModelLoadError
from engines.faceswap_gan import losses
from engines.faceswap_gan.augment import AugmentConfig, augment_batch
from engines.faceswap_gan.dataset import FaceDataset, read_manifest
from engines.faceswap_gan.model import (
    Decoder,
    FaceswapConfig,
    FaceswapGenerator,
    PatchDiscriminator,
    SelfAttention,
    SwapNet,
)
from engines.faceswap_gan.modelfile import export_model, load_model
from engines.faceswap_gan.reports import read_loss_log
from engines.faceswap_gan.trainer import FaceswapTrainer
from engines.types import Face
from stream.cli import main as cli_main
from stream.pipeline import EffectPipeline

TRAIN_ITERS = 24


@dataclass(frozen=True)
class Run:
    out: Path
    rows: list[dict[str, float]]
    model: Path


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FaceDataset]:
    root = tmp_path_factory.mktemp("pair")
    extract_video_faces(root / "a", frames=4)
    extract_portrait_faces(root / "b")
    return {"a": FaceDataset(root / "a", 64), "b": FaceDataset(root / "b", 64)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, datasets: dict[str, FaceDataset]) -> Run:
    out = tmp_path_factory.mktemp("run")
    trainer = FaceswapTrainer(TINY_MODEL, tiny_train_config(TRAIN_ITERS), datasets, out)
    assert not trainer.resume()
    model = trainer.train()
    return Run(out=out, rows=read_loss_log(out / "loss_log.csv"), model=model)


# ----- networks ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [64, 128, 256])
def test_generator_draws_face_and_mask_at_each_size(size: int) -> None:
    config = FaceswapConfig(size=size, width=4, max_width=16, latent_dim=16)
    generator, critic = FaceswapGenerator(config), PatchDiscriminator(config)
    faces = torch.rand(2, 3, size, size) * 2 - 1
    for identity in ("a", "b"):
        rgb, mask = generator(faces, identity)
        assert rgb.shape == (2, 3, size, size) and mask.shape == (2, 1, size, size)
        assert rgb.abs().max() <= 1 and mask.min() >= 0 and mask.max() <= 1
    assert critic(faces, faces).shape == (2, 1, size // 8, size // 8)
    assert any(isinstance(m, SelfAttention) for m in generator.encoder.modules())
    assert any(isinstance(m, SelfAttention) for m in generator.decoders["a"].modules())


@pytest.mark.parametrize(
    "changes",
    [{"size": 96}, {"width": 2}, {"max_width": 4, "width": 8}, {"decoder_res_blocks": -1}],
)
def test_config_rejects_bad_shapes(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        replace(TINY_MODEL, **changes)


def test_config_round_trips_and_rejects_unknown_keys() -> None:
    assert FaceswapConfig.from_dict(TINY_MODEL.to_dict()) == TINY_MODEL
    with pytest.raises(ValueError, match="unknown"):
        FaceswapConfig.from_dict({**TINY_MODEL.to_dict(), "depth": 3})


def test_fresh_self_attention_is_the_identity() -> None:
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(SelfAttention(16)(x), x)


# ----- augmentation and losses ------------------------------------------------------------


def _faces(batch: int = 3, size: int = 64) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


_OFF = AugmentConfig(
    rotation_deg=0, zoom=0, shift=0, mirror=False, warp=0, brightness=0, contrast=0, saturation=0
)


@pytest.mark.parametrize(
    ("config", "inputs_equal", "targets_equal"),
    [
        (_OFF, True, True),
        (replace(_OFF, warp=0.03), False, True),
        (replace(_OFF, rotation_deg=20), False, False),
    ],
)
def test_augmentation_warps_inputs_and_moves_targets(
    config: AugmentConfig, inputs_equal: bool, targets_equal: bool
) -> None:
    faces = _faces()
    batch = augment_batch(faces, (faces[:, :1] + 1) / 2, config, torch.Generator().manual_seed(1))
    assert torch.allclose(batch.inputs, faces, atol=1e-4) == inputs_equal
    assert torch.allclose(batch.targets, faces, atol=1e-4) == targets_equal
    # Regions move exactly like the targets (compare away from the padded corners).
    centre = slice(16, 48)
    regions_as_image = batch.regions[:, :, centre, centre] * 2 - 1
    assert torch.allclose(regions_as_image, batch.targets[:, :1, centre, centre], atol=1e-4)


def test_colour_augmentation_is_shared_by_input_and_target() -> None:
    faces = _faces()
    config = replace(_OFF, brightness=0.3, contrast=0.3, saturation=0.3)
    batch = augment_batch(
        faces, torch.zeros(3, 2, 64, 64), config, torch.Generator().manual_seed(2)
    )
    assert torch.allclose(batch.inputs, batch.targets) and not torch.allclose(batch.targets, faces)


@pytest.mark.parametrize(("where", "expected"), [("eyes", "higher"), ("cheek", "equal")])
def test_eye_regions_weigh_more_in_the_edge_loss(where: str, expected: str) -> None:
    target = torch.zeros(1, 3, 64, 64)
    eyes = torch.zeros(1, 1, 64, 64)
    eyes[..., 20:30, 10:54] = 1
    damaged = target.clone()
    rows = slice(22, 28) if where == "eyes" else slice(45, 51)
    damaged[..., rows, 30:31] = 1.0
    plain = losses.edge_loss(damaged, target, eyes, eye_boost=0.0)
    boosted = losses.edge_loss(damaged, target, eyes, eye_boost=4.0)
    assert losses.edge_loss(target, target, eyes, 4.0) == 0
    assert (boosted > plain * 1.5) if expected == "higher" else (boosted < plain)


def test_lsgan_targets() -> None:
    ones, zeros = torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    assert (
        losses.lsgan_generator_loss(ones) == 0 and losses.lsgan_discriminator_loss(ones, zeros) == 0
    )
    assert losses.lsgan_discriminator_loss(zeros, ones) == 1


def test_perceptual_loss_is_left_out_without_weights(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert losses.load_perceptual_network(tmp_path) is None
    assert "perceptual loss disabled" in caplog.text and str(tmp_path / "perceptual") in caplog.text


def test_perceptual_loss_from_a_state_dict(
    tmp_path: Path, datasets: dict[str, FaceDataset]
) -> None:
    from torchvision.models import resnet18

    (tmp_path / "perceptual").mkdir()
    torch.save(resnet18(weights=None).state_dict(), tmp_path / "perceptual" / "resnet18.pth")
    network = losses.load_perceptual_network(tmp_path)
    assert network is not None
    faces = _faces(2).requires_grad_()
    assert network.loss(faces.detach(), faces.detach()) == 0
    loss = network.loss(faces, faces.detach().flip(-1))
    loss.backward()
    assert loss > 0 and faces.grad is not None and faces.grad.abs().sum() > 0
    trainer = FaceswapTrainer(
        TINY_MODEL, tiny_train_config(1, batch_size=2), datasets, tmp_path / "run", network
    )
    assert {"perceptual_a", "perceptual_b"} <= set(trainer.step())


def test_unusable_perceptual_weights_are_an_error(tmp_path: Path) -> None:
    (tmp_path / "perceptual").mkdir()
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "perceptual" / "mystery.pth")
    with pytest.raises(ModelLoadError, match="VGG16/19 or ResNet"):
        losses.load_perceptual_network(tmp_path)


# ----- training ---------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "most"), [("g_total", 0.85), ("recon_a", 0.6), ("recon_b", 0.6)])
def test_loss_falls(trained: Run, key: str, most: float) -> None:
    values = [row[key] for row in trained.rows]
    assert len(values) == TRAIN_ITERS
    first, last = np.mean(values[:4]), np.mean(values[-4:])
    assert last < most * first, f"{key} went from {first:.3f} to {last:.3f}"


def test_run_folder_holds_previews_log_curve_and_model(trained: Run) -> None:
    for name in (
        "checkpoint.pt",
        "model.pt",
        "config.json",
        "loss_log.csv",
        "loss_curve.png",
        "preview.png",
    ):
        assert (trained.out / name).is_file(), name
    previews = sorted(p.name for p in (trained.out / "previews").glob("*.png"))
    assert previews == ["iter_0000010.png", "iter_0000020.png", "iter_0000024.png"]
    grid = load_rgb(trained.out / "preview.png")
    assert grid.shape[0] > 8 * 64 and grid.shape[1] > 4 * 64  # 8 faces x 4 columns


def test_checkpoint_resumes_where_it_stopped(
    trained: Run, datasets: dict[str, FaceDataset], tmp_path: Path
) -> None:
    out = tmp_path / "resumed"
    shutil.copytree(trained.out, out)
    trainer = FaceswapTrainer(TINY_MODEL, tiny_train_config(TRAIN_ITERS + 4), datasets, out)
    assert trainer.resume() and trainer.iteration == TRAIN_ITERS
    saved = load_model(trained.model).generator.state_dict()
    assert all(torch.equal(saved[k], v) for k, v in trainer.generator.state_dict().items())
    trainer.train()
    iterations = [int(row["iteration"]) for row in read_loss_log(out / "loss_log.csv")]
    assert iterations == list(range(1, TRAIN_ITERS + 5))
    assert load_model(out / "model.pt").metadata["iterations"] == TRAIN_ITERS + 4


def test_resumed_training_equals_uninterrupted_training(
    datasets: dict[str, FaceDataset], tmp_path: Path
) -> None:
    config = replace(TINY_MODEL, width=4, max_width=8, latent_dim=8, attention_resolutions=())
    straight = FaceswapTrainer(
        config, tiny_train_config(4, batch_size=2), datasets, tmp_path / "straight"
    )
    straight.train()
    FaceswapTrainer(
        config, tiny_train_config(2, batch_size=2), datasets, tmp_path / "split"
    ).train()
    resumed = FaceswapTrainer(
        config, tiny_train_config(4, batch_size=2), datasets, tmp_path / "split"
    )
    assert resumed.resume()
    resumed.train()
    for key, value in straight.generator.state_dict().items():
        torch.testing.assert_close(resumed.generator.state_dict()[key], value, rtol=1e-4, atol=1e-5)


def test_resume_refuses_another_model_config(
    trained: Run, datasets: dict[str, FaceDataset]
) -> None:
    trainer = FaceswapTrainer(
        replace(TINY_MODEL, latent_dim=16), tiny_train_config(30), datasets, trained.out
    )
    with pytest.raises(ModelLoadError, match="another model config"):
        trainer.resume()


# ----- the exported model -----------------------------------------------------------------


def test_exported_model_loads_and_draws_like_the_trainer(trained: Run) -> None:
    loaded = load_model(trained.model)
    assert loaded.config == TINY_MODEL and loaded.metadata["iterations"] == TRAIN_ITERS
    assert not any(p.requires_grad for p in loaded.generator.parameters())
    faces = _faces(2)
    rgb, mask = loaded.generator(faces, "b")
    assert rgb.shape == (2, 3, 64, 64) and mask.shape == (2, 1, 64, 64)
    # Only the generator is exported: no critics, no optimiser state.
    assert trained.model.stat().st_size < (trained.out / "checkpoint.pt").stat().st_size / 2


def _truncated(path: Path, source: Path) -> None:
    path.write_bytes(source.read_bytes()[: source.stat().st_size // 2])


def _foreign(path: Path, source: Path) -> None:
    torch.save({"weights": torch.zeros(3)}, path)


def _newer(path: Path, source: Path) -> None:
    payload = torch.load(source, weights_only=True)
    torch.save({**payload, "version": 99}, path)


def _mismatched(path: Path, source: Path) -> None:
    loaded = load_model(source)
    generator = FaceswapGenerator(replace(loaded.config, latent_dim=16))
    export_model(generator, path, {})
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "config": torch.load(source, weights_only=True)["config"]}, path)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (None, "does not exist"),
        (lambda p, s: p.write_bytes(b"\x00garbage" * 64), "not a readable faceswap model"),
        (_truncated, "not a readable faceswap model"),
        (_foreign, "not a facestream faceswap-GAN model"),
        (_newer, "format version 99"),
        (_mismatched, "do not match the model config"),
    ],
)
def test_bad_model_files_are_clear_errors(
    trained: Run, tmp_path: Path, damage: object, message: str
) -> None:
    path = tmp_path / "model.pt"
    if damage is not None:
        damage(path, trained.model)  # type: ignore[operator]
    with pytest.raises(ModelLoadError, match=message):
        load_model(path)
    with pytest.raises(EffectUnavailable, match=message):
        build_effect("gan_swap", {}, EffectResources(weights_dir=tmp_path, model_path=path))


def test_the_training_folder_stands_for_its_model(trained: Run, tmp_path: Path) -> None:
    """`--model` given the folder `facestream train faceswap --out` wrote (it was refused
    as 'model file ... does not exist'); a folder without a model says what it lacks."""
    folder = trained.model.parent
    effect = build_effect("gan_swap", {}, EffectResources(weights_dir=tmp_path, model_path=folder))
    assert effect is not None
    (tmp_path / "empty").mkdir()
    with pytest.raises(EffectUnavailable, match=r"empty.model\.pt does not exist"):
        build_effect(
            "gan_swap", {}, EffectResources(weights_dir=tmp_path, model_path=tmp_path / "empty")
        )


# ----- the gan_swap effect ----------------------------------------------------------------


def _forced_mask_model(trained: Run, tmp_path: Path) -> Path:
    """The trained model with decoder b's mask pinned near 1, so swaps are plainly visible."""
    loaded = load_model(trained.model)
    generator = FaceswapGenerator(loaded.config)
    generator.load_state_dict(loaded.generator.state_dict())
    with torch.no_grad():
        decoder = generator.decoders["b"]
        assert isinstance(decoder, Decoder)
        bias = decoder.to_mask.bias
        assert bias is not None
        bias.fill_(8.0)
    return export_model(generator, tmp_path / "forced" / "model.pt", loaded.metadata)


def test_gan_swap_is_listed_unavailable_without_a_model(tmp_path: Path) -> None:
    resources = EffectResources(weights_dir=tmp_path)
    entry = next(e for e in describe_effects(resources) if e["name"] == "gan_swap")
    assert not entry["available"] and "facestream train faceswap" in entry["reason"]
    assert set(entry["params"]) == {"direction", "color_match", "feather"}
    with pytest.raises(EffectUnavailable, match="no faceswap model"):
        build_effect("gan_swap", {}, resources)


def test_gan_swap_takes_the_newest_model_in_weights(trained: Run, tmp_path: Path) -> None:
    for age, name in ((200, "old"), (0, "new")):
        target = tmp_path / "faceswap" / name / "model.pt"
        target.parent.mkdir(parents=True)
        shutil.copy(trained.model, target)
        stamp = target.stat().st_mtime - age
        os.utime(target, (stamp, stamp))
    resources = EffectResources(weights_dir=tmp_path)
    assert get_effect_spec("gan_swap").unavailable_reason(resources) is None
    effect = build_effect("gan_swap", {"direction": "b_to_a"}, resources)
    assert effect.swapper.direction == "b_to_a"  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def clip_frames() -> list[np.ndarray]:
    """A head-and-shoulders portrait drifting slowly over a background (one face)."""
    portrait = load_rgb(portrait_path("paul_rudd"), 400)
    path = linear_path(3, (230, 180), (238, 182))
    return make_clip(portrait, path, size=(480, 360), portrait_height=300).frames


def _untouched(frame: np.ndarray, faces: list[Face]) -> np.ndarray:
    """(H, W) bool: outside every face's aligned crop and outside the label's corner."""
    untouched = np.ones(frame.shape[:2], bool)
    for face in faces:
        bounds = crop_bounds_in_frame(estimate_alignment(face.landmarks5, 64), frame.shape)
        if bounds is not None:
            untouched[bounds[1] : bounds[3], bounds[0] : bounds[2]] = False
    untouched[frame.shape[0] // 2 :, frame.shape[1] // 2 :] = False  # the AI-modified label
    return untouched


@pytest.mark.parametrize("forced_mask", [False, True])
def test_gan_swap_runs_in_the_pipeline(
    trained: Run, tmp_path: Path, clip_frames: list[np.ndarray], forced_mask: bool
) -> None:
    model = _forced_mask_model(trained, tmp_path) if forced_mask else trained.model
    effect = build_effect("gan_swap", {}, EffectResources(weights_dir=tmp_path, model_path=model))
    pipeline = EffectPipeline(get_effect_spec("gan_swap"), effect, stage_factories())
    for frame in clip_frames:
        ctx = pipeline.process(frame.copy())
        assert ctx.faces and ctx.image.shape == frame.shape and ctx.image.dtype == np.uint8
        diff = np.abs(ctx.image.astype(np.int16) - frame).sum(axis=-1)
        assert diff[_untouched(frame, ctx.faces)].max() == 0, (
            "pixels outside the face crops changed"
        )
        largest = max(ctx.faces, key=lambda f: f.width * f.height)
        x1, y1, x2, y2 = largest.box.astype(int)
        inside = diff[
            (y1 * 3 + y2) // 4 : (y1 + y2 * 3) // 4, (x1 * 3 + x2) // 4 : (x1 + x2 * 3) // 4
        ]
        assert largest.width > 60 and inside.mean() > (30 if forced_mask else 0), (
            f"face changed by {inside.mean():.1f} on average"
        )


def test_gan_swap_sends_all_faces_of_a_frame_as_one_batch(trained: Run, tmp_path: Path) -> None:
    from engines.detection import FaceDetector

    frame = load_rgb(SHARED_DATA / "multiface.jpg")
    found = FaceDetector(min_face_size=20).detect([frame])[0]
    faces = [replace(f, track_id=i) for i, f in enumerate(Face.from_detections(found))]
    effect = build_effect(
        "gan_swap", {}, EffectResources(weights_dir=tmp_path, model_path=trained.model)
    )
    real = effect.swapper  # type: ignore[attr-defined]
    batches: list[int] = []

    class Counting:
        size, padding = real.size, real.padding

        def __call__(self, crops: np.ndarray) -> object:
            batches.append(len(crops))
            return real(crops)

    effect.swapper = Counting()  # type: ignore[attr-defined]
    out = effect.apply(frame.copy(), faces)
    assert len(faces) >= 5 and batches == [len(faces)] and out.shape == frame.shape


@pytest.mark.parametrize("given", ["model file", "training folder"])
def test_convert_with_a_trained_model(
    trained: Run,
    tmp_path: Path,
    clip_frames: list[np.ndarray],
    capsys: pytest.CaptureFixture[str],
    given: str,
) -> None:
    source = write_mp4(tmp_path / "clip.mp4", clip_frames)
    output = tmp_path / "swapped.mp4"
    code = cli_main(
        [
            "convert",
            str(source),
            str(output),
            "--effect",
            "gan_swap",
            "--model",
            str(trained.model if given == "model file" else trained.model.parent),
            "-q",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert count_video_frames(output) == len(clip_frames)


def test_convert_with_a_corrupt_model_fails_in_one_line(
    tmp_path: Path, clip_frames: list[np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_mp4(tmp_path / "clip.mp4", clip_frames)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    code = cli_main(
        [
            "convert",
            str(source),
            str(tmp_path / "out.mp4"),
            "--effect",
            "gan_swap",
            "--model",
            str(broken),
            "-q",
        ]
    )
    lines = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and "not a readable faceswap model" in lines[0]
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("direction", ["a_to_b", "b_to_a"])
def test_swapper_through_a_compile_backend_matches_eager(trained: Run, direction: str) -> None:
    from engines.faceswap_gan.compiled import compile_swap_net
    from engines.faceswap_gan.inference import FaceSwapper, SwapCallable

    model = load_model(trained.model)

    def compile_fn(net: SwapNet, config: FaceswapConfig) -> SwapCallable:
        return compile_swap_net(
            net, config, name=f"test.{direction}", device="cpu", backend="eager"
        )

    crops = np.random.default_rng(0).integers(0, 255, (5, 64, 64, 3), np.uint8)
    eager = FaceSwapper(model, direction)(crops)  # type: ignore[arg-type]
    compiled = FaceSwapper(model, direction, compile_fn)(crops)  # type: ignore[arg-type]
    assert np.abs(eager.rgb.astype(int) - compiled.rgb).max() <= 1
    np.testing.assert_allclose(eager.mask, compiled.mask, atol=1e-4)


def _train_args(datasets: dict[str, FaceDataset], out: Path, *extra: str) -> list[str]:
    tiny = [
        "--width",
        "8",
        "--max-width",
        "32",
        "--latent",
        "32",
        "--attention",
        "16",
        "--batch-size",
        "2",
    ]
    folders = ["--a", str(datasets["a"].folder), "--b", str(datasets["b"].folder)]
    return ["train", "faceswap", *folders, "--out", str(out), "--size", "64", *tiny, *extra]


@pytest.mark.parametrize(
    ("extra", "iterations"),
    [(["--iters", "2"], 2), (["--iters", "1000", "--max-minutes", "0.0001"], 1)],
)
def test_cli_trains_and_exports(
    datasets: dict[str, FaceDataset],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    extra: list[str],
    iterations: int,
) -> None:
    out = tmp_path / "weights" / "faceswap" / "pair"
    assert cli_main(_train_args(datasets, out, "--weights-dir", str(tmp_path), *extra)) == 0
    assert f"({iterations} iterations)" in capsys.readouterr().out
    assert "perceptual loss disabled" in caplog.text
    assert load_model(out / "model.pt").metadata["names"] == [
        datasets["a"].folder.name,
        datasets["b"].folder.name,
    ]


@pytest.mark.parametrize(
    ("folder", "message"), [("missing", "not an extract folder"), ("a", "padding")]
)
def test_cli_train_errors_are_one_line(
    datasets: dict[str, FaceDataset],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    folder: str,
    message: str,
) -> None:
    if folder == "a":  # a folder cut with another padding than person a's
        other = tmp_path / "other"
        shutil.copytree(datasets["b"].folder, other)
        manifest = read_manifest(other)
        replace(manifest, padding=0.3).write(other)
        args = _train_args(datasets, tmp_path / "run", "--iters", "1")
        args[args.index("--b") + 1] = str(other)
    else:
        args = _train_args(datasets, tmp_path / "run", "--iters", "1")
        args[args.index("--a") + 1] = str(tmp_path / "missing")
    assert cli_main(args) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("facestream train:") and message in last
