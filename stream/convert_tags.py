"""The stream tags a conversion carries over to each output track: language and title.

One place for the audio (stream.convert_audio) and subtitle (stream.convert_subtitles)
tracks alike. MP4/MOV store a track's title as "name" (FFmpeg reads it back so) and
Matroska as "title"; both are read, and the output gets "title", which every muxer
writes in its own way. Other tags are dropped (Matroska's statistics tags are stale
after a conversion).
"""

from __future__ import annotations

from typing import Any

TITLE_TAGS = ("title", "name")  # in order of preference


def kept_tags(stream: Any) -> dict[str, str]:
    """The language and title of `stream` (any av.Stream), lower-case keys; 'und'
    languages and empty values dropped."""
    tags = {key.lower(): value for key, value in stream.metadata.items()}
    kept = {}
    if tags.get("language", "und") not in ("und", ""):
        kept["language"] = tags["language"]
    title = next((tags[key] for key in TITLE_TAGS if tags.get(key)), None)
    if title:
        kept["title"] = title
    return kept
