"""A job names the model that scores it (jobs.model); its scoring context (jobs.score_context) is
pinned at submission when reuse read the cache under it, else by the first chunk that begins.

Revision ID: 0004_job_model
Revises: 0003_score_cache
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_job_model"
down_revision = "0003_score_cache"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL for jobs recorded before this revision: any worker may score them, as before.
    op.add_column("jobs", sa.Column("model", sa.Text()))


def downgrade() -> None:
    op.drop_column("jobs", "model")
