"""Per-stage and end-to-end time per frame of the live path, against a passthrough.

The live path is: VP8 decode -> RGB -> pipeline stages -> VideoFrame -> VP8 encode.
The passthrough (decode + encode only) runs in the same loop, interleaved frame by frame
with the effect path on the same decoded frames (which goes first alternates), so load from
other processes hits both alike; each step is reported as its mean over the frames.

    facestream bench stream [--frames 60] [--effects none,cartoon] [--sizes 640x480,1280x720]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from typing import Any

import av
import numpy as np
from av import VideoFrame

from benchmarks.common import machine, webcam_clip
from engines.effects.base import EffectResources
from engines.effects.registry import build_effect, get_effect_spec
from stream.models import SharedModels
from stream.pipeline import EffectPipeline
from stream.settings import Settings

Steps = dict[str, list[float]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--effects", default="none,cartoon,sketch,stylize")
    parser.add_argument("--sizes", default="640x480,1280x720")


def vp8_encoder(width: int, height: int) -> av.CodecContext:
    """libvpx VP8 at WebRTC-like settings (realtime deadline, 1.5 Mbit/s)."""
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.bit_rate, encoder.options = 1_500_000, {"deadline": "realtime", "cpu-used": "8"}
    return encoder


def vp8_packets(frames: list[np.ndarray]) -> list[av.Packet]:
    height, width = frames[0].shape[:2]
    encoder = vp8_encoder(width, height)
    packets: list[av.Packet] = []
    for frame in frames:
        packets += encoder.encode(VideoFrame.from_ndarray(frame, format="rgb24"))
    packets += encoder.encode(None)
    return packets


def _timed_path(
    frame: av.VideoFrame, encoder: av.CodecContext, pipeline: EffectPipeline | None, steps: Steps
) -> None:
    t0 = time.perf_counter()
    rgb = frame.to_ndarray(format="rgb24")
    t1 = time.perf_counter()
    if pipeline is not None:
        ctx = pipeline.process(rgb, time_s=frame.time)
        rgb = ctx.image
        for stage, seconds in ctx.timings.items():
            steps[stage].append(seconds)
    t2 = time.perf_counter()
    out = VideoFrame.from_ndarray(rgb, format="rgb24")
    t3 = time.perf_counter()
    encoder.encode(out)
    t4 = time.perf_counter()
    steps["to_rgb"].append(t1 - t0)
    steps["from_rgb"].append(t3 - t2)
    steps["encode"].append(t4 - t3)
    steps["after_decode"].append(t4 - t0)


def run_interleaved(
    packets: list[av.Packet], size: tuple[int, int], pipeline: EffectPipeline
) -> tuple[Steps, Steps]:
    """(passthrough steps, effect steps): seconds per frame for each step."""
    decoder = av.CodecContext.create("libvpx", "r")
    encoders = (vp8_encoder(*size), vp8_encoder(*size))
    reference: Steps = defaultdict(list)
    effect: Steps = defaultdict(list)
    for packet in packets:
        started = time.perf_counter()
        frames = decoder.decode(packet)
        decode = time.perf_counter() - started
        for frame in frames:
            paths = [(encoders[0], None, reference), (encoders[1], pipeline, effect)]
            if len(reference["decode"]) % 2:
                paths.reverse()
            for encoder, maybe_pipeline, steps in paths:
                steps["decode"].append(decode)
                _timed_path(frame, encoder, maybe_pipeline, steps)
    return reference, effect


def _mean_ms(values: list[float]) -> float:
    return 1000 * statistics.fmean(values)


def _row(size: str, effect: str, steps: Steps, reference_total: float) -> dict[str, Any]:
    fixed = {"decode", "to_rgb", "from_rgb", "encode", "after_decode"}
    stages = {k: _mean_ms(v) for k, v in steps.items() if k not in fixed}
    total = _mean_ms(steps["decode"]) + _mean_ms(steps["after_decode"])
    return {
        "size": size,
        "effect": effect,
        "decode_ms": _mean_ms(steps["decode"]),
        "stages_ms": " ".join(f"{k}={v:.1f}" for k, v in stages.items()) or "-",
        "encode_ms": _mean_ms(steps["encode"]),
        "total_ms": total,
        "fps": 1000 / total,
        "vs_passthrough": total / reference_total,
        "machine": machine(),
    }


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    settings = Settings(warm_up=False)
    models = SharedModels(settings, "cpu")
    rows: list[dict[str, Any]] = []
    for size_text in args.sizes.split(","):
        width, height = (int(v) for v in size_text.split("x"))
        packets = vp8_packets(webcam_clip((width, height), args.frames))
        for name in args.effects.split(","):
            spec = get_effect_spec(name)
            effect = build_effect(name, {}, EffectResources(weights_dir=settings.weights_dir))
            pipeline = EffectPipeline(spec, effect, models.stage_factories())
            reference, steps = run_interleaved(packets, (width, height), pipeline)
            reference_total = _mean_ms(reference["decode"]) + _mean_ms(reference["after_decode"])
            rows.append(_row(size_text, f"passthrough (for {name})", reference, reference_total))
            rows.append(_row(size_text, name, steps, reference_total))
    return rows
