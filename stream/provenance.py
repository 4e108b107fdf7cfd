"""Machine-readable provenance of converted files: metadata tags, a sidecar, C2PA.

Every converted file gets
- container metadata tags saying what facestream did: `comment` (one line for
  people, every container) and `description` (JSON; MP4 and Matroska, QuickTime
  MOV keeps only the comment), written at mux time from `provenance_tags` or added
  by `mark_file` by remuxing (tag names compare case-insensitively: Matroska
  upper-cases them),
- a sidecar `<file>.provenance.json` with the same facts and the file's SHA-256,
- when the operator configured a certificate (Settings.c2pa_cert + c2pa_key), a
  C2PA manifest signed with it (c2pa-python), embedded in the file.

`mark_file` blocks (file I/O, hashing, signing): call it from a worker thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import av

from stream.settings import Settings

logger = logging.getLogger(__name__)

GENERATOR = "facestream"
GENERATOR_VERSION = "0.1.0"
SIDECAR_SUFFIX = ".provenance.json"

# IPTC digital source types (https://cv.iptc.org/newscodes/digitalsourcetype/).
_IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
_SOURCE_SWAP = _IPTC + "compositeWithTrainedAlgorithmicMedia"
_SOURCE_FILTER = _IPTC + "algorithmicallyEnhanced"

_MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}
_C2PA_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime"}
_OPEN_OPTIONS = {"protocol_whitelist": "file"}


class ProvenanceError(RuntimeError):
    """The provenance mark could not be written; the file must not be served unmarked."""


@dataclass(frozen=True)
class ProvenanceInfo:
    """What was done to a file.

    effect: effect name; changes_identity: the effect replaces faces (a swap).
    params: the effect's parameters (values made JSON-safe with str()).
    job_id, face_id, source_name: optional references for the audit trail.
    labelled: whether the visible "AI-modified" label was drawn on changed frames.
    """

    effect: str
    changes_identity: bool
    params: Mapping[str, Any] = field(default_factory=dict)
    job_id: str | None = None
    face_id: str | None = None
    source_name: str | None = None
    labelled: bool = True
    created: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def created_text(self) -> str:
        return self.created.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

    def summary(self) -> str:
        """One line for people: 'AI-modified by facestream: effect=swap, created=...'."""
        head = "AI-modified by facestream" if self.changes_identity else "Processed by facestream"
        parts = [f"effect={self.effect}", f"created={self.created_text}"]
        if self.job_id:
            parts.append(f"job={self.job_id}")
        return f"{head}: {', '.join(parts)}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "generator": f"{GENERATOR} {GENERATOR_VERSION}",
            "ai_modified": self.changes_identity,
            "effect": self.effect,
            "params": {str(k): _json_safe(v) for k, v in self.params.items()},
            "job_id": self.job_id,
            "face_id": self.face_id,
            "source": self.source_name,
            "visible_label": self.labelled,
            "created": self.created_text,
        }


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return str(value)


@dataclass(frozen=True)
class ProvenanceRecord:
    """What mark_file wrote. method: "c2pa" (signed manifest + tags) or "metadata" (tags)."""

    method: Literal["c2pa", "metadata"]
    sidecar: Path
    sha256: str
    manifest_label: str | None = None


def provenance_tags(info: ProvenanceInfo) -> dict[str, str]:
    """Container metadata to set on the output at mux time (PyAV `output.metadata`)."""
    return {"comment": info.summary(), "description": json.dumps(info.as_dict(), sort_keys=True)}


def read_tags(path: Path) -> dict[str, str]:
    """The container-level metadata tags of a media file (opened with the file protocol only).

    Keys are lower-cased: Matroska stores tag names upper-case (`COMMENT`), MP4/MOV as
    written, and provenance must read back the same from both.
    """
    with av.open(str(path), options=_OPEN_OPTIONS) as container:
        return {key.lower(): value for key, value in container.metadata.items()}


def _has_tags(path: Path, info: ProvenanceInfo) -> bool:
    try:
        return read_tags(path).get("comment") == info.summary()
    except av.FFmpegError:
        return False


def _retag(path: Path, tags: Mapping[str, str]) -> None:
    """Remux `path` in place (streams copied, not re-encoded) with `tags` added."""
    muxer = _MUXERS.get(path.suffix.lower())
    if muxer is None:
        raise ProvenanceError(
            f"cannot write provenance tags into a {path.suffix or 'suffix-less'} file"
        )
    handle, name = tempfile.mkstemp(prefix=f"{path.name}.tag-", dir=path.parent)
    os.close(handle)
    temp = Path(name)
    try:
        with (
            av.open(str(path), options=_OPEN_OPTIONS) as source,
            av.open(str(temp), "w", format=muxer) as target,
        ):
            target.metadata.update({k: v for k, v in source.metadata.items() if k != "encoder"})
            target.metadata.update(tags)
            streams = [s for s in source.streams if s.type in ("video", "audio")]
            mapping = {s.index: target.add_stream_from_template(s) for s in streams}
            for packet in source.demux(streams):
                if packet.dts is None:
                    continue
                packet.stream = mapping[packet.stream.index]
                target.mux(packet)
        os.replace(temp, path)
    except (av.FFmpegError, OSError, ValueError) as error:
        raise ProvenanceError(
            f"could not write provenance tags into {path.name}: {error}"
        ) from error
    finally:
        temp.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest(info: ProvenanceInfo, path: Path) -> dict[str, Any]:
    action: dict[str, Any] = {
        "action": "c2pa.created",
        "digitalSourceType": _SOURCE_SWAP if info.changes_identity else _SOURCE_FILTER,
        "softwareAgent": {"name": GENERATOR, "version": GENERATOR_VERSION},
        "description": info.summary(),
        "parameters": {"effect": info.effect, "visible_label": info.labelled},
    }
    return {
        "claim_generator_info": [{"name": GENERATOR, "version": GENERATOR_VERSION}],
        "title": path.name,
        "format": _C2PA_TYPES[path.suffix.lower()],
        "assertions": [{"label": "c2pa.actions", "data": {"actions": [action]}}],
    }


def _sign_c2pa(path: Path, info: ProvenanceInfo, settings: Settings) -> str:
    """Embed a C2PA manifest signed with the operator's certificate; returns its label."""
    import c2pa

    if settings.c2pa_cert is None or settings.c2pa_key is None:
        raise ProvenanceError("C2PA signing needs both c2pa_cert and c2pa_key")
    check_markable(path, settings)
    mime = _C2PA_TYPES[path.suffix.lower()]
    handle, name = tempfile.mkstemp(prefix=f"{path.name}.c2pa-", dir=path.parent)
    os.close(handle)
    temp = Path(name)
    try:
        algorithm = c2pa.C2paSigningAlg[settings.c2pa_alg.upper()]
        signer_info = c2pa.C2paSignerInfo(
            algorithm, settings.c2pa_cert.read_bytes(), settings.c2pa_key.read_bytes(), None
        )
        with (
            c2pa.Signer.from_info(signer_info) as signer,
            c2pa.Builder.from_json(json.dumps(_manifest(info, path))) as builder,
            path.open("rb") as source,
            temp.open("w+b") as target,
        ):
            builder.sign(signer, mime, source, target)
        with temp.open("rb") as signed, c2pa.Reader(mime, signed) as reader:
            label = str((reader.get_active_manifest() or {}).get("label", ""))
        os.replace(temp, path)
        return label
    except (c2pa.C2paError, OSError, ValueError, KeyError) as error:
        raise ProvenanceError(f"C2PA signing of {path.name} failed: {error}") from error
    finally:
        temp.unlink(missing_ok=True)


def check_markable(path: Path, settings: Settings) -> None:
    """Raise ProvenanceError now if `mark_file` could not mark a file at `path` later.

    Call it before a conversion, so that a container the configured C2PA signing
    cannot carry is refused before any work is done, not after.
    """
    if settings.c2pa_cert is None:
        return
    suffix = Path(path).suffix.lower()
    if suffix not in _C2PA_TYPES:
        raise ProvenanceError(
            f"C2PA signing is configured, and it can sign only {', '.join(_C2PA_TYPES)} files, "
            f"not {suffix or 'a file without an extension'}: choose one of those for the output"
        )


def mark_file(path: Path, info: ProvenanceInfo, settings: Settings) -> ProvenanceRecord:
    """Give a finished output file its provenance (see the module docstring).

    Tags are added by remuxing when the file does not carry them yet; the C2PA
    manifest is signed last, over the final bytes. Raises ProvenanceError when
    any step fails: the caller must then not serve the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ProvenanceError(f"no file to mark at {path}")
    if not _has_tags(path, info):
        _retag(path, provenance_tags(info))
    method: Literal["c2pa", "metadata"] = "metadata"
    label = None
    if settings.c2pa_cert is not None:
        label = _sign_c2pa(path, info, settings)
        method = "c2pa"
    digest = _sha256(path)
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    body = {**info.as_dict(), "file": path.name, "sha256": digest, "method": method}
    if label:
        body["c2pa_manifest"] = label
    sidecar.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    logger.info("provenance of %s: %s", path.name, method)
    return ProvenanceRecord(method=method, sidecar=sidecar, sha256=digest, manifest_label=label)


def read_c2pa(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The active C2PA manifest of `path` and its validation state, or (None, None)."""
    import c2pa

    mime = _C2PA_TYPES.get(Path(path).suffix.lower())
    if mime is None:
        return None, None
    try:
        with Path(path).open("rb") as stream, c2pa.Reader(mime, stream) as reader:
            return reader.get_active_manifest(), reader.get_validation_state()
    except c2pa.C2paError:
        return None, None
