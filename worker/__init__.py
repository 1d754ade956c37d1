"""rerankq worker: `celery -A worker worker -Q gpu`.

The Celery app is created on first access (``worker.app``), so importing settings or the ledger
from here reads no configuration and connects to nothing.
"""

from typing import Any

import rerankq.torch_compat  # noqa: F401  (first: hides torch companions built for another torch)


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        from worker.celery_app import app

        return app
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
