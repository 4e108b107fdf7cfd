"""Provenance of converted files: metadata tags, sidecar, operator-signed C2PA manifest."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from security_helpers import make_c2pa_credentials, read_frames, write_clip

from stream.provenance import (
    SIDECAR_SUFFIX,
    ProvenanceError,
    ProvenanceInfo,
    mark_file,
    read_c2pa,
    read_tags,
)
from stream.settings import Settings

SWAP = ProvenanceInfo(
    effect="swap", changes_identity=True, params={"source_face": "f" * 32}, job_id="j1"
)
CARTOON = ProvenanceInfo(effect="cartoon", changes_identity=False, params={"levels": 6})


def _frames(count: int = 12) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for _ in range(count)]


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_c2pa_credentials(tmp_path_factory.mktemp("c2pa"))


@pytest.mark.parametrize(
    ("info", "head"), [(SWAP, "AI-modified by facestream"), (CARTOON, "Processed by facestream")]
)
@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv"])
def test_tags_and_sidecar_without_a_certificate(
    tmp_path: Path, info: ProvenanceInfo, head: str, suffix: str
) -> None:
    frames = _frames()
    path = write_clip(tmp_path / f"out{suffix}", frames, audio=True)
    record = mark_file(path, info, Settings(data_dir=tmp_path))
    assert record.method == "metadata"
    tags = {key.lower(): value for key, value in read_tags(path).items()}
    assert tags["comment"].startswith(head)
    assert f"effect={info.effect}" in tags["comment"]
    if suffix != ".mov":  # QuickTime's user data keeps the comment but has no description
        described = json.loads(tags["description"])
        assert described["ai_modified"] is info.changes_identity
        assert described["effect"] == info.effect
    sidecar = json.loads(record.sidecar.read_text())
    assert record.sidecar == path.with_name(path.name + SIDECAR_SUFFIX)
    assert sidecar["sha256"] == record.sha256 and sidecar["method"] == "metadata"
    assert sidecar["ai_modified"] is info.changes_identity
    # Remuxed, not re-encoded: every frame and the audio are still there.
    assert len(read_frames(path)) == len(frames)
    with av.open(str(path)) as container:
        assert len(container.streams.audio) == 1


@pytest.mark.parametrize("info", [SWAP, CARTOON])
def test_c2pa_manifest_signed_with_the_operator_certificate(
    tmp_path: Path, credentials: tuple[Path, Path], info: ProvenanceInfo
) -> None:
    cert, key = credentials
    path = write_clip(tmp_path / "out.mp4", _frames(), audio=True)
    record = mark_file(path, info, Settings(data_dir=tmp_path, c2pa_cert=cert, c2pa_key=key))
    assert record.method == "c2pa" and record.manifest_label
    manifest, state = read_c2pa(path)
    assert manifest is not None and state == "Valid"
    assert manifest["label"] == record.manifest_label
    assert manifest["signature_info"]["common_name"] == "facestream operator"
    actions = next(a for a in manifest["assertions"] if a["label"].startswith("c2pa.actions"))
    action = actions["data"]["actions"][0]
    expected = (
        "compositeWithTrainedAlgorithmicMedia"
        if info.changes_identity
        else "algorithmicallyEnhanced"
    )
    assert action["digitalSourceType"].endswith(expected)
    assert read_tags(path)["comment"] == info.summary()  # tags kept inside the signed file
    assert len(read_frames(path)) == 12


def test_tampering_breaks_the_c2pa_signature(
    tmp_path: Path, credentials: tuple[Path, Path]
) -> None:
    cert, key = credentials
    path = write_clip(tmp_path / "out.mp4", _frames())
    mark_file(path, SWAP, Settings(data_dir=tmp_path, c2pa_cert=cert, c2pa_key=key))
    data = bytearray(path.read_bytes())
    mdat = data.index(b"mdat")
    data[mdat + 64] ^= 0xFF  # one flipped byte of video
    path.write_bytes(bytes(data))
    _manifest, state = read_c2pa(path)
    assert state != "Valid"


@pytest.mark.parametrize(
    ("setup", "message"),
    [("missing", "no file"), ("webm-c2pa", "can sign only"), ("bad-key", "C2PA signing")],
)
def test_failures_raise_provenance_error(
    tmp_path: Path, credentials: tuple[Path, Path], setup: str, message: str
) -> None:
    cert, key = credentials
    settings = Settings(data_dir=tmp_path, c2pa_cert=cert, c2pa_key=key)
    path = tmp_path / "out.mp4"
    if setup == "webm-c2pa":
        path = write_clip(tmp_path / "out.mkv", _frames())
    elif setup == "bad-key":
        path = write_clip(path, _frames())
        wrong = tmp_path / "wrong_key.pem"
        wrong.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
        settings = Settings(data_dir=tmp_path, c2pa_cert=cert, c2pa_key=wrong)
    with pytest.raises(ProvenanceError, match=message):
        mark_file(path, SWAP, settings)
