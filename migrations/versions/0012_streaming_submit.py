"""Streaming submission (issue 30): a job is recorded and its chunks queued piece by piece while the
manifest is still being read; ``jobs.submitting`` is true until its last piece is recorded. While it is
true the job cannot end (its last chunk done does not complete it) and nothing is exported from it; a
job refused for a bad row found later keeps it (state ``failed``, the row and field in ``error``). A
constant default: on PostgreSQL the ``ADD COLUMN`` is a catalogue change, whatever the rows.

Revision ID: 0012_streaming_submit
Revises: 0011_tenants
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_streaming_submit"
down_revision = "0011_tenants"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("submitting", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as t:
        t.drop_column("submitting")
