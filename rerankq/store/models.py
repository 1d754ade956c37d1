"""Tables of the SQL ledger: jobs, their chunks, one row per scored (or failed) pair, and the workers."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Double,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16))  # manifest | inline
    state: Mapped[str] = mapped_column(String(32), index=True)
    manifest: Mapped[str | None] = mapped_column(Text)
    instruction: Mapped[str | None] = mapped_column(Text)
    pairs_total: Mapped[int] = mapped_column(Integer)
    chunks_total: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    pairs_reused: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # from the score cache
    # The scoring context all its scores come from: pinned at submission when reuse read the cache
    # under it, else by the first chunk to begin (rerankq/store/chunks.py).
    score_context: Mapped[str | None] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(Text)  # RERANKQ_MODEL of the workers that may score it
    # A cascade's stage 2: each query's ``then_top`` best pairs re-scored by ``then_model`` (pinned
    # to ``then_context`` like stage 1 to ``score_context``).
    then_model: Mapped[str | None] = mapped_column(Text)
    then_top: Mapped[int | None] = mapped_column(Integer)
    then_context: Mapped[str | None] = mapped_column(String(64))
    notify: Mapped[str | None] = mapped_column(Text)  # webhook URL told when the job ends (rerankq/store/webhooks.py)
    # The tenant of the API key that made it (rerankq/store/actor.py); NULL: the operator's (CLI, RERANKQ_API_KEY,
    # an open service), seen only by admin keys. A batch is its job's tenant's.
    owner: Mapped[str | None] = mapped_column(Text, index=True)
    # True while its manifest is still being read and recorded piece by piece (producer/streaming.py): the
    # job cannot end and nothing is exported from it. Stays true on a job refused for a bad row found late
    # (state failed) and on one whose submitter died (cancel it; submitting again reuses what was scored).
    submitting: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Chunk(Base):
    __tablename__ = "chunks"
    __table_args__ = (UniqueConstraint("job_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))  # pending | running | done | failed | cancelled
    spec: Mapped[dict] = mapped_column(JSON)
    pairs: Mapped[int] = mapped_column(Integer)
    stage: Mapped[int] = mapped_column(Integer, default=1, server_default="1")  # 2: a cascade's re-score
    scored: Mapped[int] = mapped_column(Integer, default=0)
    pair_errors: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(Text)
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Score(Base):
    __tablename__ = "scores"

    # PostgreSQL has no such constraint since 0003_score_cache (see there); SQLite keeps it.
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    query_id: Mapped[str] = mapped_column(Text, primary_key=True)
    doc_id: Mapped[str] = mapped_column(Text, primary_key=True)
    chunk_id: Mapped[int] = mapped_column(Integer)  # REUSED_CHUNK (0): copied from the score cache at submission
    score: Mapped[float | None] = mapped_column(Double)
    error: Mapped[str | None] = mapped_column(Text)
    stage2_score: Mapped[float | None] = mapped_column(Double)  # a cascade's second model, top pairs only
    stage2_error: Mapped[str | None] = mapped_column(Text)
    # log-odds, logit(yes) − logit(no): what ranks follow (probabilities saturate and tie); NULL before 0010
    logit: Mapped[float | None] = mapped_column(Double)
    stage2_logit: Mapped[float | None] = mapped_column(Double)


class Worker(Base):
    """One worker process: registered at start, heartbeated on its own timer (``last_seen``)."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(Text, primary_key=True)  # host:pid:token (pids repeat in containers)
    host: Mapped[str] = mapped_column(Text)
    pid: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(Text)
    engine: Mapped[dict] = mapped_column(JSON)  # engine name, dtype, max_length, engine arguments
    fingerprint: Mapped[str | None] = mapped_column(Text)  # the model files' digest, once loaded
    state: Mapped[str] = mapped_column(String(16))  # loading | ready | stopped | dead (as last reported)
    holding: Mapped[list] = mapped_column(JSON)  # chunk ids being scored
    pairs_scored: Mapped[int] = mapped_column(BigInteger, default=0)
    pairs_per_second: Mapped[float | None] = mapped_column(Double)  # over its last chunk
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class Lease(Base):
    """A named, expiring lock in the ledger (the sweeper's: one worker sweeps at a time)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CachedScore(Base):
    """A score keyed by the digest of everything that can change it (rerankq/score_key.py)."""

    __tablename__ = "score_cache"

    key: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    score: Mapped[float] = mapped_column(Double)
    logit: Mapped[float | None] = mapped_column(Double)  # NULL only in entries of contexts before 0010
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # UTC day number the entry counts as used through; its use is then its generation's (rerankq/store/cache_gens.py)
    gen: Mapped[int] = mapped_column(Integer, index=True)


class CacheGeneration(Base):
    """When some reuse last hit entries of a generation: use recorded per generation, not per entry."""

    __tablename__ = "cache_generations"

    gen: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_used: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ScoreContext(Base):
    """A scoring context some worker ran with: its digest, the settings that chose it, and its parts."""

    __tablename__ = "score_contexts"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(Text)  # RERANKQ_MODEL as configured (hub id or directory)
    settings: Mapped[dict] = mapped_column(JSON)  # the configured knobs the producer matches on
    context: Mapped[dict] = mapped_column(JSON)  # the resolved parts that were hashed
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WebhookEvent(Base):
    """The outbox: an event recorded in the transaction that ends its job, sent later by one worker
    (worker/webhook_sender.py) until the receiver answers 2xx or ``RERANKQ_WEBHOOK_RETRY_FOR`` passes."""

    __tablename__ = "webhook_events"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # msg_…: the webhook-id header, same on every attempt
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(64))  # job.completed, batch.failed, ...
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)  # the exact body signed and sent
    state: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed (given up)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class StoredFile(Base):
    """A file of the Files API: its bytes on disk under RERANKQ_FILES_DIR (``path``), what it is here."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # file-…
    purpose: Mapped[str] = mapped_column(String(32))  # batch (an upload) | batch_output (an output or error file)
    filename: Mapped[str] = mapped_column(Text)
    bytes: Mapped[int] = mapped_column(BigInteger)
    path: Mapped[str] = mapped_column(Text)  # relative to RERANKQ_FILES_DIR
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    owner: Mapped[str | None] = mapped_column(Text, index=True)  # as Job.owner; a batch's output: its job's


class Batch(Base):
    """An OpenAI-style batch: a rerankq job (``job_id``, kind ``batch``) plus what the Batches API reports."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # batch_<job id>
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    endpoint: Mapped[str] = mapped_column(String(32))
    completion_window: Mapped[str] = mapped_column(String(16))
    meta: Mapped[dict | None] = mapped_column("metadata", JSON)
    input_file_id: Mapped[str] = mapped_column(String(64))
    output_file_id: Mapped[str | None] = mapped_column(String(64))
    error_file_id: Mapped[str | None] = mapped_column(String(64))
    lines_total: Mapped[int] = mapped_column(Integer)
    lines_rejected: Mapped[int] = mapped_column(Integer)  # bad lines, refused at submission
    lines_completed: Mapped[int | None] = mapped_column(Integer)  # counted when the output is written
    lines_failed: Mapped[int | None] = mapped_column(Integer)
    errors: Mapped[list | None] = mapped_column(JSON)  # why the whole batch failed, if it did
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finalizing_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # the output is being written since
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # the output files exist since


class ApiKey(Base):
    """An API key of the service (rerankq/store/keys.py): only its SHA-256 is kept; the key is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # the visible part: rq_<id>_<secret>
    name: Mapped[str] = mapped_column(Text, unique=True)
    tenant: Mapped[str] = mapped_column(Text)  # owner of what it creates
    scopes: Mapped[list] = mapped_column(JSON)  # read | submit | admin
    digest: Mapped[bytes] = mapped_column(LargeBinary(32))  # sha256 of the whole key
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LoginSession(Base):
    """A console sign-in: the cookie carries a random token whose SHA-256 is this row's id (never the key)."""

    __tablename__ = "login_sessions"

    digest: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32))  # an api_keys.id, or env:<digest prefix> for RERANKQ_API_KEY
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class AuditEvent(Base):
    """Who did what to which object, when: written by the service for every change a client makes."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    key_id: Mapped[str | None] = mapped_column(String(32))  # None: no key (an open service, the CLI)
    key_name: Mapped[str] = mapped_column(Text)
    tenant: Mapped[str | None] = mapped_column(Text, index=True)
    action: Mapped[str] = mapped_column(String(32))  # job.submit, job.cancel, batch.create, file.delete, key.create, ...
    object_id: Mapped[str | None] = mapped_column(Text)
    client: Mapped[str | None] = mapped_column(Text)  # the client's address as the service saw it
