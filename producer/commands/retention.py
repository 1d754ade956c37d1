"""Keeping the ledger small: prune old jobs and unused score-cache entries."""

from __future__ import annotations

from typing import Annotated

import typer

from producer.commands.common import friendly

DryRun = Annotated[bool, typer.Option("--dry-run", help="report what would be deleted")]


def _age(value: str, option: str) -> float:
    """Seconds in an age like ``30d``. A bare number is refused: these commands delete, and ``30`` meant
    30 seconds to the parser where a person meant 30 days."""
    from producer.errors import InputError
    from rerankq.store.retention import parse_age

    if value.strip().replace(".", "", 1).isdigit():
        raise InputError(f"{option} {value.strip()}: a bare number is refused, give a unit: e.g. {value.strip()}d (s, m, h, d or w)")
    try:
        return parse_age(value)
    except ValueError as exc:
        raise InputError(str(exc)) from None


@friendly
def prune(
    jobs_older_than: Annotated[
        str | None, typer.Option("--jobs-older-than", help="an age with its unit: e.g. 30d, 12h (s, m, h, d, w)")
    ] = None,
    audit_older_than: Annotated[
        str | None, typer.Option("--audit-older-than", help="also delete audit-trail events older than this, e.g. 365d")
    ] = None,
    dry_run: DryRun = False,
) -> None:
    """Delete finished jobs (and their chunks and scores) older than the age given, and batch files as old; with --audit-older-than, audit-trail events older than that age too (the trail is kept until then).

    Queued and running jobs, and jobs with a chunk still running, are never touched."""
    from producer.errors import InputError

    if jobs_older_than is None and audit_older_than is None:
        raise InputError("say what to prune: --jobs-older-than AGE, --audit-older-than AGE, or both")
    verb = "would delete" if dry_run else "deleted"
    if audit_older_than is not None:
        from rerankq.settings import get_settings
        from rerankq.store.audit import AuditLog

        settings = get_settings()
        audit = AuditLog(settings.database, settings.connect_timeout)  # checks the ledger's revision, as Ledger does
        events, cutoff = audit.prune(_age(audit_older_than, "--audit-older-than"), dry_run)
        print(f"{verb} {events:,} audit event(s) from before {cutoff:%Y-%m-%d %H:%M:%S} UTC")
    if jobs_older_than is not None:
        _prune_jobs(_age(jobs_older_than, "--jobs-older-than"), dry_run, verb)


def _prune_jobs(older_than: float, dry_run: bool, verb: str) -> None:
    from producer.job_control import ledger
    from rerankq.store.retention import prune_jobs

    r = prune_jobs(ledger(), older_than, dry_run)
    print(f"{verb} {len(r.jobs)} job(s) finished before {r.cutoff:%Y-%m-%d %H:%M:%S} UTC: {r.chunks:,} chunk(s), {r.scores:,} score row(s)")
    for job_id in r.jobs:
        print(f"  {job_id}")
    from producer.batch_files import prune_files  # batch files and outputs under RERANKQ_FILES_DIR, same age
    from rerankq.settings import get_settings

    files, size = prune_files(get_settings(), older_than, dry_run)
    if files:
        print(f"{verb} {files} batch file(s) ({size:,} bytes) no unfinished batch reads")


@friendly
def cache_prune(
    unused_for: Annotated[str, typer.Option("--unused-for", help="an age with its unit, e.g. 30d: entries neither written nor reused since")],
    dry_run: DryRun = False,
) -> None:
    """Delete score-cache entries unused for the age given (safe while workers run).

    Use is recorded by the UTC day (a generation of entries), not per entry: an entry is kept at least to the end of its generation's day, up to 7 days after it was written or re-homed, so an age under 1d deletes nothing written today, and entries live up to that much longer than the age given."""
    from producer.commands.common import err
    from producer.job_control import ledger
    from rerankq.settings import get_settings
    from rerankq.store.cache_gens import DAY, SPREAD_DAYS
    from rerankq.store.score_cache import prune_cache

    unused = _age(unused_for, "--unused-for")
    if unused < DAY:
        err.print(
            f"note: --unused-for {unused_for.strip()} is under a day, the cache's granularity: use is recorded by the UTC "
            f"day, and an entry is kept at least to the end of its generation's day (up to {SPREAD_DAYS} days after it "
            "was written or re-homed), so nothing written today is deleted; give days, e.g. --unused-for 30d",
            markup=False, highlight=False,
        )  # fmt: skip
    r = prune_cache(ledger(), unused, get_settings().cache_touch_interval, dry_run)
    verb = "would delete" if dry_run else "deleted"
    print(f"{verb} {r.removed:,} cache entr{'y' if r.removed == 1 else 'ies'} unused since {r.cutoff:%Y-%m-%d %H:%M:%S} UTC; {r.kept:,} kept")


@friendly
def cache_info() -> None:
    """Entries in the score cache and the oldest last use."""
    from producer.job_control import ledger
    from rerankq.store.score_cache import cache_size

    n, oldest = cache_size(ledger())
    print(f"{n:,} entries" + (f", least recently used {oldest:%Y-%m-%d %H:%M:%S} UTC" if oldest else ""))
