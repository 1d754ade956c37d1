"""Worker liveness registry and leases (one sweeper at a time).

Revision ID: 0002_workers
Revises: 0001_ledger
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_workers"
down_revision = "0001_ledger"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("engine", sa.JSON(), nullable=False),
        sa.Column("fingerprint", sa.Text()),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("holding", sa.JSON(), nullable=False),
        sa.Column("pairs_scored", sa.BigInteger(), nullable=False),
        sa.Column("pairs_per_second", sa.Double()),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_workers_last_seen", "workers", ["last_seen"])
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_chunks_state_worker", "chunks", ["state", "worker"])


def downgrade() -> None:
    op.drop_index("ix_chunks_state_worker", "chunks")
    op.drop_table("leases")
    op.drop_index("ix_workers_last_seen", "workers")
    op.drop_table("workers")
