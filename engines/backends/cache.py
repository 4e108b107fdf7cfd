"""A disk cache of compiled engines, one folder per :class:`EngineKey`.

Layout under the root (the project's weights/cache/, git-ignored)::

    <model>/<backend>-<digest[:24]>/key.json   the full key, when it was built
    <model>/<backend>-<digest[:24]>/...        what the backend saved (engine.ep, ...)

An entry is found only when its key.json holds exactly the key asked for, so a
change of weights, shapes, precision, GPU or library version is a miss and the
engine is rebuilt. Entries are written into a temporary folder and renamed into
place, so a crash never leaves a half-written engine that looks complete; the
least recently used entries of a model beyond `keep_per_model` are deleted.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engines.backends.key import EngineKey

logger = logging.getLogger(__name__)

KEY_FILE = "key.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class CacheEntry:
    """One stored engine: its folder, the canonical key JSON and when it was last used."""

    directory: Path
    canonical_key: str
    last_used: float


class EngineCache:
    """Compiled engines on disk, keyed by :class:`EngineKey`. Safe across processes
    (atomic renames); one process should not store the same key from two threads."""

    def __init__(self, root: Path, keep_per_model: int = 8) -> None:
        if keep_per_model < 1:
            raise ValueError(f"keep_per_model must be >= 1, got {keep_per_model}")
        self.root = Path(root)
        self.keep_per_model = keep_per_model

    def __repr__(self) -> str:
        return f"EngineCache({self.root})"

    def model_dir(self, model: str) -> Path:
        return self.root / (_UNSAFE.sub("_", model).strip("._") or "model")

    def entry_dir(self, key: EngineKey) -> Path:
        """Where the engine for `key` lives (whether or not it is there)."""
        return self.model_dir(key.model) / f"{key.backend}-{key.digest()[:24]}"

    def lookup(self, key: EngineKey) -> Path | None:
        """The folder of the stored engine for exactly `key`, or None; marks it used."""
        directory = self.entry_dir(key)
        try:
            stored = json.loads((directory / KEY_FILE).read_text())
        except (OSError, ValueError):
            return None
        if stored.get("key") != json.loads(key.canonical()):
            logger.warning("engine cache entry %s holds another key; ignoring it", directory)
            return None
        os.utime(directory)
        return directory

    def store(self, key: EngineKey, write: Callable[[Path], object]) -> Path | None:
        """Run `write(folder)` to save an engine, then publish the folder for `key`.

        Returns the entry's folder, or None when saving failed (logged; the engine
        that was built still works, it is only not cached).
        """
        target = self.entry_dir(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".tmp-{target.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            write(staging)
            record = {
                "key": json.loads(key.canonical()),
                "digest": key.digest(),
                "created": time.time(),
            }
            (staging / KEY_FILE).write_text(json.dumps(record, indent=2, sort_keys=True))
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        except Exception as error:  # a failed save must not take the built engine down
            logger.warning(
                "could not cache the %s engine for %s in %s: %s",
                key.backend,
                key.model,
                target,
                error,
            )
            shutil.rmtree(staging, ignore_errors=True)
            return None
        self.prune(key.model)
        return target

    def remove(self, key: EngineKey) -> None:
        shutil.rmtree(self.entry_dir(key), ignore_errors=True)

    def entries(self, model: str) -> list[CacheEntry]:
        """Complete entries of `model`, most recently used first."""
        folder = self.model_dir(model)
        found: list[CacheEntry] = []
        if not folder.is_dir():
            return found
        for directory in folder.iterdir():
            key_file = directory / KEY_FILE
            if directory.name.startswith(".tmp-") or not key_file.is_file():
                continue
            try:
                canonical = json.dumps(json.loads(key_file.read_text())["key"], sort_keys=True)
            except (OSError, ValueError, KeyError):
                canonical = ""
            found.append(CacheEntry(directory, canonical, directory.stat().st_mtime))
        return sorted(found, key=lambda e: e.last_used, reverse=True)

    def prune(self, model: str) -> list[Path]:
        """Delete the least recently used entries of `model` beyond `keep_per_model`."""
        removed = [entry.directory for entry in self.entries(model)[self.keep_per_model :]]
        for directory in removed:
            logger.info("removing stale engine %s", directory)
            shutil.rmtree(directory, ignore_errors=True)
        return removed
