"""Shared pieces of the extract and faceswap-GAN tests: small real data, a tiny model,
the pipeline's stage factories and clips written as real video files."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from conftest import SHARED_DATA

from engines.faceswap_gan.model import FaceswapConfig
from engines.faceswap_gan.trainer import TrainConfig
from stream.extract import ExtractOptions, ExtractSummary, extract_faces
from stream.pipeline import StageFactories

VIDEO = SHARED_DATA / "video.mp4"
PORTRAITS = SHARED_DATA / "faces"

# Small enough that a few dozen iterations run in seconds on two cores.
TINY_MODEL = FaceswapConfig(
    size=64, width=8, max_width=32, latent_dim=32, attention_resolutions=(16,)
)


def extract_video_faces(
    out_dir: Path, frames: int = 4, size: int = 64, **options: Any
) -> ExtractSummary:
    """Faces of the first `frames` frames of the crowd video (detected at 640 px wide)."""
    settings = ExtractOptions(
        size=size, max_frames=frames, detect_max_side=640, min_face=30, **options
    )
    return extract_faces(VIDEO, out_dir, settings)


def extract_portrait_faces(out_dir: Path, size: int = 64, **options: Any) -> ExtractSummary:
    return extract_faces(PORTRAITS, out_dir, ExtractOptions(size=size, **options))  # type: ignore[arg-type]


def tiny_train_config(iters: int, **changes: object) -> TrainConfig:
    settings: dict[str, object] = {
        "iters": iters,
        "batch_size": 4,
        "lr": 5e-4,
        "log_every": 1,
        "preview_every": 10,
        "checkpoint_every": 10,
        "seed": 0,
        "device": "cpu",
    }
    settings.update(changes)
    return TrainConfig(**settings)  # type: ignore[arg-type]


def stage_factories() -> StageFactories:
    """The pipeline's own stages on CPU (face detection + tracking every frame, the label)."""
    from stream.models import SharedModels
    from stream.settings import Settings

    settings = Settings(device="cpu", detect_every=1, min_face_size=20)
    return SharedModels(settings, "cpu").stage_factories()


def write_mp4(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """RGB frames as an H.264 MP4 through PyAV."""
    import av

    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def count_video_frames(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))
