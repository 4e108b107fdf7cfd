"""The faceswap-GAN networks: one shared encoder, one decoder per identity, PatchGAN critics.

Every decoder draws two things from the shared code of a face: an RGB face (tanh, in
[-1, 1]) and an attention mask (sigmoid, in [0, 1]) that says where the generated
face should replace the input. Self-attention blocks sit at the low resolutions of
both encoder and decoder. Tensors are float32 (B, C, H, W), RGB in [-1, 1], on
whatever device the module lives on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from engines.alignment import DEFAULT_PADDING

SUPPORTED_SIZES = (64, 128, 256)
IDENTITIES = ("a", "b")
_BOTTLENECK = 4  # spatial side of the dense bottleneck
_ENCODED = 8  # spatial side of the encoder's output


@dataclass(frozen=True)
class FaceswapConfig:
    """Shape of a faceswap-GAN model.

    size: side of the aligned face in pixels (64, 128 or 256).
    width: channels at full resolution; channels double as resolution halves,
        capped at `max_width`.
    latent_dim: width of the dense bottleneck shared by both identities.
    attention_resolutions: resolutions (pixels) at which self-attention runs in the
        encoder (on the way down) and in the decoders (on the way up).
    decoder_res_blocks: residual blocks after each decoder upsampling.
    padding: alignment padding the faces were cut with (engines.alignment).
    """

    size: int = 64
    width: int = 64
    max_width: int = 512
    latent_dim: int = 512
    attention_resolutions: tuple[int, ...] = (16, 32)
    decoder_res_blocks: int = 1
    padding: float = DEFAULT_PADDING

    def __post_init__(self) -> None:
        if self.size not in SUPPORTED_SIZES:
            raise ValueError(f"size must be one of {SUPPORTED_SIZES}, got {self.size}")
        if self.width < 4 or self.max_width < self.width or self.latent_dim < 8:
            raise ValueError(
                f"need width >= 4, max_width >= width and latent_dim >= 8, got width={self.width}, "
                f"max_width={self.max_width}, latent_dim={self.latent_dim}"
            )
        if self.decoder_res_blocks < 0:
            raise ValueError(f"decoder_res_blocks must be >= 0, got {self.decoder_res_blocks}")
        object.__setattr__(
            self, "attention_resolutions", tuple(int(r) for r in self.attention_resolutions)
        )

    def channels(self, resolution: int) -> int:
        """Feature channels at `resolution` (pixels), in encoder and decoders alike."""
        return min(self.max_width, self.width * self.size // resolution)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["attention_resolutions"] = list(self.attention_resolutions)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaceswapConfig:
        """Build from a dict (e.g. parsed JSON); unknown keys are a ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        values = dict(data)
        if "attention_resolutions" in values:
            values["attention_resolutions"] = tuple(values["attention_resolutions"])
        return cls(**values)


def _act() -> nn.Module:
    return nn.LeakyReLU(0.1, inplace=True)


class SelfAttention(nn.Module):
    """SAGAN-style self-attention over all positions of a feature map.

    (B, C, H, W) -> (B, C, H, W). The learnt gate starts at 0, so a fresh block is
    the identity and attention is blended in as training finds it useful.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        inner = max(channels // 8, 1)
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gate = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        query = self.query(x).flatten(2).transpose(1, 2)  # (B, HW, C')
        key = self.key(x).flatten(2)  # (B, C', HW)
        value = self.value(x).flatten(2)  # (B, C, HW)
        weights = torch.softmax(torch.bmm(query, key), dim=-1)  # (B, HW, HW)
        attended = torch.bmm(value, weights.transpose(1, 2)).view(batch, channels, height, width)
        return x + self.gate * attended


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with a skip connection; keeps shape."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            _act(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        self.out = _act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(x + self.body(x))


class Upsample(nn.Module):
    """Doubles H and W: 3x3 conv to 4x channels, then pixel shuffle."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self.act = _act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shuffle(self.conv(x)))


def _levels(start: int, stop: int) -> list[int]:
    """Resolutions from start to stop (both powers of two), halving or doubling."""
    steps = round(math.log2(stop / start))
    return [int(start * 2 ** (i * (1 if steps > 0 else -1))) for i in range(1, abs(steps) + 1)]


class Encoder(nn.Module):
    """(B, 3, S, S) face in [-1, 1] -> (B, C8, 8, 8) shared code."""

    def __init__(self, config: FaceswapConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = [nn.Conv2d(3, config.channels(config.size), 5, padding=2), _act()]
        previous = config.channels(config.size)
        for resolution in _levels(config.size, _BOTTLENECK):
            channels = config.channels(resolution)
            layers += [nn.Conv2d(previous, channels, 3, stride=2, padding=1), _act()]
            if resolution in config.attention_resolutions:
                layers.append(SelfAttention(channels))
            previous = channels
        self.features = nn.Sequential(*layers)
        flat = previous * _BOTTLENECK * _BOTTLENECK
        self.bottleneck_channels = previous
        self.to_latent = nn.Linear(flat, config.latent_dim)
        self.from_latent = nn.Linear(config.latent_dim, flat)
        self.up = Upsample(previous, config.channels(_ENCODED))
        self.out_channels = config.channels(_ENCODED)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x).flatten(1)
        code = self.from_latent(self.to_latent(features))
        code = code.view(-1, self.bottleneck_channels, _BOTTLENECK, _BOTTLENECK)
        return self.up(code)


class Decoder(nn.Module):
    """(B, C8, 8, 8) code -> RGB (B, 3, S, S) in [-1, 1] and mask (B, 1, S, S) in [0, 1]."""

    def __init__(self, config: FaceswapConfig, in_channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for resolution in _levels(_ENCODED, config.size):
            channels = config.channels(resolution)
            layers.append(Upsample(previous, channels))
            layers += [ResidualBlock(channels) for _ in range(config.decoder_res_blocks)]
            if resolution in config.attention_resolutions:
                layers.append(SelfAttention(channels))
            previous = channels
        self.trunk = nn.Sequential(*layers)
        self.to_rgb = nn.Conv2d(previous, 3, 5, padding=2)
        self.to_mask = nn.Conv2d(previous, 1, 5, padding=2)

    def forward(self, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk(code)
        return torch.tanh(self.to_rgb(features)), torch.sigmoid(self.to_mask(features))


class FaceswapGenerator(nn.Module):
    """The shared encoder and the decoders of identities "a" and "b"."""

    def __init__(self, config: FaceswapConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoders = nn.ModuleDict(
            {identity: Decoder(config, self.encoder.out_channels) for identity in IDENTITIES}
        )

    def forward(self, x: torch.Tensor, identity: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Faces (B, 3, S, S) in [-1, 1] drawn as `identity`: (rgb, mask)."""
        return self.decoders[identity](self.encoder(x))


class SwapNet(nn.Module):
    """One swap direction as a plain module (for compiling): the encoder and one decoder.

    forward: (B, 3, S, S) float in [-1, 1] -> rgb (B, 3, S, S) in [-1, 1], mask (B, 1, S, S).
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rgb, mask = self.decoder(self.encoder(x))
        return rgb, mask


class PatchDiscriminator(nn.Module):
    """Conditional PatchGAN critic: (image, warped input) -> a map of realness scores.

    Input: two (B, 3, S, S) tensors in [-1, 1]; output (B, 1, S/8, S/8) raw scores
    (least-squares GAN targets: 1 real, 0 fake). Spectral norm keeps it tame.
    """

    def __init__(self, config: FaceswapConfig, width: int | None = None) -> None:
        super().__init__()
        width = width or config.width
        layers: list[nn.Module] = []
        previous = 6
        for level in range(3):
            channels = min(width * 2**level, config.max_width)
            layers += [spectral_norm(nn.Conv2d(previous, channels, 4, stride=2, padding=1)), _act()]
            previous = channels
        layers.append(spectral_norm(nn.Conv2d(previous, previous, 3, padding=1)))
        layers.append(_act())
        layers.append(nn.Conv2d(previous, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([image, condition], dim=1))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
