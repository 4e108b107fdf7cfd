"""Videos damaged in the middle of their media data, through `facestream convert`,
`facestream extract` and POST /jobs.

The files are real clips with whole video packets overwritten by 0xFF bytes (their
container and index intact, as after a bad sector or a copy gone wrong): FFmpeg's
decoder rejects those packets as invalid data. A few lost frames are skipped, as a
player does, with one warning; more end the run with one line naming the file and the
frame and time where it breaks (exit status 1: a failure while converting), and an
HTTP job carries the same line as its error.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from convert_helpers import cut_clip, damaged_copy, summarise
from server_helpers import running_server

from stream.cli import main as cli_main
from stream.settings import Settings

pytestmark = pytest.mark.timeout(180)

FRAMES = 30  # at 25 fps: at most 2 lost frames are skipped (stream.media_damage)
TICKS = 512  # cut_clip's frame duration in its 1/12800 s time base


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 frames of video.mp4 at 320x180 with AAC audio (x264 ultrafast: no B-frames,
    so file order is display order and packet N is frame N)."""
    return cut_clip(tmp_path_factory.mktemp("damaged") / "clip.mp4", frames=FRAMES)


def _lines(err: str) -> list[str]:
    """stderr as a terminal leaves it: each line's text after its last carriage return
    (a progress bar redraws itself with \\r), empty lines dropped."""
    shown = (line.split("\r")[-1] for line in err.split("\n"))
    return [line for line in shown if line.strip()]


# verbosity flags -> how the warning's line starts
VERBOSITY = [
    ([], "facestream: warning: input "),
    (["-v"], "WARNING stream.media_damage: input "),
]


@pytest.mark.parametrize(("flags", "start"), VERBOSITY, ids=["default", "-v"])
def test_a_few_lost_frames_are_skipped_with_one_warning_above_the_bar(
    clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], start: str
) -> None:
    bad = damaged_copy(clip, range(10, 12), tmp_path / "bad.mp4")
    output = tmp_path / "out.mp4"
    assert cli_main([*flags, "convert", str(bad), str(output), "--effect", "sketch"]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in _lines(err) if "damaged" in line]
    # one warning, on a line of its own: not appended to a drawing of the bar
    assert len(warnings) == 1, err
    assert "frame/s" not in warnings[0] and "%|" not in warnings[0], warnings
    assert start in warnings[0] and (not flags or warnings[0].startswith("20")), warnings
    assert warnings[0].endswith(
        f"input {bad} is damaged at frame 10 (0.40 s): "
        "2 frames cannot be decoded and are left out of the output"
    ), warnings
    assert "28/28" in _lines(err)[-2], err  # the bar's last drawing, then the summary
    written = summarise(output)
    assert len(written.pts) == FRAMES - 2
    steps = [b - a for a, b in zip(written.pts, written.pts[1:], strict=False)]
    assert steps == [TICKS] * 9 + [3 * TICKS] + [TICKS] * 17  # the others keep their times


# name -> (damaged video packets, what the one line says after "input PATH is damaged")
TOO_DAMAGED = {
    "ten-frames": (
        range(10, 20),
        " at frame 10 (0.40 s): more than 2 frames cannot be decoded "
        "(Invalid data found when processing input); get an undamaged copy of the file",
    ),
    "first-keyframe": (
        range(0, 1),
        " at frame 0 (0.00 s): 30 frames cannot be decoded (at most 2 are skipped); "
        "get an undamaged copy of the file",
    ),
}


@pytest.mark.parametrize(("packets", "says"), TOO_DAMAGED.values(), ids=TOO_DAMAGED.keys())
def test_convert_of_a_badly_damaged_video_fails_in_one_line(
    clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], packets: range, says: str
) -> None:
    bad = damaged_copy(clip, packets, tmp_path / "bad.mp4")
    output = tmp_path / "out.mp4"
    assert cli_main(["convert", str(bad), str(output), "--effect", "sketch", "-q"]) == 1
    lines = _lines(capsys.readouterr().err)
    assert lines == [f"facestream: input {bad} is damaged{says}"]
    assert not output.exists() and not list(tmp_path.glob("*.part-*"))


@pytest.mark.parametrize(
    ("packets", "status"), [(range(10, 11), 0), (range(10, 20), 1)], ids=["one", "ten"]
)
def test_the_face_process_skips_the_same_frames(
    clip: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    packets: range,
    status: int,
) -> None:
    """Blur finds faces in a child process that decodes the file itself: it skips the
    frames the converter skips (faces and frames stay paired), and where the damage is
    too large the converter's own line is what the user gets."""
    monkeypatch.setenv("FACESTREAM_FACE_PROCESS", "on")
    bad = damaged_copy(clip, packets, tmp_path / "bad.mp4")
    output = tmp_path / "out.mp4"
    assert cli_main(["convert", str(bad), str(output), "--effect", "blur", "-q"]) == status
    lines = _lines(capsys.readouterr().err)
    if status == 0:
        assert len(summarise(output).pts) == FRAMES - 1
        assert lines[0].startswith("facestream: warning: ") and "at frame 10" in lines[0], lines
    else:
        assert lines == [f"facestream: input {bad} is damaged{TOO_DAMAGED['ten-frames'][1]}"]


def test_extract_of_a_badly_damaged_video_fails_in_one_line(
    clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = damaged_copy(clip, range(10, 20), tmp_path / "bad.mp4")
    args = ["extract", str(bad), str(tmp_path / "faces"), "--detect-max-side", "320"]
    assert cli_main(args) == 1
    lines = _lines(capsys.readouterr().err)
    assert lines[-1] == f"facestream: input {bad} is damaged{TOO_DAMAGED['ten-frames'][1]}"


def _job(url: str, data: bytes) -> dict[str, object]:
    files = {"file": ("holiday.mp4", data, "video/mp4")}
    effect = json.dumps({"name": "sketch", "params": {}})
    accepted = httpx.post(url + "/jobs", files=files, data={"effect": effect}, timeout=60)
    assert accepted.status_code == 202, accepted.text
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = httpx.get(f"{url}/jobs/{accepted.json()['job_id']}").json()
        if state["state"] in ("done", "failed", "cancelled"):
            return dict(state)
        time.sleep(0.1)
    raise AssertionError("the job did not finish")


def test_a_job_carries_the_same_readable_message(clip: Path, tmp_path: Path) -> None:
    little = damaged_copy(clip, range(10, 11), tmp_path / "little.mp4").read_bytes()
    much = damaged_copy(clip, range(10, 20), tmp_path / "much.mp4").read_bytes()
    with running_server(Settings(data_dir=tmp_path / "data", warm_up=False)) as server:
        skipped = _job(server.url, little)
        failed = _job(server.url, much)
    assert skipped["state"] == "done", skipped
    assert failed["state"] == "failed", failed
    assert failed["error"] == f"input holiday.mp4 is damaged{TOO_DAMAGED['ten-frames'][1]}"
