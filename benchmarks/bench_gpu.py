"""Compiled engines and cross-session batching, timed on whatever device is present.

    facestream bench gpu [--device auto] [--backend auto] [--sessions 1,4,8,16] [--results auto]

Sections (each eager and compiled, measured in the same run):
- stage: ms per 720p frame of each pipeline stage (upload, detect, align, swap,
  colour, blend, download), the device synchronised after each stage;
- pipeline: the whole device-resident swap pipeline on one 720p stream (no syncs
  but the detector's and the final download), and compiled vs eager;
- gan_swap: the real `gan_swap` effect per 720p frame (faces found beforehand), on its
  device path (one upload, everything on the device, one download) and, as the
  reference measured in the same run, its host path (OpenCV crops and paste);
- detect: MTCNN on 1080p crowd frames (6-8 faces), one stream and a batch of
  streams, every frame and every Nth frame with tracking in between;
- sessions: N simulated 720p 30 fps cameras (latest-frame-wins) sharing the
  engines through the batching schedulers: p50/p95 added latency, frames shown.
On a GPU the table is written to benchmarks/RESULTS.md (section "GPU engines") with
the GPU's name; on a CPU the same table runs small, with "no GPU" as the device.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import torch

from benchmarks.common import PROJECT_ROOT, SHARED_DATA, webcam_clip
from benchmarks.gpu_pipeline import (
    Models,
    StreamState,
    build_detector,
    build_models,
    gan_swap_effect,
    process_frame,
    simulate_sessions,
    sync,
)
from engines.detection import FaceDetector
from engines.types import Face
from stream.face_stage import FaceStage
from stream.pipeline import FrameContext

logger = logging.getLogger(__name__)

RESULTS = PROJECT_ROOT / "benchmarks" / "RESULTS.md"
SECTION = "## GPU engines: compile backends, engine cache, cross-session batching (issue 6)"
TARGETS = {
    "pipeline": "compiled >= 2x eager",
    "detect+track": ">= 300 fps",
    "sessions": "p95 < 50 ms at 16",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    gpu = torch.cuda.is_available()
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument(
        "--backend", default="auto", help="compiled backend to compare: auto|inductor|tensorrt|none"
    )
    parser.add_argument("--size", default="1280x720", help="stream size WxH")
    parser.add_argument("--detect-size", default="1920x1080", help="detection benchmark size WxH")
    parser.add_argument(
        "--frames", type=int, default=60 if gpu else 3, help="timed frames per case"
    )
    parser.add_argument(
        "--streams", type=int, default=8 if gpu else 2, help="frames per batched detect call"
    )
    parser.add_argument(
        "--sessions", default="1,4,8,16" if gpu else "1,2", help="concurrent session counts"
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0 if gpu else 3.0, help="per session run"
    )
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--detect-every", type=int, default=5)
    parser.add_argument("--max-wait-ms", type=float, default=4.0)
    parser.add_argument("--swap-size", type=int, default=128, choices=(64, 128, 256))
    parser.add_argument("--min-face", type=float, default=40.0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave)")
    parser.add_argument("--cache-dir", type=Path, default=PROJECT_ROOT / "weights" / "cache")
    parser.add_argument(
        "--results",
        default="auto",
        choices=("auto", "yes", "no"),
        help="write the table to benchmarks/RESULTS.md (auto: on a GPU)",
    )


def _size(text: str) -> tuple[int, int]:
    """'WxH' -> (height, width)."""
    width, height = (int(v) for v in text.lower().split("x"))
    return height, width


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"no GPU ({os.cpu_count()}-core CPU)"


def crowd_frames(count: int, size: tuple[int, int]) -> list[np.ndarray]:
    """The first `count` frames of the shared 1080p crowd video, resized to (h, w), RGB."""
    frames = []
    with av.open(str(SHARED_DATA / "video.mp4")) as container:
        for frame in container.decode(video=0):
            rgb: np.ndarray = frame.to_ndarray(format="rgb24")
            if rgb.shape[:2] != size:
                rgb = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA)
            frames.append(rgb)
            if len(frames) == count:
                break
    return frames


COLUMNS = (
    "section",
    "case",
    "device",
    "backend",
    "n",
    "ms",
    "p50_ms",
    "p95_ms",
    "fps",
    "vs_eager",
    "target",
    "note",
)


def _row(
    section: str, case: str, device: str, backend: str, n: int, **values: Any
) -> dict[str, Any]:
    """A table row with every column, in COLUMNS order ("" where it does not apply)."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS, "")
    row.update(section=section, case=case, device=device, backend=backend, n=n, **values)
    return row


def _timed_row(
    section: str, case: str, device: str, backend: str, spent_ms: list[float]
) -> dict[str, Any]:
    """A row of one stream's per-frame times: mean, p50, p95 and fps."""
    ms = sorted(spent_ms)
    return _row(
        section,
        case,
        device,
        backend,
        1,
        ms=statistics.fmean(ms),
        p50_ms=_pct(ms, 50),
        p95_ms=_pct(ms, 95),
        fps=1000 / statistics.fmean(ms),
    )


def bench_stages(models: Models, frames: list[np.ndarray], label: str) -> list[dict[str, Any]]:
    """Mean ms per frame of each stage (device synchronised after each)."""
    state = StreamState(detect_every=1)
    for frame in frames[:2]:
        process_frame(models, frame, state)
    timings: dict[str, float] = {}
    for frame in frames:
        process_frame(models, frame, state, timings=timings)
    return [
        _row("stage", stage, label, models.backend, 1, ms=1000 * spent / len(frames))
        for stage, spent in timings.items()
    ]


def bench_pipeline(
    models: Models, frames: list[np.ndarray], label: str, detect_every: int
) -> dict[str, Any]:
    state = StreamState(detect_every=detect_every)
    for frame in frames[:2]:
        process_frame(models, frame, state)
    sync(models.device)
    spent = []
    for frame in frames:
        started = time.perf_counter()
        process_frame(models, frame, state)
        spent.append(time.perf_counter() - started)
    return _timed_row(
        "pipeline",
        f"1 stream {frames[0].shape[1]}x{frames[0].shape[0]} crowd (~7 faces), detect every {detect_every}",
        label,
        models.backend,
        [1000 * s for s in spent],
    )


def bench_gan_swap(models: Models, frames: list[np.ndarray], label: str) -> list[dict[str, Any]]:
    """ms per frame of the gan_swap effect's device path and host path (same frames and
    faces, found beforehand); the device row's note gives host ms / device ms."""
    faces = [Face.from_detections(models.detector.detect([frame])[0]) for frame in frames]
    rows: dict[str, dict[str, Any]] = {}
    for path in ("host", "device"):
        effect = gan_swap_effect(models, device_path=path == "device")
        for frame, found in zip(frames[:2], faces[:2], strict=False):
            effect.apply(frame.copy(), found)  # warm-up
        sync(models.device)
        spent = []
        for frame, found in zip(frames, faces, strict=True):
            started = time.perf_counter()
            effect.apply(frame.copy(), found)  # the device path ends in its one download
            spent.append(1000 * (time.perf_counter() - started))
        case = f"{path} path per {frames[0].shape[1]}x{frames[0].shape[0]} frame"
        rows[path] = _timed_row(
            "gan_swap",
            f"{case} ({statistics.fmean(len(f) for f in faces):.1f} faces)",
            label,
            models.backend,
            spent,
        )
    rows["device"]["note"] = f"host/device {rows['host']['ms'] / rows['device']['ms']:.2f}x"
    return [rows["host"], rows["device"]]


def _pct(sorted_ms: list[float], percent: float) -> float:
    if not sorted_ms:
        return float("nan")
    return sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * percent / 100))]


def bench_detection(
    detector: FaceDetector,
    frames: list[np.ndarray],
    label: str,
    backend: str,
    streams: int,
    detect_every: int,
) -> list[dict[str, Any]]:
    """Frames per second of full detection (1 stream, and `streams` frames per call), and of
    the face stage (detection every Nth frame, region follow + Kalman tracking between)."""
    device = detector.device
    batch = torch.from_numpy(np.stack([frames[i % len(frames)] for i in range(streams)])).to(device)
    rows = []
    for images in (batch[:1], batch):
        detector.detect(images)
        rounds = max(2, len(frames) // images.shape[0])
        sync(device)
        started = time.perf_counter()
        for _ in range(rounds):
            detector.detect(images)
        fps = rounds * images.shape[0] / (time.perf_counter() - started)
        case = f"detect every frame, {images.shape[0]} stream(s) per call"
        rows.append(_row("detect", case, label, backend, int(images.shape[0]), fps=fps))
    for count in (1, streams):
        stages = [FaceStage(detector, detect_every=detect_every) for _ in range(count)]
        for stage in stages:  # first frame: a full detection, outside the timing
            stage.process(FrameContext(image=frames[0], index=0))
        started = time.perf_counter()
        for index, frame in enumerate(frames[1:], start=1):
            for stage in stages:
                stage.process(FrameContext(image=frame, index=index))
        fps = (len(frames) - 1) * count / (time.perf_counter() - started)
        case = f"face stage: detect every {detect_every}, follow + track between, {count} stream(s)"
        rows.append(_row("detect+track", case, label, backend, count, fps=fps))
    return rows


def bench_sessions(
    models: Models, clip: list[np.ndarray], label: str, args: argparse.Namespace
) -> list[dict[str, Any]]:
    rows = []
    for count in (int(n) for n in args.sessions.split(",") if n.strip()):
        result = simulate_sessions(
            models,
            clip,
            sessions=count,
            seconds=args.seconds,
            fps=args.fps,
            detect_every=args.detect_every,
            max_wait_ms=args.max_wait_ms,
        )
        ms = sorted(1000 * s for s in result.latencies)
        offered = result.frames_shown + result.frames_dropped
        rows.append(
            _row(
                "sessions",
                f"{count} x {clip[0].shape[1]}x{clip[0].shape[0]} @ {args.fps:g} fps, swap",
                label,
                models.backend,
                count,
                p50_ms=_pct(ms, 50),
                p95_ms=_pct(ms, 95),
                fps=result.frames_shown / result.seconds / count,
                note=f"dropped {100 * result.frames_dropped / max(1, offered):.0f}%, mean batch swap "
                f"{result.mean_swap_batch:.1f} detect {result.mean_detect_batch:.1f}",
            )
        )
    return rows


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    label = device_label(device)
    stream_size, detect_size = _size(args.size), _size(args.detect_size)
    compiled_name = (
        args.backend
        if args.backend != "auto"
        else ("auto" if device.type == "cuda" else "inductor")
    )
    modes = ["eager"] + ([] if args.backend == "none" else [compiled_name])
    frames = crowd_frames(args.frames + 2, stream_size)
    clip = webcam_clip((stream_size[1], stream_size[0]), 30)
    rows: list[dict[str, Any]] = []
    pipeline: dict[str, dict[str, Any]] = {}
    for mode in modes:
        models = build_models(
            device,
            mode,
            stream_size,
            swap_size=args.swap_size,
            min_face=args.min_face,
            cache_dir=args.cache_dir,
            frames_per_call=max(args.streams, 16),
        )
        if mode != "eager":
            rows.append(
                _row(
                    "build",
                    "compile or load all engines",
                    label,
                    models.backend,
                    4,
                    ms=1000 * models.build_seconds,
                )
            )
        rows += bench_stages(models, frames, label)
        pipeline[mode] = bench_pipeline(models, frames, label, args.detect_every)
        rows.append(pipeline[mode])
        rows += bench_gan_swap(models, frames, label)
        detector = build_detector(
            device,
            mode,
            detect_size,
            min_face=args.min_face,
            cache_dir=args.cache_dir,
            frames_per_call=max(args.streams, 16),
        )
        rows += bench_detection(
            detector,
            crowd_frames(max(args.frames, args.streams), detect_size),
            label,
            models.backend,
            args.streams,
            args.detect_every,
        )
        if mode == modes[-1]:
            rows += bench_sessions(models, clip, label, args)
    if len(modes) > 1:
        pipeline[modes[1]]["vs_eager"] = pipeline["eager"]["ms"] / pipeline[modes[1]]["ms"]
    for row in rows:
        row["target"] = TARGETS.get(row["section"], "") if device.type == "cuda" else ""
    if args.results == "yes" or (args.results == "auto" and device.type == "cuda"):
        write_results(rows, label, args)
    return rows


def _markdown(rows: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row if key != "device"))
    cell = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_results(rows: list[dict[str, Any]], label: str, args: argparse.Namespace) -> None:
    """Put the table into RESULTS.md's GPU-engines section, replacing this device's block."""
    begin, end = f"<!-- bench-gpu: {label} -->", f"<!-- /bench-gpu: {label} -->"
    options = " ".join(
        f"--{k.replace('_', '-')} {v}"
        for k, v in sorted(vars(args).items())
        if k not in ("json", "results", "cache_dir")
    )
    block = "\n".join(
        [
            begin,
            f"### {label}",
            "",
            f"`facestream bench gpu {options}` on {datetime.date.today()}, "
            f"torch {torch.__version__}",
            "",
            _markdown(rows),
            end,
        ]
    )
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if SECTION not in text:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        head, tail = text.split(SECTION, 1)
        following = tail.find("\n## ")
        insert_at = len(tail) if following < 0 else following
        tail = tail[:insert_at].rstrip("\n") + "\n\n" + block + "\n" + tail[insert_at:]
        text = head + SECTION + tail
    RESULTS.write_text(text)
