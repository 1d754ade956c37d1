"""`producer`: submit, follow and export rerank jobs (typer + rich)."""

from __future__ import annotations

import functools
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from schemas import JobState, JobStatus

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
app.add_typer(db_app, name="db")
app.add_typer(cache_app, name="cache")
app.add_typer(dev_app, name="dev")
out = Console()
err = Console(stderr=True)
ERROR_EXIT = 3
JobArg = Annotated[str, typer.Argument(metavar="JOB", help="a job id, or a unique prefix of one (as with git)")]


def friendly(fn):  # noqa: ANN001, ANN201
    """Known failures print one clear line (no traceback, no credentials) and exit 3."""

    @functools.wraps(fn)
    def run(*args, **kwargs):  # noqa: ANN202
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # a database or broker failure we did not word: still no URL in it
            if isinstance(exc, typer.Exit):
                raise
            # imported only on failure: a read-only command must not pay for pyarrow or the tokenizer
            from producer.api import BrokerUnavailable, InputError
            from rerankq.manifest_source import ManifestError
            from rerankq.store.db import DatabaseError
            from rerankq.store.errors import UnknownJob

            if isinstance(exc, (BrokerUnavailable, InputError, ManifestError, DatabaseError, UnknownJob, TimeoutError)):
                err.print(f"error: {exc.args[0] if exc.args else exc}", markup=False, highlight=False, soft_wrap=True)
                raise typer.Exit(ERROR_EXIT) from None
            from sqlalchemy.exc import DBAPIError

            if isinstance(exc, DBAPIError):
                reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
                err.print(f"error: database: {reason}", markup=False, highlight=False, soft_wrap=True)
                raise typer.Exit(ERROR_EXIT) from None
            raise

    return run


def _ago(when) -> str:  # noqa: ANN001
    from datetime import UTC, datetime

    seconds = max(0.0, (datetime.now(UTC) - when).total_seconds())
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def _when(value) -> str:  # noqa: ANN001
    """A ledger timestamp to the second, in UTC (microseconds say nothing to a person)."""
    from datetime import UTC

    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else ""


def _status_table(st: JobStatus, waiting: str | None = None) -> Table:
    table = Table(show_header=False, box=None)
    rows = [
        ("job", st.job_id),
        ("name", st.name or ""),
        ("state", st.state.value),
        ("pairs", f"{st.pairs_scored:,} scored, {st.pairs_reused:,} reused, {st.pairs_failed:,} failed, {st.pairs_total:,} total"),
        ("chunks", ", ".join(f"{k} {v}" for k, v in st.chunks.model_dump().items() if v) + f" (of {st.chunks_total})"),
        ("created", _when(st.created_at)),
        ("started", _when(st.started_at)),
        ("finished", _when(st.finished_at)),
    ]
    if waiting and not st.state.terminal:
        rows.insert(3, ("waiting", waiting))
    if st.elapsed_seconds is not None:
        rows.append(("elapsed", f"{st.elapsed_seconds:.1f} s, {st.pairs_per_second or 0:.1f} pairs/s"))
    for h in st.holders:
        seen = f"last seen {_ago(h.last_seen)}" if h.last_seen else "never registered"
        rows.append(("held by", f"chunk {h.chunk}: {h.worker_id} ({'alive' if h.alive else 'presumed dead'}, {seen})"))
    rows += [("error", e) for e in st.errors]
    for k, v in rows:
        table.add_row(k, v)
    return table


@app.command()
@friendly
def submit(
    manifest: Annotated[str, typer.Argument(help="Parquet file, directory of Parquet files, or s3:// gs:// file:// URI")],
    instruction: Annotated[str | None, typer.Option(help="instruction for rows without one")] = None,
    name: Annotated[str | None, typer.Option(help="a name to find the job by")] = None,
    chunk_size: Annotated[int | None, typer.Option(min=1, help="pairs per chunk (default RERANKQ_CHUNK_SIZE)")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="follow the job until it ends")] = False,
    reuse: Annotated[
        bool, typer.Option("--reuse/--no-reuse", help="copy cached scores of unchanged pairs (--no-reuse: score every pair)")
    ] = True,
) -> None:
    """Validate a manifest, record the job and enqueue its chunks. Prints the job id last."""
    from producer.api import submit_manifest

    def report(line: str) -> None:
        err.print(line, markup=False, highlight=False, soft_wrap=True)

    job_id = submit_manifest(manifest, instruction=instruction, name=name, chunk_size=chunk_size, reuse=reuse, report=report)
    if wait:
        code = _follow(job_id, None)
        print(job_id)
        raise typer.Exit(code)
    print(job_id)


@app.command()
@friendly
def rerank(
    query: Annotated[str, typer.Option("--query", "-q")],
    doc: Annotated[list[str], typer.Option("--doc", "-d", help="a document; repeat for more")],
    instruction: Annotated[str | None, typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait; then the job is cancelled")] = 600,
) -> None:
    """Rank a few documents for one query through the workers (documents travel in the message)."""
    from producer.api import rerank as run

    def say(_st: JobStatus, note: str) -> None:  # what the job waits for, each time that changes
        err.print(note, markup=False, highlight=False, soft_wrap=True)

    ranked = run(query, doc, instruction, timeout=timeout, on_wait=say)
    if as_json:
        print(json.dumps([asdict(r) for r in ranked], ensure_ascii=False, indent=2))
        return
    table = Table("rank", "score", "document")
    for r in ranked:
        table.add_row(str(r.rank or "-"), "-" if r.score is None else f"{r.score:.6f}", r.document if r.error is None else f"{r.document} [{r.error}]")
    out.print(table)


@app.command()
@friendly
def status(job: JobArg, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """State, pairs scored/failed, chunks and timings of a job."""
    from producer.api import status as job_status
    from producer.api import waiting_note

    st = job_status(job)
    if as_json:
        print(st.model_dump_json(indent=2))
    else:
        out.print(_status_table(st, None if st.state.terminal else waiting_note(st)))


def _follow(job_id: str, timeout: float | None) -> int:
    """A progress bar whose text says what the job waits for (a worker to start, to load, ...)."""
    from producer.api import ledger, waiting_note

    store = ledger()
    job_id = store.resolve_job(job_id)  # an unknown job fails here, before a progress bar is drawn
    deadline = None if timeout is None else time.monotonic() + timeout
    columns = [TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    said = ""
    with Progress(*columns, console=err, transient=False) as progress:
        task = progress.add_task("queued", total=None)
        while True:
            st = store.status(job_id)
            done = st.pairs_scored + st.pairs_failed + st.pairs_reused
            if st.state.terminal:
                progress.update(task, total=st.pairs_total, completed=done, description=st.state.value)
                break
            note = waiting_note(st)
            progress.update(task, total=st.pairs_total, completed=done, description=note)
            if note != said and not err.is_terminal:  # no live bar (a log, a pipe): one line per change
                err.print(note, markup=False, highlight=False, soft_wrap=True)
            said = note
            if deadline is not None and time.monotonic() >= deadline:
                err.print(f"timeout: job {job_id} is still {note}", markup=False, highlight=False, soft_wrap=True)
                return 2
            time.sleep(0.5)
    err.print(f"job {job_id}: {st.state.value} ({st.pairs_scored:,} scored, {st.pairs_reused:,} reused, {st.pairs_failed:,} failed)")
    for e in st.errors[:5]:
        err.print(f"  {e}", markup=False, highlight=False)
    return 0 if st.state == JobState.completed else 1


@app.command()
@friendly
def wait(job: JobArg, timeout: Annotated[float | None, typer.Option(help="seconds")] = None) -> None:
    """Follow a job: exit 0 completed, 1 failed/completed_with_errors/cancelled, 2 timeout."""
    raise typer.Exit(_follow(job, timeout))


@app.command("list")
@friendly
def list_jobs(limit: int = 50, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Recent jobs, newest first."""
    from producer.api import ledger

    jobs = ledger().list_jobs(limit)
    if as_json:
        print(json.dumps([j.model_dump(mode="json") for j in jobs], indent=2))
        return
    # Ids whole and on one line at any width: they are copied into other commands (a unique prefix
    # is enough for those, as with git). The name goes last and folds when space runs out.
    table = Table("job", "state", "pairs", "created (UTC)", "name", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.columns[0].no_wrap, table.columns[0].min_width = True, max((len(j.job_id) for j in jobs), default=3)
    table.columns[3].no_wrap = True
    for column in table.columns[1:]:
        column.overflow = "fold"
    for j in jobs:
        done = f"{j.pairs_scored + j.pairs_failed:,}/{j.pairs_total:,}"
        table.add_row(j.job_id, j.state.value, done, _when(j.created_at)[:16], j.name or "")
    out.print(table)


@app.command("workers")
@friendly
def list_workers(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Workers: state (loading, ready, busy, stopped, dead), model, chunk held, pairs/s, last seen."""
    from producer.api import workers

    found = workers()
    if as_json:
        print(json.dumps([w.model_dump(mode="json") for w in found], indent=2))
        return
    table = Table("state", "model", "holding", "pairs/s", "scored", "last seen", "worker")
    table.columns[-1].overflow = table.columns[1].overflow = "fold"  # ids are copied whole
    for w in found:
        table.add_row(
            w.state,
            w.model,
            ", ".join(map(str, w.holding)) or "-",
            "-" if w.pairs_per_second is None else f"{w.pairs_per_second:,.0f}",
            f"{w.pairs_scored:,}",
            _ago(w.last_seen),
            w.worker_id,
        )
    out.print(table)
    if not any(w.alive for w in found):
        err.print("no worker alive: start one with `celery -A worker worker -Q gpu`")


@app.command()
@friendly
def cancel(job: JobArg) -> None:
    """Stop a job: no further chunk is scored; scores already written stay."""
    from producer.api import cancel as run

    print(run(job).value)


@app.command()
@friendly
def resume(job: JobArg) -> None:
    """Re-enqueue the chunks the ledger does not hold as done (after the broker lost its queue)."""
    from producer.api import resume as run

    print(f"{run(job)} chunk(s) enqueued")


@app.command()
@friendly
def retry(job: JobArg) -> None:
    """Run the failed chunks of a job again, and only those."""
    from producer.api import retry_failed

    print(f"{retry_failed(job)} failed chunk(s) enqueued")


@app.command()
@friendly
def export(
    job: JobArg,
    out_file: Annotated[Path, typer.Option("--out", help="FILE.parquet")],
    changes_since: Annotated[
        str | None, typer.Option("--changes-since", metavar="OLD_JOB", help="only what changed since OLD_JOB")
    ] = None,
    tolerance: Annotated[float, typer.Option(min=0, help="with --changes-since: score differences up to this are unchanged")] = 0.0,
) -> None:
    """Write query_id, doc_id, score, rank (1 = best in its query) and error to Parquet.

    With --changes-since OLD_JOB: only pairs whose score or rank differs from OLD_JOB, new pairs and
    removed pairs, as query_id, doc_id, change (new|removed|changed|moved), old_score, new_score,
    old_rank, new_rank, error."""
    import os

    from producer.api import InputError, ledger
    from producer.export import export_parquet

    store = ledger()
    job = store.resolve_job(job)  # an unknown job fails here, before any file is created
    if changes_since is not None:
        changes_since = store.resolve_job(changes_since)
    try:
        if changes_since is not None:
            from producer.changes import export_changes

            counts = export_changes(store, changes_since, job, out_file, tolerance)
            detail = ", ".join(f"{v:,} {k}" for k, v in counts.items())
            err.print(f"{sum(counts.values()):,} rows written to {out_file} ({detail})")
            return
        rows = export_parquet(store, job, out_file)
    except OSError as exc:  # no such directory, no permission, disk full ...
        raise InputError(f"cannot write {out_file}: {os.strerror(exc.errno) if exc.errno else exc}") from None
    err.print(f"{rows:,} rows written to {out_file}")


@app.command()
@friendly
def diff(
    old_job: str,
    job: str,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="compare each query's top k")] = 10,
    tolerance: Annotated[float, typer.Option(min=0, help="score differences up to this are unchanged")] = 0.0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """What changed from OLD_JOB to JOB: pairs unchanged, changed, moved, new, removed; queries whose top-k changed."""
    from dataclasses import asdict as as_dict

    from producer.api import ledger
    from producer.changes import diff as run

    d = run(ledger(), old_job, job, top_k, tolerance)
    if as_json:
        print(json.dumps(as_dict(d), indent=2))
        return
    table = Table(show_header=False, box=None)
    for k, v in (
        ("unchanged", d.unchanged), ("changed", d.changed), ("moved", d.moved), ("new", d.new), ("removed", d.removed),
        (f"queries with another top {d.top_k}", d.queries_top_k_changed),
    ):  # fmt: skip
        table.add_row(k, f"{v:,}")
    if d.examples:
        table.add_row("e.g.", ", ".join(d.examples))
    out.print(table)


def _age(value: str) -> float:
    from producer.api import InputError
    from rerankq.store.retention import parse_age

    try:
        return parse_age(value)
    except ValueError as exc:
        raise InputError(str(exc)) from None


@app.command()
@friendly
def prune(
    jobs_older_than: Annotated[str, typer.Option("--jobs-older-than", help="e.g. 30d, 12h")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="report what would be deleted")] = False,
) -> None:
    """Delete finished jobs (and their chunks and scores) older than the age given. Queued and
    running jobs, and jobs with a chunk still running, are never touched."""
    from producer.api import ledger
    from rerankq.store.retention import prune_jobs

    r = prune_jobs(ledger(), _age(jobs_older_than), dry_run)
    verb = "would delete" if dry_run else "deleted"
    print(f"{verb} {len(r.jobs)} job(s) finished before {r.cutoff:%Y-%m-%d %H:%M:%S} UTC: {r.chunks:,} chunk(s), {r.scores:,} score row(s)")
    for job_id in r.jobs:
        print(f"  {job_id}")


@cache_app.command("prune")
@friendly
def cache_prune(
    unused_for: Annotated[str, typer.Option("--unused-for", help="e.g. 30d: entries neither written nor reused since")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="report what would be deleted")] = False,
) -> None:
    """Delete score-cache entries unused for the age given (safe while workers run). A reuse records
    its use once the last record is RERANKQ_CACHE_TOUCH_INTERVAL old (7 days), so entries are kept up
    to that much longer."""
    from producer.api import ledger
    from rerankq.settings import get_settings
    from rerankq.store.score_cache import prune_cache

    r = prune_cache(ledger(), _age(unused_for), get_settings().cache_touch_interval, dry_run)
    verb = "would delete" if dry_run else "deleted"
    print(f"{verb} {r.removed:,} cache entr{'y' if r.removed == 1 else 'ies'} unused since {r.cutoff:%Y-%m-%d %H:%M:%S} UTC; {r.kept:,} kept")


@cache_app.command("info")
@friendly
def cache_info() -> None:
    """Entries in the score cache and the oldest last use."""
    from producer.api import ledger
    from rerankq.store.score_cache import cache_size

    n, oldest = cache_size(ledger())
    print(f"{n:,} entries" + (f", least recently used {oldest:%Y-%m-%d %H:%M:%S} UTC" if oldest else ""))


@db_app.command("upgrade")
@friendly
def db_upgrade() -> None:
    """Apply the migrations (same as `alembic upgrade head`)."""
    from rerankq.settings import get_settings
    from rerankq.store.db import safe_url, upgrade

    settings = get_settings()
    rev = upgrade(settings.database)
    print(f"{safe_url(settings.database)} at revision {rev}")


@db_app.command("current")
@friendly
def db_current() -> None:
    """The database's revision and the one this code needs."""
    from rerankq.settings import get_settings
    from rerankq.store.db import current_revision, get_engine, head_revision

    settings = get_settings()
    print(f"database {current_revision(get_engine(settings.database))}, code {head_revision()}")


@dev_app.command("tiny-model")
def tiny_model(directory: Path, seed: int = 0) -> None:
    """Write a random-weight Qwen3 reranker with the real Qwen3 tokenizer (offline tests and demos)."""
    from producer.tiny_model import write_tiny_model

    print(write_tiny_model(directory, seed))


@app.command()
@friendly
def serve(
    host: Annotated[str, typer.Option(help="address to listen on (non-loopback without RERANKQ_API_KEY: warning)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
) -> None:
    """The HTTP service: /v1/rerank, the jobs API (/docs), the web console at / and /metrics."""
    try:
        from producer.service.server import serve as run
    except ImportError as exc:
        from producer.api import InputError

        raise InputError(f"`producer serve` needs the service extra: pip install 'rerankq[service]' ({exc})") from None
    run(host, port)


@app.command()
@friendly
def demo(
    pairs_per_query: int = 25,
    queries: int = 8,
    workdir: Annotated[
        Path | None, typer.Option(help="where the sample corpus, export and worker log go [default: ~/.cache/rerankq/demo]")
    ] = None,
) -> None:
    """The main job end to end on this machine: sample corpus → worker → SQL → export → top documents."""
    from producer.demo import default_workdir, run_demo

    raise typer.Exit(run_demo(workdir or default_workdir(), queries, pairs_per_query, out, err))


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
    err.print(f"error: invalid setting {problems}", markup=False, highlight=False, soft_wrap=True)
    return False


def main() -> None:
    if not _settings_ok():
        sys.exit(ERROR_EXIT)
    _quiet_logs()
    app()


def _quiet_logs() -> None:
    """stdout is for results (`--json`, job ids): events go to stderr, and only warnings and worse,
    since the commands already say what they did (RERANKQ_LOG_LEVEL=DEBUG shows everything)."""
    from rerankq.logs import configure_logging
    from rerankq.settings import get_settings

    settings = get_settings()
    level = settings.log_level if settings.log_level.upper() == "DEBUG" else "WARNING"
    configure_logging(level, settings.log_json)


if __name__ == "__main__":
    sys.exit(main())
