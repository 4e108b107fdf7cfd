"""Conversion speed of `facestream convert`, as a ratio to real time.

Each input is converted whole with `stream.convert.convert_file` (the CLI's code, its
defaults: libx264 veryfast, CRF 20, audio copied). Inputs: the shared 1080p video.mp4
(105 frames, 4.2 s, 6-8 faces) and a 720p cut of it made in this run. For each effect
the row gives x_realtime = media seconds / wall seconds (>= 1: faster than real time),
and vs_none: wall time relative to the `none` effect (decode + encode only), the
reference measured in the same run on the same file. cpu_s is the process CPU time
(on a shared machine wall time grows with other load; CPU time much less).

    facestream bench convert [--effects none,makeup] [--inputs 1080p,720p] [--threads 2]

The CLI lets idle OpenMP threads sleep (stream.cli.quiet_openmp); to measure OpenMP's own
spinning policy run `OMP_WAIT_POLICY=ACTIVE facestream bench convert`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import defaultdict
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from benchmarks.common import OUT_DIR, SHARED_DATA, machine
from engines.effects.base import EffectResources
from engines.effects.registry import get_effect_spec
from stream.cli import quiet_openmp
from stream.convert import EncodeOptions, build_pipeline, convert_file
from stream.face_process import FaceProcess
from stream.models import SharedModels
from stream.settings import Settings

VIDEO = SHARED_DATA / "video.mp4"
CUT_DIR = OUT_DIR / "tmp"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--effects", default="none,makeup", help="comma-separated effect names")
    parser.add_argument(
        "--inputs", default="1080p,720p", help="1080p (video.mp4) and/or 720p (a cut)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--preset", default=EncodeOptions.preset, help="x264 preset")
    parser.add_argument("--crf", type=int, default=EncodeOptions.crf)
    parser.add_argument(
        "--face-process",
        choices=("both", "on", "off"),
        default="both",
        help="face stage in a child process (on), in the pipeline thread (off), or both rows",
    )


def cut_720p(source: Path = VIDEO, folder: Path = CUT_DIR) -> Path:
    """video.mp4 scaled to 1280x720 (x264 CRF 16, near-lossless), audio copied; cached."""
    path = folder / "video_720p.mp4"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part.mp4")
    with av.open(str(source)) as inp, av.open(str(partial), "w") as out:
        video_in, audio_in = inp.streams.video[0], inp.streams.audio[0]
        video = out.add_stream("libx264", rate=video_in.average_rate, options={"crf": "16"})
        video.width, video.height, video.pix_fmt = 1280, 720, "yuv420p"
        video.codec_context.time_base = Fraction(video_in.time_base)
        audio = out.add_stream_from_template(audio_in)
        for packet in inp.demux(video_in, audio_in):
            if packet.stream is audio_in:
                if packet.dts is not None:
                    packet.stream = audio
                    out.mux(packet)
                continue
            for frame in packet.decode():
                small = frame.reformat(1280, 720, "yuv420p", interpolation="AREA")
                small.pts, small.time_base = frame.pts, frame.time_base
                out.mux(video.encode(small))
        out.mux(video.encode(None))
    partial.replace(path)
    return path


def warm_up(source: Path, effect: str, settings: Settings, models: SharedModels) -> None:
    """Load the effect's models and run its pipeline on the first frame of `source`."""
    with av.open(str(source)) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
    resources = EffectResources(weights_dir=settings.weights_dir)
    pipeline = build_pipeline(effect, {}, resources, models)
    for _ in range(2):
        pipeline.process(frame)
    pipeline.close()


def convert_once(
    source: Path,
    effect: str,
    settings: Settings,
    models: SharedModels,
    encode: EncodeOptions,
    faces: FaceProcess | None = None,
) -> dict[str, Any]:
    stages: dict[str, float] = defaultdict(float)

    def observe(stage: str, seconds: float) -> None:
        stages[stage] += seconds

    with tempfile.TemporaryDirectory() as folder:
        child_cpu = faces.cpu_seconds() if faces is not None else None
        cpu = time.process_time()
        result = convert_file(
            source,
            Path(folder) / "out.mp4",
            effect,
            {},
            EffectResources(weights_dir=settings.weights_dir),
            settings,
            encode=encode,
            models=models,
            observe=observe,
            faces=faces,
        )
        cpu = time.process_time() - cpu
        if faces is not None and child_cpu is not None:
            cpu += (faces.cpu_seconds() or child_cpu) - child_cpu
    per_frame = {k: 1000 * v / result.frames for k, v in stages.items()}
    return {
        "omp_wait": os.environ.get("OMP_WAIT_POLICY", "default"),
        "frames": result.frames,
        "media_s": round(result.media_duration_s, 2),
        "wall_s": result.wall_s,
        "cpu_s": cpu,
        "fps": result.fps,
        "x_realtime": result.realtime_ratio,
        "stages_ms": " ".join(f"{k}={v:.1f}" for k, v in per_frame.items()),
    }


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    quiet_openmp()  # as the CLI does (before torch is imported), when run on its own
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    settings = Settings(device="cpu", data_dir=CUT_DIR / "data")
    models = SharedModels(settings, "cpu")
    encode = EncodeOptions(crf=args.crf, preset=args.preset)
    inputs = {"1080p": VIDEO, "720p": cut_720p() if "720p" in args.inputs else VIDEO}
    effects = [e for e in args.effects.split(",") if e]
    if "none" not in effects:
        effects.insert(0, "none")
    modes = {"both": (True, False), "on": (True,), "off": (False,)}[args.face_process]
    faces = FaceProcess(settings) if True in modes else None
    rows: list[dict[str, Any]] = []
    try:
        for label in args.inputs.split(","):
            rows += _input_rows(
                label, inputs[label], effects, modes, settings, models, encode, faces
            )
    finally:
        if faces is not None:
            faces.close()
    return rows


def _input_rows(
    label: str,
    source: Path,
    effects: list[str],
    modes: tuple[bool, ...],
    settings: Settings,
    models: SharedModels,
    encode: EncodeOptions,
    faces: FaceProcess | None,
) -> list[dict[str, Any]]:
    for effect in effects:  # model loading and first calls stay out of the figures
        warm_up(source, effect, settings, models)
    if faces is not None:
        stream = faces.track(source)
        next(stream)
        stream.close()
    rows: list[dict[str, Any]] = []
    reference = None
    for effect in effects:
        for in_process in modes if get_effect_spec(effect).needs_faces else (False,):
            row = {
                "input": label,
                "effect": effect,
                "faces_in": "child process" if in_process else "pipeline thread",
                **convert_once(
                    source, effect, settings, models, encode, faces if in_process else None
                ),
            }
            reference = reference or row["wall_s"]
            row["vs_none"] = row["wall_s"] / reference
            row["machine"] = machine()
            rows.append(row)
    return rows


if __name__ == "__main__":
    import json

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    print(json.dumps(run(parser.parse_args()), indent=2))
