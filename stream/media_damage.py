"""Decoding a video that is damaged in the middle: a few lost frames are skipped, more fail.

Bytes overwritten inside a file's media data (a bad sector, a copy gone wrong) make
FFmpeg's decoder reject a packet ("Invalid data found when processing input") or drop
the frames that depend on it. Players skip such packets and go on; so does
:class:`DamagedVideo`, for up to :func:`lost_frames_allowed` lost frames, and then says
once, as a warning, which frames are missing. More damage than that, or a demuxer that
cannot go on, raises :class:`DamagedMedia`, naming the file and the frame and time
where it breaks.

A lost frame is a packet sent to the decoder whose frame never came out, once the
decoder has rejected one (a damaged keyframe loses the frames after it too). Frames are
matched to packets by their presentation timestamps, so the frame numbers reported are
those of the damaged packets (a frame-threaded decoder reports the error a few packets
later), in presentation order from 0.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import av

logger = logging.getLogger(__name__)

LOST_SHARE = 0.01  # of the video's frames that may be lost and skipped
LOST_AT_LEAST = 2  # frames that may be lost however short the video


class DamagedMedia(ValueError):
    """A video that breaks while it is decoded, beyond what is skipped; the message
    names the file and where (frame number and time) in one line."""


def lost_frames_allowed(frames: int) -> int:
    """How many frames of a `frames`-frame video (0: unknown) may be lost and skipped."""
    return max(LOST_AT_LEAST, int(frames * LOST_SHARE))


def expected_frames(stream: Any) -> int:
    """The frames `stream` announces (its count, else duration x frame rate); 0: unknown."""
    if stream.frames:
        return int(stream.frames)
    rate = stream.average_rate or stream.guessed_rate
    if stream.duration and stream.time_base and rate:
        return round(float(stream.duration * stream.time_base * rate))
    return 0


class DamagedVideo:
    """Decodes the packets of one video stream, skipping those the decoder rejects.

    `name`: how messages call the file. `warn`: log the warning about skipped frames
    (False for a second decoder of the same file, e.g. the face process). Use
    `packets()` around the demuxer, `decode()` for each video packet (the demuxer's
    final empty packet included: it flushes the decoder), then `finish()`.
    """

    def __init__(self, stream: Any, name: str, warn: bool = True) -> None:
        self.name = name
        self._warn = warn
        self._time_base = Fraction(stream.time_base) if stream.time_base else None
        self._start = stream.start_time or 0
        self.allowed = lost_frames_allowed(expected_frames(stream))
        self.sent = 0  # video packets with data sent to the decoder
        self.decoded = 0
        self.errors = 0
        self._sent_pts: list[int] = []  # sorted
        self._pending: set[int] = set()  # pts sent whose frame has not come out (yet)
        self._last_pts: int | None = None  # the latest frame decoded

    def packets(self, demuxed: Iterator[Any]) -> Iterator[Any]:
        """`demuxed`, with a demuxer's invalid-data error raised as DamagedMedia."""
        while True:
            try:
                packet = next(demuxed)
            except StopIteration:
                return
            except av.error.InvalidDataError as error:
                where = (
                    "at the start"
                    if self._last_pts is None
                    else f"after {self._at(self._last_pts)}"
                )
                raise DamagedMedia(
                    f"input {self.name} is damaged {where}: {_reason(error)}; "
                    "get an undamaged copy of the file"
                ) from None
            yield packet

    def decode(self, packet: Any) -> list[Any]:
        """The frames `packet` completes; [] when the decoder rejects it (skipped).

        Raises DamagedMedia once it has rejected more packets than frames may be lost."""
        if packet.size:
            self.sent += 1
            if packet.pts is not None:
                bisect.insort(self._sent_pts, packet.pts)
                self._pending.add(packet.pts)
        try:
            frames: list[Any] = packet.decode()
        except av.error.InvalidDataError as error:
            self.errors += 1
            logger.debug("%s: video packet at pts %s rejected", self.name, packet.pts)
            if self.errors > self.allowed:
                raise self._damaged(
                    f"more than {_frames(self.allowed)} cannot be decoded ({_reason(error)})"
                ) from None
            return []
        for frame in frames:
            if frame.pts is not None:
                self._pending.discard(frame.pts)
                self._last_pts = frame.pts
        self.decoded += len(frames)
        return frames

    @property
    def lost(self) -> int:
        """Packets sent whose frames did not come out (so far)."""
        return max(self.sent - self.decoded, 0)

    def finish(self) -> None:
        """After the last packet: DamagedMedia when more frames were lost than allowed,
        else one warning naming the frames skipped (if any, and `warn`).

        Only once the decoder rejected a packet: without that, a packet without a frame
        of its own (VP8's hidden alt-ref frames in a raw stream) is no damage."""
        lost = self.lost if self.errors else 0
        if lost > self.allowed:
            raise self._damaged(
                f"{_frames(lost)} cannot be decoded (at most {self.allowed} are skipped)"
            )
        if lost and self._warn:
            logger.warning(
                "input %s is damaged%s: %s cannot be decoded and %s left out of the output",
                self.name,
                self._where(),
                _frames(lost),
                "is" if lost == 1 else "are",
            )

    def _damaged(self, what: str) -> DamagedMedia:
        return DamagedMedia(
            f"input {self.name} is damaged{self._where()}: {what}; "
            "get an undamaged copy of the file"
        )

    def _where(self) -> str:
        """' at frame 12 (0.48 s)': the first frame missing so far; '' when not known."""
        return f" at {self._at(min(self._pending))}" if self._pending else ""

    def _at(self, pts: int) -> str:
        """'frame 12 (0.48 s)': the number (presentation order, from 0) and time of `pts`."""
        number = bisect.bisect_left(self._sent_pts, pts)
        if self._time_base is None:
            return f"frame {number}"
        return f"frame {number} ({float((pts - self._start) * self._time_base):.2f} s)"


def _reason(error: BaseException) -> str:
    strerror = getattr(error, "strerror", None)
    return str(strerror or error).strip() or type(error).__name__


def _frames(count: int) -> str:
    return f"{count} frame{'' if count == 1 else 's'}"
