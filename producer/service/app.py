"""The FastAPI app: rerank, jobs API, console and metrics over the same core as the CLI (producer/)."""

from __future__ import annotations

from fastapi import FastAPI, Security
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles

from producer.job_control import ledger
from producer.live_client import LiveClient
from producer.service import audit, batches, console, errors, files, jobs, metrics, rerank, score
from producer.service.limits import BodyLimit
from producer.service.security import Guard
from producer.service.throttle import Throttle
from rerankq.settings import Settings, get_settings
from rerankq.store.audit import AuditLog
from rerankq.store.batches import BatchStore
from rerankq.store.keys import KeyStore
from rerankq.store.registry import Registry


def create_app(settings: Settings | None = None) -> FastAPI:
    """One app per settings; the ledger is checked (database at this code's migration) at creation."""
    settings = settings or get_settings()
    app = FastAPI(
        title="rerankq",
        summary="Qwen3-Reranker on GPU workers: the vLLM/Jina/Cohere rerank interface, batch jobs, console, metrics.",
        version="0.1.0",
        # documents the key (the Guard checks it: producer/service/security.py), so /docs has an Authorize button
        dependencies=[Security(HTTPBearer(auto_error=False, description="an API key: `producer keys create NAME`"))],
    )
    app.state.settings = settings
    app.state.api_key = (settings.api_key.get_secret_value() if settings.api_key else None) or None  # "" = no key
    app.state.ledger = ledger(settings)
    app.state.registry = Registry(settings.database, settings.connect_timeout)
    app.state.keys = KeyStore(settings.database, settings.connect_timeout, check=False)
    app.state.audit = AuditLog(settings.database, settings.connect_timeout, check=False)
    app.state.login_throttle = Throttle()
    app.state.metrics = metrics.ServiceMetrics(settings, app.state.ledger, app.state.registry)
    app.state.live = LiveClient(settings)  # the live lane's Redis side (producer/live_client.py)
    errors.install(app)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness of the service itself (no key needed)."""
        return {"status": "ok"}

    app.include_router(rerank.router)
    app.include_router(score.router)
    app.include_router(jobs.router)
    app.include_router(files.router)
    app.include_router(batches.router)
    app.include_router(metrics.router)
    app.include_router(audit.router)
    app.include_router(console.router)
    app.mount("/static", StaticFiles(directory=console.HERE / "static"), name="static")
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes, larger={"/v1/files": settings.max_file_bytes})
    app.add_middleware(
        Guard, ledger=app.state.ledger, keys=app.state.keys, env_key=app.state.api_key, open_=settings.open,
        metrics_open=settings.metrics_open, batches=BatchStore(settings.database, settings.connect_timeout, check=False),
    )  # added last: outermost, before the body is read (producer/service/security.py)
    return app
