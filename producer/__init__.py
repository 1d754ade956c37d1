"""rerankq producer: push rerank work (inline pairs or Parquet manifests) and follow it in SQL."""

from producer.api import (
    BrokerUnavailable,
    InputError,
    ManifestError,
    Ranked,
    cancel,
    rerank,
    resume,
    retry_failed,
    submit_manifest,
    submit_pairs,
    wait,
)

__all__ = [
    "BrokerUnavailable",
    "InputError",
    "ManifestError",
    "Ranked",
    "cancel",
    "rerank",
    "resume",
    "retry_failed",
    "submit_manifest",
    "submit_pairs",
    "wait",
]
