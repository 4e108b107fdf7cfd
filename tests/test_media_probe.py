"""Untrusted inputs: what facestream refuses to decode, with a one-line reason."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import pytest
from convert_helpers import VIDEO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.media_limits import MediaLimits, MediaRejected
from stream.media_probe import open_input, probe


def test_probe_describes_the_shared_video() -> None:
    info = probe(VIDEO)
    assert (info.width, info.height, info.frames) == (1920, 1080, 105)
    assert info.frame_rate == Fraction(25) and info.duration_s == pytest.approx(4.2)
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")


def _write(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data)
        return path

    return make


def _audio_only(folder: Path) -> Path:
    path = folder / "audio.m4a"
    with av.open(str(VIDEO)) as source, av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream_from_template(source.streams.audio[0])
        for packet in source.demux(source.streams.audio[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return path


def _wide_y4m(folder: Path) -> Path:
    path = folder / "wide.y4m"
    path.write_bytes(
        b"YUV4MPEG2 W4112 H16 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + bytes(4112 * 16 * 3 // 2)
    )
    return path


def _shared(path: Path) -> Callable[[Path], Path]:
    return lambda _folder: path


HLS = b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n/etc/passwd\n#EXT-X-ENDLIST\n"
REFUSED = [
    # (make the input, limits, fragment of the reason)
    (lambda d: d / "missing.mp4", None, "does not exist"),
    (lambda d: d, None, "not a regular file"),
    (_write("empty.mp4", b""), None, "is empty"),
    (_write("text.mp4", b"hello world\n" * 20), None, "not a readable video"),
    (_write("list.m3u8", HLS), None, "playlist"),
    (_write("disguised.mp4", HLS), None, "playlist"),
    (_write("bom.mp4", b"\xef\xbb\xbf  " + HLS), None, "playlist"),
    (_write("concat.txt", b"ffconcat version 1.0\nfile /etc/passwd\n"), None, "playlist"),
    (
        _write("stream.sdp", b"v=0\no=- 0 0 IN IP4 127.0.0.1\nm=video 5004 RTP/AVP 96\n"),
        None,
        "playlist",
    ),
    (lambda d: Path("http://127.0.0.1:9/video.mp4"), None, "does not exist"),
    (_shared(VIDEO.parent / "multiface.jpg"), None, "not a supported video container"),
    (_audio_only, None, "no video stream"),
    (_wide_y4m, None, "at most 4096x4096"),
    (_shared(VIDEO), MediaLimits(max_fps=20), "at most 20 fps"),
    (_shared(VIDEO), MediaLimits(max_duration_s=2), "lasts 4.2 s; at most 2.0 s"),
    (_shared(VIDEO), MediaLimits(max_frames=50), "at most 50 are accepted"),
]


@pytest.mark.parametrize(("make", "limits", "fragment"), REFUSED)
def test_probe_refuses_with_a_reason(
    tmp_path: Path, make: Callable[[Path], Path], limits: MediaLimits | None, fragment: str
) -> None:
    with pytest.raises(MediaRejected) as refused:
        probe(make(tmp_path), limits)
    message = str(refused.value)
    assert fragment in message
    assert "\n" not in message


def test_messages_name_the_file_as_asked(tmp_path: Path) -> None:
    path = _write("x", b"hello world\n" * 20)(tmp_path)
    with pytest.raises(MediaRejected) as refused:
        probe(path, name="holiday.mp4")
    assert "holiday.mp4" in str(refused.value) and str(tmp_path) not in str(refused.value)


def test_open_input_allows_only_the_file_protocol() -> None:
    container = open_input(VIDEO)
    try:
        assert container.format.name.startswith("mov")
    finally:
        container.close()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(min_size=1, max_size=2048))
def test_probe_of_random_bytes_is_refused_never_crashes(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "random.mp4"
    path.write_bytes(data)
    with pytest.raises(MediaRejected):
        probe(path)
