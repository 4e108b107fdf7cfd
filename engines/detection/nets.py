"""The three MTCNN networks (P-Net, R-Net, O-Net), written for inference speed.

The layers and parameter names are those of facenet-pytorch's MTCNN, so its
shipped state dicts (``facenet_pytorch/data/{pnet,rnet,onet}.pt``) load as they
are. What differs from the reference modules, all exact up to float rounding:

- the input normalisation ``(x - 127.5) / 128`` is folded into the first
  convolution, so the nets take raw 0-255 float pixels;
- the face/non-face softmax is replaced by ``sigmoid(l1 - l0)`` (the same value,
  one channel only), and the output heads share one convolution or matmul;
- every net runs channels-last (NHWC in memory), which oneDNN convolves and
  pools much faster on a CPU than NCHW.

Inputs: float32 (B, 3, H, W) RGB, 0-255, any memory format, on the nets' device.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from engines.errors import ModelLoadError

logger = logging.getLogger(__name__)

PIXEL_MEAN = 127.5
PIXEL_SCALE = 0.0078125


def facenet_weights_dir() -> Path:
    """The folder of the installed facenet-pytorch package's MTCNN weights (no import of it)."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the MTCNN weights come from the facenet-pytorch package, which is not installed; "
            "install it with `pip install --no-deps facenet-pytorch`"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _fold_normalisation(conv: nn.Conv2d) -> None:
    """Make `conv` take raw 0-255 pixels instead of (x - 127.5) / 128 (exact, no padding)."""
    with torch.no_grad():
        if conv.bias is None:
            raise ModelLoadError("MTCNN first convolution has no bias")
        conv.bias -= PIXEL_MEAN * PIXEL_SCALE * conv.weight.sum(dim=(1, 2, 3))
        conv.weight *= PIXEL_SCALE


def _prelu_max_pool2(x: torch.Tensor, prelu: nn.PReLU) -> torch.Tensor:
    """max_pool2d(prelu(x), 2, 2, ceil_mode=True), exactly, faster on a CPU.

    For even sizes the 2x2 windows tile x, so they are taken as strided views of the
    channels-last tensor. PReLU is monotonic where its slope is >= 0 and V-shaped
    where it is < 0, so the window maximum of prelu(x) is the larger of prelu(max)
    and prelu(min): pooling first touches each full-size element twice instead of
    three times.
    """
    batch, channels, height, width = x.shape
    if height % 2 or width % 2 or not x.is_contiguous(memory_format=torch.channels_last):
        return F.max_pool2d(prelu(x), 2, 2, ceil_mode=True)
    pairs = x.permute(0, 2, 3, 1).view(batch, height // 2, 2, width // 2, 2 * channels)
    top, bottom = pairs[:, :, 0], pairs[:, :, 1]
    high, low = torch.maximum(top, bottom), torch.minimum(top, bottom)
    high = torch.maximum(high[..., :channels], high[..., channels:]).permute(0, 3, 1, 2)
    low = torch.minimum(low[..., :channels], low[..., channels:]).permute(0, 3, 1, 2)
    return torch.maximum(prelu(high), prelu(low))


def _fuse(target: nn.Conv2d | nn.Linear, layers: tuple[nn.Conv2d | nn.Linear, ...]) -> None:
    """Make `target` compute all `layers` (same input) at once, outputs concatenated."""
    biases = [layer.bias for layer in layers]
    if target.bias is None or any(bias is None for bias in biases):
        raise ModelLoadError("MTCNN output layers must have biases")
    with torch.no_grad():
        target.weight.copy_(torch.cat([layer.weight for layer in layers]))
        target.bias.copy_(torch.cat([b for b in biases if b is not None]))


def _face_probability(logits: torch.Tensor) -> torch.Tensor:
    """softmax(logits)[:, 1] for two-class logits in dim 1, as one sigmoid."""
    return torch.sigmoid(logits[:, 1] - logits[:, 0])


class PNet(nn.Module):
    """Proposal net: fully convolutional, stride 2, 12x12 receptive field.

    forward: (B, 3, H, W) raw pixels -> (reg (B, 4, h, w), prob (B, h, w)) with
    h = ceil((H - 2) / 2) - 4 (and likewise w).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)
        self.head = nn.Conv2d(32, 6, kernel_size=1)

    def fuse_heads(self) -> None:
        """Copy the two 1x1 heads into one convolution (call after loading weights)."""
        _fuse(self.head, (self.conv4_1, self.conv4_2))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = _prelu_max_pool2(self.conv1(x), self.prelu1)
        x = self.prelu2(self.conv2(x))
        x = self.prelu3(self.conv3(x))
        if x.is_contiguous(memory_format=torch.channels_last):
            # A 1x1 convolution is a matmul over channels; oneDNN has no fast path for
            # 6 output channels, a matmul on the NHWC memory does.
            out = F.linear(x.permute(0, 2, 3, 1), self.head.weight.flatten(1), self.head.bias)
            return out[..., 2:].permute(0, 3, 1, 2), _face_probability(
                out.permute(0, 3, 1, 2)[:, :2]
            )
        out = self.head(x)
        return out[:, 2:], _face_probability(out[:, :2])


class RNet(nn.Module):
    """Refinement net on 24x24 crops: (B, 3, 24, 24) -> (reg (B, 4), prob (B,))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)
        self.head = nn.Linear(128, 6)

    def fuse_heads(self) -> None:
        _fuse(self.head, (self.dense5_1, self.dense5_2))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(x))
        # The reference flattens in (W, H, C) order (a TensorFlow port): keep it.
        x = x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)
        out = self.head(self.prelu4(self.dense4(x)))
        return out[:, 2:], _face_probability(out[:, :2])


class ONet(nn.Module):
    """Output net on 48x48 crops: (B, 3, 48, 48) -> (reg (B, 4), landmarks (B, 10), prob (B,)).

    landmarks: x of the 5 points, then y of the 5 points, as fractions of the crop.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)
        self.head = nn.Linear(256, 16)

    def fuse_heads(self) -> None:
        _fuse(self.head, (self.dense6_1, self.dense6_2, self.dense6_3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu4(self.conv4(x))
        x = x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)
        out = self.head(self.prelu5(self.dense5(x)))
        return out[:, 2:6], out[:, 6:16], _face_probability(out[:, :2])


def load_net(net: PNet | RNet | ONet, path: Path, device: torch.device) -> None:
    """Load a facenet-pytorch state dict into `net`, fold the normalisation, fuse the heads,
    move to `device` channels-last and switch to eval mode."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as error:
        raise ModelLoadError(f"cannot read MTCNN weights {path}: {error}") from error
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {"head.weight", "head.bias"}:
        raise ModelLoadError(
            f"{path} is not a facenet-pytorch {type(net).__name__} state dict "
            f"(missing {sorted(missing)}, unexpected {sorted(unexpected)})"
        )
    _fold_normalisation(net.conv1)
    net.fuse_heads()
    net.eval().requires_grad_(False)
    net.to(device)
    net.to(memory_format=torch.channels_last)


def load_nets(device: torch.device, weights_dir: Path | None = None) -> tuple[PNet, RNet, ONet]:
    """P-, R- and O-Net with facenet-pytorch's weights, ready on `device`."""
    folder = weights_dir or facenet_weights_dir()
    pnet, rnet, onet = PNet(), RNet(), ONet()
    for net, name in ((pnet, "pnet"), (rnet, "rnet"), (onet, "onet")):
        path = folder / f"{name}.pt"
        if not path.is_file():
            raise ModelLoadError(f"MTCNN weights not found: {path} (reinstall facenet-pytorch)")
        load_net(net, path, device)
    logger.debug("MTCNN nets loaded from %s on %s", folder, device)
    return pnet, rnet, onet
