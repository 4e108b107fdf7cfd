"""Conversion attachments and track titles: files attached to a Matroska input (fonts for
its ASS subtitles) kept byte for byte with their name and MIME type in a .mkv and left
out of MP4/MOV with one warning; a cover picture kept (as the MP4 cover or a Matroska
image attachment), never taken for the video; MP4/MOV audio track titles kept."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from convert_helpers import ass_header

from engines.effects.base import EffectResources
from stream.convert import convert_file
from stream.settings import Settings

SIZE = (320, 240)
FRAMES = 10  # 0.4 s at 25 fps
ATTACHED_PIC = av.stream.Disposition.attached_pic
ASS_HEADER = ass_header("Clip Sans")


@dataclass(frozen=True)
class Attached:
    """A file attached to a clip (Matroska), or read back from one: name, MIME type, bytes."""

    name: str | None
    mimetype: str | None
    data: bytes


# Stand-ins for font files: an sfnt version tag, then bytes that no muxer may change.
FONT = Attached(
    "ClipSans.ttf", "application/x-truetype-font", b"\x00\x01\x00\x00" + bytes(range(256)) * 8
)
BOLD = Attached("ClipSans-Bold.otf", "font/otf", b"OTTO" + bytes(range(255, -1, -1)) * 4)


def _png(size: int = 48) -> bytes:
    """A real PNG picture (PyAV's png encoder), `size` pixels square."""
    codec: Any = av.CodecContext.create("png", "w")
    codec.width = codec.height = size
    codec.pix_fmt = "rgb24"
    codec.time_base = Fraction(1, 25)
    image = np.zeros((size, size, 3), np.uint8)
    image[: size // 2] = (200, 30, 30)
    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
    return b"".join(bytes(packet) for packet in [*codec.encode(frame), *codec.encode(None)])


COVER = _png()


@dataclass(frozen=True)
class Clip:
    """A clip to write: attached files (Matroska), a cover picture (MP4: covr; Matroska:
    an image attachment named `cover_name`), an ASS track, AAC tracks (language, title)."""

    container: str
    files: tuple[Attached, ...] = ()
    cover: bytes | None = None
    cover_name: str = "front.png"
    ass: bool = False
    audio: tuple[tuple[str, str], ...] = ()


@dataclass
class Summary:
    frames: int
    size: tuple[int, int]
    files: list[Attached] = field(default_factory=list)
    covers: list[Attached] = field(default_factory=list)
    audio: list[tuple[str | None, str | None]] = field(default_factory=list)
    subtitles: list[str] = field(default_factory=list)


def make_clip(path: Path, clip: Clip) -> Path:
    """A 0.4 s 320x240 H.264 clip as `clip` says, written by PyAV."""
    with av.open(str(path), "w", format=clip.container) as out:
        video: Any = out.add_stream("libx264", rate=25, options={"preset": "superfast"})
        video.width, video.height = SIZE
        video.pix_fmt = "yuv420p"
        video.codec_context.time_base = Fraction(1, 25)
        audio = []
        for language, title in clip.audio:
            stream: Any = out.add_stream("aac", rate=48000, layout="stereo")
            stream.metadata.update(language=language, title=title)
            audio.append(stream)
        if clip.ass:
            subtitle: Any = out.add_stream("ass")
            subtitle.codec_context.subtitle_header = ASS_HEADER
            subtitle.codec_context.time_base = subtitle.time_base = Fraction(1, 1000)
        for attached in clip.files:
            out.add_attachment(str(attached.name), str(attached.mimetype), attached.data)
        cover_packet = None
        if clip.cover is not None and clip.container == "matroska":
            out.add_attachment(clip.cover_name, "image/png", clip.cover)
        elif clip.cover is not None:
            cover: Any = out.add_stream("png")
            cover.width = cover.height = 48
            cover.pix_fmt = "rgb24"
            cover.disposition = ATTACHED_PIC
            cover_packet = av.Packet(clip.cover)
            cover_packet.stream = cover
        if cover_packet is not None:
            out.mux(cover_packet)
        for index in range(FRAMES):
            image = np.full((SIZE[1], SIZE[0], 3), 30 + 20 * index, np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 25)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        for stream in audio:
            sound = av.AudioFrame.from_ndarray(
                np.zeros((2, 48000 * FRAMES // 25), np.float32), format="fltp", layout="stereo"
            )
            sound.sample_rate, sound.pts, sound.time_base = 48000, 0, Fraction(1, 48000)
            for packet in [*stream.encode(sound), *stream.encode(None)]:
                out.mux(packet)
    return path


def read_clip(path: Path) -> Summary:
    """What `path` holds, read back by PyAV: video frames and size (the first video
    stream that is not a cover), attached files, covers, audio tags, subtitle codecs."""
    with av.open(str(path)) as container:
        videos = [s for s in container.streams.video if not s.disposition & ATTACHED_PIC]
        covers = [s for s in container.streams.video if s.disposition & ATTACHED_PIC]
        main = videos[0]
        summary = Summary(0, (main.codec_context.width, main.codec_context.height))
        for stream in container.streams.attachments:
            name = stream.metadata.get("filename")
            summary.files.append(Attached(name, stream.mimetype, bytes(stream.data)))
        for stream in container.streams.audio:
            tags = {key.lower(): value for key, value in stream.metadata.items()}
            summary.audio.append((tags.get("language"), tags.get("title") or tags.get("name")))
        summary.subtitles = [
            s.codec_context.codec.canonical_name for s in container.streams.subtitles
        ]
        pictures: dict[int, bytes] = {}
        for packet in container.demux(main, *covers):
            if packet.stream.index == main.index:
                summary.frames += len(packet.decode())
            elif packet.size:
                pictures.setdefault(packet.stream.index, bytes(packet))
        for stream in covers:
            tags = stream.metadata
            summary.covers.append(
                Attached(tags.get("filename"), tags.get("mimetype"), pictures[stream.index])
            )
    return summary


def _convert(source: Path, target: Path, tmp_path: Path) -> Any:
    settings = Settings(data_dir=tmp_path / "data")
    return convert_file(source, target, "none", {}, EffectResources(), settings)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]


FONTS = (FONT, BOLD)
MKV_COVER = Attached("front.png", "image/png", COVER)
MP4_COVER = Attached(None, None, COVER)
AS_MKV_COVER = Attached("cover.png", "image/png", COVER)  # an MP4 cover has no name


@pytest.mark.parametrize(
    ("clip", "output", "files", "covers", "left_out"),
    [
        (Clip("matroska", FONTS, ass=True), "out.mkv", FONTS, (), ()),
        (Clip("matroska", FONTS, COVER, ass=True), "out.mkv", FONTS, (MKV_COVER,), ()),
        (
            Clip("matroska", FONTS, ass=True),
            "out.mp4",
            (),
            (),
            ("ClipSans.ttf", "ClipSans-Bold.otf"),
        ),
        (Clip("matroska", FONTS, COVER), "out.mp4", (), (MP4_COVER,), ("ClipSans.ttf",)),
        (Clip("mp4", cover=COVER), "out.mp4", (), (MP4_COVER,), ()),
        (Clip("mp4", cover=COVER), "out.mkv", (), (AS_MKV_COVER,), ()),
        (Clip("mp4", cover=COVER), "out.mov", (), (), ("cover picture cover.png",)),
    ],
)
def test_attached_files_and_covers_are_kept_where_the_output_holds_them(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    clip: Clip,
    output: str,
    files: tuple[Attached, ...],
    covers: tuple[Attached, ...],
    left_out: tuple[str, ...],
) -> None:
    """Same bytes, name and MIME type; the video is the clip's, not its cover; whatever
    the output cannot hold is named in one warning that points to .mkv."""
    source = make_clip(tmp_path / f"in.{'mkv' if clip.container == 'matroska' else 'mp4'}", clip)
    before = read_clip(source)
    assert (len(before.files), len(before.covers)) == (len(clip.files), clip.cover is not None)
    with caplog.at_level(logging.INFO):
        result = _convert(source, tmp_path / output, tmp_path)
    after = read_clip(tmp_path / output)
    assert result.frames == after.frames == before.frames == FRAMES
    assert (result.width, result.height) == after.size == SIZE
    assert after.files == list(files)
    assert after.covers == list(covers)
    if clip.ass:
        assert after.subtitles == ["ass" if output.endswith(".mkv") else "mov_text"]
    warnings = _warnings(caplog)
    if not left_out:
        assert warnings == []
        return
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"attachments left out of {tmp_path / output}: ")
    assert ".part-" not in warnings[0] and "write a .mkv to keep them" in warnings[0]
    for name in left_out:
        assert name in warnings[0]


TITLED = (("eng", "Main"), ("fra", "Commentaire"))


@pytest.mark.parametrize(
    ("container", "source", "output"),
    [("mp4", "in.mp4", "out.mp4"), ("mp4", "in.mp4", "out.mkv"), ("mov", "in.mov", "out.mkv")],
)
def test_audio_track_titles_of_mp4_and_mov_inputs_are_kept(
    tmp_path: Path, container: str, source: str, output: str
) -> None:
    """MP4/MOV store a track's title as "name"; the output keeps it as its title."""
    clip = make_clip(tmp_path / source, Clip(container, audio=TITLED))
    assert read_clip(clip).audio == list(TITLED)
    _convert(clip, tmp_path / output, tmp_path)
    assert read_clip(tmp_path / output).audio == list(TITLED)


def test_a_music_file_with_album_art_is_no_video(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Audio plus a cover picture: refused as having no video, not converted as one frame."""
    from stream.cli import main as cli_main

    song = tmp_path / "song.m4a"
    with av.open(str(song), "w", format="mp4") as out:
        audio: Any = out.add_stream("aac", rate=48000, layout="stereo")
        cover: Any = out.add_stream("png")
        cover.width = cover.height = 48
        cover.pix_fmt = "rgb24"
        cover.disposition = ATTACHED_PIC
        packet = av.Packet(COVER)
        packet.stream = cover
        out.mux(packet)
        sound = av.AudioFrame.from_ndarray(
            np.zeros((2, 48000), np.float32), format="fltp", layout="stereo"
        )
        sound.sample_rate, sound.pts, sound.time_base = 48000, 0, Fraction(1, 48000)
        for packet in [*audio.encode(sound), *audio.encode(None)]:
            out.mux(packet)
    output = tmp_path / "out.mp4"
    assert cli_main(["convert", str(song), str(output), "--effect", "none"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [f"facestream: input {song} has no video stream (only a cover picture)"]
    assert not output.exists()
