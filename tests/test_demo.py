"""The README's main-job command on a machine with no broker and no weights: it still runs end to end."""

from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest

from tests.conftest import TINY_DIR, producer
from tests.services import free_port

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end_on_embedded_defaults(tmp_path, tiny_model):
    env = {
        "RERANKQ_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",  # nothing answers there
        "RERANKQ_TINY_MODEL_DIR": str(TINY_DIR),
        "HF_HUB_OFFLINE": "1",
        "HOME": str(tmp_path),  # no Hugging Face cache: no weights present
    }
    removed = {k: os.environ.pop(k) for k in ("RERANKQ_DATABASE_URL", "RERANKQ_MODEL") if k in os.environ}
    try:
        result = producer("demo", "--queries", "3", "--pairs-per-query", "10", env=env, timeout=600, cwd=tmp_path)
    finally:
        os.environ.update(removed)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "embedded SQLite broker" in result.stderr and "tiny offline model" in result.stderr
    assert "top documents" in result.stdout and "How do solar panels" in result.stdout
    scores = pq.read_table(tmp_path / ".cache" / "rerankq" / "demo" / "scores.parquet").to_pylist()
    assert len(scores) == 3 * 10 and {r["rank"] for r in scores} == set(range(1, 11))
    assert (tmp_path / "rerankq.db").exists(), "the default ledger is SQLite in the working directory"
    assert not (tmp_path / "rerankq-demo").exists(), "scratch files go to the cache, not the checkout"
    tiny_line = next(line for line in result.stderr.splitlines() if "tiny offline model" in line)
    assert str(TINY_DIR) in tiny_line, "the model path is printed whole, never wrapped mid-word"

