"""Content-addressed score cache, the scoring contexts workers ran with, and jobs.pairs_reused.

Revision ID: 0003_score_cache
Revises: 0002_workers
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_score_cache"
down_revision = "0002_workers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "score_cache",
        # sha256 of (scoring context, instruction, query, document): 32 bytes, see rerankq/score_key.py
        sa.Column("key", sa.LargeBinary(32), primary_key=True),
        sa.Column("score", sa.Double(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_score_cache_last_used", "score_cache", ["last_used"])
    op.create_table(
        "score_contexts",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("context", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
    )
    op.add_column("jobs", sa.Column("pairs_reused", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("score_context", sa.String(64)))
    if op.get_bind().dialect.name == "postgresql":
        # The per-row foreign-key trigger was ~45 % of copying a night's reused scores into a job
        # (bench/RESULTS.md). Every write of scores happens in a transaction that holds the job's row
        # (Ledger.finish_chunk locks it; reuse writes it first), and the one delete of jobs
        # (`producer prune`) deletes their scores itself, so the constraint guarded nothing more.
        # SQLite keeps it: its check is cheap, and dropping it there would rebuild the table.
        op.drop_constraint("scores_job_id_fkey", "scores", type_="foreignkey")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.create_foreign_key("scores_job_id_fkey", "scores", "jobs", ["job_id"], ["id"], ondelete="CASCADE")
    op.drop_column("jobs", "score_context")
    op.drop_column("jobs", "pairs_reused")
    op.drop_table("score_contexts")
    op.drop_index("ix_score_cache_last_used", "score_cache")
    op.drop_table("score_cache")
