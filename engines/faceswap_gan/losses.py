"""Training losses of the faceswap-GAN: reconstruction, eye-aware terms, mask, edges,
least-squares adversarial, and an optional perceptual loss.

Images are float32 (B, 3, S, S) RGB in [-1, 1]; masks (B, 1, S, S) in [0, 1]; all on
the same device.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from engines.errors import ModelLoadError

logger = logging.getLogger(__name__)

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
PERCEPTUAL_SUBDIR = "perceptual"


@dataclass(frozen=True)
class LossWeights:
    """Weights of the generator's loss terms.

    reconstruction: L1 of the masked composite against the target.
    raw: L1 of the raw decoder RGB against the target (keeps the face learnt
        even where the mask is low).
    eyes: extra L1 inside the eye regions. edges: L1 between image gradients,
        counted `eyes_edge_boost` times more inside the eye regions.
    mask: L1 pull of the attention mask towards 0 (it must earn its area).
    mask_smoothness: total variation of the mask.
    adversarial: least-squares GAN term. perceptual: feature-space L1 (only used
        when a perceptual network is loaded).
    """

    reconstruction: float = 1.0
    raw: float = 0.5
    eyes: float = 3.0
    edges: float = 0.1
    eyes_edge_boost: float = 4.0
    mask: float = 0.01
    mask_smoothness: float = 0.1
    adversarial: float = 0.1
    perceptual: float = 0.03


def l1(
    prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean absolute error, optionally weighted per pixel by `weight` (B, 1, H, W);
    weighted means are normalised by the weight's sum."""
    error = (prediction - target).abs()
    if weight is None:
        return error.mean()
    weighted = error * weight
    return weighted.sum() / (weight.sum() * prediction.shape[1]).clamp_min(1e-6)


def image_gradients(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal and vertical finite differences, each padded back to (B, C, H, W)."""
    dx = F.pad(image[..., :, 1:] - image[..., :, :-1], (0, 1, 0, 0))
    dy = F.pad(image[..., 1:, :] - image[..., :-1, :], (0, 0, 0, 1))
    return dx, dy


def edge_loss(
    prediction: torch.Tensor, target: torch.Tensor, eye_mask: torch.Tensor, eye_boost: float
) -> torch.Tensor:
    """L1 between image gradients, with the eye regions counted (1 + eye_boost) times."""
    weight = 1.0 + eye_boost * eye_mask
    pred_dx, pred_dy = image_gradients(prediction)
    target_dx, target_dy = image_gradients(target)
    return 0.5 * (l1(pred_dx, target_dx, weight) + l1(pred_dy, target_dy, weight))


def total_variation(mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring mask pixels."""
    dx, dy = image_gradients(mask)
    return dx.abs().mean() + dy.abs().mean()


def lsgan_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    return ((fake_scores - 1.0) ** 2).mean()


def lsgan_discriminator_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    return 0.5 * (((real_scores - 1.0) ** 2).mean() + (fake_scores**2).mean())


class PerceptualNetwork(nn.Module):
    """Frozen ImageNet features of a torchvision VGG or ResNet, for a perceptual loss.

    forward: (B, 3, H, W) RGB in [-1, 1] -> list of feature maps from several depths.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, stages: nn.ModuleList) -> None:
        super().__init__()
        self.stages = stages
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        x = ((image + 1.0) * 0.5 - self.mean) / self.std
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean over depths of the L1 distance between feature maps."""
        with torch.no_grad():
            target_features = self(target)
        prediction_features = self(prediction)
        terms = [F.l1_loss(p, t) for p, t in zip(prediction_features, target_features, strict=True)]
        return torch.stack(terms).mean()


def _vgg_stages(state: dict[str, torch.Tensor], name: str) -> nn.ModuleList:
    from torchvision import models

    builder = models.vgg19 if name == "vgg19" else models.vgg16
    network = builder(weights=None)
    network.load_state_dict(state)
    features = network.features
    cuts = (
        (4, 9, 16, 23) if name == "vgg16" else (4, 9, 18, 27)
    )  # relu1_2, relu2_2, relu3_*, relu4_*
    stages, start = [], 0
    for cut in cuts:
        stages.append(nn.Sequential(*features[start:cut]))
        start = cut
    return nn.ModuleList(stages)


def _resnet_stages(state: dict[str, torch.Tensor], name: str) -> nn.ModuleList:
    from torchvision import models

    builder = {
        "resnet18": models.resnet18,
        "resnet34": models.resnet34,
        "resnet50": models.resnet50,
    }[name]
    network = builder(weights=None)
    network.load_state_dict(state)
    stem = nn.Sequential(network.conv1, network.bn1, network.relu, network.maxpool)
    return nn.ModuleList([nn.Sequential(stem, network.layer1), network.layer2, network.layer3])


def _guess_architecture(path: Path, state: dict[str, torch.Tensor]) -> str:
    stem = path.stem.lower()
    for name in ("vgg19", "vgg16", "resnet50", "resnet34", "resnet18"):
        if name in stem:
            return name
    if "features.0.weight" in state:
        return "vgg19" if "features.34.weight" in state else "vgg16"
    if "layer1.0.conv3.weight" in state:
        return "resnet50"
    if "layer1.0.conv1.weight" in state:
        return "resnet34" if "layer1.2.conv1.weight" in state else "resnet18"
    raise ModelLoadError(
        f"{path} is not a torchvision VGG16/19 or ResNet18/34/50 state dict; "
        "put one of those in weights/perceptual/ or remove the file"
    )


def load_perceptual_network(weights_dir: Path) -> PerceptualNetwork | None:
    """The perceptual network from the first *.pth / *.pt file in weights_dir/perceptual,
    or None (with one log message saying how to enable it) when there is none.

    The file must be a torchvision VGG16/19 or ResNet18/34/50 state dict (a dict of
    tensors; loaded with weights_only=True). Raises ModelLoadError when a file is
    there but cannot be used. The network is on CPU; move it where you need it.
    """
    folder = Path(weights_dir) / PERCEPTUAL_SUBDIR
    candidates = sorted([*folder.glob("*.pth"), *folder.glob("*.pt")]) if folder.is_dir() else []
    if not candidates:
        logger.warning(
            "perceptual loss disabled: no VGG16/19 or ResNet18/34/50 state dict found in %s "
            "(put e.g. vgg16.pth there to enable it)",
            folder,
        )
        return None
    path = candidates[0]
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ModelLoadError(f"cannot read perceptual weights {path}: {error}") from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path} is not a state dict (a dict of tensors)")
    name = _guess_architecture(path, state)
    try:
        stages = _vgg_stages(state, name) if name.startswith("vgg") else _resnet_stages(state, name)
    except RuntimeError as error:
        raise ModelLoadError(f"{path} does not match {name}: {error}") from error
    logger.info("perceptual loss enabled with %s from %s", name, path)
    return PerceptualNetwork(stages)
