"""Fast neural style transfer: the feed-forward image transformation network and its files.

The network follows the design of Johnson et al., "Perceptual Losses for Real-Time Style
Transfer" (2016), with instance norm: a 9x9 convolution, two stride-2 3x3 convolutions,
residual blocks, two nearest-upsample + 3x3 convolutions and a 9x9 output convolution,
every convolution reflection-padded. `width` scales every channel count (1.0 is the
published 32/64/128), so a small CPU-friendly variant is one config away.

Tensors in and out are (B, 3, H, W) float RGB in [0, 255] (the output is not clamped);
H and W should be multiples of 4 for the output to have the input's size.

Style model files (`weights/style/NAME.pth`, read with torch.load(weights_only=True)):
- facestream format: a dict {format: "facestream-neural-style", version: 1,
  config: JSON text {width, residual_blocks, train_size, input_skip}, metadata: JSON text,
  state_dict: {name: tensor}} as written by `save_style_model`;
- the classic PyTorch fast-neural-style example's plain state dict (keys `conv1.conv2d.weight`,
  `in1.weight`, `res1.conv1.conv2d.weight`, ..., `deconv3.conv2d.weight`; stale
  `in*.running_mean/var` entries of old files are ignored); its width and number of residual
  blocks are read from the tensors, its training resolution is taken as 256.
A missing, damaged, foreign or mismatched file is a ModelLoadError.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from engines.errors import ModelLoadError
from engines.model_file import save_model_file

logger = logging.getLogger(__name__)

FORMAT_NAME = "facestream-neural-style"
FORMAT_VERSION = 1
STYLE_SUBDIR = "style"
MODEL_SUFFIXES = (".pth", ".pt")
CLASSIC_TRAIN_SIZE = 256
_TRAIN_HINT = (
    "train one with `python -m engines.style_train --style IMAGE --out weights/style/NAME.pth`"
)


@dataclass(frozen=True)
class StyleNetConfig:
    """width: channel multiplier (1.0 = 32/64/128 channels); residual_blocks: >= 1;
    train_size: side in pixels of the square crops the model was trained on.
    input_skip: the network adds its input to its output (it learns a change of the
        image, which trains in far fewer steps); False in the published design."""

    width: float = 1.0
    residual_blocks: int = 5
    train_size: int = 256
    input_skip: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < float(self.width) <= 4.0:
            raise ValueError(f"width must be in (0, 4], got {self.width}")
        if not 1 <= int(self.residual_blocks) <= 16:
            raise ValueError(f"residual_blocks must be 1..16, got {self.residual_blocks}")
        if not 16 <= int(self.train_size) <= 4096:
            raise ValueError(f"train_size must be 16..4096, got {self.train_size}")

    @property
    def channels(self) -> tuple[int, int, int]:
        """Channels after the first, second and third convolution."""
        return tuple(max(1, round(base * self.width)) for base in (32, 64, 128))  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Any) -> StyleNetConfig:
        """Raises ValueError for a config that is not a dict of the three known fields."""
        if not isinstance(raw, dict):
            raise ValueError("config is not an object")
        unknown = set(raw) - {"width", "residual_blocks", "train_size", "input_skip"}
        if unknown:
            raise ValueError(f"unknown config fields {sorted(unknown)}")
        return cls(
            width=float(raw.get("width", 1.0)),
            residual_blocks=int(raw.get("residual_blocks", 5)),
            train_size=int(raw.get("train_size", 256)),
            input_skip=bool(raw.get("input_skip", False)),
        )


SMALL = StyleNetConfig(width=0.25, residual_blocks=3, train_size=256, input_skip=True)
CLASSIC = StyleNetConfig(width=1.0, residual_blocks=5, train_size=256)


class PaddedConv(nn.Module):
    """Optional nearest-neighbour upsampling, reflection padding, then a convolution."""

    def __init__(
        self, inputs: int, outputs: int, kernel: int, stride: int = 1, upsample: int = 1
    ) -> None:
        super().__init__()
        self.upsample = upsample
        self.pad = nn.ReflectionPad2d(kernel // 2)
        self.conv = nn.Conv2d(inputs, outputs, kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample > 1:
            x = F.interpolate(x, scale_factor=self.upsample, mode="nearest")
        return self.conv(self.pad(x))


class ResidualBlock(nn.Module):
    """x + norm(conv(relu(norm(conv(x))))), channels unchanged."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_a = PaddedConv(channels, channels, 3)
        self.norm_a = nn.InstanceNorm2d(channels, affine=True)
        self.conv_b = PaddedConv(channels, channels, 3)
        self.norm_b = nn.InstanceNorm2d(channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm_a(self.conv_a(x)))
        return x + self.norm_b(self.conv_b(y))


class StyleNet(nn.Module):
    """The image transformation network: (B, 3, H, W) float RGB [0, 255] -> same shape,
    roughly [0, 255] (unclamped). Works on any device; H, W multiples of 4."""

    def __init__(self, config: StyleNetConfig = CLASSIC) -> None:
        super().__init__()
        self.config = config
        c1, c2, c3 = config.channels
        self.down = nn.ModuleList(
            [PaddedConv(3, c1, 9), PaddedConv(c1, c2, 3, stride=2), PaddedConv(c2, c3, 3, stride=2)]
        )
        self.down_norms = nn.ModuleList(nn.InstanceNorm2d(c, affine=True) for c in (c1, c2, c3))
        self.residuals = nn.ModuleList(ResidualBlock(c3) for _ in range(config.residual_blocks))
        self.up = nn.ModuleList(
            [PaddedConv(c3, c2, 3, upsample=2), PaddedConv(c2, c1, 3, upsample=2)]
        )
        self.up_norms = nn.ModuleList(nn.InstanceNorm2d(c, affine=True) for c in (c2, c1))
        self.out = PaddedConv(c1, 3, 9)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image
        for conv, norm in zip(self.down, self.down_norms, strict=True):
            x = F.relu(norm(conv(x)))
        for block in self.residuals:
            x = block(x)
        for conv, norm in zip(self.up, self.up_norms, strict=True):
            x = F.relu(norm(conv(x)))
        return self.out(x) + image if self.config.input_skip else self.out(x)


@dataclass(frozen=True)
class LoadedStyleModel:
    """net: StyleNet in eval mode, gradients off, on the requested device (channels_last).
    source: "facestream" or "pytorch-example" (the file's format)."""

    net: StyleNet
    config: StyleNetConfig
    metadata: dict[str, Any]
    path: Path
    source: str


def save_style_model(net: StyleNet, path: Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write `net` (weights copied to CPU) and its config to `path` atomically."""
    path = save_model_file(
        net,
        path,
        format_name=FORMAT_NAME,
        version=FORMAT_VERSION,
        config=net.config.to_dict(),
        metadata=metadata or {},
    )
    logger.info("saved style model %s", path)
    return path


# Classic example key -> this network's key (after the leading module name is matched).
_CLASSIC_RULES = (
    (
        re.compile(r"^conv([123])\.conv2d\.(weight|bias)$"),
        lambda m: f"down.{int(m[1]) - 1}.conv.{m[2]}",
    ),
    (re.compile(r"^in([123])\.(weight|bias)$"), lambda m: f"down_norms.{int(m[1]) - 1}.{m[2]}"),
    (
        re.compile(r"^deconv([12])\.conv2d\.(weight|bias)$"),
        lambda m: f"up.{int(m[1]) - 1}.conv.{m[2]}",
    ),
    (re.compile(r"^in([45])\.(weight|bias)$"), lambda m: f"up_norms.{int(m[1]) - 4}.{m[2]}"),
    (re.compile(r"^deconv3\.conv2d\.(weight|bias)$"), lambda m: f"out.conv.{m[1]}"),
    (
        re.compile(r"^res(\d+)\.conv([12])\.conv2d\.(weight|bias)$"),
        lambda m: f"residuals.{int(m[1]) - 1}.conv_{'ab'[int(m[2]) - 1]}.conv.{m[3]}",
    ),
    (
        re.compile(r"^res(\d+)\.in([12])\.(weight|bias)$"),
        lambda m: f"residuals.{int(m[1]) - 1}.norm_{'ab'[int(m[2]) - 1]}.{m[3]}",
    ),
)
_CLASSIC_STALE = re.compile(r"(^|\.)in\d+\.(running_mean|running_var|num_batches_tracked)$")


def is_classic_state(state: dict[str, Any]) -> bool:
    """Whether `state` looks like the PyTorch fast-neural-style example's state dict."""
    return "conv1.conv2d.weight" in state and "deconv3.conv2d.weight" in state


def convert_classic_state(
    state: dict[str, torch.Tensor], path: Path
) -> tuple[StyleNetConfig, dict[str, torch.Tensor]]:
    """The example's state dict renamed to StyleNet keys, with the config read from it.
    Raises ModelLoadError for keys that belong to neither network."""
    if not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ModelLoadError(f"{path} holds non-tensor values; it is not a state dict")
    mapped: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if _CLASSIC_STALE.search(key):
            continue
        for pattern, rename in _CLASSIC_RULES:
            match = pattern.match(key)
            if match:
                mapped[rename(match)] = tensor
                break
        else:
            raise ModelLoadError(
                f"{path}: unexpected key {key!r} for a fast-neural-style state dict; "
                f"the file is from another network. {_TRAIN_HINT}"
            )
    blocks = {int(m[1]) for key in state if (m := re.match(r"^res(\d+)\.", key))}
    first = state["conv1.conv2d.weight"]
    try:
        config = StyleNetConfig(
            width=first.shape[0] / 32,
            residual_blocks=max(blocks, default=0),
            train_size=CLASSIC_TRAIN_SIZE,
        )
    except ValueError as error:
        raise ModelLoadError(f"{path}: unusable fast-neural-style weights ({error})") from error
    return config, mapped


def _read(path: Path) -> Any:
    if not path.exists():
        raise ModelLoadError(f"style model {path} does not exist; {_TRAIN_HINT}")
    if not path.is_file():
        raise ModelLoadError(f"style model path {path} is not a file; pass a .pth file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for damaged or foreign files
        raise ModelLoadError(
            f"{path} is not a readable style model (damaged, or not a weights-only torch "
            f"file: {type(error).__name__}); replace it or {_TRAIN_HINT}"
        ) from error


def _facestream_parts(
    payload: dict[str, Any], path: Path
) -> tuple[StyleNetConfig, dict[str, Any], Any]:
    if payload.get("version") != FORMAT_VERSION:
        raise ModelLoadError(
            f"{path} has style format version {payload.get('version')}; this facestream "
            f"reads version {FORMAT_VERSION}: train or save it again"
        )
    try:
        config = StyleNetConfig.from_dict(json.loads(payload["config"]))
        metadata = json.loads(payload.get("metadata", "{}"))
    except (KeyError, TypeError, ValueError) as error:
        raise ModelLoadError(f"{path} has a damaged style config: {error}") from error
    return config, metadata if isinstance(metadata, dict) else {}, payload.get("state_dict")


def _parts(payload: Any, path: Path) -> tuple[StyleNetConfig, dict[str, Any], dict, str]:
    """(config, metadata, state_dict in StyleNet keys, source format) of a loaded file."""
    if isinstance(payload, dict) and payload.get("format") == FORMAT_NAME:
        config, metadata, state = _facestream_parts(payload, path)
        source = "facestream"
    elif isinstance(payload, dict) and is_classic_state(payload):
        config, state = convert_classic_state(payload, path)
        metadata, source = {}, "pytorch-example"
    else:
        raise ModelLoadError(
            f"{path} is a torch file but neither a facestream style model nor a "
            f"fast-neural-style state dict; {_TRAIN_HINT}"
        )
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path} has no weights (state_dict missing or not tensors)")
    return config, metadata, state, source


def load_style_model(path: Path, device: str | torch.device = "cpu") -> LoadedStyleModel:
    """Load a style model file (either accepted format) onto `device`, eval mode,
    channels_last. Raises ModelLoadError, saying what to do, when the file is missing,
    damaged, foreign, or its weights do not fit its config."""
    path = Path(path)
    config, metadata, state, source = _parts(_read(path), path)
    net = StyleNet(config)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "mismatch"
        raise ModelLoadError(
            f"{path}: the weights do not match the style network config {config.to_dict()} "
            f"({first_line}); the file is damaged or from another network. {_TRAIN_HINT}"
        ) from error
    net.to(device).to(memory_format=torch.channels_last).eval()
    net.requires_grad_(False)
    logger.info("loaded style model %s (%s, %s) on %s", path, source, config, device)
    return LoadedStyleModel(net=net, config=config, metadata=metadata, path=path, source=source)


def style_models(weights_dir: Path) -> list[Path]:
    """The model files in weights_dir/style (*.pth, *.pt), sorted by name."""
    folder = Path(weights_dir) / STYLE_SUBDIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in MODEL_SUFFIXES and p.is_file())


def find_style_model(weights_dir: Path) -> Path | None:
    """The first model file (by name) in weights_dir/style, or None."""
    found = style_models(weights_dir)
    return found[0] if found else None


_cache_lock = threading.Lock()
_loaded: dict[tuple[str, int, int, int, str], LoadedStyleModel] = {}


def shared_style_model(path: Path, device: str = "cpu") -> LoadedStyleModel:
    """The model at `path` on `device`, loaded once per file version (path, size, mtime,
    inode) and shared by every effect instance; older versions of the file are dropped.
    Raises ModelLoadError like load_style_model."""
    path = Path(path).resolve()
    try:
        stat = path.stat()
    except OSError:
        return load_style_model(path, device)  # raises the clear "does not exist" error
    key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino, str(device))
    with _cache_lock:
        if key not in _loaded:
            model = load_style_model(path, device)
            for old in [k for k in _loaded if k[0] == key[0] and k[4] == key[4]]:
                del _loaded[old]
            _loaded[key] = model
        return _loaded[key]
