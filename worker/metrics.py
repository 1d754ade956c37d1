"""A worker's own Prometheus metrics, served when RERANKQ_METRICS_PORT is set.

Port choice for several workers on one host: RERANKQ_METRICS_PORT=N serves on N + the worker's CUDA
device index (the first entry of CUDA_VISIBLE_DEVICES; 0 without one), so one setting fits every
`CUDA_VISIBLE_DEVICES=i celery -A worker worker -Q gpu` line; RERANKQ_METRICS_PORT=0 takes any free
port. The port is logged at start (``metrics_listening``).

The task reports each scored chunk with ``observe_chunk(pairs, tokens, seconds)``, the live lane each
request with ``observe_live(outcome, pairs, seconds)``; nothing else.
Every metric carries a ``model`` label (the worker's RERANKQ_MODEL), so a fleet of several models
can be read per model."""

from __future__ import annotations

import os
import threading
import time
from collections import deque

from celery.signals import worker_init
from prometheus_client import REGISTRY, Counter, Histogram, start_http_server

from rerankq.logs import get_logger
from rerankq.routing import normalize_model
from rerankq.settings import get_settings
from worker.gpu_memory import gpu_memory_used

log = get_logger("rerankq.worker")
BUSY_WINDOW = 60.0  # seconds over which the engine's busy fraction is measured
CHUNK_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 60, 120, 300, 600, 1800)

PAIRS = Counter("rerankq_worker_pairs_scored", "Pairs scored by this worker (errors included)", ["model"])
TOKENS = Counter("rerankq_worker_tokens_scored", "Prompt tokens scored by this worker", ["model"])
CHUNK_SECONDS = Histogram(
    "rerankq_worker_chunk_duration_seconds", "Time to score one chunk (reading pairs to scores)", ["model"],
    buckets=CHUNK_BUCKETS,
)  # fmt: skip
LIVE_REQUESTS = Counter(
    "rerankq_worker_live_requests", "Live-lane requests taken, by outcome (scored, cancelled, skipped, error)",
    ["model", "outcome"],
)  # fmt: skip
LIVE_PAIRS = Counter("rerankq_worker_live_pairs", "Pairs of live-lane requests scored", ["model"])
LIVE_SECONDS = Histogram(
    "rerankq_worker_live_duration_seconds", "Time from taking a live request to its scores", ["model"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)  # fmt: skip


def _model() -> str:
    return normalize_model(get_settings().model)


class _Busy:
    """Union of the scoring intervals in the last BUSY_WINDOW seconds (chunks may overlap in threads)."""

    def __init__(self) -> None:
        self._spans: deque[tuple[float, float]] = deque()
        self._lock = threading.Lock()
        self._started = time.monotonic()

    def add(self, seconds: float, end: float | None = None) -> None:
        end = time.monotonic() if end is None else end
        with self._lock:
            self._spans.append((end - seconds, end))

    def fraction(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        lo = now - BUSY_WINDOW
        with self._lock:
            while self._spans and self._spans[0][1] < lo:
                self._spans.popleft()
            spans = sorted((max(a, lo), b) for a, b in self._spans)
        busy, reach = 0.0, lo
        for a, b in spans:
            if b > reach:
                busy += b - max(a, reach)
                reach = b
        return min(1.0, busy / max(1e-9, min(BUSY_WINDOW, now - self._started)))


busy = _Busy()


def _engine_memory() -> dict[str, float]:
    """Device memory in use (NVML: whole device, as vLLM reserves it, from whichever process) and this
    process's resident memory."""
    out = gpu_memory_used()
    try:
        import psutil

        out["cpu"] = float(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001, S110 - no psutil: GPU figures only
        pass
    return out


class _EngineCollector:
    """The engine's busy fraction and memory, read when scraped."""

    def collect(self):  # noqa: ANN201
        from prometheus_client.core import GaugeMetricFamily

        model = _model()
        ratio = GaugeMetricFamily(
            "rerankq_worker_engine_busy_ratio",
            f"Fraction of the last {BUSY_WINDOW:.0f} s the engine spent scoring chunks",
            labels=["model"],
        )
        ratio.add_metric([model], busy.fraction())
        yield ratio
        family = GaugeMetricFamily(
            "rerankq_worker_engine_memory_bytes",
            "Memory used: GPU (device-wide) and the worker process (cpu)",
            labels=["model", "device"],
        )
        for device, value in _engine_memory().items():
            family.add_metric([model, device], value)
        yield family

    def describe(self):  # noqa: ANN201
        return []


REGISTRY.register(_EngineCollector())


def observe_chunk(pairs: int, tokens: int, seconds: float) -> None:
    """One chunk scored: ``pairs`` pairs of ``tokens`` prompt tokens in ``seconds`` of engine time."""
    model = _model()
    PAIRS.labels(model).inc(pairs)
    TOKENS.labels(model).inc(tokens)
    CHUNK_SECONDS.labels(model).observe(seconds)
    busy.add(seconds)


def observe_live(outcome: str, pairs: int, seconds: float) -> None:
    """One live request taken from the lane and ended: scored, cancelled, skipped (cancelled before it began) or error."""
    model = _model()
    LIVE_REQUESTS.labels(model, outcome).inc()
    if outcome == "scored":
        LIVE_PAIRS.labels(model).inc(pairs)
        LIVE_SECONDS.labels(model).observe(seconds)


def metrics_port(base: int, visible_devices: str | None) -> int:
    """``base`` + the CUDA device index (0 = any free port)."""
    if base == 0:
        return 0
    first = (visible_devices or "").split(",")[0].strip()
    return base + (int(first) if first.isdigit() else 0)


def start(port: int) -> int:
    """Serve /metrics on ``port``; returns the port bound."""
    server, _thread = start_http_server(port)
    return int(server.server_port)


@worker_init.connect
def _serve_metrics(**_: object) -> None:
    settings = get_settings()
    if settings.metrics_port is None:
        return
    port = metrics_port(settings.metrics_port, os.environ.get("CUDA_VISIBLE_DEVICES"))
    try:
        bound = start(port)
    except OSError as exc:  # a port in use must not stop the worker from scoring
        log.error("metrics_unavailable", port=port, error=str(exc))
        return
    log.info("metrics_listening", port=bound, url=f"http://0.0.0.0:{bound}/metrics")
