"""rerankq producer: push rerank work (inline pairs or Parquet manifests) and follow it in SQL."""

import worker.torch_compat  # noqa: F401, I001  (first: hides torch companions built for another torch)

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
