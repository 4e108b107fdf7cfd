"""Tiny real modules for the compile-backend tests, importable from a subprocess too."""

from __future__ import annotations

import torch
from torch import nn


class TinyNet(nn.Module):
    """(B, 3, 16, 16) float -> ((B, 4, 16, 16) features, (B, 4) pooled): a conv, PReLU, 1x1 conv."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.PReLU(8)
        self.head = nn.Conv2d(8, 4, 1)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.head(self.act(self.conv(x)))
        return features, features.mean(dim=(2, 3))


class TinyNetVariant(TinyNet):
    """Same weights as TinyNet, different code: must get a different model hash."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.head(torch.relu(self.conv(x)))
        return features, features.amax(dim=(2, 3))


class Cancelling(nn.Module):
    """y = 1000 x - 999 x = x in float32; bf16 rounds 999 to 1000, so y collapses to 0."""

    def __init__(self) -> None:
        super().__init__()
        self.big = nn.Linear(4, 4, bias=False)
        self.small = nn.Linear(4, 4, bias=False)
        with torch.no_grad():
            self.big.weight.copy_(torch.eye(4) * 1000.0)
            self.small.weight.copy_(torch.eye(4) * 999.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.big(x) - self.small(x)


def example_input(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.rand((batch, 3, 16, 16), generator=torch.Generator().manual_seed(seed))
