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


def phone_clip(
    path: Path,
    upright: np.ndarray,
    rotation: int,
    frames: int = 6,
    container: str = "mp4",
    hflip: bool = False,
    vflip: bool = False,
) -> Path:
    """A clip as a phone records it: `upright` (HxWx3 uint8 RGB, even sides) is stored
    turned (and mirrored: `hflip`, `vflip`) so that only a player applying the display
    matrix (`rotation`: the counter-clockwise degrees PyAV's VideoFrame.rotation reads
    back for an unmirrored clip; the mirrors come after the turn) shows it upright.
    25 fps, pts 0..frames-1 in 1/25 s; each frame shifted by a pixel so none repeats."""
    unmirrored = upright[:: -1 if vflip else 1, :: -1 if hflip else 1]
    coded = np.ascontiguousarray(np.rot90(unmirrored, -(rotation // 90)))
    with av.open(str(path), "w", format=container) as out:
        video: Any = out.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        video.height, video.width = coded.shape[:2]
        video.pix_fmt = "yuv420p"
        video.codec_context.time_base = Fraction(1, 25)
        if rotation % 360 or hflip or vflip:
            video.set_display_rotation(rotation, hflip=hflip, vflip=vflip)
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(np.roll(coded, index, axis=1), format="rgb24")
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = index, Fraction(1, 25)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
    return path


def upright_frames(path: Path) -> tuple[list[np.ndarray], list[int], list[int]]:
    """(RGB frames with their display matrix applied, pts, rotations read) of `path`."""
    images, pts, rotations = [], [], []
    with av.open(str(path)) as container:
        frame: Any
        for frame in container.decode(video=0):
            turns = round(frame.rotation / 90) % 4
            images.append(np.ascontiguousarray(np.rot90(frame.to_ndarray(format="rgb24"), turns)))
            pts.append(frame.pts)
            rotations.append(frame.rotation)
    return images, pts, rotations


def audio_clip(
    path: Path,
    tracks: list[tuple[str, str | None]],
    container: str,
    video_codec: str = "libx264",
    frames: int = 10,
    channels: int = 2,
) -> Path:
    """A 160x120 clip, 25 fps, with one audio track per (codec, language) in `tracks`:
    a 440 Hz tone at 48 kHz, as long as the video."""
    layout = {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")
    with av.open(str(path), "w", format=container) as out:
        video: Any = out.add_stream(video_codec, rate=25)
        video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
        video.codec_context.time_base = Fraction(1, 25)
        audio: list[Any] = []
        for codec, language in tracks:
            stream: Any = out.add_stream(codec, rate=48000, layout=layout)
            if language:
                stream.metadata["language"] = language
            audio.append(stream)
        for index in range(frames):
            image = np.full((120, 160, 3), 40 + 15 * index, np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = index, Fraction(1, 25)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        samples = 48000 * frames // 25
        tone = np.sin(2 * np.pi * 440 * np.arange(samples) / 48000).astype(np.float32)
        for stream in audio:
            planes = np.tile(tone * 0.3, (channels, 1))
            sound = av.AudioFrame.from_ndarray(planes, format="fltp", layout=layout)
            sound.sample_rate, sound.pts, sound.time_base = 48000, 0, Fraction(1, 48000)
            for packet in [*stream.encode(sound), *stream.encode(None)]:
                out.mux(packet)
    return path


def ass_header(font: str = "Arial") -> bytes:
    """An ASS script header (320x240, one Default style in `font`), as text subtitle
    encoders and decoders take their styles from one."""
    return ASS_TEMPLATE.replace(b"{font}", font.encode())


ASS_TEMPLATE = b"""[Script Info]
ScriptType: v4.00+
PlayResX: 320
PlayResY: 240

[V4+ Styles]
Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding
Style: Default,{font},16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
"""


def damaged_copy(path: Path, packets: range, target: Path) -> Path:
    """A copy of `path` with the bytes of its video packets number `packets` (in file
    order, from 0) overwritten with 0xFF: a file damaged in the middle of its media data
    (mdat), its container and index intact. The decoder rejects such a packet as
    invalid data (its NAL sizes run past its end)."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        places = [(p.pos, p.size) for p in container.demux(video) if p.size and p.pos >= 0]
    data = bytearray(path.read_bytes())
    for pos, size in (places[i] for i in packets):
        data[pos : pos + size] = b"\xff" * size
    target.write_bytes(bytes(data))
    return target
