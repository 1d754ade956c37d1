"""rerankq producer: push rerank work (inline pairs or Parquet manifests) and follow it in SQL."""

import rerankq.torch_compat  # noqa: F401, I001  (first: hides torch companions built for another torch)

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from producer.errors import BrokerUnavailable, InputError
    from producer.interactive import Ranked, rerank
    from producer.job_control import cancel, resume, retry_failed
    from producer.submission import submit_manifest, submit_pairs
    from producer.waiting import wait
    from rerankq.manifest_source import ManifestError

# The Python API by noun: each name and the module that defines it.
_HOMES = {
    "BrokerUnavailable": "producer.errors",
    "InputError": "producer.errors",
    "ManifestError": "rerankq.manifest_source",
    "Ranked": "producer.interactive",
    "rerank": "producer.interactive",
    "submit_manifest": "producer.submission",
    "submit_pairs": "producer.submission",
    "wait": "producer.waiting",
    "cancel": "producer.job_control",
    "resume": "producer.job_control",
    "retry_failed": "producer.job_control",
}
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


def __getattr__(name: str) -> Any:
    """Loaded on first use: `producer status` and friends need neither pyarrow nor the tokenizer."""
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'producer' has no attribute {name!r}")
