"""Server settings (pydantic-settings, environment prefix FACESTREAM_).

Built once in the app's lifespan (or by the CLI), never at import time.
Example: FACESTREAM_PORT=9000 FACESTREAM_DETECT_EVERY=5 facestream serve
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Device = Literal["auto", "cpu", "cuda"]
Backend = Literal["auto", "eager", "inductor", "tensorrt"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACESTREAM_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    device: Device = "auto"
    backend: Backend = "auto"
    weights_dir: Path = PROJECT_ROOT / "weights"
    data_dir: Path = Field(
        default_factory=lambda: Path.home() / ".cache" / "facestream",
        description="uploaded faces, conversion jobs and their results",
    )

    # Detection and tracking
    detect_every: int = Field(5, ge=1, le=300, description="full detection every N frames")
    smoothing: float = Field(
        0.5, ge=0.0, le=1.0, description="0 = raw boxes, 1 = heaviest smoothing"
    )
    min_face_size: int = Field(40, ge=12, le=1000, description="smallest face, pixels")

    # Sessions
    max_sessions: int = Field(8, ge=1, le=1000)
    max_sessions_per_client: int = Field(4, ge=1, le=1000)
    session_connect_timeout_s: float = Field(
        default=20.0, ge=0.5, le=600, description="a peer not connected by then is dropped"
    )

    # Cross-session batching (stream/models.py): the live sessions' detector and swap-model
    # calls share engine calls. auto: on for CUDA (one engine call for many sessions), off on
    # a CPU (nothing to gain from batching there; each session's frame runs in one thread).
    batch_sessions: Literal["auto", "on", "off"] = "auto"
    batch_max_wait_ms: float = Field(
        default=4.0, ge=0.0, le=100.0, description="longest a request waits for its batch to fill"
    )
    batch_max_size: int = Field(default=16, ge=1, le=256, description="most requests in one call")

    # File conversions on a CPU run the face stage in a child process (stream/face_process.py)
    # so that a second core is used. auto: on when the device is a CPU.
    face_process: Literal["auto", "on", "off"] = "auto"

    # Conversion jobs (stream/jobs.py) and WHIP/WHEP (stream/routes/whip.py)
    job_max_pending: int = Field(default=4, ge=1, le=1000, description="waiting jobs; more: 429")
    job_retention_s: float = Field(default=3600.0, gt=0, description="finished jobs kept, seconds")
    whip_token: str | None = Field(
        default=None, min_length=8, description="Bearer for /whip, /whep"
    )

    # Responsible use
    warm_up: bool = Field(True, description="load the face models at start, not on the first frame")
    label_swaps: bool = Field(
        True, description="draw the visible 'AI-modified' label on swapped output"
    )
    c2pa_cert: Path | None = Field(default=None, description="PEM chain that signs C2PA manifests")
    c2pa_key: Path | None = Field(default=None, description="PEM private key of c2pa_cert")
    c2pa_alg: Literal["es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519"] = "es256"

    # Security (stream/security): Bearer tokens, CORS, request size limits
    api_tokens: list[str] = Field(default_factory=list, description='JSON: ["<16+ chars>"]')
    require_auth: bool | None = Field(default=None, description="None: unless host is loopback")
    cors_origins: list[str] = Field(default_factory=list, description="origins allowed to call")
    max_offer_bytes: int = Field(default=64 * 1024, ge=1024, le=1 << 20, description="SDP bodies")
    max_image_bytes: int = Field(default=10 << 20, ge=1 << 10, description="POST /faces uploads")
    max_video_bytes: int = Field(default=512 << 20, ge=1 << 10, description="POST /jobs uploads")
    max_body_bytes: int = Field(default=1 << 20, ge=1 << 10, description="any other request body")

    @model_validator(mode="after")
    def _check_security(self) -> Settings:
        from stream.security import check_settings

        check_settings(self)
        return self

    def resolved_device(self) -> str:
        """'cpu' or 'cuda' for 'auto', by whether CUDA is usable here (imports torch)."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
