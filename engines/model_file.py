"""Writing facestream's own model files: one torch file, a JSON config and the tensors.

Layout (a dict, saved with torch.save, read with torch.load(weights_only=True)):
    format: str    version: int    config: JSON text    metadata: JSON text
    state_dict: {name: tensor} (copied to CPU)
Used by the faceswap-GAN export and the neural-style model files; each reads its own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn


def save_model_file(
    module: nn.Module,
    path: Path,
    *,
    format_name: str,
    version: int,
    config: dict[str, Any],
    metadata: dict[str, Any],
) -> Path:
    """Write `module`'s weights (copied to CPU) with `config` and `metadata` to `path`
    atomically (a temporary file beside it, then a rename); creates the folder. Returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": format_name,
        "version": version,
        "config": json.dumps(config),
        "metadata": json.dumps(metadata),
        "state_dict": {
            key: value.detach().cpu().clone() for key, value in module.state_dict().items()
        },
    }
    temporary = path.with_name(path.name + ".tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)
    return path
