"""MP4/MOV facts read without FFmpeg: whether a file that FFmpeg cannot open was cut short.

An ISO base media file (MP4, MOV, M4V, 3GP) is a sequence of top-level boxes, each
starting with its size and type. A camera or a muxer writing the index (`moov`) at the
end leaves a file that a copy cut short has no index in: FFmpeg then only says
"Invalid data found". Walking the top-level box headers (a few reads, however large
the file) tells a file that was cut short from one that is not an MP4 at all.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

# Top-level box types a file may start with (ftyp first in any file written since 2004;
# QuickTime files may start with the others).
_FIRST_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"})
_MAX_BOXES = 10_000  # bounds the walk over a hostile file


@dataclass(frozen=True)
class Mp4Cut:
    """An MP4/MOV file cut short. needed: the bytes its boxes declare (0: unknown);
    size: the bytes it has; box: the type of the top-level box that runs past the end
    ('' for a cut box header, or for a missing index); has_index: whether a complete
    `moov` box is in it."""

    needed: int
    size: int
    box: str
    has_index: bool


def mp4_cut(path: Path) -> Mp4Cut | None:
    """How an MP4/MOV file at `path` was cut short; None when it does not start like
    one, or its boxes end where the file ends and it has both index and media data.

    Cut short: a top-level box runs past the end of the file (its declared size), or
    the file has media data (`mdat`) but no index (`moov`), or a box header is itself
    cut. Reads only box headers (at most _MAX_BOXES of them).
    """
    size = path.stat().st_size
    at, boxes, kinds = 0, 0, set()
    with path.open("rb") as file:
        while at < size and boxes < _MAX_BOXES:
            file.seek(at)
            header = file.read(16)
            box_size, kind = struct.unpack(">I4s", header[:8]) if len(header) >= 8 else (0, b"")
            if boxes == 0 and kind not in _FIRST_BOXES:
                return None
            if len(header) < 8 or (box_size == 1 and len(header) < 16):
                return Mp4Cut(at + 16, size, "", has_index=b"moov" in kinds)
            if box_size == 1:  # a 64-bit size follows the type
                box_size = struct.unpack(">Q", header[8:16])[0]
            elif box_size == 0:  # runs to the end of the file (a muxer never finished)
                box_size = size - at
            if box_size < 8:
                return None  # not a box: not an MP4 this can judge
            if at + box_size > size:
                name = kind.decode("latin-1")
                return Mp4Cut(at + box_size, size, name, has_index=b"moov" in kinds)
            kinds.add(kind)
            at += box_size
            boxes += 1
    if b"mdat" in kinds and b"moov" not in kinds:
        return Mp4Cut(0, size, "", has_index=False)
    return None


def truncation(path: Path, opened: bool = False) -> str | None:
    """What is missing from an MP4/MOV file at `path` cut short (see mp4_cut), for
    'input NAME is truncated: ...'; None when it is not one, or cannot be read.

    opened: FFmpeg opened the file, so only a cut index or media data box counts (a few
    stray bytes after the last box, which FFmpeg ignores, do not)."""
    try:
        cut = mp4_cut(path)
    except OSError:
        return None
    if cut is None or (opened and cut.box not in ("moov", "mdat")):
        return None
    return describe_cut(cut)


def describe_cut(cut: Mp4Cut) -> str:
    """What is missing, e.g. 'its boxes need 2411585 bytes but the file has 200000
    (2211585 missing) and its index (moov box), stored at the end, is lost'."""
    if cut.needed <= cut.size:
        return "it has media data but no index (moov box), which is written at the end"
    lost = (
        f"its boxes need {cut.needed} bytes but the file has {cut.size} "
        f"({cut.needed - cut.size} missing)"
    )
    if cut.box == "moov":
        return f"{lost} and its index (moov box) is cut"
    if cut.has_index:
        return lost
    return f"{lost} and its index (moov box), stored at the end, is lost"
