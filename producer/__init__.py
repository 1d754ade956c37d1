"""rerankq producer: push rerank work (inline pairs or Parquet manifests) and follow it in SQL."""

import rerankq.torch_compat  # noqa: F401, I001  (first: hides torch companions built for another torch)

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    """Loaded on first use: `producer status` and friends need neither pyarrow nor the tokenizer."""
    if name in __all__:
        from producer import api

        return getattr(api, name)
    raise AttributeError(f"module 'producer' has no attribute {name!r}")
