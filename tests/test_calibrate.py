"""`producer calibrate`: the rank statistics against hand-computed values, and the command end to end on
CPU with real tiny models (random weights, real tokenizer) scored by the real engines in child processes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from producer.rank_stats import average_ranks, kendall, spearman, top_k


def test_rank_statistics_match_hand_computed_values() -> None:
    assert average_ranks([10.0, 30.0, 20.0, 20.0]) == [1.0, 4.0, 2.5, 2.5]
    up, down = [1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]
    assert spearman(up, up) == pytest.approx(1.0) and kendall(up, up) == pytest.approx(1.0)
    assert spearman(up, down) == pytest.approx(-1.0) and kendall(up, down) == pytest.approx(-1.0)
    tied = [1.0, 2.0, 2.0, 3.0]  # one tie on A's side: tau-b = 5 / sqrt(6 * 5), rho = 4.5 / sqrt(4.5 * 5)
    assert kendall(tied, up) == pytest.approx(5 / math.sqrt(30))
    assert spearman(tied, up) == pytest.approx(4.5 / math.sqrt(22.5))
    assert kendall([1.0, 2.0, 3.0], [1.0, 3.0, 2.0]) == pytest.approx(1 / 3)
    assert spearman([1.0], [2.0]) is None and kendall([5.0, 5.0], [1.0, 2.0]) is None  # undefined, not "agrees"
    assert top_k([0.1, 0.9, 0.5, 0.9], ["a", "d", "c", "b"], 3) == ["b", "d", "c"]  # ties by id, as export ranks


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 queries x 8 documents, a manifest as users write them."""
    rows = [
        (f"q{q}", f"what does topic {q} say about number {q * 7}?", f"q{q}-d{d}",
         f"document {d} discusses topic {(q + d) % 5} and the number {d * 13} at some length.")
        for q in range(4) for d in range(8)
    ]  # fmt: skip
    path = tmp_path_factory.mktemp("calibrate") / "sample.parquet"
    pq.write_table(pa.table({k: [r[i] for r in rows] for i, k in enumerate(["query_id", "query", "doc_id", "document"])}), path)
    return path


@pytest.fixture(scope="module")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from producer.tiny_model import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("seed2") / "model", seed=2)


def calibrate(sample: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "RERANKQ_LOG_JSON": "false", **env}
    cmd = [sys.executable, "-m", "producer.cli", "calibrate", str(sample), *args]
    return subprocess.run(cmd, env=full, capture_output=True, text=True, timeout=600)


def test_two_checkpoints_differ_and_one_checkpoint_is_bitwise_itself(sample: Path, tiny_model: Path, other_model: Path) -> None:
    run = calibrate(sample, "--a", f"model={tiny_model}", "--b", f"model={other_model}", "--top-k", "3", "--json",
                    RERANKQ_ENGINE="hf")  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout)
    assert (report["pairs"], report["queries"], report["compared"]) == (32, 4, 32)
    assert report["max_abs"] > 1e-3 and report["max_abs_at"][0].startswith("q")
    assert len(report["spearman"]) == len(report["kendall"]) == 4
    assert all(-1 <= v <= 1 for v in report["spearman"] + report["kendall"])
    assert report["top_k_same_order"] < 4 and "changes the top 3" in report["verdict"]
    assert report["sides"]["A"]["context"]["digest"] != report["sides"]["B"]["context"]["digest"]

    same = calibrate(sample, "--a", "", "--b", "", RERANKQ_ENGINE="hf", RERANKQ_MODEL=str(tiny_model))
    assert same.returncode == 0, same.stderr[-2000:]
    assert "largest |A - B| 0 " in same.stdout and "bitwise the same scores" in same.stdout


def test_settings_are_checked_before_any_engine_starts(sample: Path) -> None:
    bad = calibrate(sample, "--a", "numerics=deterministic", "--b", "numerics=quick")
    assert bad.returncode == 3 and "error:" in bad.stderr and "numerics" in bad.stderr
    unknown = calibrate(sample, "--a", "", "--b", "quantisation=fp8")
    assert unknown.returncode == 3 and "'quantisation=fp8' is not KEY=VALUE of a RERANKQ_* setting" in unknown.stderr
    missing = calibrate(sample.parent / "nope.parquet", "--a", "", "--b", "")
    assert missing.returncode == 3 and "not a manifest" in missing.stderr


@pytest.mark.slow
def test_vllm_scores_as_the_hf_reference(sample: Path, tiny_model: Path) -> None:
    """The CPU engines agree: vLLM moves no query's ranking against transformers (starts a vLLM engine)."""
    run = calibrate(sample, "--a", "engine=hf", "--b", "engine=vllm", "--json", RERANKQ_MODEL=str(tiny_model))
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout)
    assert report["max_abs"] < 1e-5 and report["top_k_same_order"] == 4
    assert report["sides"]["B"]["context"]["context"]["numerics"] == "plain no-prefix"
