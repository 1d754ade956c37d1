"""`producer db`: create, upgrade and inspect the SQL ledger's schema."""

from __future__ import annotations

from producer.commands.common import friendly


@friendly
def db_upgrade() -> None:
    """Apply the migrations (same as `alembic upgrade head`)."""
    from rerankq.settings import get_settings
    from rerankq.store.db import safe_url, upgrade

    settings = get_settings()
    rev = upgrade(settings.database)
    print(f"{safe_url(settings.database)} at revision {rev}")


@friendly
def db_current() -> None:
    """The database's revision and the one this code needs."""
    from rerankq.settings import get_settings
    from rerankq.store.db import current_revision, get_engine, head_revision

    settings = get_settings()
    print(f"database {current_revision(get_engine(settings.database))}, code {head_revision()}")
