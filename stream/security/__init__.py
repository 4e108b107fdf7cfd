"""Request security: Bearer tokens, CORS, body limits, SDP and upload checks.

- `SecurityMiddleware` (add it to the app): CORS allow-list, auth on protected
  paths, per-endpoint request size limits enforced before the body is read.
- `TokenDep`: the same token check as a FastAPI dependency.
- `check_upload` / `check_signature`: file signature and content type of uploads.
- `check_settings`: fail-fast checks run when Settings are built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stream.security.auth import (
    TokenDep,
    Unauthorized,
    auth_required,
    check_auth_settings,
    check_bearer,
    is_loopback,
)
from stream.security.middleware import SecurityMiddleware, body_limit
from stream.security.uploads import (
    EmptyUpload,
    UnsupportedMediaType,
    check_signature,
    check_upload,
    sniff,
)

if TYPE_CHECKING:
    from stream.settings import Settings

__all__ = [
    "EmptyUpload",
    "SecurityMiddleware",
    "TokenDep",
    "Unauthorized",
    "UnsupportedMediaType",
    "auth_required",
    "body_limit",
    "check_bearer",
    "check_settings",
    "check_signature",
    "check_upload",
    "is_loopback",
    "sniff",
]


def check_settings(settings: Settings) -> None:
    """Raise ValueError for insecure or inconsistent security and provenance settings."""
    check_auth_settings(settings)
    if (settings.c2pa_cert is None) != (settings.c2pa_key is None):
        raise ValueError(
            "set both c2pa_cert and c2pa_key (PEM files) to sign C2PA manifests, or neither"
        )
    for path in (settings.c2pa_cert, settings.c2pa_key):
        if path is not None and not path.is_file():
            raise ValueError(f"the C2PA signing file {path} does not exist")
