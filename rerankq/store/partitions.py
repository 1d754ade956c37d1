"""One PostgreSQL partition of ``scores`` per job (LIST on job_id), so retiring a job is a DETACH and a
DROP instead of one delete per row. SQLite keeps one ``scores`` table: every function is a no-op there.

Locks (PostgreSQL 15, "ALTER TABLE" and "Table Partitioning" in its docs): the partition is created as a
plain table of its own (no lock on ``scores``), then ``ATTACH PARTITION`` takes SHARE UPDATE EXCLUSIVE
on ``scores`` (and ACCESS EXCLUSIVE on the new, empty table only). Workers writing other jobs hold ROW
EXCLUSIVE on ``scores``, which does not conflict with it; only another attach or detach waits.
A CHECK constraint equal to the partition's bound lets the attach skip its validation scan.
``DETACH PARTITION … CONCURRENTLY`` takes the same SHARE UPDATE EXCLUSIVE, then waits for the
transactions that use ``scores``; the detached table is then dropped alone (dropping a partition that
is still attached would take ACCESS EXCLUSIVE on ``scores``)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from rerankq.logs import get_logger

log = get_logger("rerankq.partitions")

_JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_PARTITION = re.compile(r"scores_([0-9a-f]{32})")
COLUMNS = "job_id, query_id, doc_id, chunk_id, score, error"


def partition_name(job_id: str) -> str:
    """``scores_<uuid hex>``. The id is checked to be a lower-case UUID first: it is written into DDL as
    a literal (DDL takes no bound parameters), so nothing else may ever get there."""
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise ValueError(f"not a job id (a lower-case UUID): {job_id!r}")
    return "scores_" + job_id.replace("-", "")


def job_id_of(table: str) -> str | None:
    """The job id a partition's name was made from (None: not a job partition's name)."""
    m = _PARTITION.fullmatch(table)
    if m is None:
        return None
    h = m.group(1)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def create_table_sql(job_id: str) -> str:
    """The job's table, not attached yet and without its primary key (bulk loads are faster without)."""
    name = partition_name(job_id)
    return (
        f"CREATE TABLE {name} (LIKE scores INCLUDING DEFAULTS INCLUDING CONSTRAINTS, "
        f"CONSTRAINT {name}_job CHECK (job_id = '{job_id}'))"
    )


def is_postgresql(conn: Session | Connection) -> bool:
    return conn.get_bind().dialect.name == "postgresql" if isinstance(conn, Session) else conn.dialect.name == "postgresql"


def ensure_partition(conn: Session | Connection, job_id: str) -> None:
    """Make the job's partition exist, keyed and attached, in the caller's transaction (the job's own).
    A table bulk-loaded earlier in that transaction (rerankq/store/reuse_stage.py) gets its key and is
    attached; an attached one is left alone."""
    if not is_postgresql(conn):
        return
    name = partition_name(job_id)
    exists, keyed, attached = conn.execute(
        text(
            "SELECT c.oid IS NOT NULL, "
            "EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary), "
            "EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = c.oid) "
            "FROM (SELECT to_regclass(:name)::oid AS oid) c"
        ),
        {"name": name},
    ).one()
    if not exists:
        conn.execute(text(create_table_sql(job_id)))
    if not keyed:
        conn.execute(text(f"ALTER TABLE {name} ADD CONSTRAINT {name}_pkey PRIMARY KEY (job_id, query_id, doc_id)"))
    if not attached:
        conn.execute(text(f"ALTER TABLE scores ATTACH PARTITION {name} FOR VALUES IN ('{job_id}')"))


def retire_partition(engine: Engine, job_id: str) -> bool:
    """Detach the job's partition concurrently and drop it: no row is deleted, workers writing other
    jobs are never blocked. Needs its own autocommit connection (CONCURRENTLY cannot run in a
    transaction block). A detach left half-done (interrupted after its first transaction) is
    finished with FINALIZE. False when there was nothing to drop."""
    name = partition_name(job_id)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        pending = conn.execute(
            text(
                "SELECT h.inhdetachpending FROM pg_inherits h "
                "WHERE h.inhrelid = to_regclass(:name) AND h.inhparent = 'scores'::regclass"
            ),
            {"name": name},
        ).scalar()
        if pending is not None:
            mode = "FINALIZE" if pending else "CONCURRENTLY"
            try:
                conn.execute(text(f"ALTER TABLE scores DETACH PARTITION {name} {mode}"))
            except DBAPIError as exc:  # e.g. another prune detaching it right now: it will drop it
                log.warning("partition_detach_failed", job_id=job_id, error=str(exc.orig).splitlines()[0][:200])
                return False
        dropped = conn.execute(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": name}).scalar()
        conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
    return bool(dropped)


def orphans(engine: Engine) -> Iterator[str]:
    """Job ids whose partition (attached, or detached and not dropped) outlived its job row: what a
    prune interrupted between deleting the job and dropping its partition leaves behind. A job being
    created is never one: its table is invisible until the transaction that also writes its row commits."""
    if engine.dialect.name != "postgresql":
        return
    with engine.connect() as conn:
        names = conn.execute(
            text(
                "SELECT c.relname FROM pg_class c "
                "WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r' "
                "AND c.relname ~ '^scores_[0-9a-f]{32}$' "
                "AND NOT EXISTS (SELECT 1 FROM jobs j WHERE replace(j.id, '-', '') = substr(c.relname, 8))"
            )
        ).scalars().all()
    for name in names:
        job_id = job_id_of(name)
        if job_id is not None:
            yield job_id
