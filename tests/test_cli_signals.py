"""`facestream convert` stopped by a signal, and its log lines: the real CLI in a subprocess.

SIGTERM and SIGHUP (kill, timeout, docker stop, a closed terminal) must clean up as
Ctrl-C does: no OUTPUT.part-XXXX, no face child process left, exit 128 + signal, one
line after the closed progress bar. Ctrl-C reaches the whole process group, the face
child included, which must not print a traceback of its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from convert_helpers import cut_clip

pytestmark = pytest.mark.timeout(240)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """105 frames at 640x360: several seconds of blur on a CPU, time to be interrupted."""
    return cut_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=105, size=(640, 360))


@dataclass
class Run:
    status: int
    err: str
    children: list[int]


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for a parent that never reaps it)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def _convert_and_signal(
    clip: Path, folder: Path, signum: int, face_process: str, group: bool
) -> Run:
    """Start a conversion, wait until it writes frames, send `signum` (to the group: Ctrl-C)."""
    env = dict(os.environ, FACESTREAM_FACE_PROCESS=face_process, FACESTREAM_DATA_DIR=str(folder))
    output = folder / "out.mp4"
    command = [sys.executable, "-m", "stream.cli", "convert", str(clip), str(output)]
    process = subprocess.Popen(
        [*command, "--effect", "blur"],
        cwd=PROJECT_ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not any(p.stat().st_size > 0 for p in folder.glob("out.mp4.part-*")):
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "the conversion did not start writing"
        time.sleep(0.05)
    children = _children(process.pid)
    (os.killpg if group else os.kill)(process.pid, signum)
    _, err = process.communicate(timeout=60)
    return Run(process.returncode, err, children)


SIGNALS = [
    # (signal, face process, to the whole group, exit status, fragment of the last line)
    (signal.SIGTERM, "off", False, 143, "stopped by SIGTERM; no output was written"),
    (signal.SIGHUP, "off", False, 129, "stopped by SIGHUP; no output was written"),
    (signal.SIGTERM, "on", False, 143, "stopped by SIGTERM; no output was written"),
    (signal.SIGINT, "on", True, 130, "interrupted; no output was written"),
]


@pytest.mark.parametrize(("signum", "face_process", "group", "status", "last"), SIGNALS)
def test_a_stopped_conversion_cleans_up(
    clip: Path,
    tmp_path: Path,
    signum: int,
    face_process: str,
    group: bool,
    status: int,
    last: str,
) -> None:
    run = _convert_and_signal(clip, tmp_path, signum, face_process, group)
    assert run.status == status, run.err
    assert run.err.rstrip().splitlines()[-1] == f"facestream: {last}", run.err[-2000:]
    assert "Traceback" not in run.err, run.err
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("out.mp4")] == []
    assert (len(run.children) >= 1) is (face_process == "on")  # the face process (+ tracker)
    deadline = time.monotonic() + 5
    while any(_alive(child) for child in run.children):
        assert time.monotonic() < deadline, "a child process outlived the conversion"
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("before", "after", "info_lines"), [([], [], False), (["-v"], [], True), ([], ["-v"], True)]
)
def test_convert_logs_warnings_only_unless_verbose(
    tmp_path: Path, before: list[str], after: list[str], info_lines: bool
) -> None:
    short = cut_clip(tmp_path / "short.mp4", frames=5)
    command = [sys.executable, "-m", "stream.cli", *before, "convert", str(short)]
    done = subprocess.run(
        [*command, str(tmp_path / "o.mp4"), "--effect", "blur", "-q", *after],
        cwd=PROJECT_ROOT,
        env=dict(os.environ, FACESTREAM_DATA_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (" INFO " in done.stderr) is info_lines, done.stderr
