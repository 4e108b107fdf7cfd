"""Conversion audio: every track kept in order with its language, re-encoded to AAC when
the output container cannot hold its codec; frame estimates of Matroska inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import pytest
from convert_helpers import audio_clip, cut_clip, summarise

from engines.effects.base import EffectResources
from stream.convert import convert_file
from stream.media_probe import probe
from stream.settings import Settings


def _audio_tracks(path: Path) -> list[dict[str, Any]]:
    """Per audio track: codec, language, packets, first and last packet end in seconds."""
    tracks: list[dict[str, Any]] = []
    with av.open(str(path)) as container:
        for stream in container.streams.audio:
            tracks.append(
                {"codec": stream.codec_context.name, "language": stream.metadata.get("language")}
            )
        times: list[list[float]] = [[] for _ in tracks]
        ends: list[float] = [0.0 for _ in tracks]
        for packet in container.demux(*container.streams.audio):
            if packet.pts is None or not packet.size:
                continue
            at = container.streams.audio.index(packet.stream)
            start = float(packet.pts * packet.time_base)
            times[at].append(start)
            ends[at] = max(ends[at], start + float(packet.duration * packet.time_base))
    for track, starts, end in zip(tracks, times, ends, strict=True):
        track.update(packets=len(starts), first_s=min(starts), end_s=end)
    return tracks


@pytest.mark.parametrize(
    ("name", "tracks", "container", "video_codec", "output", "expected"),
    [
        ("pcm.avi", [("pcm_s16le", None)], "avi", "mpeg4", "out.mp4", [("aac", None)]),
        ("adpcm.avi", [("adpcm_ima_wav", None)], "avi", "mpeg4", "out.mp4", [("aac", None)]),
        ("opus.mkv", [("libopus", "eng")], "matroska", "libx264", "out.mov", [("aac", "eng")]),
        (
            "two.mkv",
            [("aac", "eng"), ("aac", "fra")],
            "matroska",
            "libx264",
            "out.mp4",
            [("aac", "eng"), ("aac", "fra")],
        ),
        (
            "pcm.mkv",
            [("pcm_s16le", "deu")],
            "matroska",
            "libx264",
            "out.mkv",
            [("pcm_s16le", "deu")],
        ),
    ],
)
def test_every_audio_track_is_kept_in_sync_in_a_codec_the_output_holds(
    tmp_path: Path,
    name: str,
    tracks: list[tuple[str, str | None]],
    container: str,
    video_codec: str,
    output: str,
    expected: list[tuple[str, str | None]],
) -> None:
    source = audio_clip(tmp_path / name, tracks, container, video_codec)
    target = tmp_path / output
    settings = Settings(data_dir=tmp_path / "data")
    result: Any = convert_file(source, target, "none", {}, EffectResources(), settings)
    before, after = summarise(source), summarise(target)
    assert result.frames == len(after.pts) == len(before.pts) == 10
    assert [float(p * after.time_base) for p in after.pts] == pytest.approx(
        [float(p * before.time_base) for p in before.pts], abs=1e-6
    )
    source_tracks, output_tracks = _audio_tracks(source), _audio_tracks(target)
    languages = [None if t["language"] in (None, "und") else t["language"] for t in output_tracks]
    assert [
        (t["codec"], lang) for t, lang in zip(output_tracks, languages, strict=True)
    ] == expected
    for mine, theirs in zip(output_tracks, source_tracks, strict=True):
        assert mine["first_s"] == pytest.approx(theirs["first_s"], abs=0.025)  # AAC priming
        assert mine["end_s"] == pytest.approx(theirs["end_s"], abs=0.03)
    assert not list(tmp_path.glob("*.part-*"))


@pytest.mark.parametrize(
    ("container", "suffix", "frames"),
    [("matroska", "mkv", 25), ("matroska", "mkv", 13), ("mp4", "mp4", 25)],
)
def test_the_frame_estimate_counts_video_not_trailing_audio(
    tmp_path: Path, container: str, suffix: str, frames: int
) -> None:
    """Matroska's container duration runs to the end of the last audio packet, past the
    last frame; the estimate must come from the video track's own duration."""
    clip = cut_clip(tmp_path / f"clip.{suffix}", frames=frames, container=container)
    assert probe(clip).frames == len(summarise(clip).pts) == frames
