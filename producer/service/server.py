"""Run the service with uvicorn (`producer serve`)."""

from __future__ import annotations

from producer.errors import InputError
from producer.service.security import exposure_refusal
from rerankq.settings import Settings, get_settings
from rerankq.store.keys import KeyStore


def serve(host: str = "127.0.0.1", port: int = 8000, settings: Settings | None = None, open_: bool = False) -> None:
    """Refuses to listen beyond loopback with no API key in force unless meant to be open (``--open``)."""
    import uvicorn

    from producer.service.app import create_app

    settings = settings or get_settings()
    if open_:
        settings = settings.model_copy(update={"open": True})
    app = create_app(settings)  # database checked before the port opens
    has_key = bool(app.state.api_key) or KeyStore(settings.database, settings.connect_timeout, check=False).any_key()
    refusal = exposure_refusal(host, has_key, settings.open)
    if refusal:
        raise InputError(refusal)
    uvicorn.run(app, host=host, port=port, log_level=settings.log_level.lower(), proxy_headers=False)
