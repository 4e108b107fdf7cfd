"""The exported model file: one torch file with a JSON config and the generator's tensors.

Layout (a dict, saved with torch.save, read with torch.load(weights_only=True)):
    format: "facestream-faceswap-gan"     version: int (FORMAT_VERSION)
    config: JSON text of FaceswapConfig    metadata: JSON text (identities, iterations, ...)
    state_dict: {name: tensor} of FaceswapGenerator (encoder and both decoders)
Nothing in it is executable; a damaged, foreign or mismatched file is a ModelLoadError.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engines.errors import ModelLoadError
from engines.faceswap_gan.model import FaceswapConfig, FaceswapGenerator
from engines.model_file import save_model_file

logger = logging.getLogger(__name__)

FORMAT_NAME = "facestream-faceswap-gan"
FORMAT_VERSION = 1
MODEL_FILENAME = "model.pt"


@dataclass(frozen=True)
class LoadedModel:
    """generator: FaceswapGenerator in eval mode on the requested device.
    metadata: what the trainer recorded (identity names, iterations, dates)."""

    generator: FaceswapGenerator
    config: FaceswapConfig
    metadata: dict[str, Any]
    path: Path


def export_model(generator: FaceswapGenerator, path: Path, metadata: dict[str, Any]) -> Path:
    """Write the generator (weights moved to CPU) and its config to `path` atomically."""
    path = save_model_file(
        generator,
        path,
        format_name=FORMAT_NAME,
        version=FORMAT_VERSION,
        config=generator.config.to_dict(),
        metadata=metadata,
    )
    logger.info("exported the faceswap model to %s", path)
    return path


def _read_payload(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ModelLoadError(
            f"model file {path} does not exist; train one with `facestream train faceswap` "
            "or pass the path of an exported model.pt"
        )
    if not path.is_file():
        raise ModelLoadError(
            f"model path {path} is not a file; pass the exported model.pt inside it"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for damaged files
        raise ModelLoadError(
            f"{path} is not a readable faceswap model (damaged or not a torch file: "
            f"{type(error).__name__}); export it again with `facestream train faceswap`"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise ModelLoadError(f"{path} is a torch file but not a facestream faceswap-GAN model")
    version = payload.get("version")
    if version != FORMAT_VERSION:
        raise ModelLoadError(
            f"{path} has model format version {version}; this facestream reads version "
            f"{FORMAT_VERSION}: re-export it with this version"
        )
    return payload


def _parse_config(payload: dict[str, Any], path: Path) -> tuple[FaceswapConfig, dict[str, Any]]:
    try:
        config = FaceswapConfig.from_dict(json.loads(payload["config"]))
        metadata = json.loads(payload.get("metadata", "{}"))
    except (KeyError, TypeError, ValueError) as error:
        raise ModelLoadError(f"{path} has a damaged config: {error}") from error
    if not isinstance(metadata, dict):
        raise ModelLoadError(f"{path} has damaged metadata")
    return config, metadata


def load_model(path: Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load an exported model onto `device`, in eval mode.

    Raises ModelLoadError, with what to do, when the file is missing, damaged, of
    another format or version, or its weights do not fit its config.
    """
    path = Path(path)
    payload = _read_payload(path)
    config, metadata = _parse_config(payload, path)
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path} has no weights (state_dict missing or not tensors)")
    generator = FaceswapGenerator(config)
    try:
        generator.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "mismatch"
        raise ModelLoadError(
            f"{path}: the weights do not match the model config ({first_line}); the file is "
            "damaged or was written by another version"
        ) from error
    generator.to(device).eval()
    generator.requires_grad_(False)
    return LoadedModel(generator=generator, config=config, metadata=metadata, path=path)


def find_model(weights_dir: Path, name: str | None = None) -> Path | None:
    """weights_dir/faceswap/NAME/model.pt for a name, else the newest such file
    (by modification time), else None."""
    root = Path(weights_dir) / "faceswap"
    if name:
        candidate = root / name / MODEL_FILENAME
        return candidate if candidate.is_file() else None
    if not root.is_dir():
        return None
    found = [path for path in root.glob(f"*/{MODEL_FILENAME}") if path.is_file()]
    return max(found, key=lambda path: path.stat().st_mtime) if found else None
