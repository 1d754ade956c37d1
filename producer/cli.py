"""`producer`: submit, follow and export rerank jobs (typer + rich).

The commands live in ``producer/commands/``, one module per noun; this module assembles them, in
the order `producer --help` lists them, and checks the settings before any command runs."""

from __future__ import annotations

import sys

import typer

from producer.commands import calibrating, database, jobs, keys, results, retention, submitting, tools, workers
from producer.commands.common import ERROR_EXIT, say

# No locals in tracebacks: they could hold connection URLs with passwords.
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="Re-rank corpora with Qwen3-Reranker workers.",
)
db_app = typer.Typer(no_args_is_help=True, help="The SQL ledger.")
dev_app = typer.Typer(no_args_is_help=True, help="Offline development helpers.")
cache_app = typer.Typer(no_args_is_help=True, help="The score cache (scores reused across jobs).")
keys_app = typer.Typer(no_args_is_help=True, help="API keys of the HTTP service (per tenant, with scopes).")
app.add_typer(db_app, name="db")
app.add_typer(cache_app, name="cache")
app.add_typer(keys_app, name="keys")
app.add_typer(dev_app, name="dev")

app.command()(submitting.submit)
app.command()(submitting.rerank)
app.command()(jobs.status)
app.command()(jobs.wait)
app.command("list")(jobs.list_jobs)
app.command("workers")(workers.list_workers)
app.command()(jobs.cancel)
app.command()(jobs.resume)
app.command()(jobs.retry)
app.command()(jobs.rescore)
app.command()(results.export)
app.command()(results.diff)
app.command()(calibrating.calibrate)
app.command()(retention.prune)
cache_app.command("prune")(retention.cache_prune)
cache_app.command("info")(retention.cache_info)
db_app.command("upgrade")(database.db_upgrade)
db_app.command("current")(database.db_current)
dev_app.command("tiny-model")(tools.tiny_model)
app.command()(tools.serve)
keys_app.command("create")(keys.create)
keys_app.command("list")(keys.list_keys)
keys_app.command("revoke")(keys.revoke)
app.command("audit")(keys.audit_trail)
app.command()(tools.demo)


def _settings_ok() -> bool:
    """A bad RERANKQ_* value is one clear line (names only: values may be secrets)."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from rerankq.settings import get_settings

    try:
        get_settings()
        return True
    except ValidationError as exc:
        problems = "; ".join(f"RERANKQ_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
    except SettingsError as exc:  # e.g. a list setting that is not JSON
        field = str(exc).split('"')[1] if '"' in str(exc) else "?"
        problems = f"RERANKQ_{field.upper()}: cannot parse the value (list settings are JSON, e.g. [\"file\", \"s3\"])"
    say(f"error: invalid setting {problems}")
    return False


def _quiet_logs() -> None:
    """stdout is for results (`--json`, job ids): events go to stderr, and only warnings and worse,
    since the commands already say what they did (RERANKQ_LOG_LEVEL=DEBUG shows everything)."""
    from rerankq.logs import configure_logging
    from rerankq.settings import get_settings

    settings = get_settings()
    level = settings.log_level if settings.log_level.upper() == "DEBUG" else "WARNING"
    configure_logging(level, settings.log_json)


def main() -> None:
    if not _settings_ok():
        sys.exit(ERROR_EXIT)
    _quiet_logs()
    app()


if __name__ == "__main__":
    sys.exit(main())
