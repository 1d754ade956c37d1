"""`producer serve`: the HTTP service (FastAPI) next to the workers: /v1/rerank, the jobs API, a web
console at / and Prometheus metrics at /metrics, all thin over the producer API (producer/) and the ledger."""

from producer.service.app import create_app

__all__ = ["create_app"]
