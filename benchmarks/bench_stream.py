"""Per-stage and end-to-end time per frame of the live path, against a passthrough.

The live path is: VP8 decode -> RGB -> pipeline stages -> VideoFrame -> VP8 encode.
The passthrough (decode + encode only) is measured in the same run, on the same frames.

    facestream bench stream [--frames 60] [--effects none,cartoon] [--sizes 640x480,1280x720]
"""

from __future__ import annotations

import argparse
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--effects", default="none,cartoon,sketch,stylize")
    parser.add_argument("--sizes", default="640x480,1280x720")


def vp8_packets(frames: list[np.ndarray]) -> list[av.Packet]:
    height, width = frames[0].shape[:2]
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.bit_rate, encoder.options = 1_500_000, {"deadline": "realtime", "cpu-used": "8"}
    packets: list[av.Packet] = []
    for frame in frames:
        packets += encoder.encode(VideoFrame.from_ndarray(frame, format="rgb24"))
    packets += encoder.encode(None)
    return packets


def run_path(
    packets: list[av.Packet], size: tuple[int, int], pipeline: EffectPipeline | None
) -> dict[str, float]:
    """Mean ms per frame of each step: decode, to_rgb, <stages>, from_rgb, encode, total."""
    decoder = av.CodecContext.create("libvpx", "r")
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = size[0], size[1], "yuv420p"
    encoder.bit_rate, encoder.options = 1_500_000, {"deadline": "realtime", "cpu-used": "8"}
    spent: dict[str, float] = defaultdict(float)
    count = 0
    for packet in packets:
        started = time.perf_counter()
        for frame in decoder.decode(packet):
            t0 = time.perf_counter()
            rgb = frame.to_ndarray(format="rgb24")
            t1 = time.perf_counter()
            if pipeline is not None:
                ctx = pipeline.process(rgb)
                rgb = ctx.image
                for stage, seconds in ctx.timings.items():
                    spent[stage] += seconds
            t2 = time.perf_counter()
            out = VideoFrame.from_ndarray(rgb, format="rgb24")
            t3 = time.perf_counter()
            encoder.encode(out)
            t4 = time.perf_counter()
            spent["decode"] += t0 - started
            spent["to_rgb"] += t1 - t0
            spent["from_rgb"] += t3 - t2
            spent["encode"] += t4 - t3
            spent["total"] += t4 - started
            count += 1
            started = time.perf_counter()
    return {key: 1000 * value / max(count, 1) for key, value in spent.items()}


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    settings = Settings()
    models = SharedModels(settings, "cpu")
    rows: list[dict[str, Any]] = []
    for size_text in args.sizes.split(","):
        width, height = (int(v) for v in size_text.split("x"))
        packets = vp8_packets(webcam_clip((width, height), args.frames))
        reference = run_path(packets, (width, height), None)
        rows.append(_row(size_text, "passthrough", reference, reference))
        for name in args.effects.split(","):
            spec = get_effect_spec(name)
            effect = build_effect(name, {}, EffectResources(weights_dir=settings.weights_dir))
            pipeline = EffectPipeline(spec, effect, models.stage_factories())
            rows.append(
                _row(size_text, name, run_path(packets, (width, height), pipeline), reference)
            )
    return rows


def _row(
    size: str, effect: str, timing: dict[str, float], reference: dict[str, float]
) -> dict[str, Any]:
    stages = {
        k: v
        for k, v in timing.items()
        if k not in {"decode", "to_rgb", "from_rgb", "encode", "total"}
    }
    return {
        "size": size,
        "effect": effect,
        "decode_ms": timing["decode"],
        "stages_ms": " ".join(f"{k}={v:.1f}" for k, v in stages.items()) or "-",
        "encode_ms": timing["encode"],
        "total_ms": timing["total"],
        "fps": 1000 / timing["total"],
        "vs_passthrough": timing["total"] / reference["total"],
        "machine": machine(),
    }
