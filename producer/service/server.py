"""Run the service with uvicorn (`producer serve`)."""

from __future__ import annotations

import sys

from producer.service.security import exposure_warning
from rerankq.settings import Settings, get_settings


def serve(host: str = "127.0.0.1", port: int = 8000, settings: Settings | None = None) -> None:
    import uvicorn

    from producer.service.app import create_app

    settings = settings or get_settings()
    warning = exposure_warning(host, bool(settings.api_key and settings.api_key.get_secret_value()))
    if warning:
        bar = "!" * min(100, len(warning))
        sys.stderr.write(f"\n{bar}\n{warning}\n{bar}\n\n")
        sys.stderr.flush()
    app = create_app(settings)  # database checked before the port opens
    uvicorn.run(app, host=host, port=port, log_level=settings.log_level.lower(), proxy_headers=False)
