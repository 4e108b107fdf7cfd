"""File conversion: real files through PyAV, the real pipeline, the real CLI entry point."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
from convert_helpers import VIDEO, MediaSummary, cut_clip, summarise
from webrtc_helpers import saturation

from engines.effects.base import EffectResources
from engines.effects.registry import all_effects
from stream.cli import main as cli_main
from stream.convert import ConvertCancelled, ConvertProgress, convert_file
from stream.settings import Settings

FACE_EFFECTS = ("blur", "makeup", "debug")  # in order of preference: the most visible first


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 frames of video.mp4 at 320x180, 25 fps, with its AAC audio."""
    return cut_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=20)


def seconds(summary: MediaSummary) -> list[float]:
    return [float(p * summary.time_base) for p in summary.pts]


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def assert_same_audio(source: MediaSummary, output: MediaSummary, exact: bool = True) -> None:
    """Same packets: bytes and timing (exact pts/dts/duration when both use one time base)."""
    assert len(output.audio) == len(source.audio) > 0
    assert source.audio_time_base is not None and output.audio_time_base is not None
    for a, b in zip(source.audio, output.audio, strict=True):
        assert a.data == b.data
        if exact:
            assert (a.pts, a.dts, a.duration) == (b.pts, b.dts, b.duration)
        else:
            assert a.pts is not None and b.pts is not None
            assert float(a.pts * source.audio_time_base) == pytest.approx(
                float(b.pts * output.audio_time_base), abs=1e-3
            )


def convert(
    source: Path, output: Path, effect: str, params: dict[str, object], **kw: object
) -> object:
    settings = Settings(data_dir=output.parent / "data")
    return convert_file(source, output, effect, params, EffectResources(), settings, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("effect", "params", "check"),
    [
        ("none", {}, lambda src, out: mean_abs_diff(src, out) < 6),  # H.264 loss only
        ("sketch", {"blur": 8}, lambda src, out: saturation(out) < 6 < saturation(src)),
        ("cartoon", {"levels": 4}, lambda src, out: mean_abs_diff(src, out) > 6),
    ],
)
def test_convert_keeps_frames_timing_and_audio(
    clip: Path, tmp_path: Path, effect: str, params: dict[str, object], check: Callable[..., bool]
) -> None:
    progress: list[ConvertProgress] = []
    output = tmp_path / "out.mp4"
    result = convert(clip, output, effect, params, progress=progress.append)
    source, converted = summarise(clip, keep_frames={10}), summarise(output, keep_frames={10})
    assert result.frames == len(source.pts) == len(converted.pts) == 20  # type: ignore[attr-defined]
    assert seconds(converted) == pytest.approx(seconds(source), abs=1e-6)
    assert (converted.width, converted.height) == (source.width, source.height)
    assert converted.frame_rate == source.frame_rate == 25
    assert_same_audio(source, converted)
    assert check(source.frames[0], converted.frames[0])
    assert [p.frames_done for p in progress] == list(range(1, 21))
    assert progress[-1].fraction == 1.0
    assert effect in converted.metadata["comment"]  # provenance, written at mux time
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [
        "out.mp4",
        "out.mp4.provenance.json",
    ]


@pytest.mark.parametrize(
    ("container", "suffix", "size", "codec", "pix_fmt", "steps", "expect_size"),
    [
        # variable frame rate: every timestamp kept as it was
        (
            "mp4",
            ".mp4",
            (320, 180),
            "libx264",
            "yuv420p",
            [1, 1, 2, 1, 3, 1, 1, 4, 1, 1],
            (320, 180),
        ),
        # odd size in another container: cropped by one pixel to what 4:2:0 H.264 can hold
        ("matroska", ".mkv", (161, 91), "ffv1", "yuv444p", None, (160, 90)),
    ],
)
def test_convert_keeps_irregular_timestamps_and_odd_sizes(
    tmp_path: Path,
    container: str,
    suffix: str,
    size: tuple[int, int],
    codec: str,
    pix_fmt: str,
    steps: list[int] | None,
    expect_size: tuple[int, int],
) -> None:
    source_path = cut_clip(
        tmp_path / f"in{suffix}",
        frames=10,
        size=size,
        pts_steps=steps,
        container=container,
        codec=codec,
        pix_fmt=pix_fmt,
    )
    output = tmp_path / "out.mov"
    convert(source_path, output, "sketch", {})
    source, converted = summarise(source_path), summarise(output)
    assert seconds(converted) == pytest.approx(seconds(source), abs=1e-3)
    assert (converted.width, converted.height) == expect_size
    assert_same_audio(source, converted, exact=container == "mp4")


def _cancel_after(count: int, event: threading.Event) -> Callable[[ConvertProgress], None]:
    def callback(progress: ConvertProgress) -> None:
        if progress.frames_done >= count:
            event.set()

    return callback


def _interrupt_after(count: int) -> Callable[[ConvertProgress], None]:
    def callback(progress: ConvertProgress) -> None:
        if progress.frames_done >= count:
            raise KeyboardInterrupt

    return callback


@pytest.mark.parametrize("how", ["cancel", "ctrl-c"])
def test_an_interrupted_conversion_leaves_no_file(clip: Path, tmp_path: Path, how: str) -> None:
    event = threading.Event()
    callback = _cancel_after(5, event) if how == "cancel" else _interrupt_after(5)
    expected = ConvertCancelled if how == "cancel" else KeyboardInterrupt
    with pytest.raises(expected):
        convert(clip, tmp_path / "out.mp4", "sketch", {}, progress=callback, cancel=event)
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == []
    assert threading.active_count() < 20  # reader and writer threads ended


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


CLI_ERRORS = [
    # (make input, extra args, exit status, fragment of the one-line error)
    (lambda d: d / "missing.mp4", ["--effect", "sketch"], 2, "does not exist"),
    (
        lambda d: _write(d / "text.mp4", b"not a video at all\n" * 10),
        ["--effect", "sketch"],
        2,
        "not a",
    ),
    (
        lambda d: _write(d / "list.m3u8", b"#EXTM3U\n#EXTINF:1,\n/etc/passwd\n"),
        ["--effect", "sketch"],
        2,
        "playlist",
    ),
    (lambda d: VIDEO, ["--effect", "no-such"], 2, "unknown effect 'no-such'"),
    (lambda d: VIDEO, ["--effect", "cartoon", "--param", "levels=999"], 2, "levels"),
    (lambda d: VIDEO, ["--effect", "cartoon", "--param", "colour"], 2, "KEY=VALUE"),
    (lambda d: VIDEO, ["--effect", "cartoon", "--param", "nonsense=1"], 2, "unknown parameter"),
    (lambda d: VIDEO, ["--effect", "cartoon", "--source-face", str(VIDEO)], 2, "--consent"),
    (lambda d: VIDEO, ["--effect", "cartoon", "--crf", "99"], 2, "--crf"),
    (lambda d: VIDEO, ["--effect", "cartoon"], 2, "must end in one of"),  # output .avi below
]


@pytest.mark.parametrize(("make_input", "args", "status", "fragment"), CLI_ERRORS)
def test_cli_refuses_bad_input_with_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make_input: Callable[[Path], Path],
    args: list[str],
    status: int,
    fragment: str,
) -> None:
    output = tmp_path / ("out.avi" if fragment == "must end in one of" else "out.mp4")
    assert cli_main(["convert", str(make_input(tmp_path)), str(output), "-q", *args]) == status
    lines = [
        line for line in capsys.readouterr().err.splitlines() if line.startswith("facestream:")
    ]
    assert len(lines) == 1 and fragment in lines[0], lines
    assert not output.exists()
    assert not list(tmp_path.glob("out.*.part-*"))


def test_cli_converts_with_progress(
    clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out.mp4"
    assert cli_main(["convert", str(clip), str(output), "--effect", "sketch", "--crf", "28"]) == 0
    err = capsys.readouterr().err
    assert "20/20" in err and "frame/s" in err  # the progress bar: frames, rate, time left
    assert "wrote" in err
    assert len(summarise(output).pts) == 20


def _face_effect() -> str:
    resources = EffectResources()
    for name in FACE_EFFECTS:
        spec = all_effects().get(name)
        if spec is not None and spec.needs_faces and spec.unavailable_reason(resources) is None:
            return name
    raise AssertionError(f"none of the face effects {FACE_EFFECTS} is available")


def _reference_faces(images: list[np.ndarray]) -> list[np.ndarray]:
    """Face boxes (N, 4) per image from facenet-pytorch's MTCNN, the project's reference detector."""
    from facenet_pytorch import MTCNN

    detector = MTCNN(keep_all=True, device="cpu")
    found = []
    for image in images:
        boxes, probs = detector.detect(image)
        if boxes is None:
            found.append(np.zeros((0, 4), np.float32))
            continue
        boxes = np.asarray(boxes.tolist(), np.float32)
        probs = np.asarray(probs.tolist(), np.float32)
        sizes = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        found.append(boxes[(probs > 0.95) & (sizes >= 48)])
    return found


def _face_and_rest_change(
    before: np.ndarray, after: np.ndarray, boxes: np.ndarray
) -> tuple[list[float], float]:
    """Mean abs change inside each box, and outside every (enlarged) box."""
    diff = np.abs(before.astype(np.int16) - after.astype(np.int16)).mean(axis=2)
    outside = np.ones(diff.shape, bool)
    inside = []
    for x1, y1, x2, y2 in boxes.astype(int):
        inside.append(float(diff[y1:y2, x1:x2].mean()))
        pad = int(0.6 * (x2 - x1))
        outside[max(y1 - pad, 0) : y2 + pad, max(x1 - pad, 0) : x2 + pad] = False
    return inside, float(diff[outside].mean())


@pytest.mark.slow
@pytest.mark.timeout(900)  # ~1.5 min on an idle 2-core machine; much more under load
def test_convert_video_mp4_with_a_face_effect(tmp_path: Path) -> None:
    """The 1080p crowd video (105 frames, AAC audio): count, timing and audio kept, faces changed."""
    effect = _face_effect()
    output = tmp_path / "crowd.mp4"
    result = convert(VIDEO, output, effect, {})
    probe_frames = {20, 52, 85}
    source, converted = summarise(VIDEO, probe_frames), summarise(output, probe_frames)
    assert result.frames == len(converted.pts) == len(source.pts) == 105  # type: ignore[attr-defined]
    frame_s = 1 / float(source.frame_rate)
    assert abs(converted.video_duration_s - source.video_duration_s) <= frame_s
    assert seconds(converted) == pytest.approx(seconds(source), abs=1e-6)
    assert_same_audio(source, converted)
    changed = total = 0
    for before, after, boxes in zip(
        source.frames, converted.frames, _reference_faces(source.frames), strict=True
    ):
        assert len(boxes) >= 2, "the reference detector should find the near faces of the crowd"
        inside, rest = _face_and_rest_change(before, after, boxes)
        total += len(inside)
        changed += sum(change > max(4 * rest, 6.0) for change in inside)
    assert changed >= 0.7 * total, f"{effect} changed {changed} of {total} reference faces"


def test_output_is_faststart_mp4(clip: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.mp4"
    convert(clip, output, "none", {})
    head = output.read_bytes()[:4096]
    assert head.find(b"moov") != -1 and (
        head.find(b"mdat") == -1 or head.find(b"moov") < head.find(b"mdat")
    )
    with av.open(str(output)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"
