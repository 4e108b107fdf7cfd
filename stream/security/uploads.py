"""Upload checks: the declared content type and the file's own signature (magic bytes).

An upload is accepted only when its first bytes are those of a format
facestream takes (images: JPEG, PNG, WebP; videos: MP4/MOV, WebM/Matroska,
AVI) and its declared content type, if any, does not contradict that. Names
and extensions are never trusted: a text file named clip.mp4 or an HLS
playlist is refused before any decoder sees it.

Usage in a route:
    kind = await check_upload(upload, "video")   # raises UnsupportedMediaType / EmptyUpload
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

Category = Literal["image", "video"]
# What a file is, as far as its first bytes tell.
FileNature = Literal["image", "video", "audio", "document", "unknown"]

SNIFF_BYTES = 64

IMAGE_KINDS = ("jpeg", "png", "webp")
VIDEO_KINDS = ("mp4", "mov", "webm", "mkv", "avi")

# Declared types that may accompany each category ("" and octet-stream say nothing).
_NEUTRAL_TYPES = {"", "application/octet-stream", "binary/octet-stream"}
_IMAGE_TYPES = {"image/jpeg", "image/jpg", "image/pjpeg", "image/png", "image/webp"}
_VIDEO_TYPES = {
    "video/mp4",
    "video/quicktime",
    "video/webm",
    "video/x-matroska",
    "video/matroska",
    "video/x-msvideo",
    "video/avi",
    "video/msvideo",
    "application/mp4",
}
# ISO base media brands that are still images, not video.
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}
_IMAGE_BRANDS = _HEIF_BRANDS | _AVIF_BRANDS
_QUICKTIME_ATOMS = {b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}


class UnsupportedMediaType(ValueError):
    """The upload is not a format facestream accepts (415); the message says what was found."""


class EmptyUpload(ValueError):
    """The upload has no bytes (400)."""


def sniff(head: bytes) -> str | None:
    """The format of a file from its first bytes (>= SNIFF_BYTES for Matroska), or None.

    Returns one of IMAGE_KINDS + VIDEO_KINDS.
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm" if b"webm" in head[:SNIFF_BYTES] else "mkv"
    box = head[4:8]
    if box == b"ftyp":
        brand = head[8:12]
        if brand in _IMAGE_BRANDS:
            return None
        return "mov" if brand == b"qt  " else "mp4"
    if box in _QUICKTIME_ATOMS and len(head) >= 8:
        return "mov"
    return None


# An MPEG-TS packet (M2TS: after a 4-byte time code) starting the PAT or the SDT.
_TS_STARTS = (b"G@\x00", b"G@\x11")


def _text(head: bytes) -> bytes:
    """`head` without a UTF-8 byte order mark and leading white space."""
    return head.lstrip(b"\xef\xbb\xbf").lstrip()


# Formats facestream does not take, by their first bytes: (test, description, what it is).
# "What it is" decides the advice: an image or a video in another format is to be
# converted; anything else is the wrong file.
_FOREIGN_FORMATS: tuple[tuple[Callable[[bytes], bool], str, FileNature], ...] = (
    (lambda h: h[:4] == b"GIF8", "a GIF image", "image"),
    (lambda h: h[:2] == b"BM" and h[6:10] == bytes(4), "a BMP image", "image"),
    (lambda h: h[:4] in (b"II*\x00", b"MM\x00*"), "a TIFF image", "image"),
    (lambda h: h[4:8] == b"ftyp" and h[8:12] in _HEIF_BRANDS, "a HEIC/HEIF image", "image"),
    (lambda h: h[4:8] == b"ftyp" and h[8:12] in _AVIF_BRANDS, "an AVIF image", "image"),
    (lambda h: h[:2] == b"\xff\x0a" or h[4:12] == b"JXL \r\n\x87\n", "a JPEG XL image", "image"),
    (lambda h: h[4:12] == b"jP  \r\n\x87\n", "a JPEG 2000 image", "image"),
    (lambda h: h[:4] == b"8BPS", "a Photoshop (PSD) image", "image"),
    (lambda h: b"<svg" in h[:SNIFF_BYTES].lower(), "an SVG drawing", "image"),
    (lambda h: h[:4] == b"FLV\x01", "an FLV video", "video"),
    (lambda h: h[:3] in _TS_STARTS or h[4:7] in _TS_STARTS, "an MPEG-TS video", "video"),
    (lambda h: h[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"), "an MPEG video", "video"),
    (lambda h: h[:8] == b"0&\xb2u\x8ef\xcf\x11", "a WMV/ASF video", "video"),
    (lambda h: h[:4] == b"OggS", "an Ogg media file", "video"),
    (lambda h: h[:4] == b".RMF", "a RealMedia video", "video"),
    (lambda h: h[:4] == b"RIFF" and h[8:12] == b"WAVE", "a WAV audio file", "audio"),
    (lambda h: h[:4] == b"fLaC", "a FLAC audio file", "audio"),
    (
        lambda h: h[:3] == b"ID3" or h[:2] in (b"\xff\xfb", b"\xff\xf3"),
        "an MP3 audio file",
        "audio",
    ),
    (
        lambda h: _text(h).startswith(b"#EXTM3U"),
        "an HLS playlist (.m3u8) that points at other files",
        "document",
    ),
    (
        lambda h: _text(h)[:5].lower() in (b"<?xml", b"<html", b"<!doc"),
        "an XML/HTML document",
        "document",
    ),
    (lambda h: h[:4] == b"%PDF", "a PDF document", "document"),
    (lambda h: h[:2] == b"PK", "a ZIP archive", "document"),
)

# What each category takes, as the advice names it: (formats, the things themselves).
_TAKES = {
    "image": ("JPEG, PNG or WebP", "photos"),
    "video": ("MP4, MOV, WebM, MKV or AVI", "videos"),
}
_KIND_NAMES = {
    "jpeg": "JPEG",
    "png": "PNG",
    "webp": "WebP",
    "mp4": "MP4",
    "mov": "MOV",
    "webm": "WebM",
    "mkv": "MKV",
    "avi": "AVI",
}


def identify(head: bytes) -> tuple[str, FileNature]:
    """What a file looks like from its first bytes: (description with its article, what
    it is: "image", "video", "audio", "document" or "unknown").

    E.g. ("a PNG file", "image"), ("a GIF image", "image"), ("a text file", "document").
    """
    kind = sniff(head)
    if kind is not None:
        return (
            f"{_with_article(_KIND_NAMES[kind])} file",
            "image" if kind in IMAGE_KINDS else "video",
        )
    for test, description, what in _FOREIGN_FORMATS:
        if test(head):
            return description, what
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "a text file", "document"
    return "a file of an unrecognised format", "unknown"


def _refusal(head: bytes, category: Category) -> str:
    """What an unaccepted upload of `category` is and what to do, after "the uploaded file"."""
    found, nature = identify(head)
    formats, things = _TAKES[category]
    if nature == category:  # an image (a video) in another format: convert it
        return (
            f"is {found}; this server takes {formats} {things}: convert it to one of these "
            "and upload it again"
        )
    if nature == "unknown":
        return f"is in a format this server does not recognise; it takes {formats} {things}"
    return (
        f"is {found}, not {_with_article(category)} file; upload the {category} itself ({formats})"
    )


def _with_article(word: str) -> str:
    """`word` after "a" or "an" as it is spoken: an image, an MP4, an AVI, a PNG, a video."""
    spelled = word.isupper()  # format names like MP4 and MKV are read letter by letter
    vowel_sound = word[:1].lower() in "aeiou" or (spelled and word[:1] in "FHLMNRSX")
    return f"{'an' if vowel_sound else 'a'} {word}"


def check_signature(
    head: bytes, category: Category, content_type: str | None = None, filename: str | None = None
) -> str:
    """The sniffed kind of an upload of `category`, or raise.

    head: the first bytes of the upload (at least SNIFF_BYTES when available).
    content_type: the declared Content-Type of the part (parameters ignored).
    Raises EmptyUpload for zero bytes, UnsupportedMediaType when the signature is
    not an accepted format of `category` or the declared type contradicts it. The
    message says what the file is and what to do: convert an image (or video) of
    another format, upload the right file otherwise.
    """
    name = f" {filename!r}" if filename else ""
    if not head:
        raise EmptyUpload(f"the uploaded file{name} is empty")
    accepted = IMAGE_KINDS if category == "image" else VIDEO_KINDS
    kind = sniff(head)
    if kind is None or kind not in accepted:
        raise UnsupportedMediaType(f"the uploaded file{name} {_refusal(head, category)}")
    declared = (content_type or "").split(";")[0].strip().lower()
    allowed = _IMAGE_TYPES if category == "image" else _VIDEO_TYPES
    if declared not in _NEUTRAL_TYPES and declared not in allowed:
        raise UnsupportedMediaType(
            f"the uploaded file{name} is declared as {declared!r}, which is not "
            f"{_with_article(category)} type"
        )
    return kind


class _Upload(Protocol):
    """What check_upload needs of a FastAPI/Starlette UploadFile."""

    filename: str | None
    content_type: str | None

    async def read(self, size: int = -1) -> bytes: ...

    async def seek(self, offset: int) -> None: ...


async def check_upload(upload: _Upload, category: Category) -> str:
    """Sniff an UploadFile (then rewind it); returns its kind or raises as check_signature."""
    head = await upload.read(SNIFF_BYTES)
    await upload.seek(0)
    return check_signature(head, category, upload.content_type, upload.filename)
