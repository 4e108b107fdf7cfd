"""Conversion subtitles: every track kept in order with its language, title and times
against the video, copied where the output container holds its codec, converted to
the output's text codec where it does not, left out with one warning where neither."""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from convert_helpers import VIDEO, ass_header

from engines.effects.base import EffectResources
from stream.convert import convert_file
from stream.settings import Settings

SIZE = (320, 240)
FRAMES = 25  # 1 s at 25 fps
MS = Fraction(1, 1000)
ASS_HEADER = ass_header()
CUES = ((0.2, 0.6, "Hello there"), (0.68, 0.92, "Second line"))


@dataclass(frozen=True)
class Track:
    """A subtitle track to write: codec ("subrip", "ass", "mov_text"; "pgs": hand-made
    HDMV PGS display sets, for which FFmpeg has no encoder), tags, cues in seconds from
    the first video frame."""

    codec: str
    language: str
    title: str
    cues: tuple[tuple[float, float, str], ...] = CUES
    forced: bool = False


@dataclass
class TrackSummary:
    codec: str
    language: str | None
    title: str | None
    forced: bool
    cues: list[tuple[float, float, str]] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)


@pytest.fixture(scope="module")
def pictures() -> list[np.ndarray]:
    """The first FRAMES frames of the shared video.mp4 at SIZE, RGB."""
    with av.open(str(VIDEO)) as source:
        frames = []
        for frame in source.decode(video=0):
            frames.append(frame.reformat(*SIZE, "rgb24").to_ndarray())
            if len(frames) == FRAMES:
                return frames
    raise AssertionError("video.mp4 is too short")


def _pgs_display_set(number: int) -> bytes:
    """A PGS display set that clears the screen: composition segment (0x16), end (0x80)."""
    composition = struct.pack(">HHBHBBBB", *SIZE, 0x10, number, 0x80, 0, 0, 0)
    return b"\x16" + struct.pack(">H", len(composition)) + composition + b"\x80\x00\x00"


def _add_track(out: Any, track: Track) -> Any:
    if track.codec == "pgs":
        stream = out.add_mux_stream("hdmv_pgs_subtitle")
    else:
        stream = out.add_stream(track.codec)
        stream.codec_context.subtitle_header = ASS_HEADER
        stream.codec_context.time_base = MS
    stream.time_base = MS
    stream.metadata.update(language=track.language, title=track.title)
    if track.forced:
        stream.disposition = av.stream.Disposition.forced
    return stream


def _cue_packet(stream: Any, track: Track, index: int, start_s: float, end_s: float) -> Any:
    text = track.cues[index][2]
    if track.codec == "pgs":
        packet = av.Packet(_pgs_display_set(index))
    else:
        line = f"{index},0,Default,,0,0,0,,{text}".encode()
        cue = av.subtitles.subtitle.SubtitleSet.create(line, 0, round((end_s - start_s) * 1000))
        packet = stream.codec_context.encode_subtitle(cue)
    packet.pts = packet.dts = round(start_s * 1000)
    packet.duration = round((end_s - start_s) * 1000)
    packet.time_base = MS
    packet.stream = stream
    return packet


def make_clip(
    path: Path,
    container: str,
    tracks: list[Track],
    pictures: list[np.ndarray],
    start_s: float = 0.0,
    font: bool = False,
) -> Path:
    """A 1 s 320x240 H.264 clip (B-frames) whose video starts at `start_s`, with `tracks`
    (cue times shifted by `start_s` too) and, when `font`, a font attachment (Matroska)."""
    with av.open(str(path), "w", format=container) as out:
        video: Any = out.add_stream("libx264", rate=25, options={"preset": "superfast"})
        video.width, video.height = SIZE
        video.pix_fmt = "yuv420p"
        video.codec_context.time_base = Fraction(1, 25)
        streams = [_add_track(out, track) for track in tracks]
        if font:
            out.add_attachment("font.ttf", "application/x-truetype-font", b"\x00\x01" * 64)
        first = round(start_s * 25)
        for index, rgb in enumerate(pictures):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = first + index, Fraction(1, 25)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        for stream, track in zip(streams, tracks, strict=True):
            for index, (start, end, _) in enumerate(track.cues):
                out.mux(_cue_packet(stream, track, index, start + start_s, end + start_s))
    return path


def read_subtitles(path: Path) -> tuple[int, list[TrackSummary]]:
    """(video frames, per subtitle track: codec, tags, cues (start and end in seconds from
    the first video frame, text) and non-empty payloads), demuxed and decoded by PyAV."""
    with av.open(str(path)) as container:
        tracks = []
        for stream in container.streams.subtitles:
            tags = {key.lower(): value for key, value in stream.metadata.items()}
            tracks.append(
                TrackSummary(
                    codec=stream.codec_context.codec.canonical_name,
                    language=tags.get("language"),
                    title=tags.get("title") or tags.get("name"),
                    forced=bool(stream.disposition & av.stream.Disposition.forced),
                )
            )
        first_video: float | None = None
        frames = 0
        cues: list[tuple[int, float, float, Any]] = []
        for packet in container.demux():
            if packet.pts is None or not packet.size:
                continue
            start = float(packet.pts * packet.time_base)
            if packet.stream.type == "video":
                first_video = start if first_video is None else min(first_video, start)
                frames += 1
            elif packet.stream.type == "subtitle":
                end = start + float(packet.duration * packet.time_base)
                cues.append((container.streams.subtitles.index(packet.stream), start, end, packet))
    assert first_video is not None
    for at, start, end, packet in cues:
        texts = [sub.dialogue.decode() for sub in packet.decode() if sub.type != b"bitmap"]
        bitmap = tracks[at].codec == "hdmv_pgs_subtitle"
        if texts or bitmap:
            cue = (round(start - first_video, 3), round(end - first_video, 3), "".join(texts))
            tracks[at].cues.append(cue)
            tracks[at].payloads.append(bytes(packet))
    return frames, tracks


def read_subtitles_only(path: Path) -> list[tuple[float, float, str]]:
    """The text cues of a file's first subtitle track (start, end in seconds, text)."""
    cues = []
    with av.open(str(path)) as container:
        for packet in container.demux(container.streams.subtitles[0]):
            for sub in packet.decode() if packet.size else ():
                start = float(packet.pts * packet.time_base)
                end = start + float(packet.duration * packet.time_base)
                cues.append((start, end, sub.dialogue.decode()))
    return cues


def _convert(source: Path, target: Path, tmp_path: Path) -> Any:
    settings = Settings(data_dir=tmp_path / "data")
    return convert_file(source, target, "none", {}, EffectResources(), settings)


def _written(track: Track) -> list[tuple[float, float, str]]:
    return [(start, end, "" if track.codec == "pgs" else text) for start, end, text in track.cues]


ENGLISH = Track("mov_text", "eng", "English")
TWO_SRT = [Track("subrip", "eng", "English"), Track("subrip", "fra", "Français", forced=True)]
SRT_AND_ASS = [Track("subrip", "eng", "English"), Track("ass", "deu", "Deutsch (ASS)")]


@pytest.mark.parametrize(
    ("source", "container", "tracks", "start_s", "output", "expected"),
    [
        ("phone.mp4", "mp4", [ENGLISH], 0.0, "out.mp4", ["mov_text"]),
        ("screen.mov", "mov", [Track("mov_text", "jpn", "日本語")], 0.0, "out.mov", ["mov_text"]),
        ("film.mkv", "matroska", TWO_SRT, 0.0, "out.mkv", ["subrip", "subrip"]),
        ("film.mkv", "matroska", SRT_AND_ASS, 1.0, "out.mp4", ["mov_text", "mov_text"]),
        ("phone.mp4", "mp4", [ENGLISH], 1.0, "out.mkv", ["subrip"]),
    ],
)
def test_every_subtitle_track_is_kept_in_order_with_its_tags_and_times(
    tmp_path: Path,
    pictures: list[np.ndarray],
    source: str,
    container: str,
    tracks: list[Track],
    start_s: float,
    output: str,
    expected: list[str],
) -> None:
    """Copied where the container holds the codec (same bytes), else converted to its
    text codec with the same text; every cue at the same time from the first frame,
    also when the video starts at 1 s; an attachment beside ASS breaks nothing."""
    font = container == "matroska" and any(track.codec == "ass" for track in tracks)
    clip = make_clip(tmp_path / source, container, tracks, pictures, start_s, font)
    frames_in, before = read_subtitles(clip)
    result = _convert(clip, tmp_path / output, tmp_path)
    frames_out, after = read_subtitles(tmp_path / output)
    assert result.frames == frames_out == frames_in == FRAMES
    assert [track.codec for track in after] == expected
    for mine, theirs, written in zip(after, before, tracks, strict=True):
        assert (mine.language, mine.title, mine.forced) == (
            written.language,
            written.title,
            written.forced,
        )
        assert mine.cues == theirs.cues == _written(written)
        if mine.codec == theirs.codec:
            assert mine.payloads == theirs.payloads  # copied, not re-encoded


@pytest.mark.parametrize(
    ("output", "expected", "warned"),
    [("out.mp4", ["mov_text"], True), ("out.mkv", ["subrip", "hdmv_pgs_subtitle"], False)],
)
def test_bitmap_subtitles_the_output_cannot_hold_are_left_out_with_one_warning(
    tmp_path: Path,
    pictures: list[np.ndarray],
    caplog: pytest.LogCaptureFixture,
    output: str,
    expected: list[str],
    warned: bool,
) -> None:
    tracks = [Track("subrip", "eng", "English"), Track("pgs", "deu", "Deutsch")]
    clip = make_clip(tmp_path / "film.mkv", "matroska", tracks, pictures)
    _, before = read_subtitles(clip)
    with caplog.at_level(logging.INFO, logger="stream.convert_subtitles"):
        result = _convert(clip, tmp_path / output, tmp_path)
    frames, after = read_subtitles(tmp_path / output)
    assert result.frames == frames == FRAMES
    assert [track.codec for track in after] == expected
    assert after[0].cues == before[0].cues
    if not warned:
        assert after[1].cues == before[1].cues and after[1].payloads == before[1].payloads
        assert after[1].language == "deu"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    if warned:
        assert len(warnings) == 1, warnings
        assert "track 2 (hdmv_pgs_subtitle, deu" in warnings[0]
        assert "left out of" in warnings[0] and "bitmap" in warnings[0]
        assert "write a .mkv to keep it" in warnings[0]  # a .mkv does keep it
        assert str(tmp_path / output) in warnings[0] and ".part-" not in warnings[0]
    else:
        assert warnings == []


@pytest.mark.parametrize(("container", "suffix"), [("matroska", "mkv"), ("mp4", "mp4")])
def test_a_cue_the_muxer_refuses_is_left_out_with_one_warning(
    tmp_path: Path,
    pictures: list[np.ndarray],
    caplog: pytest.LogCaptureFixture,
    container: str,
    suffix: str,
) -> None:
    """A cue timed before the track's last (a broken track) costs that cue, not the file."""
    from stream.convert_subtitles import SubtitleTrack, plan_subtitles

    clip = make_clip(tmp_path / "film.mkv", "matroska", [Track("subrip", "eng", "E")], pictures)
    target = tmp_path / f"out.{suffix}"
    with av.open(str(clip)) as source, av.open(str(target), "w", format=container) as out:
        [route] = plan_subtitles(source.streams.subtitles, container, target.name)
        track = SubtitleTrack(out, route)
        first, second = [p for p in source.demux(source.streams.subtitles[0]) if p.size]
        with caplog.at_level(logging.WARNING, logger="stream.convert_subtitles"):
            for packet in (second, first, first):
                track.write(out, packet)
            out.mux(track.flush())  # mov_text: the last cue is held until the end
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "a cue at 0.200 s is left out" in warnings[0], warnings
    assert str(target) not in warnings[0]
    assert [cue[2] for cue in read_subtitles_only(target)] == ["Second line"]


SIGN_AND_DIALOGUE = ((0.2, 0.9, "sign"), (0.2, 0.5, "dialogue A"), (0.4, 0.8, "dialogue B"))


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (
            "out.mp4",  # mov_text samples cannot overlap: pieces with every text on screen
            [
                (0.2, 0.4, "sign\ndialogue A"),
                (0.4, 0.5, "sign\ndialogue A\ndialogue B"),
                (0.5, 0.8, "sign\ndialogue B"),
                (0.8, 0.9, "sign"),
            ],
        ),
        ("out.mkv", list(SIGN_AND_DIALOGUE)),  # ASS copied: Matroska blocks may overlap
    ],
)
def test_overlapping_cues_are_shown_together_for_as_long_as_each_lasts(
    tmp_path: Path,
    pictures: list[np.ndarray],
    output: str,
    expected: list[tuple[float, float, str]],
) -> None:
    """A sign on screen while two lines of dialogue overlap it and each other."""
    track = Track("ass", "eng", "English", cues=SIGN_AND_DIALOGUE)
    clip = make_clip(tmp_path / "film.mkv", "matroska", [track], pictures, font=True)
    _convert(clip, tmp_path / output, tmp_path)
    _, [after] = read_subtitles(tmp_path / output)
    assert after.cues == expected
    assert after.language == "eng" and after.title == "English"


def test_cue_timeline_gives_pieces_as_soon_as_no_later_cue_can_start_inside_them() -> None:
    from stream.subtitle_cues import CueOutOfOrder, CueTimeline, Piece

    timeline: CueTimeline[str] = CueTimeline()
    assert timeline.add(200, 900, "sign") == []
    assert timeline.add(200, 500, "A") == []
    assert timeline.add(400, 800, "B") == [Piece(200, 400, ("sign", "A"))]
    assert timeline.add(600, 600, "empty") == []  # shows nothing, cuts nothing
    with pytest.raises(CueOutOfOrder):
        timeline.add(300, 700, "late")
    assert timeline.add(1000, 1100, "C") == [
        Piece(400, 500, ("sign", "A", "B")),
        Piece(500, 800, ("sign", "B")),
        Piece(800, 900, ("sign",)),
    ]
    assert timeline.flush() == [Piece(1000, 1100, ("C",))]
    assert timeline.flush() == []


def _subtitle_packets(path: Path) -> tuple[Any, list[tuple[float, float, bytes]]]:
    """(the first subtitle stream's tags, its packets: start and end in seconds, bytes)."""
    with av.open(str(path)) as container:
        stream = container.streams.subtitles[0]
        packets = [
            (
                float(packet.pts * packet.time_base),
                float((packet.pts + packet.duration) * packet.time_base),
                bytes(packet),
            )
            for packet in container.demux(stream)
            if packet.size
        ]
        return dict(stream.metadata), packets


@pytest.mark.parametrize(("output", "kept"), [("out.mp4", True), ("out.mkv", False)])
def test_a_track_this_ffmpeg_cannot_decode_is_copied_where_the_output_holds_it(
    tmp_path: Path,
    pictures: list[np.ndarray],
    caplog: pytest.LogCaptureFixture,
    output: str,
    kept: bool,
) -> None:
    """TTML in MP4 (PyAV gives it no codec context): copied packet for packet into MP4;
    left out of Matroska, which cannot hold it, with a warning that says so (and does
    not send the user to a .mkv)."""
    clip = make_clip(tmp_path / "film.mp4", "mp4", [Track("ttml", "eng", "English")], pictures)
    with av.open(str(clip)) as source:
        assert source.streams.subtitles[0].codec_context is None
    tags, before = _subtitle_packets(clip)
    assert b"Hello there" in b"".join(payload for _, _, payload in before)
    with caplog.at_level(logging.INFO, logger="stream.convert_subtitles"):
        result = _convert(clip, tmp_path / output, tmp_path)
    assert result.frames == FRAMES
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    if kept:
        assert warnings == []
        after_tags, after = _subtitle_packets(tmp_path / output)
        assert after == before
        assert after_tags.get("language") == tags.get("language") == "eng"
        return
    with av.open(str(tmp_path / output)) as written:
        assert len(written.streams.subtitles) == 0
    assert len(warnings) == 1, warnings
    assert "track 1 (ttml, eng" in warnings[0] and "left out of" in warnings[0]
    assert "matroska cannot hold ttml subtitles" in warnings[0]
    assert "cannot decode" in warnings[0]
    assert "unknown codec" not in warnings[0] and ".mkv to keep" not in warnings[0]
