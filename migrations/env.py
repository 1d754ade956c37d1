"""Alembic environment: the URL comes from the caller (producer db upgrade) or RERANKQ_DATABASE_URL."""

from alembic import context

from rerankq.settings import get_settings
from rerankq.store.db import make_engine
from rerankq.store.models import Base

config = context.config
url = config.attributes.get("url") or get_settings().database


def run() -> None:
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run()
