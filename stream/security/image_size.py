"""The pixel size of an uploaded JPEG, PNG or WebP from its header, before any decoder runs.

A decompression bomb is a small file that claims a huge picture: a 20000x20000 PNG of
one colour is about 1 MB. Pillow refuses those at open with its own DOS warning (sizes
over twice Image.MAX_IMAGE_PIXELS); reading the size here lets the upload be refused
first, by facestream's own limit, with the size and the limit in the message.

Usage:
    size = pixel_size(data)   # (width, height), or None when the header does not say
"""

from __future__ import annotations

# The largest photo facestream decodes (a face photo, an uploaded or --source-face one).
MAX_IMAGE_PIXELS = 40_000_000

# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic...): not
# DHT (C4), JPG (C8) or DAC (CC).
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM and the restart markers.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


def pixel_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) in pixels of a JPEG, PNG or WebP file as its header states them.

    data: the file's bytes (a JPEG's frame header may follow tens of kilobytes of
    metadata). None when the format is another one or the header is cut short.
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png_size(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    return None


def _png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """The size in the first start-of-frame segment, walking the segments after SOI."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker in _JPEG_STANDALONE:
            pos += 2
        elif marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before
            return None
        elif marker in _JPEG_FRAME_MARKERS:
            if pos + 9 > len(data):
                return None
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            return width, height
        else:
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """The canvas size of a lossy (VP8), lossless (VP8L) or extended (VP8X) WebP."""
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width = int.from_bytes(data[26:28], "little") & 0x3FFF
        height = int.from_bytes(data[28:30], "little") & 0x3FFF
        return width, height
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    return None
