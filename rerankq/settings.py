"""One settings object for producer and worker, read from ``RERANKQ_*`` environment variables."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


class Settings(BaseSettings):
    """Everything configurable; each field is ``RERANKQ_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="RERANKQ_", extra="ignore")

    # --- model and engine -------------------------------------------------------------
    model: str = "Qwen/Qwen3-Reranker-0.6B"
    served_model_name: str | None = Field(
        None,
        description="names RERANKQ_MODEL is served under, comma-separated, like vLLM's --served-model-name: "
        "requests and batch lines naming one reach it (the first is the name responses give)",
    )
    engine: str = Field("vllm", description="vllm | hf | module:factory (a custom engine)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_length: int = Field(8192, ge=64, description="tokens per pair, prefix and suffix included")
    seed: int = 0
    # vLLM engine arguments users tune; None leaves vLLM's default.
    gpu_memory_utilization: float | None = None
    max_num_batched_tokens: int | None = Field(None, description="default 65536 on a GPU (vLLM's 16384 starves it)")
    max_num_seqs: int | None = None
    enable_prefix_caching: bool | None = Field(
        None, description="default: on exactly when batch_invariant is (without it a cached prefix moves scores ~1e-2)"
    )
    batch_invariant: bool | None = Field(
        None, description="vLLM batch-invariant kernels (VLLM_BATCH_INVARIANT): default on with a GPU, off on CPU"
    )
    numerics: Literal["deterministic", "fast"] | None = Field(
        None,
        description="deterministic: batch-invariant kernels + prefix caching (a score never depends on its batch); "
        "fast: prefix caching without batch invariance (a user's own vLLM script); default deterministic on a GPU "
        "(rerankq/numerics.py)",
    )
    bi_linear: Literal["cublas", "triton"] = Field(
        "cublas",
        description="deterministic mode's linear layers on vLLM 0.26 + GPU: cuBLAS (batch invariant under vLLM's "
        "settings, small steps padded; worker/engines/bi_linear.py) or vLLM's own Triton kernel",
    )
    engine_process: bool | None = Field(
        None,
        description="vLLM's engine core in a process of its own, tied to the worker's life: its GPU loop never "
        "waits for the worker's Python threads (default on with a GPU; off on CPU, where it costs a core)",
    )
    tensor_parallel_size: int = 1
    quantization: str | None = None
    enforce_eager: bool = False
    async_scheduling: bool | None = Field(None, description="vLLM async scheduling; on by default on a GPU")
    pipeline_pairs: int = Field(
        4096, ge=64, description="a larger chunk goes to the engine in slices this big, the next tokenized meanwhile"
    )
    warm_up: bool = Field(True, description="GPU: score one synthetic full batch at load (JIT kernels before chunk 1)")
    hf_batch_tokens: int = Field(16384, description="hf engine: padded tokens per forward pass")
    fingerprint_full_weights: bool = Field(
        False, description="score-cache key: hash every weight byte (slow for large checkpoints) instead of samples"
    )
    reuse_context_max_age: float = Field(
        30 * 86400.0, gt=0, description="seconds a worker's recorded scoring context stays usable for reuse"
    )
    cache_touch_interval: float = Field(
        7 * 86400.0, ge=0, description="a reused cache entry moves to a fresh generation once its own is this old (seconds)"
    )
    tiny_model_dir: Path = Path.home() / ".cache" / "rerankq" / "tiny-qwen3-reranker"

    # --- services ------------------------------------------------------------------------
    broker_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    database_url: SecretStr = SecretStr("sqlite:///rerankq.db")
    connect_timeout: float = Field(5.0, description="seconds before an unreachable broker or database is an error")

    # --- jobs ------------------------------------------------------------------------------
    queue: str = "gpu"
    chunks_in_flight: int = Field(
        2, ge=1, description="chunk tasks a worker runs at once over its one engine (the next is read and tokenized meanwhile)"
    )
    chunk_size: int = Field(16384, ge=1, description="pairs per chunk: tens of seconds on one GPU")
    visibility_timeout: int = Field(3 * 3600, description="seconds before an unacked chunk is redelivered")
    max_retries: int = Field(3, ge=0, description="retries of a chunk whose scoring raises")
    retry_backoff: float = Field(10.0, description="first retry delay in seconds, doubled each time")
    heartbeat_interval: float = Field(10.0, gt=0, description="seconds between a worker's liveness heartbeats")
    worker_dead_after: float = Field(
        60.0, gt=0, description="a worker silent this long is presumed dead: its chunks are re-enqueued"
    )
    write_retry_seconds: float = Field(600.0, description="how long a finished chunk retries its SQL write")
    max_inline_pairs: int = 10_000
    max_document_chars: int = 1_000_000
    max_query_chars: int = 100_000
    manifest_schemes: list[str] = ["file", "s3", "gs", "gcs"]
    manifest_roots: list[str] = Field(
        default_factory=list,
        description="directories and object-store prefixes the service reads manifests under (none: it reads none); "
        "the CLI and workers read only these when set",
    )
    s3_endpoint_url: str | None = Field(
        None, description="an S3-compatible store for s3:// manifests, e.g. http://minio:9000 (credentials: AWS_* env)"
    )

    # --- HTTP service (`producer serve`) and metrics ------------------------------------
    api_key: SecretStr | None = Field(
        None, description="one admin key of no tenant (compatibility; `producer keys create` makes per-tenant keys)"
    )
    open: bool = Field(
        False, description="serve with no API key beyond loopback or behind a proxy: refused at start unless true"
    )
    metrics_open: bool = Field(
        False, description="GET /metrics without a key even once keys are in force (a scraper on a trusted network)"
    )
    session_seconds: float = Field(12 * 3600.0, gt=0, description="how long a console sign-in lasts")
    max_interactive_backlog: int = Field(
        64, ge=1, description="live requests waiting for a worker of their model (per model; interactive chunks "
        "without a live lane) before /v1/rerank answers 429"
    )
    live_lane: bool = Field(
        True, description="workers also serve /v1/rerank requests from a live lane on Redis, ahead of batch prompts "
        "in their running engine (worker/live_lane.py); false: such requests become one-chunk jobs"
    )
    live_in_flight: int = Field(
        8, ge=1, description="live requests one worker scores at once; it takes no more from the lane until one ends"
    )
    scheduling_policy: Literal["fcfs", "priority"] = Field(
        "priority", description="vLLM's scheduler policy; priority: live prompts are scheduled at the next engine "
        "step, ahead of batch prompts already waiting in the engine"
    )
    rerank_timeout: float = Field(120.0, gt=0, description="seconds /v1/rerank waits for the workers (then 504)")
    max_request_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="larger request bodies get 413")
    metrics_port: int | None = Field(
        None, ge=0, description="worker metrics port: N + the worker's CUDA device index; 0 = any free port (logged)"
    )

    # --- batch files: the OpenAI Files and Batches API (producer/batch_files.py) ---------------
    files_dir: Path = Field(
        Path.home() / ".local" / "share" / "rerankq" / "files",
        description="where uploaded batch files and batch outputs are kept (the service's and `producer export`'s host)",
    )
    max_file_bytes: int = Field(2 * 1024**3, ge=1024, description="larger uploads to POST /v1/files get 413")
    batch_max_pairs: int = Field(
        1_000_000, ge=1, description="pairs in one batch file (its pairs travel inline, like RERANKQ_MAX_INLINE_PAIRS)"
    )
    batch_max_lines: int = Field(
        50_000, ge=1, description="request lines in one batch file (OpenAI's limit); a longer file is refused (400)"
    )
    batch_max_line_bytes: int = Field(
        16 * 1024**2, ge=1024, description="bytes in one batch line (a request); a longer line fails alone, never read whole"
    )
    batch_max_error_lines: int = Field(
        10_000, ge=0, description="lines written to a batch's error file; the rest are counted in its errors and request_counts"
    )

    # --- webhooks (rerankq/store/webhooks.py, worker/webhook_sender.py) ----------------------
    webhook_url: str | None = Field(
        None, description="notified when a job ends (a job's own --notify URL wins); recorded with the job at submission"
    )
    webhook_secret: SecretStr | None = Field(
        None, description="whsec_<base64>: Standard Webhooks signing key; workers with it deliver the ledger's events"
    )
    webhook_timeout: float = Field(10.0, gt=0, description="seconds one delivery attempt may take")
    webhook_retry_backoff: float = Field(5.0, gt=0, description="first retry delay in seconds, doubled each attempt")
    webhook_max_backoff: float = Field(3600.0, gt=0, description="longest delay between two attempts (seconds)")
    webhook_retry_for: float = Field(72 * 3600.0, gt=0, description="an event undelivered this long is given up (seconds)")
    webhook_poll_interval: float = Field(2.0, gt=0, description="seconds between the sender's looks at the outbox")
    webhook_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated hosts, addresses or CIDRs webhooks may reach although loopback, private, link-local "
        "or reserved (rerankq/egress.py); everything else of the kind is refused. Set on producer/service and workers",
    )
    webhook_concurrency: int = Field(
        16, ge=1, description="webhook attempts in flight at once (one per receiver host), so a slow receiver delays no other"
    )

    # --- logging ------------------------------------------------------------------------
    log_level: str = "INFO"
    log_json: bool = True

    @model_validator(mode="after")
    def _numerics_agree(self) -> Settings:
        """RERANKQ_NUMERICS names a mode; an explicit RERANKQ_BATCH_INVARIANT that contradicts it is an error."""
        if self.numerics is not None and self.batch_invariant is not None:
            if self.batch_invariant != (self.numerics == "deterministic"):
                raise ValueError(
                    f"RERANKQ_NUMERICS={self.numerics} contradicts RERANKQ_BATCH_INVARIANT={str(self.batch_invariant).lower()}"
                    " (deterministic means batch invariant; fast means not): set one of them"
                )
        return self

    @model_validator(mode="after")
    def _webhook_secret_format(self) -> Settings:
        """A secret the signer cannot use is refused at start, not at the first event."""
        if self.webhook_secret is not None:
            from rerankq.webhook_signing import check_secret

            check_secret(self.webhook_secret.get_secret_value())
        return self

    @field_validator("webhook_allow", mode="before")
    @classmethod
    def _webhook_allow_list(cls, value: object) -> object:
        """``a,b`` in the environment (a JSON list too); each entry checked at start (rerankq/egress.py)."""
        if isinstance(value, str):
            value = json.loads(value) if value.lstrip().startswith("[") else [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            from rerankq.egress import Allow

            Allow.parse(str(v) for v in value)
        return value

    @property
    def broker(self) -> str:
        return self.broker_url.get_secret_value()

    @property
    def database(self) -> str:
        return self.database_url.get_secret_value()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
