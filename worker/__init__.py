"""rerankq worker: `celery -A worker worker -Q gpu`."""

from worker.celery_app import app

__all__ = ["app"]
