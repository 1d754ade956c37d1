"""PostgreSQL: ``scores`` LIST-partitioned by job_id, one partition per job (rerankq/store/partitions.py),
so `producer prune` drops a job's scores instead of deleting them row by row. SQLite: nothing changes.

Converting a ledger moves every score row once (per job: bulk copy, then its primary key built in one
pass, then attach). Stop workers and producers first: the old table is locked for the whole migration.
Measured: bench/RESULTS.md ("Partitioned scores").

Revision ID: 0005_partitioned_scores
Revises: 0004_job_model
Create Date: 2026-12-01
"""

import logging
import time

from alembic import op
from sqlalchemy import text

from rerankq.store.partitions import COLUMNS, ensure_partition, partition_name

revision = "0005_partitioned_scores"
down_revision = "0004_job_model"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

PARENT = (
    "CREATE TABLE scores (job_id varchar(36) NOT NULL, query_id text NOT NULL, doc_id text NOT NULL, "
    "chunk_id integer NOT NULL, score double precision, error text, "
    "CONSTRAINT scores_pkey PRIMARY KEY (job_id, query_id, doc_id)) PARTITION BY LIST (job_id)"
)


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    t0 = time.perf_counter()
    conn.execute(text("LOCK TABLE jobs, scores IN ACCESS EXCLUSIVE MODE"))
    conn.execute(text("ALTER TABLE scores RENAME TO scores_unpartitioned"))
    conn.execute(text("ALTER INDEX scores_pkey RENAME TO scores_unpartitioned_pkey"))
    conn.execute(text(PARENT))
    job_ids = conn.execute(text("SELECT id FROM jobs ORDER BY created_at")).scalars().all()
    for job_id in job_ids:
        partition_name(job_id)  # a job id that is not a UUID stops the migration here, before any copy
    moved = 0
    for job_id in job_ids:
        name = partition_name(job_id)
        conn.execute(text(f"CREATE TABLE {name} (LIKE scores INCLUDING DEFAULTS INCLUDING CONSTRAINTS, "
                          f"CONSTRAINT {name}_job CHECK (job_id = '{job_id}'))"))  # fmt: skip
        moved += conn.execute(
            text(f"INSERT INTO {name} ({COLUMNS}) SELECT {COLUMNS} FROM scores_unpartitioned WHERE job_id = :job"),
            {"job": job_id},
        ).rowcount
        ensure_partition(conn, job_id)  # primary key in one pass, then attach (the CHECK skips the scan)
    left = conn.execute(text("SELECT count(*) FROM scores_unpartitioned")).scalar() - moved
    if left:  # rows of jobs deleted without their scores (no foreign key on PostgreSQL since 0003)
        log.warning("0005: %d score rows belong to no job and were not kept", left)
    conn.execute(text("DROP TABLE scores_unpartitioned"))
    log.info("0005: %d jobs, %d score rows moved in %.1f s", len(job_ids), moved, time.perf_counter() - t0)


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    conn.execute(text("ALTER TABLE scores RENAME TO scores_partitioned"))
    conn.execute(text("ALTER INDEX scores_pkey RENAME TO scores_partitioned_pkey"))
    conn.execute(text(PARENT.split(" PARTITION BY")[0]))
    conn.execute(text(f"INSERT INTO scores ({COLUMNS}) SELECT {COLUMNS} FROM scores_partitioned"))
    conn.execute(text("DROP TABLE scores_partitioned"))  # and its partitions
