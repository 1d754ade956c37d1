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
    demo = tmp_path / ".cache" / "rerankq" / "demo"
    assert (demo / "rerankq.db").exists(), "issue 27: the ledger goes with the demo's other files"
    assert not [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")], "nothing in the working directory (a checkout)"
    by_hand = result.stderr.strip().splitlines()[-1]
    assert by_hand.startswith("to go on by hand with the demo's ledger, broker and model: export "), by_hand
    assert f"RERANKQ_DATABASE_URL=sqlite:///{demo / 'rerankq.db'}" in by_hand and f"RERANKQ_MODEL={TINY_DIR}" in by_hand
    tiny_line = next(line for line in result.stderr.splitlines() if "tiny offline model" in line)
    assert str(TINY_DIR) in tiny_line, "the model path is printed whole, never wrapped mid-word"

