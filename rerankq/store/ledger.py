"""The ledger, the state of truth: one object over the parts callers use together. Each concern
lives in its own module: ``jobs`` (record, cancel, resume, retry), ``chunks`` (a worker's begin,
finish, fail; the write path in ``score_writes``), ``recovery`` (the sweeper's queries) and ``reads``
(status, list, holders, counts). The score cache's reuse, the registry and retention sit on top."""

from __future__ import annotations

from rerankq.store.chunks import ChunkWrites
from rerankq.store.jobs import JobWrites
from rerankq.store.reads import Reads
from rerankq.store.recovery import Recovery


class Ledger(JobWrites, ChunkWrites, Recovery, Reads):
    """``Ledger(url)`` checks the database's revision first (``check=False`` skips it)."""
