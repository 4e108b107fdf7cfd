"""Overlapping subtitle cues cut into pieces that do not overlap.

A text cue may overlap others (common in ASS: a sign on screen while people speak),
but a mov_text track (MP4/MOV) is a sequence of samples that cannot overlap: each
shows one text from its time until the next. :class:`CueTimeline` splits the timeline
at every cue's start and end and gives, for each piece, the cues active all through it,
in cue order; the caller shows their texts together. It works as the cues arrive, in
packet order (by start): a piece is given out once no later cue can start inside it,
that is once a cue starting at or after its end has arrived (or at :meth:`flush`), so
it holds only the cues that are still showing.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Generic, TypeVar

Cue = TypeVar("Cue")


class CueOutOfOrder(ValueError):
    """A cue that starts before the one added before it: its time is already written."""


@dataclass(frozen=True)
class Piece(Generic[Cue]):
    """From `start` to `end` (the cues' time unit), `cues` show, in the order they came."""

    start: int
    end: int
    cues: tuple[Cue, ...]


class CueTimeline(Generic[Cue]):
    """Cues in, non-overlapping pieces out (see the module's docstring)."""

    def __init__(self) -> None:
        self._active: list[tuple[int, int, Cue]] = []  # (start, end, cue), in cue order
        self._done: int | None = None  # pieces up to here are given out

    def add(self, start: int, end: int, cue: Cue) -> list[Piece[Cue]]:
        """The pieces that are final now that `cue` (from `start` to `end`) has come.

        A cue of no length shows nothing and cuts nothing. Raises CueOutOfOrder for a
        cue that starts before the previous one.
        """
        if self._done is not None and start < self._done:
            raise CueOutOfOrder("it starts before the track's previous cue")
        if end <= start:
            return []
        pieces = self._cut(start)
        self._active.append((start, end, cue))
        return pieces

    def flush(self) -> list[Piece[Cue]]:
        """The pieces still held, at the end of the track."""
        if not self._active:
            return []
        return self._cut(max(end for _, end, _ in self._active))

    def _cut(self, until: int) -> list[Piece[Cue]]:
        """The pieces from where the last ones ended up to `until`; forgets the cues
        that end by then."""
        done = until if self._done is None else self._done
        bounds = {done, until}
        bounds.update(t for start, end, _ in self._active for t in (start, end) if done < t < until)
        pieces = []
        for begin, finish in pairwise(sorted(bounds)):
            showing = tuple(
                cue for start, end, cue in self._active if start <= begin and end >= finish
            )
            if showing:
                pieces.append(Piece(begin, finish, showing))
        self._active = [entry for entry in self._active if entry[1] > until]
        self._done = until
        return pieces
