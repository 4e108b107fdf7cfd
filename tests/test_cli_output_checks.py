"""`facestream convert` / `serve`: refusals before any work, and what a finished run leaves.

Every run is the real CLI entry point in this process, on small real clips.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA
from convert_helpers import cut_clip
from server_helpers import free_port

from stream.cli import main as cli_main

pytestmark = pytest.mark.timeout(180)

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
NOT_ROOT = pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cut_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=6)


def _same(folder: Path, clip: Path) -> tuple[Path, Path]:
    copy = folder / "same.mp4"
    copy.write_bytes(clip.read_bytes())
    return copy, copy


def _linked(folder: Path, clip: Path) -> tuple[Path, Path]:
    copy = folder / "same.mp4"
    copy.write_bytes(clip.read_bytes())
    (folder / "link.mp4").symlink_to(copy)
    return copy, folder / "link.mp4"


def _into_folder(folder: Path, clip: Path) -> tuple[Path, Path]:
    (folder / "dir.mp4").mkdir()
    return clip, folder / "dir.mp4"


def _plain(folder: Path, clip: Path) -> tuple[Path, Path]:
    return clip, folder / "out.mp4"


def _in_sysfs(folder: Path, clip: Path) -> tuple[Path, Path]:
    return clip, Path("/sys/out.mp4")  # no file can be made there, not even by root


def _read_only(folder: Path, clip: Path) -> tuple[Path, Path]:
    (folder / "ro").mkdir(mode=0o555)
    return clip, folder / "ro" / "out.mp4"


Setup = Callable[[Path, Path], tuple[Path, Path]]

REFUSALS: list[tuple[Setup, list[str], str, str | None]] = [
    # (input/output setup, extra args, fragment of the one line, what it must not say)
    (_same, ["--effect", "sketch"], "is the input file", None),
    (_linked, ["--effect", "sketch"], "is the input file", None),
    (_into_folder, ["--effect", "sketch"], "is a folder", "Errno"),
    # found before any model loads, named as the folder, not as the temporary file
    (_in_sysfs, ["--effect", "blur"], "cannot write to /sys (permission denied)", ".part-"),
    pytest.param(
        _read_only,
        ["--effect", "blur"],
        "/ro (permission denied)",
        ".part-",
        marks=NOT_ROOT,
    ),
    pytest.param(
        _plain,
        ["--effect", "sketch", "--device", "cuda"],
        "CUDA is not available here",
        "Traceback",
        marks=NO_CUDA,
    ),
    (_plain, ["--effect", "cartoon", "--model", __file__], "effect 'cartoon' takes no model", None),
    (
        _plain,
        ["--effect", "swap", "--source-face", str(SHARED_DATA / "multiface.jpg"), "--consent"],
        "give a photo of exactly one person",
        "POST /faces",
    ),
    (_plain, ["--effect", "swap", "--param", "source_face=abc"], "--source-face", "POST /faces"),
    (_plain, ["--effect", "swap"], "--source-face IMAGE --consent", "POST /faces"),
]


@pytest.mark.parametrize(("setup", "args", "fragment", "unsaid"), REFUSALS)
def test_convert_refuses_up_front_with_one_line(
    tmp_path: Path,
    clip: Path,
    capsys: pytest.CaptureFixture[str],
    setup: Setup,
    args: list[str],
    fragment: str,
    unsaid: str | None,
) -> None:
    source, output = setup(tmp_path, clip)
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    assert cli_main(["convert", str(source), str(output), "-q", *args]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("facestream: ") and fragment in lines[0], lines
    assert unsaid is None or unsaid not in lines[0]
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before  # the input is untouched
    assert not list(tmp_path.rglob("*.part-*")) and not list(tmp_path.rglob("*.provenance.json"))


@NO_CUDA
def test_serve_refuses_cuda_without_cuda(tmp_path: Path) -> None:
    # A subprocess with a timeout: were the check gone, the server would start and serve.
    port = str(free_port())
    done = subprocess.run(
        [sys.executable, "-m", "stream.cli", "serve", "--device", "cuda", "--port", port],
        cwd=Path(__file__).resolve().parents[1],
        env=dict(os.environ, FACESTREAM_DATA_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "CUDA is not available here" in lines[0]


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _last_bar(err: str) -> str:
    renders = [part for part in re.split(r"[\r\n]+", err) if "frame/s" in part or "frame]" in part]
    return renders[-1] if renders else ""


CONTAINERS = [
    # (input container, effect, label expected in the provenance)
    ("mp4", "sketch", False),
    ("matroska", "cartoon", False),  # a gap in the frames: Matroska's estimate is 15, not 12
]


@pytest.mark.parametrize(("container", "effect", "labelled"), CONTAINERS)
@pytest.mark.usefixtures("umask_022")
def test_finished_conversion_bar_mode_and_provenance(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    container: str,
    effect: str,
    labelled: bool,
) -> None:
    steps = [1] * 5 + [4] + [1] * 6  # variable frame rate
    source = cut_clip(tmp_path / f"in.{container[:3]}", 12, container=container, pts_steps=steps)
    output = tmp_path / "out.mp4"
    assert cli_main(["convert", str(source), str(output), "--effect", effect]) == 0
    bar = _last_bar(capsys.readouterr().err)
    assert "100%" in bar and "12/12" in bar, bar
    assert output.stat().st_mode & 0o777 == 0o644  # 0666 less the umask, not mkstemp's 0600
    sidecar = json.loads(output.with_name("out.mp4.provenance.json").read_text())
    assert sidecar["visible_label"] is labelled and sidecar["effect"] == effect


def test_a_huge_source_face_is_refused_from_its_header(
    tmp_path: Path, clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A small PNG claiming 20000x20000 pixels: refused by its stated size before any
    decoder runs (decoding it took 2.9 GB and then said 'no face found')."""
    import struct
    import zlib

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    png = (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    )
    face = tmp_path / "giant.png"
    face.write_bytes(png)
    args = ["--effect", "swap", "--source-face", str(face), "--consent"]
    assert cli_main(["convert", str(clip), str(tmp_path / "out.mp4"), "-q", *args]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "is 20000x20000 pixels, more than the limit of 40" in lines[0]
