"""Small real video files for conversion tests, and a reader that summarises an output."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from conftest import SHARED_DATA

VIDEO = SHARED_DATA / "video.mp4"


@dataclass
class AudioPacket:
    data: bytes
    pts: int | None
    dts: int | None
    duration: int


@dataclass
class MediaSummary:
    """What a file holds: decoded frames (RGB, when asked), video pts, audio packets."""

    width: int
    height: int
    time_base: Fraction
    frame_rate: Fraction
    video_duration_s: float
    pts: list[int] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)
    audio: list[AudioPacket] = field(default_factory=list)
    audio_time_base: Fraction | None = None
    metadata: dict[str, str] = field(default_factory=dict)


def summarise(path: Path, keep_frames: set[int] | None = None) -> MediaSummary:
    """Decode every video frame of `path` (keeping RGB copies of `keep_frames`) and list audio."""
    with av.open(str(path)) as container:
        video: Any = container.streams.video[0]
        duration = float(video.duration * video.time_base) if video.duration else 0.0
        summary = MediaSummary(
            width=video.codec_context.width,
            height=video.codec_context.height,
            time_base=Fraction(video.time_base),
            frame_rate=Fraction(video.average_rate or 0),
            video_duration_s=duration,
            metadata=dict(container.metadata),
        )
        streams = [video, *container.streams.audio[:1]]
        if container.streams.audio and container.streams.audio[0].time_base is not None:
            summary.audio_time_base = Fraction(container.streams.audio[0].time_base)
        for packet in container.demux(*streams):
            if packet.stream.type == "audio":
                if packet.dts is not None and packet.size:
                    summary.audio.append(
                        AudioPacket(bytes(packet), packet.pts, packet.dts, packet.duration)
                    )
                continue
            frame: Any
            for frame in packet.decode():
                if keep_frames is not None and len(summary.pts) in keep_frames:
                    summary.frames.append(frame.to_ndarray(format="rgb24"))
                summary.pts.append(frame.pts)
    return summary


def cut_clip(
    path: Path,
    frames: int = 20,
    size: tuple[int, int] = (320, 180),
    audio: bool = True,
    pts_steps: list[int] | None = None,
    container: str = "mp4",
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
) -> Path:
    """A short clip cut from the shared video.mp4, scaled to `size`, with its AAC audio.

    pts_steps: per-frame pts increments in 1/25 s (variable frame rate when not all 1).
    """
    steps = pts_steps or [1] * frames
    options = {"preset": "ultrafast"} if codec == "libx264" else {}
    with av.open(str(VIDEO)) as source, av.open(str(path), "w", format=container) as out:
        out_video: Any = out.add_stream(codec, rate=25, options=options)
        out_video.width, out_video.height = size
        out_video.pix_fmt = pix_fmt
        out_video.codec_context.time_base = Fraction(1, 25)
        in_audio = source.streams.audio[0]
        out_audio = out.add_stream_from_template(in_audio) if audio else None
        pts = 0
        for index, frame in enumerate(source.decode(video=0)):
            if index >= frames:
                break
            small = frame.reformat(size[0], size[1], pix_fmt)
            small.pts, small.time_base = pts, Fraction(1, 25)
            pts += steps[index]
            for packet in out_video.encode(small):
                out.mux(packet)
        for packet in out_video.encode(None):
            out.mux(packet)
        if out_audio is not None:
            source.seek(0)
            limit = pts / 25 * in_audio.codec_context.sample_rate
            for packet in source.demux(in_audio):
                if packet.dts is None or packet.pts is None or packet.pts > limit:
                    continue
                packet.stream = out_audio
                out.mux(packet)
    return path
