"""Matroska (.mkv) output: written by `facestream convert`, provenance read back without a remux.

Matroska stores tag names upper-case (`COMMENT`), so provenance compares them
case-insensitively; a case-sensitive read would make mark_file remux every .mkv.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from convert_helpers import cut_clip, summarise
from security_helpers import make_c2pa_credentials, write_clip

from stream import convert, provenance
from stream.cli import main as cli_main
from stream.media_probe import probe
from stream.provenance import (
    SIDECAR_SUFFIX,
    ProvenanceInfo,
    mark_file,
    provenance_tags,
    read_tags,
)
from stream.settings import Settings

pytestmark = pytest.mark.timeout(300)

MAKEUP = ProvenanceInfo(effect="makeup", changes_identity=False, params={"lips_intensity": 0.5})


def _tagged_at_mux_time(path: Path, info: ProvenanceInfo) -> Path:
    """A copy of a small H.264 clip into `path`'s container, with provenance tags set at mux time."""
    frames = [np.full((64, 96, 3), 30 * i, np.uint8) for i in range(6)]
    plain = write_clip(path.with_name("plain.mp4"), frames)
    with av.open(str(plain)) as source, av.open(str(path), "w") as target:
        target.metadata.update(provenance_tags(info))
        stream = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                target.mux(packet)
    return path


@pytest.mark.parametrize(
    ("suffix", "has_description"), [(".mp4", True), (".mov", False), (".mkv", True)]
)
def test_tags_written_at_mux_time_read_back_and_need_no_remux(
    tmp_path: Path, suffix: str, has_description: bool
) -> None:
    path = _tagged_at_mux_time(tmp_path / f"tagged{suffix}", MAKEUP)
    tags = read_tags(path)
    assert tags["comment"] == MAKEUP.summary()
    if has_description:  # QuickTime MOV keeps only the comment
        assert json.loads(tags["description"])["effect"] == "makeup"
    before = (path.stat().st_ino, path.stat().st_mtime_ns, path.read_bytes())
    mark_file(path, MAKEUP, Settings(data_dir=tmp_path))
    assert (path.stat().st_ino, path.stat().st_mtime_ns, path.read_bytes()) == before


def test_cli_converts_mp4_to_mkv_with_makeup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = cut_clip(tmp_path / "in.mp4", frames=8, size=(480, 270))
    output = tmp_path / "out.mkv"

    def no_remux(path: Path, tags: object) -> None:
        raise AssertionError(f"mark_file remuxed {path.name}: its tags did not read back")

    monkeypatch.setattr(provenance, "_retag", no_remux)
    assert cli_main(["convert", str(clip), str(output), "--effect", "makeup", "-q"]) == 0
    assert "wrote" in capsys.readouterr().err

    with av.open(str(output)) as container:
        assert "matroska" in container.format.name.split(",")
        codecs = sorted(stream.codec_context.name for stream in container.streams)
    assert codecs == ["aac", "h264"]
    keep = {0, 7}
    source, converted = summarise(clip, keep), summarise(output, keep)
    assert len(converted.pts) == len(source.pts) == 8
    for before, after in zip(source.frames, converted.frames, strict=True):
        difference = np.abs(before.astype(np.int16) - after.astype(np.int16)).mean()
        assert difference < 8, difference  # the same picture, decoded: H.264 loss and makeup
    # Audio copied, not re-encoded: the same packets (Matroska's ms time base shifts pts units).
    assert len(converted.audio) == len(source.audio) > 0
    assert [a.data for a in converted.audio] == [a.data for a in source.audio]

    tags = read_tags(output)
    assert tags["comment"].startswith("Processed by facestream: effect=makeup")
    described = json.loads(tags["description"])
    assert described["effect"] == "makeup" and described["source"] == "in.mp4"
    sidecar = json.loads(output.with_name(output.name + SIDECAR_SUFFIX).read_text())
    assert sidecar["file"] == "out.mkv" and sidecar["method"] == "metadata"
    info = probe(output)  # facestream accepts its own output as input
    assert (info.width, info.height, info.video_codec) == (480, 270, "h264")


def test_cli_refuses_mkv_before_converting_when_c2pa_signing_is_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """c2pa cannot sign Matroska: the CLI says so before decoding a frame, and loses nothing."""
    (tmp_path / "c2pa").mkdir()
    cert, key = make_c2pa_credentials(tmp_path / "c2pa")
    monkeypatch.setenv("FACESTREAM_C2PA_CERT", str(cert))
    monkeypatch.setenv("FACESTREAM_C2PA_KEY", str(key))
    clip = cut_clip(tmp_path / "in.mp4", frames=4, size=(160, 90))
    output = tmp_path / "out.mkv"
    output.write_bytes(b"an earlier result")

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("the input was opened before the output was checked")

    monkeypatch.setattr(convert, "open_input", no_decoding)
    code = cli_main(["convert", str(clip), str(output), "--effect", "makeup", "-q"])

    error = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(error) == 1 and "can sign only .mp4" in error[0], error
    assert output.read_bytes() == b"an earlier result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c2pa", "in.mp4", "out.mkv"]
