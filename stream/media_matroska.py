"""Matroska facts read without decoding: the Segment's declared size (EBML header)
and the per-track statistics tags (DURATION, NUMBER_OF_FRAMES) muxers write."""

from __future__ import annotations

import math
from pathlib import Path

_EBML_ID = 0x1A45DFA3
_SEGMENT_ID = 0x18538067


def _ebml_number(data: bytes, at: int, keep_marker: bool) -> tuple[int, int, bool]:
    """EBML variable-length number at data[at]: (value, its length, all value bits set).

    IDs keep their length marker bit (keep_marker); sizes drop it. All value bits
    set means "unknown size". Raises IndexError/ValueError on bytes that are no number.
    """
    first = data[at]
    length = 9 - first.bit_length()
    if not 1 <= length <= 8:
        raise ValueError("not an EBML number")
    value = first if keep_marker else first & (0xFF >> length)
    for byte in data[at + 1 : at + length]:
        value = (value << 8) | byte
    if at + length > len(data):
        raise IndexError("EBML number cut short")
    unknown = value == (1 << (7 * length)) - 1 and not keep_marker
    return value, length, unknown


def matroska_segment_end(path: Path) -> int:
    """The byte offset where a Matroska file's first Segment declares it ends; 0 if unknown.

    0 when the Segment's size is "unknown" (a live recording never finalised) or the
    header cannot be read. Reads the first 4 KiB only.
    """
    with path.open("rb") as file:
        head = file.read(4096)
    try:
        at = 0
        for expected in (_EBML_ID, _SEGMENT_ID):
            element, id_length, _ = _ebml_number(head, at, keep_marker=True)
            size, size_length, unknown = _ebml_number(head, at + id_length, keep_marker=False)
            if element != expected:
                return 0
            at += id_length + size_length
            if expected == _SEGMENT_ID:
                return 0 if unknown else at + size
            at += size
    except (IndexError, ValueError):
        return 0
    return 0


def tag_int(tags: dict[str, str], key: str) -> int:
    """A stream tag (e.g. Matroska's NUMBER_OF_FRAMES, any case) as an int; 0 if absent."""
    for name, value in tags.items():
        if name.upper() == key:
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def tag_seconds(tags: dict[str, str], key: str) -> float | None:
    """A Matroska statistics tag such as DURATION ("HH:MM:SS.nnnnnnnnn") in seconds."""
    for name, value in tags.items():
        if name.upper() != key:
            continue
        parts = value.strip().split(":")
        try:
            seconds = sum(float(part) * 60**index for index, part in enumerate(reversed(parts)))
        except ValueError:
            return None
        return seconds if len(parts) <= 3 and math.isfinite(seconds) and seconds > 0 else None
    return None
