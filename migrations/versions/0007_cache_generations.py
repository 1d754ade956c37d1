"""Score cache: use recorded per generation (rerankq/store/cache_gens.py) instead of per entry.
``score_cache.last_used`` becomes ``gen``: the UTC day of that last use plus the old touch interval
(7 days: a reuse within it did not rewrite ``last_used``), so nothing used is taken for unused; and
``cache_generations`` records when reuse last hit each generation.
Rewrites every cache row once (PostgreSQL: one UPDATE; SQLite: the table is rebuilt).

Revision ID: 0007_cache_generations
Revises: 0006_cascade
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_cache_generations"
down_revision = "0006_cascade"
branch_labels = None
depends_on = None
OLD_TOUCH_DAYS = 7  # RERANKQ_CACHE_TOUCH_INTERVAL's default before this revision


def _day(column: str) -> str:
    if op.get_bind().dialect.name == "postgresql":
        return f"floor(extract(epoch from {column}) / 86400)::int"
    return f"CAST(julianday({column}) - 2440587.5 AS INTEGER)"


def upgrade() -> None:
    op.add_column("score_cache", sa.Column("gen", sa.Integer()))
    op.execute(f"UPDATE score_cache SET gen = {_day('last_used')} + {OLD_TOUCH_DAYS}")
    op.drop_index("ix_score_cache_last_used", "score_cache")
    with op.batch_alter_table("score_cache") as batch:
        batch.alter_column("gen", existing_type=sa.Integer(), nullable=False)
        batch.drop_column("last_used")
    op.create_index("ix_score_cache_gen", "score_cache", ["gen"])
    op.create_table(
        "cache_generations",
        sa.Column("gen", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("last_used", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cache_generations")
    op.add_column("score_cache", sa.Column("last_used", sa.DateTime(timezone=True)))
    op.execute("UPDATE score_cache SET last_used = created_at")  # the best bound left: when it was written
    op.drop_index("ix_score_cache_gen", "score_cache")
    with op.batch_alter_table("score_cache") as batch:
        batch.alter_column("last_used", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch.drop_column("gen")
    op.create_index("ix_score_cache_last_used", "score_cache", ["last_used"])
