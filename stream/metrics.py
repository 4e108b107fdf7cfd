"""Prometheus metrics of one server (own registry, so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.033, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5)


class Metrics:
    """Sessions, frames in/out/dropped and per-stage latency histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.sessions = Gauge("facestream_sessions", "live WebRTC sessions", registry=self.registry)
        self.frames_in = Counter("facestream_frames_in", "frames received", registry=self.registry)
        self.frames_out = Counter(
            "facestream_frames_out", "frames sent processed", registry=self.registry
        )
        self.frames_dropped = Counter(
            "facestream_frames_dropped",
            "stale frames dropped (latest-frame-wins)",
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "facestream_stage_seconds",
            "time per frame in a pipeline stage",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.frame_seconds = Histogram(
            "facestream_frame_seconds",
            "time from frame received to frame processed",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "facestream_errors", "errors by kind", ["kind"], registry=self.registry
        )

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(stage=stage).observe(seconds)

    def render(self) -> bytes:
        """Prometheus text exposition format."""
        return generate_latest(self.registry)
