"""Alembic migrations of the rerankq ledger (``producer db upgrade``)."""
