"""Matroska inputs: a cut file is refused up front; one that never said its length is
held to the limits while it is converted.

Matroska keeps its index (cues) at the end, so a cut file has none; its Segment's
declared size is what tells. A live recording (OBS, FFmpeg `-live 1`) declares an
unknown size and no duration: it converts, and the limits apply as frames arrive.
"""

from __future__ import annotations

from pathlib import Path

import av
import pytest
from convert_helpers import cut_clip

from engines.effects.base import EffectResources
from stream.cli import main as cli_main
from stream.convert import convert_file
from stream.media_limits import MediaLimits, MediaRejected
from stream.media_probe import matroska_segment_end, probe
from stream.settings import Settings

pytestmark = pytest.mark.timeout(180)

FRAMES = 12


def _remux(source: Path, target: Path, live: bool) -> Path:
    """`source`'s video and audio copied into Matroska; live: unknown sizes, no duration."""
    options = {"live": "1"} if live else {}
    with av.open(str(source)) as given, av.open(str(target), "w", options=options) as out:
        streams = [s for s in given.streams if s.type in ("video", "audio")]
        mapping = {s.index: out.add_stream_from_template(s) for s in streams}
        for packet in given.demux(streams):
            if packet.dts is not None:
                packet.stream = mapping[packet.stream.index]
                out.mux(packet)
    return target


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("matroska")
    mp4 = cut_clip(folder / "clip.mp4", frames=FRAMES, size=(160, 90))
    return {
        "finished": _remux(mp4, folder / "finished.mkv", live=False),
        "live": _remux(mp4, folder / "live.mkv", live=True),
    }


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_a_cut_matroska_file_is_refused(
    clips: dict[str, Path], tmp_path: Path, keep: float
) -> None:
    data = clips["finished"].read_bytes()
    assert matroska_segment_end(clips["finished"]) == len(data)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(MediaRejected, match=r"is truncated: its index needs \d+ bytes"):
        probe(cut, name="cut.mkv")


@pytest.mark.parametrize("name", ["finished", "live"])
def test_complete_matroska_files_are_accepted(clips: dict[str, Path], name: str) -> None:
    info = probe(clips[name])
    assert info.width == 160 and info.video_codec == "h264"
    if name == "live":
        assert matroska_segment_end(clips[name]) == 0  # unknown size: nothing to compare
        assert info.duration_s == 0 and info.frames == 0  # nothing declared up front


def test_cli_refuses_a_cut_matroska_file_with_one_line(
    clips: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = clips["finished"].read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    output = tmp_path / "out.mp4"
    assert cli_main(["convert", str(cut), str(output), "--effect", "sketch", "-q"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "truncated" in lines[0], lines
    assert not output.exists()


@pytest.mark.parametrize(
    ("limits", "refused"),
    [
        (MediaLimits(max_frames=FRAMES - 3), True),
        (MediaLimits(max_duration_s=(FRAMES - 3) / 25), True),
        (MediaLimits(max_frames=FRAMES), False),
    ],
    ids=["too-many-frames", "too-long", "within"],
)
def test_an_undeclared_length_is_held_to_the_limits_while_converting(
    clips: dict[str, Path], tmp_path: Path, limits: MediaLimits, refused: bool
) -> None:
    output = tmp_path / "out.mp4"
    settings = Settings(data_dir=tmp_path)
    run = lambda: convert_file(  # noqa: E731
        clips["live"], output, "none", {}, EffectResources(), settings, limits=limits
    )
    if refused:
        with pytest.raises(MediaRejected, match="longer than accepted"):
            run()
        assert sorted(p.name for p in tmp_path.iterdir()) == []  # no output, no partial file
        return
    result = run()
    assert result.frames == FRAMES
    # No declared duration: the real-time figure comes from the frames' own times.
    assert result.media_duration_s == pytest.approx(FRAMES / 25, abs=0.002)
