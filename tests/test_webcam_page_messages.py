"""Upload refusals as the pages show them: the right article before each format name."""

from __future__ import annotations

import pytest

from stream.security.uploads import UnsupportedMediaType, check_signature

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 56
MP4 = b"\x00\x00\x00\x18ftypisom" + b"\x00" * 52
AVI = b"RIFF\x00\x00\x00\x00AVI " + b"\x00" * 52
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 60
TEXT = b"just some words, not a photo\n" * 4

REFUSALS = [
    # head, category, phrase the message must contain
    pytest.param(TEXT, "image", "is a text file, not an image file", id="text-as-image"),
    pytest.param(MP4, "image", "is an MP4 file, not an image file", id="mp4-as-image"),
    pytest.param(AVI, "image", "is an AVI file, not an image file", id="avi-as-image"),
    pytest.param(PNG, "video", "is a PNG file, not a video file", id="png-as-video"),
    pytest.param(JPEG, "video", "is a JPEG file, not a video file", id="jpeg-as-video"),
]


@pytest.mark.parametrize(("head", "category", "phrase"), REFUSALS)
def test_refusal_reads_correctly(head: bytes, category: str, phrase: str) -> None:
    with pytest.raises(UnsupportedMediaType) as refused:
        check_signature(head, category, filename="upload.bin")  # type: ignore[arg-type]
    assert phrase in str(refused.value)
