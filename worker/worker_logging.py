"""The worker program's logging, hooked into Celery's start-up signals.

``celeryd_init`` comes first (before Celery's privilege check warns): JSON logs are configured there,
fds 1/2 go through the JSON relay (worker/stdio_json.py) and Celery's plain-text banner is replaced by
one ``celery_worker_starting`` event. Answering ``setup_logging`` keeps Celery from hijacking the
root logger or redirecting stdout/stderr with its own formats."""

from __future__ import annotations

from celery.signals import celeryd_after_setup, celeryd_init, setup_logging

from rerankq.logs import configure_logging, get_logger
from rerankq.redact import mask_broker_url
from rerankq.settings import get_settings

log = get_logger("rerankq.worker")


@celeryd_init.connect
def _worker_program_starts(instance=None, **_: object) -> None:  # noqa: ANN001
    settings = get_settings()
    stream = None
    if settings.log_json:
        from worker.stdio_json import install

        stream = install()
        if instance is not None:
            instance.quiet = True  # the banner is ASCII art on stdout: logged as one event instead
    configure_logging(settings.log_level, settings.log_json, stream)


@setup_logging.connect
def _celery_setup_logging(**_: object) -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)


@celeryd_after_setup.connect
def _banner(sender=None, instance=None, conf=None, **_: object) -> None:  # noqa: ANN001
    if not get_settings().log_json or instance is None:
        return
    queues = sorted(instance.app.amqp.queues.consume_from)
    log.info(
        "celery_worker_starting",
        hostname=str(sender),
        broker=mask_broker_url(instance.app.conf.broker_url or ""),
        pool=str(instance.app.conf.worker_pool),
        concurrency=instance.concurrency,
        queues=queues,
    )
