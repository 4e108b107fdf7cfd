"""/healthz, /metrics and /effects."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from engines.batching import BatchStats
from engines.effects.registry import describe_effects
from stream.deps import ServicesDep

router = APIRouter()


@router.get("/healthz")
async def healthz(services: ServicesDep) -> dict[str, Any]:
    return {"status": "ok", "device": services.worker.device, "sessions": len(services.sessions)}


@router.get("/metrics")
async def metrics(services: ServicesDep) -> Response:
    body = services.metrics.render()
    if services.models.batching is not None:
        body += batch_metrics(services.models.batch_stats())
    return Response(body, media_type="text/plain; version=0.0.4")


@router.get("/effects")
async def effects(services: ServicesDep) -> list[dict[str, Any]]:
    return describe_effects(services.effect_resources())


class _BatchCollector(Collector):
    """The cross-session batch schedulers' counters, labelled by engine (detect, gan_swap...)."""

    def __init__(self, stats: Mapping[str, BatchStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterable[Metric]:
        mean = GaugeMetricFamily(
            "facestream_batch_mean_size",
            "requests per engine call of a cross-session batch scheduler",
            labels=["engine"],
        )
        largest = GaugeMetricFamily(
            "facestream_batch_largest_size",
            "most requests one engine call carried",
            labels=["engine"],
        )
        calls = CounterMetricFamily(
            "facestream_batch_calls", "engine calls for whole batches", labels=["engine"]
        )
        failed = CounterMetricFamily(
            "facestream_batch_failed_calls",
            "batch calls that raised (their requests were retried one by one)",
            labels=["engine"],
        )
        for engine, stats in sorted(self._stats.items()):
            mean.add_metric([engine], stats.mean_batch)
            largest.add_metric([engine], stats.largest_batch)
            calls.add_metric([engine], stats.batches)
            failed.add_metric([engine], stats.failed_batches)
        return [mean, largest, calls, failed]


def batch_metrics(stats: Mapping[str, BatchStats]) -> bytes:
    """Prometheus text for the batch schedulers' counters (engine name -> stats)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_BatchCollector(stats))
    return generate_latest(registry)
