"""What the command line says: help texts, URLs given as files, the summary's audio count.

Every run is the real CLI entry point in this process (stream.cli.main).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import av
import pytest
from convert_helpers import audio_clip, cut_clip

from stream.cli import build_parser
from stream.cli import main as cli_main
from stream.commands.bench import available

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_bench_help_lists_the_benchmarks(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as leaving:
        cli_main(["bench", flag])
    out, err = capsys.readouterr()
    assert leaving.value.code == 0 and not err, err
    assert out.startswith("usage: facestream bench"), out
    listed = out.split("benchmarks:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in listed] == available() and len(available()) >= 5
    assert all(len(line.split()) > 2 for line in listed), listed  # each with what it measures


def test_bench_name_help_is_still_the_benchmarks_own(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as leaving:
        cli_main(["bench", "neural_style", "--help"])
    out = capsys.readouterr().out
    assert leaving.value.code == 0 and out.startswith("usage: facestream bench neural_style")
    assert "--repeat" in out  # one of that benchmark's own options


def _subcommand(name: str) -> argparse.ArgumentParser:
    actions = build_parser()._subparsers._group_actions  # type: ignore[union-attr]
    parsers = next(a for a in actions if isinstance(a, argparse._SubParsersAction)).choices
    return parsers[name]


@pytest.mark.parametrize("command", ["convert", "serve", "extract"])
def test_every_option_has_help(command: str) -> None:
    parser = _subcommand(command)
    silent = [a.option_strings or a.dest for a in parser._actions if not a.help]
    assert not silent, f"{command}: no help for {silent}"
    assert parser.description, f"{command} --help has no description"


# argv, with INPUT and OUT standing for a real clip and a writable output
URLS = [
    (["convert", "http://127.0.0.1:8765/clip.mp4", "OUT", "--effect", "sketch"], "input"),
    (["convert", "INPUT", "https://example.com/out.mp4", "--effect", "sketch"], "output"),
    (["extract", "rtsp://camera.local/stream", "OUT"], "input"),
]


@pytest.mark.parametrize(("argv", "role"), URLS, ids=["convert-input", "convert-output", "extract"])
def test_a_url_is_named_as_given(
    argv: list[str], role: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = cut_clip(tmp_path / "clip.mp4", frames=2)
    places = {"INPUT": str(clip), "OUT": str(tmp_path / "out.mp4")}
    argv = [places.get(arg, arg) for arg in argv]
    url = next(arg for arg in argv if "://" in arg)
    assert cli_main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        f"facestream: {role} {url} is a URL: only local files are accepted; "
        + ("download it first" if role == "input" else "give a local file name")
    ], lines


def _audio_packets(path: Path) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return sum(1 for packet in container.demux(stream) if packet.size)


def test_the_summary_counts_the_audio_packets_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Opus in WebM is re-encoded to AAC for a .mov: the packets change in number
    (AAC frames hold 1024 samples, Opus ones 960), and the summary says what was written."""
    source = audio_clip(tmp_path / "vp9.webm", [("libopus", None)], "webm", "libvpx-vp9", frames=12)
    output = tmp_path / "out.mov"
    assert cli_main(["convert", str(source), str(output), "--effect", "sketch", "-q"]) == 0
    written = _audio_packets(output)
    assert written != _audio_packets(source)  # else this would not tell the counts apart
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"(12 frames, {written} audio packets)" in summary, summary
