"""Cascades: two stages in one job. Stage 1 scores every pair with the job's model; each query's top
``then_top`` pairs are re-scored by ``then_model`` (chunks.stage = 2) into scores.stage2_score.
Adding nullable columns (and one with a constant default) rewrites no rows on either database.

Revision ID: 0006_cascade
Revises: 0005_partitioned_scores
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_cascade"
down_revision = "0005_partitioned_scores"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("then_model", sa.Text()))
    op.add_column("jobs", sa.Column("then_top", sa.Integer()))
    op.add_column("jobs", sa.Column("then_context", sa.String(64)))
    op.add_column("chunks", sa.Column("stage", sa.Integer(), nullable=False, server_default="1"))
    op.add_column("scores", sa.Column("stage2_score", sa.Double()))
    op.add_column("scores", sa.Column("stage2_error", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("scores") as batch:
        batch.drop_column("stage2_error")
        batch.drop_column("stage2_score")
    with op.batch_alter_table("chunks") as batch:
        batch.drop_column("stage")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("then_context")
        batch.drop_column("then_top")
        batch.drop_column("then_model")
