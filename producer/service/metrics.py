"""GET /metrics: the service's Prometheus metrics (prometheus_client's text format).

Read from the ledger, the broker and the worker registry at scrape time by a custom collector, so
several service replicas report the same truth. A part that cannot be read (database or broker
away) is left out of that scrape, and ``rerankq_scrape_errors_total`` counts it."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from producer.queueing import queue_depths
from rerankq.logs import get_logger
from rerankq.settings import Settings
from rerankq.store.ledger import Ledger
from rerankq.store.registry import Registry
from schemas import JobState

log = get_logger("rerankq.service")
router = APIRouter(tags=["metrics"])
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
LIVE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class LedgerCollector(Collector):
    def __init__(self, settings: Settings, ledger: Ledger, registry: Registry, errors: Counter):
        self.settings, self.ledger, self.registry, self.errors = settings, ledger, registry, errors

    def _part(self, name: str, fn):  # noqa: ANN001, ANN202
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail because one source is away
            self.errors.labels(source=name).inc()
            log.warning("metrics_source_failed", source=name, error=type(exc).__name__)
            return None

    def collect(self) -> Iterator[Metric]:
        counts = self._part("database", self.ledger.job_counts)
        if counts is not None:
            jobs = GaugeMetricFamily("rerankq_jobs", "Jobs in the ledger by state", labels=["state"])
            for state in JobState:
                jobs.add_metric([state.value], counts.get(state.value, 0))
            yield jobs
        scored = self._part("database", self.ledger.pairs_scored_total)
        if scored is not None:
            yield CounterMetricFamily("rerankq_pairs_scored", "Pairs scored by finished chunks, all jobs", value=scored)
        alive = self._part("database", lambda: self.registry.alive(self.settings.worker_dead_after))
        models = sorted({self.settings.model, *(w.model for w in alive or [])})
        depths = self._part("broker", lambda: {m: queue_depths(self.settings, m) for m in models})
        if depths is not None:
            queue = GaugeMetricFamily(
                "rerankq_queue_depth",
                "Chunks waiting in the broker (not yet taken by a worker), per model",
                labels=["queue", "model", "priority"],
            )
            for model, by_priority in depths.items():
                for priority, n in by_priority.items():
                    queue.add_metric([self.settings.queue, model, priority], n)
            yield queue
        if alive is not None:
            workers = GaugeMetricFamily("rerankq_workers_alive", "Workers whose heartbeat is recent, per model", labels=["model"])
            for model in models:
                workers.add_metric([model], sum(w.model == model for w in alive))
            yield workers

    def describe(self) -> Iterator[Metric]:
        return iter(())  # no collection at registration time (the database may not be up yet)


class ServiceMetrics:
    def __init__(self, settings: Settings, ledger: Ledger, registry: Registry):
        self.registry = CollectorRegistry(auto_describe=False)
        errors = Counter("rerankq_scrape_errors", "Metric sources that could not be read", ["source"], registry=None)
        self.registry.register(LedgerCollector(settings, ledger, registry, errors))
        self.registry.register(errors)  # after the collector: this scrape's failures show in this scrape
        self.rerank_latency = Histogram(
            "rerankq_rerank_duration_seconds",
            "Time to answer a successful /v1/rerank request",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

        # The live lane (producer/service/rerank.py) keeps nothing per request in the ledger: these are its record.
        self.live_requests = Counter(
            "rerankq_live_requests", "Live-lane /v1/rerank and /v1/score requests by model and outcome "
            "(ok, full: 429, timeout: 504, cancelled: client gone, no_worker, error)", ["model", "outcome"],
            registry=self.registry,
        )  # fmt: skip
        self.live_pairs = Counter("rerankq_live_pairs", "Pairs scored through the live lane", ["model"], registry=self.registry)
        self.live_latency = Histogram(
            "rerankq_live_duration_seconds", "Time to answer a live-lane request (pushed to reply), answered ones",
            ["model"], buckets=LIVE_BUCKETS, registry=self.registry,
        )  # fmt: skip

    def observe_live(self, model: str, outcome: str, pairs: int, seconds: float) -> None:
        self.live_requests.labels(model, outcome).inc()
        if outcome == "ok":
            self.live_pairs.labels(model).inc(pairs)
            self.live_latency.labels(model).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
