"""Train a fast neural style model (engines.style_net.StyleNet) against one style image.

The loss is the usual one of Johnson et al.: a style term (Gram matrices of feature maps
of the output against those of the style image), a content term (feature maps of the
output against those of the content photo) and a total-variation term. Which features:

- perceptual (the real thing): when weights/perceptual/ holds a torchvision VGG16/19 or
  ResNet state dict (see weights/README.md), its ImageNet features; content at its second
  stage.
- random (the fallback, used when there is none; nothing is downloaded): a fixed,
  seeded, randomly initialised 4-stage convolutional network, plus the raw pixels.
  Random-filter Grams carry some colour and local texture statistics (Ustyuzhaninov
  et al., "What does it take to generate natural textures?", ICLR 2017), but far less
  than ImageNet features. Measured here (SMALL net, 300-400 steps at 128 px, a few
  minutes of CPU): the models re-grade the frame towards the style's palette with soft
  blotches of colour; they do not paint the style's strokes or shapes. Treat them as
  colour filters and use a perceptual network for real styles.

Every model also gets a colour term: the sliced Wasserstein distance between the output's
pixel colours and the style image's (Heitz et al., CVPR 2021), which matches a palette
with several modes and, unlike a Gram, still pulls on a flat output.

The Gram and content losses are relative (divided by the squared norm of their target),
so their weights do not depend on the feature extractor's scale. Images are RGB uint8 in;
the network works on (B, 3, H, W) float RGB in [0, 255]. Speed on the 2-core CPU: see
benchmarks/RESULTS.md (## neural_style).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from engines.errors import EngineError, InvalidDataset, InvalidImage
from engines.style_net import SMALL, StyleNet, StyleNetConfig, save_style_model

logger = logging.getLogger(__name__)

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")


@dataclass(frozen=True)
class StyleTrainConfig:
    """iterations: optimiser steps; batch_size: crops per step; size: crop side (px);
    style_size: longer side the style image is resized to; net: the network to train."""

    iterations: int = 400
    batch_size: int = 2
    size: int = 256
    style_size: int = 256
    learning_rate: float = 2e-3
    content_weight: float = 1.0
    style_weight: float = 10.0
    colour_weight: float = 30.0
    tv_weight: float = 1e-5
    net: StyleNetConfig = field(default_factory=lambda: SMALL)
    seed: int = 0


class RandomFeatures(nn.Module):
    """A fixed random conv network: (B, 3, H, W) RGB [0, 255] -> [pixels, 4 feature maps]
    at strides 1, 1, 2, 4, 8. Seeded, so every run and machine gets the same filters."""

    def __init__(self, seed: int = 1234) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        widths = (3, 32, 64, 128, 256)
        convs = []
        for i in range(4):
            conv = nn.Conv2d(
                widths[i], widths[i + 1], 3, stride=1 if i == 0 else 2, padding=1, bias=False
            )
            std = (2.0 / (widths[i] * 9)) ** 0.5
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * std)
            convs.append(conv)
        self.stages = nn.ModuleList(convs)
        self.requires_grad_(False)
        self.eval()

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        x = image / 127.5 - 1.0
        outputs = [x]
        for conv in self.stages:
            x = F.relu(conv(x))
            outputs.append(x)
        return outputs


class _Perceptual(nn.Module):
    """engines.faceswap_gan's PerceptualNetwork on [0, 255] input, raw pixels first."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        return [image / 127.5 - 1.0, *self.network(image / 127.5 - 1.0)]


def feature_extractor(weights_dir: Path) -> tuple[nn.Module, int, str]:
    """(extractor, index of its content feature map, kind "perceptual" | "random")."""
    from engines.faceswap_gan.losses import load_perceptual_network

    network = load_perceptual_network(Path(weights_dir))
    if network is not None:
        return _Perceptual(network), 2, "perceptual"
    logger.warning(
        "style training with random-filter features (no network in %s/perceptual): "
        "expect colour and texture transfer, not painted strokes",
        weights_dir,
    )
    return RandomFeatures(), 2, "random"


def gram(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, C) Gram matrices normalised by C*H*W."""
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def _relative(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((prediction - target) ** 2).sum() / ((target**2).sum() + 1e-8)


def read_content_images(paths: Sequence[Path], max_frames: int = 64) -> list[np.ndarray]:
    """RGB uint8 images from files, folders of images, and videos (up to `max_frames`
    evenly spaced frames each). Raises InvalidDataset when nothing usable is found."""
    files: list[Path] = []
    for path in map(Path, paths):
        files.extend(sorted(path.iterdir()) if path.is_dir() else [path])
    images: list[np.ndarray] = []
    for path in files:
        suffix = path.suffix.lower()
        if suffix in _IMAGE_SUFFIXES:
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is not None:
                images.append(np.ascontiguousarray(bgr[:, :, ::-1]))
        elif suffix in _VIDEO_SUFFIXES:
            images.extend(_video_frames(path, max_frames))
    if not images:
        raise InvalidDataset(
            f"no readable content images in {', '.join(map(str, paths))}: pass photos "
            f"({', '.join(_IMAGE_SUFFIXES)}), folders of them, or videos"
        )
    return images


def _video_frames(path: Path, count: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or count
    wanted = set(np.linspace(0, total - 1, min(count, total)).astype(int).tolist())
    frames = []
    for index in range(total):
        ok, bgr = capture.read()
        if not ok:
            break
        if index in wanted:
            frames.append(np.ascontiguousarray(bgr[:, :, ::-1]))
    capture.release()
    return frames


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()


def _random_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A size x size crop of `image` resized so its shorter side is in [size, 1.5 size]."""
    height, width = image.shape[:2]
    scale = size * rng.uniform(1.0, 1.5) / min(height, width)
    resized = cv2.resize(
        image,
        (max(size, round(width * scale)), max(size, round(height * scale))),
        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
    )
    y = int(rng.integers(0, resized.shape[0] - size + 1))
    x = int(rng.integers(0, resized.shape[1] - size + 1))
    crop = resized[y : y + size, x : x + size]
    return crop[:, ::-1] if rng.random() < 0.5 else crop


@dataclass(frozen=True)
class StyleTarget:
    """What the output should match: Gram matrices (1, C, C) per feature map, and the
    style image's pixels (N, 3) in [-1, 1] for the colour distribution."""

    grams: list[torch.Tensor]
    pixels: torch.Tensor


def style_target(style: np.ndarray, extractor: nn.Module, style_size: int) -> StyleTarget:
    """The targets of one style image (HxWx3 uint8 RGB, resized to longer side style_size)."""
    scale = style_size / max(style.shape[:2])
    resized = cv2.resize(style, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    pixels = _to_tensor(resized).reshape(3, -1).T / 127.5 - 1.0
    with torch.no_grad():
        grams = [gram(f) for f in extractor(_to_tensor(resized)[None])]
    return StyleTarget(grams, pixels)


def _colour_loss(output: torch.Tensor, target: StyleTarget, directions: int = 8) -> torch.Tensor:
    """Sliced Wasserstein distance between the colour distribution of each output image
    and the style's (Heitz et al., CVPR 2021): pixels projected on random RGB directions,
    sorted, compared quantile by quantile. Unlike means, spreads or Grams it matches a
    multi-modal palette, and its gradient does not vanish on a flat output."""
    pixels = (output / 127.5 - 1.0).flatten(2).transpose(1, 2)  # (B, HW, 3)
    axes = F.normalize(torch.randn(3, directions, device=output.device), dim=0)
    projected = torch.sort(pixels @ axes, dim=1).values  # (B, HW, D)
    reference = torch.sort(target.pixels.to(output.device) @ axes, dim=0).values  # (N, D)
    quantiles = F.interpolate(
        reference.T[None], size=projected.shape[1], mode="linear", align_corners=True
    )[0].T
    return ((projected - quantiles) ** 2).mean()


def _loss(
    output: torch.Tensor,
    batch: torch.Tensor,
    target: StyleTarget,
    extractor: nn.Module,
    content_index: int,
    config: StyleTrainConfig,
) -> torch.Tensor:
    with torch.no_grad():
        content = extractor(batch)[content_index]
    features = extractor(output)
    style = sum(
        _relative(gram(f), g.expand(len(output), -1, -1))
        for f, g in zip(features, target.grams, strict=True)
    )
    tv = (output[..., 1:, :] - output[..., :-1, :]).abs().mean() + (
        output[..., 1:] - output[..., :-1]
    ).abs().mean()
    return (
        config.content_weight * _relative(features[content_index], content)
        + config.style_weight * style / len(target.grams)
        + config.colour_weight * _colour_loss(output, target)
        + config.tv_weight * tv
    )


def _start_near_identity(net: StyleNet) -> None:
    """Small output weights: with input_skip the untrained net returns about its input,
    without it a mid-grey image (instead of black)."""
    with torch.no_grad():
        net.out.conv.weight.mul_(0.1)
    if net.out.conv.bias is not None:
        nn.init.constant_(net.out.conv.bias, 0.0 if net.config.input_skip else 127.5)


def train_style_model(
    style_image: np.ndarray,
    content_images: Sequence[np.ndarray],
    out: Path,
    config: StyleTrainConfig | None = None,
    weights_dir: Path = Path("weights"),
    progress: Callable[[int, float], None] | None = None,
) -> Path:
    """Train a StyleNet on the CPU to render `content_images` in the style of
    `style_image` (all HxWx3 uint8 RGB) and save it to `out` (engines.style_net format).

    progress(iteration, loss) is called after every step. Seeded by config.seed; the
    caller's torch random state is left as it was. Returns `out`.
    """
    config = config or StyleTrainConfig()
    if not content_images:
        raise InvalidDataset("no content images to train on")
    for image in (style_image, *content_images):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InvalidImage(f"images must be HxWx3 uint8 RGB, got {image.shape} {image.dtype}")
    started = time.monotonic()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        extractor, content_index, kind = feature_extractor(weights_dir)
        target = style_target(style_image, extractor, config.style_size)
        net = StyleNet(dataclasses.replace(config.net, train_size=config.size))
        _start_near_identity(net)
        loss = _fit(net, content_images, target, extractor, content_index, config, progress)
    metadata = {
        "features": kind,
        "iterations": config.iterations,
        "final_loss": loss,
        "seconds": round(time.monotonic() - started, 1),
        "train": {k: v for k, v in vars(config).items() if k != "net"},
    }
    return save_style_model(net, out, metadata)


def _fit(
    net: StyleNet,
    content_images: Sequence[np.ndarray],
    target: StyleTarget,
    extractor: nn.Module,
    content_index: int,
    config: StyleTrainConfig,
    progress: Callable[[int, float], None] | None,
) -> float:
    """Run config.iterations Adam steps on random crops; returns the last loss."""
    rng = np.random.default_rng(config.seed)
    optimiser = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    loss_value = float("nan")
    for iteration in range(1, config.iterations + 1):
        picks = rng.integers(0, len(content_images), config.batch_size)
        crops = [_random_crop(content_images[i], config.size, rng) for i in picks]
        batch = torch.stack([_to_tensor(crop) for crop in crops])
        loss = _loss(net(batch), batch, target, extractor, content_index, config)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        loss_value = float(loss.detach())
        if progress is not None:
            progress(iteration, loss_value)
        logger.debug("style iteration %d loss %.4f", iteration, loss_value)
    return loss_value


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m engines.style_train", description="train a fast neural style model"
    )
    parser.add_argument("--style", type=Path, required=True, help="the style image")
    parser.add_argument(
        "--content", type=Path, nargs="+", required=True, help="photos, folders or videos"
    )
    parser.add_argument("--out", type=Path, required=True, help="e.g. weights/style/NAME.pth")
    parser.add_argument("--iters", type=int, default=StyleTrainConfig.iterations)
    parser.add_argument("--size", type=int, default=StyleTrainConfig.size, help="crop side")
    parser.add_argument("--batch", type=int, default=StyleTrainConfig.batch_size)
    parser.add_argument("--width", type=float, default=SMALL.width, help="1.0 = classic")
    parser.add_argument("--blocks", type=int, default=SMALL.residual_blocks)
    parser.add_argument(
        "--no-skip", action="store_true", help="no input skip (the published design)"
    )
    parser.add_argument("--style-weight", type=float, default=StyleTrainConfig.style_weight)
    parser.add_argument("--weights-dir", type=Path, default=Path("weights"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    style = cv2.imread(str(args.style), cv2.IMREAD_COLOR)
    if style is None:
        print(f"error: cannot read the style image {args.style}")
        return 2
    config = StyleTrainConfig(
        iterations=args.iters,
        batch_size=args.batch,
        size=args.size,
        style_weight=args.style_weight,
        net=StyleNetConfig(args.width, args.blocks, args.size, input_skip=not args.no_skip),
    )

    def report(iteration: int, loss: float) -> None:
        if iteration % 10 == 0 or iteration == config.iterations:
            print(f"iteration {iteration}/{config.iterations}  loss {loss:.4f}", flush=True)

    try:
        content = read_content_images(args.content)
        path = train_style_model(
            np.ascontiguousarray(style[:, :, ::-1]),
            content,
            args.out,
            config,
            args.weights_dir,
            report,
        )
    except (EngineError, ValueError) as error:
        print(f"error: {error}")
        return 2
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
