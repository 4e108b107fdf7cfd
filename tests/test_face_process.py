"""The face process: a child interpreter running the face stage over a whole file."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from convert_helpers import cut_clip, summarise
from server_helpers import running_server

from engines.effects.base import EffectResources
from stream.cli import main as cli_main
from stream.convert import convert_file
from stream.convert_frames import upright_rgb
from stream.face_process import MIN_FRAMES, FaceProcess, FaceProcessError, wanted
from stream.face_stage import FaceStage
from stream.models import SharedModels
from stream.pipeline import FrameContext
from stream.settings import Settings

pytestmark = pytest.mark.timeout(240)

FRAMES = 12


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 frames of the crowd video at 720p (several faces above the minimum size)."""
    return cut_clip(tmp_path_factory.mktemp("faces") / "clip.mp4", frames=FRAMES, size=(1280, 720))


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(device="cpu", data_dir=tmp_path_factory.mktemp("data"), warm_up=False)


@pytest.fixture(scope="module")
def process(settings: Settings) -> Iterator[FaceProcess]:
    child = FaceProcess(settings)
    yield child
    child.close()


def _rgb_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [upright_rgb(frame) for frame in container.decode(video=0)]  # as FrameReader


def test_faces_equal_the_face_stage_run_here(
    process: FaceProcess, settings: Settings, clip: Path
) -> None:
    stage = SharedModels(settings, "cpu").stage_factories().face
    assert stage is not None
    here: FaceStage = stage()  # type: ignore[assignment]
    expected = []
    for index, image in enumerate(_rgb_frames(clip)):
        ctx = FrameContext(image=image, index=index, time_s=index / 25)  # the clip's times
        here.process(ctx)
        expected.append(ctx.faces)
    got = list(process.track(clip))
    assert len(got) == FRAMES
    assert sum(len(faces) for faces in got) >= 2 * FRAMES, "the clip shows several faces"
    for mine, theirs in zip(got, expected, strict=True):
        assert [f.track_id for f in mine] == [f.track_id for f in theirs]
        for a, b in zip(mine, theirs, strict=True):
            np.testing.assert_allclose(a.box, b.box, atol=0.05)
            np.testing.assert_allclose(a.landmarks5, b.landmarks5, atol=0.05)


def test_a_conversion_with_the_face_process_equals_one_without(
    process: FaceProcess, settings: Settings, clip: Path, tmp_path: Path
) -> None:
    models = SharedModels(settings, "cpu")
    outputs = {}
    for label, faces in (("child", process), ("thread", None)):
        outputs[label] = tmp_path / f"{label}.mp4"
        result = convert_file(
            clip,
            outputs[label],
            "makeup",
            {"lips_intensity": 1.0},
            EffectResources(weights_dir=settings.weights_dir),
            settings,
            models=models,
            faces=faces,
        )
        assert result.frames == FRAMES
    child_frames, thread_frames = (_rgb_frames(outputs[k]) for k in ("child", "thread"))
    source = _rgb_frames(clip)
    for a, b, original in zip(child_frames, thread_frames, source, strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 0.05, "the same picture"
        assert np.abs(a.astype(int) - original.astype(int)).max() > 60, "lips were painted"
    assert summarise(outputs["child"]).pts == summarise(clip).pts


def test_a_file_it_cannot_read_is_an_error_and_the_next_file_works(
    process: FaceProcess, clip: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    for bad in (tmp_path / "missing.mp4", broken):
        with pytest.raises(FaceProcessError, match="finding faces failed"):
            list(process.track(bad))
    assert len(list(process.track(clip))) == FRAMES


def test_a_stream_closed_early_leaves_the_process_ready(process: FaceProcess, clip: Path) -> None:
    stream = process.track(clip)
    next(stream), next(stream)
    stream.close()
    stream.close()  # closing twice is harmless
    assert len(list(process.track(clip))) == FRAMES


def test_a_process_that_died_is_reported(settings: Settings, clip: Path) -> None:
    child = FaceProcess(settings)
    try:
        child.wait_ready()
        child._process.kill()
        child._process.join(10)
        assert not child.alive
        with pytest.raises(FaceProcessError, match="ended"):
            list(child.track(clip))
    finally:
        child.close()


def test_closing_a_process_that_is_still_starting_is_quick(settings: Settings) -> None:
    child = FaceProcess(settings)
    child.close(timeout=0.1)
    assert not child.alive


@pytest.mark.parametrize(
    ("choice", "device", "frames", "expected"),
    [
        ("auto", "cpu", None, True),
        ("auto", "cpu", MIN_FRAMES, True),
        ("auto", "cpu", MIN_FRAMES - 1, False),  # a short file: the child's start costs more
        ("auto", "cuda", None, False),
        ("auto", "cuda:1", 10_000, False),
        ("on", "cuda", None, True),
        ("on", "cpu", 10, True),
        ("off", "cpu", 10_000, False),
    ],
)
def test_when_a_face_process_is_wanted(
    choice: str, device: str, frames: int | None, expected: bool
) -> None:
    settings = Settings(face_process=choice)  # type: ignore[arg-type]
    assert wanted(settings, device, frames) is expected


def test_a_makeup_job_runs_its_faces_in_the_runners_process(clip: Path, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, warm_up=False, face_process="on")  # a short clip
    with running_server(settings) as server:
        for _ in range(2):  # the second job reuses the process
            accepted = httpx.post(
                server.url + "/jobs",
                files={"file": ("clip.mp4", clip.read_bytes(), "video/mp4")},
                data={"effect": json.dumps({"name": "makeup"})},
                timeout=60,
            )
            assert accepted.status_code == 202, accepted.text
            job = f"{server.url}/jobs/{accepted.json()['job_id']}"
            status: dict[str, object] = {}
            for _ in range(600):
                status = httpx.get(job, timeout=10).json()
                if status["state"] not in ("queued", "running"):
                    break
                time.sleep(0.1)
            assert status["state"] == "done", status
            assert status["frames_done"] == FRAMES
        runner = server.app.state.services.jobs
        assert runner._faces is not None and runner._faces.alive


def test_the_cli_uses_a_face_process_when_asked(
    clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACESTREAM_FACE_PROCESS", "on")  # auto would skip a 12-frame clip
    monkeypatch.setenv("FACESTREAM_DATA_DIR", str(tmp_path / "data"))
    tracked: list[str] = []
    track = FaceProcess.track

    def recording(self: FaceProcess, path: str | Path) -> object:
        tracked.append(str(path))
        return track(self, path)

    monkeypatch.setattr(FaceProcess, "track", recording)
    output = tmp_path / "out.mp4"
    assert cli_main(["convert", str(clip), str(output), "--effect", "makeup", "-q"]) == 0
    assert tracked == [str(clip)]
    assert summarise(output).pts == summarise(clip).pts
