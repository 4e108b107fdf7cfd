"""What a conversion takes and gives: encoder options, progress, the result, cancellation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from stream.provenance import ProvenanceRecord


class ConvertCancelled(RuntimeError):
    """The conversion was cancelled before it finished; no output was written."""


@dataclass(frozen=True)
class EncodeOptions:
    """Video encoder settings. crf: x264 constant quality, 0 (lossless) .. 51 (worst).

    Default superfast at CRF 21: on the 720p crowd clip the same PSNR to the source as
    veryfast at CRF 20 (38.96 against 38.99 dB), files about 23 % larger, 40 % less
    encoder CPU (12 against 20 ms a frame), which a CPU conversion needs to keep up.
    """

    codec: str = "libx264"
    crf: int = 21
    preset: str = "superfast"
    pix_fmt: str = "yuv420p"


@dataclass(frozen=True)
class ConvertProgress:
    """Where a conversion stands. frames_total is an estimate from the container."""

    frames_done: int
    frames_total: int
    elapsed_s: float

    @property
    def fps(self) -> float:
        return self.frames_done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def fraction(self) -> float:
        if self.frames_total <= 0:
            return 0.0
        return min(self.frames_done / self.frames_total, 1.0)

    @property
    def eta_s(self) -> float | None:
        if self.frames_done == 0 or self.frames_total <= 0:
            return None
        return max(self.frames_total - self.frames_done, 0) / self.fps


@dataclass(frozen=True)
class ConvertResult:
    """A finished conversion. audio_packets: the audio packets written to `output`, all
    tracks (re-encoded ones counted as encoded); media_duration_s: the video's length;
    wall_s: time it took."""

    output: Path
    frames: int
    audio_packets: int
    width: int
    height: int
    frame_rate: Fraction
    media_duration_s: float
    wall_s: float
    provenance: ProvenanceRecord | None = None

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def realtime_ratio(self) -> float:
        """Seconds of video converted per second of wall time (>= 1: faster than real time)."""
        return self.media_duration_s / self.wall_s if self.wall_s > 0 else 0.0


ProgressCallback = Callable[[ConvertProgress], None]
