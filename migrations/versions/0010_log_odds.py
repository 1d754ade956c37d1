"""Raw scores: each score's log-odds, logit(yes) − logit(no), beside its probability (issue 18), in the
job's rows (both stages of a cascade) and in the score cache. Nullable columns without a default:
on PostgreSQL an ``ADD COLUMN`` is then a catalogue change (no table rewrite, whatever the rows), and
on a partitioned ``scores`` it reaches every job's partition. Rows written before it keep NULL; the
scoring context changed with it (rerankq/score_key.py, ``SCORE_OUTPUT``), so no new job reuses them.

Revision ID: 0010_log_odds
Revises: 0009_batch_files
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_log_odds"
down_revision = "0009_batch_files"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("scores", sa.Column("logit", sa.Double()))
    op.add_column("scores", sa.Column("stage2_logit", sa.Double()))
    op.add_column("score_cache", sa.Column("logit", sa.Double()))


def downgrade() -> None:
    with op.batch_alter_table("score_cache") as t:
        t.drop_column("logit")
    with op.batch_alter_table("scores") as t:
        t.drop_column("stage2_logit")
        t.drop_column("logit")
