"""Streaming multipart/form-data uploads: the file part goes to disk as it arrives.

Starlette's form parser would read the whole body before the route runs; here the
body is parsed chunk by chunk (python-multipart's low-level parser), the file part is
written straight to disk, and the upload stops with UploadTooLarge as soon as it
passes the size cap (a declared Content-Length over the cap is refused before a
byte is read). Small text fields are kept in memory, each with its own cap.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 16
# Left out of kept names: path separators, quotes and what Windows forbids in names.
_UNSAFE_CHARS = re.compile(r'[/\\"<>:|?*]+')
_ASCII_UNSAFE = re.compile(r"[^A-Za-z0-9._ ()-]+")


class UploadTooLarge(ValueError):
    """The upload is bigger than the server accepts."""


class BadUpload(ValueError):
    """The request is not a usable multipart upload; the message says what is wrong."""


@dataclass
class ReceivedUpload:
    """The file part (written to `path`, `size` bytes, named `filename` by the client), text fields."""

    path: Path
    filename: str = ""
    content_type: str = ""
    size: int = 0
    fields: dict[str, str] = field(default_factory=dict)
    received_file: bool = False


def safe_filename(name: str) -> str:
    """The client's file name reduced to a harmless base name (for logs and downloads).

    Letters of any script and emoji are kept (NFC); path parts, control and format
    characters are dropped, quotes and characters Windows forbids become '_'.
    """
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = unicodedata.normalize("NFC", base)
    base = "".join(c for c in base if not unicodedata.category(c).startswith("C"))
    return _UNSAFE_CHARS.sub("_", base).strip(" .")[:120] or "video"


def _form_filename(raw: bytes) -> str:
    """A multipart part's filename as the client meant it: browsers (and httpx) send `"`,
    CR and LF as %22, %0D, %0A (WHATWG HTML, multipart/form-data encoding)."""
    name = raw.decode("utf-8", "replace")
    return name.replace("%22", '"').replace("%0D", "").replace("%0A", "")


def content_disposition(filename: str) -> str:
    """`attachment` header value for a download named `filename` (RFC 6266): an ASCII
    `filename` for old clients plus the exact UTF-8 name in `filename*` (RFC 8187)."""
    ascii_name = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode()
    ascii_name = _ASCII_UNSAFE.sub("_", ascii_name).strip(" .") or "video"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


def human_size(size: int) -> str:
    """Bytes as a short human size: 536870912 -> '512 MiB', 1572864 -> '1.5 MiB'."""
    value, unit = float(size), "bytes"
    for larger in ("KiB", "MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    text = f"{value:.0f}" if unit == "bytes" or value >= 100 else f"{value:.1f}".removesuffix(".0")
    return f"{text} {unit}"


class _PartCollector:
    """python-multipart callbacks: one file field to `file_path`, other fields to memory."""

    def __init__(self, file_field: str, file_path: Path, max_bytes: int) -> None:
        self.file_field = file_field
        self.max_bytes = max_bytes
        self.upload = ReceivedUpload(path=file_path)
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name = ""
        self._text: bytearray | None = None
        self._file: BinaryIO | None = None

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._add("_header_field", data[start:end]),
            "on_header_value": lambda data, start, end: self._add("_header_value", data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _add(self, attribute: str, data: bytes) -> None:
        setattr(self, attribute, getattr(self, attribute) + data)

    def _part_begin(self) -> None:
        self._headers, self._header_field, self._header_value = {}, b"", b""

    def _header_end(self) -> None:
        self._headers[self._header_field.strip().lower()] = self._header_value.strip()
        self._header_field, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        if self._name != self.file_field and b"filename" in options:
            raise BadUpload(
                f"the video goes in the form field {self.file_field!r}; "
                f"this form sent a file in the field {self._name!r}"
            )
        if self._name == self.file_field and b"filename" in options:
            if self.upload.received_file:
                raise BadUpload(f"send one file in the field {self.file_field!r}, not several")
            self.upload.received_file = True
            self.upload.filename = safe_filename(_form_filename(options[b"filename"]))
            self.upload.content_type = self._headers.get(b"content-type", b"").decode("latin-1")
            self._file = self.upload.path.open("wb")
        else:
            if len(self.upload.fields) >= MAX_FIELDS:
                raise BadUpload(f"too many form fields (at most {MAX_FIELDS})")
            self._text = bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file is not None:
            self.upload.size += end - start
            if self.upload.size > self.max_bytes:
                raise UploadTooLarge(
                    f"the upload is larger than {human_size(self.max_bytes)}, the server's limit"
                )
            self._file.write(data[start:end])
        elif self._text is not None:
            self._text += data[start:end]
            if len(self._text) > MAX_FIELD_BYTES:
                raise BadUpload(
                    f"the form field {self._name!r} is longer than {human_size(MAX_FIELD_BYTES)}; "
                    f"the video goes in the form field {self.file_field!r} as a file"
                )

    def _part_end(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        elif self._text is not None:
            self.upload.fields[self._name] = self._text.decode("utf-8", "replace")
            self._text = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _boundary(request: Request) -> bytes:
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise BadUpload("send the video as multipart/form-data (a form with a file field)")
    return options[b"boundary"]


def _feed(parser: MultipartParser, chunk: bytes | None) -> None:
    """One chunk into the parser (None: the end); parser failures become BadUpload."""
    try:
        if chunk is None:
            parser.finalize()
        else:
            parser.write(chunk)
    except (UploadTooLarge, BadUpload):
        raise
    except Exception as error:
        raise BadUpload(f"the multipart body is malformed: {error}") from None


async def receive_upload(
    request: Request, file_field: str, file_path: Path, max_bytes: int
) -> ReceivedUpload:
    """Stream the multipart body of `request`; the part `file_field` is written to `file_path`.

    Raises UploadTooLarge (declared or actual size over `max_bytes`), BadUpload (not
    multipart, no file, malformed). On error the partial file is removed.
    """
    boundary = _boundary(request)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes + MAX_FIELD_BYTES:
        raise UploadTooLarge(
            f"the upload is {human_size(int(declared))}; the server's limit is "
            f"{human_size(max_bytes)}"
        )
    collector = _PartCollector(file_field, file_path, max_bytes)
    parser = MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            _feed(parser, chunk)
        _feed(parser, None)
    except BaseException:
        collector.close()
        file_path.unlink(missing_ok=True)
        raise
    collector.close()
    if not collector.upload.received_file or collector.upload.size == 0:
        file_path.unlink(missing_ok=True)
        raise BadUpload(f"the form has no file (or an empty one) in the field {file_field!r}")
    return collector.upload
