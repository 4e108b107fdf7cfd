"""The audit log: one JSON line per swap session start/end and per conversion job.

Append-only JSON lines under `settings.data_dir / "audit.jsonl"`. Each line is
written with a single `write(2)` on a file opened with O_APPEND, under a lock
shared by every AuditLog of the same path in this process, so lines from
threads and concurrent sessions never interleave. Lines are never rewritten.

Example line:
    {"time": "2026-11-23T14:50:01.123Z", "event": "session.start", "client": "10.0.0.7",
     "effect": "swap", "face_id": "3f2a...", "session_id": "9c1e..."}
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

AUDIT_FILE_NAME = "audit.jsonl"
_MAX_TEXT = 512  # characters per string field, so a hostile value cannot bloat the log

_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(path: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(path, threading.Lock())


def _clean(value: Any) -> Any:
    """A JSON-safe, bounded copy of `value` (strings cut to _MAX_TEXT characters)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {str(k)[:_MAX_TEXT]: _clean(v) for k, v in list(value.items())[:64]}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value[:64]]
    return str(value)[:_MAX_TEXT]


def utc_timestamp() -> str:
    """Now, as ISO 8601 UTC with milliseconds and a Z suffix."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditLog:
    """Appends audit records to one JSON-lines file; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path).resolve()
        self._lock = _lock_for(self.path)

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> AuditLog:
        return cls(Path(data_dir) / AUDIT_FILE_NAME)

    def record(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one line: `time`, `event`, then `fields` (None values kept as null).

        event: what happened, e.g. "session.start", "session.end", "job.start".
        Typical fields: client, effect, face_id, session_id or job_id.
        Returns the record written. OSError propagates: an unwritable audit log is
        an operator problem that must not pass silently.
        """
        record: dict[str, Any] = {"time": utc_timestamp(), "event": str(event)[:64]}
        record.update({key: _clean(value) for key, value in fields.items() if key not in record})
        line = (json.dumps(record, ensure_ascii=True, separators=(", ", ": ")) + "\n").encode()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                written = os.write(fd, line)
                while written < len(line):
                    written += os.write(fd, line[written:])
            finally:
                os.close(fd)
        logger.debug("audit %s", record)
        return record

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Every record so far, oldest first (for tests and tools)."""
        if not self.path.exists():
            return
        with self.path.open("r", encoding="ascii") as lines:
            for line in lines:
                if line.strip():
                    yield json.loads(line)

    def records(self, event_prefix: str = "") -> list[dict[str, Any]]:
        """Records whose event starts with `event_prefix`."""
        return [r for r in self if str(r.get("event", "")).startswith(event_prefix)]
