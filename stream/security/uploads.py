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

from typing import Literal, Protocol

Category = Literal["image", "video"]

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
_IMAGE_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}
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


def _describe(head: bytes) -> str:
    """A short human description of what an unaccepted file looks like."""
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"#EXTM3U"):
        return "an HLS playlist (.m3u8) that points at other files"
    if text[:5].lower() in (b"<?xml", b"<html", b"<!doc", b"<svg "):
        return "an XML/HTML document"
    if head[:4] == b"GIF8":
        return "a GIF image"
    if head[:4] == b"%PDF":
        return "a PDF document"
    if head[:2] == b"PK":
        return "a ZIP archive"
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "a text file"
    return "an unrecognised format"


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
    not an accepted format of `category` or the declared type contradicts it.
    """
    name = f" {filename!r}" if filename else ""
    if not head:
        raise EmptyUpload(f"the uploaded file{name} is empty")
    accepted = IMAGE_KINDS if category == "image" else VIDEO_KINDS
    kind = sniff(head)
    if kind is None or kind not in accepted:
        found = f"{_with_article(kind.upper())} file" if kind else _describe(head)
        raise UnsupportedMediaType(
            f"the uploaded file{name} is {found}, not {_with_article(category)} file; upload the "
            f"{category} itself ({', '.join(accepted)})"
        )
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
