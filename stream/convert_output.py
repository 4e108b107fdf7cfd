"""The output side of a conversion: which files facestream writes, checked before any work;
the temporary file the result is written to; its provenance once it is complete."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path

from stream.provenance import SIDECAR_SUFFIX, ProvenanceInfo, ProvenanceRecord, mark_file
from stream.settings import Settings

# Containers whose provenance tags, written at mux time, read back (case-insensitively:
# Matroska upper-cases tag names), so stream.provenance never has to remux the file.
OUTPUT_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


def output_format(output: Path) -> str:
    """FFmpeg muxer name for OUTPUT's extension; ValueError for one facestream does not write."""
    fmt = OUTPUT_FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"output {output} must end in one of {', '.join(OUTPUT_FORMATS)} "
            f"(got {output.suffix or 'no extension'})"
        )
    return fmt


def check_output(input: str | Path, output: str | Path) -> None:
    """ValueError, before any work, for an OUTPUT that cannot be written: an extension
    facestream does not write, a missing folder, a folder new files cannot be made in
    (permissions, a read-only or virtual file system), an existing folder, or INPUT
    itself (also through a link). An existing file is overwritten, as cp and FFmpeg's
    -y do."""
    output = Path(output)
    output_format(output)
    if output.is_dir():
        raise ValueError(f"output {output} is a folder: name a file, e.g. {output / 'out.mp4'}")
    if not output.parent.is_dir():
        raise ValueError(f"output folder {output.parent} does not exist")
    check_writable(output.parent)
    if output.exists() and Path(input).exists() and os.path.samefile(input, output):
        raise ValueError(f"output {output} is the input file: write the result to another file")


def check_writable(folder: Path) -> None:
    """ValueError when no file can be made in `folder`, found by making one: an unnamed
    temporary file where the file system has them, else a named one removed at once
    (os.access would pass a read-only file system's folder, or any folder for root)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        reason = (error.strerror or type(error).__name__).lower()
        raise ValueError(f"cannot write to {folder} ({reason})") from None


def mark_output(output: Path, provenance: ProvenanceInfo, settings: Settings) -> ProvenanceRecord:
    """Provenance for the finished file; on failure the file is removed (never left unmarked)."""
    try:
        return mark_file(output, provenance, settings)
    except BaseException:
        output.unlink(missing_ok=True)
        output.with_name(output.name + SIDECAR_SUFFIX).unlink(missing_ok=True)
        raise


def temp_path(output: Path) -> Path:
    """An empty, unique OUTPUT.part-XXXX in OUTPUT's folder (so os.replace is atomic),
    made with mode 0666 less the umask, as any new file (mkstemp's 0600 would stay)."""
    while True:
        path = output.with_name(f"{output.name}.part-{secrets.token_hex(4)}")
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return path
