"""Keys and tenants (issue 25): API keys kept as SHA-256 digests, console sessions (the cookie holds a
random token, never a key), the audit trail, and the tenant that owns each job and file (NULL: the
operator's). Nullable columns without a default: a catalogue change on PostgreSQL, whatever the rows.

Revision ID: 0011_tenants
Revises: 0010_log_odds
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_tenants"
down_revision = "0010_log_odds"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("owner", sa.Text()))
    op.create_index("ix_jobs_owner", "jobs", ["owner"])
    op.add_column("files", sa.Column("owner", sa.Text()))
    op.create_index("ix_files_owner", "files", ["owner"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False, unique=True),
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("digest", sa.LargeBinary(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "login_sessions",
        sa.Column("digest", sa.LargeBinary(32), primary_key=True),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_login_sessions_expires_at", "login_sessions", ["expires_at"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(32)),
        sa.Column("key_name", sa.Text(), nullable=False),
        sa.Column("tenant", sa.Text()),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("object_id", sa.Text()),
        sa.Column("client", sa.Text()),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_index("ix_audit_events_tenant", "audit_events", ["tenant"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_tenant", "audit_events")
    op.drop_index("ix_audit_events_at", "audit_events")
    op.drop_table("audit_events")
    op.drop_index("ix_login_sessions_expires_at", "login_sessions")
    op.drop_table("login_sessions")
    op.drop_table("api_keys")
    op.drop_index("ix_files_owner", "files")
    with op.batch_alter_table("files") as t:
        t.drop_column("owner")
    op.drop_index("ix_jobs_owner", "jobs")
    with op.batch_alter_table("jobs") as t:
        t.drop_column("owner")
