"""The GPU benchmark's summary table ($OUT/gpu_table.md) and its score-drift measure."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from bench.common import markdown_table
from bench.gpu_clock import elapsed


class Results(Protocol):
    """What the table is made of (bench/gpu_runs.py's Bench, which imports this module, not the reverse)."""

    rows: list[dict]
    skipped: list[str]


def max_drift(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b))


def render(bench: Results, meta: dict, models: dict, out: Path) -> str:
    """The summary table (also written to $OUT/gpu_table.md)."""
    for r in bench.rows:
        r["tok_per_pair"] = r["tokens"] / r["pairs"]
    table = markdown_table(
        bench.rows,
        [
            ("model", "model", ""),
            ("config", "config", ""),
            ("pairs", "pairs", "d"),
            ("tok_per_pair", "tok/pair", ".0f"),
            ("start_s", "engine start s", ".0f"),
            ("pairs_per_s", "pairs/s", ",.0f"),
            ("tokens_per_s", "tokens/s", ",.0f"),
            ("pairs_per_s_with_tokenize", "pairs/s incl. tokenize", ",.0f"),
            ("mfu", "MFU", ".1%"),
            ("mfu_attn", "MFU+attn", ".1%"),
            ("engine_vs_bare", "engine/bare", ".3f"),
            ("drift_shuffled", "drift shuffled", ".1e"),
            ("drift_repeat", "drift repeat", ".1e"),
            ("drift_vs_vllm", "hf vs vllm", ".1e"),
        ],
    )
    lines = [
        f"{meta['device']}; vLLM {meta.get('vllm')}, torch {meta['torch']} (CUDA {meta['cuda']}), "
        f"transformers {meta.get('transformers')}; {meta['date_utc']} UTC; {elapsed():.0f} s so far",
        "MFU = 2 x non-embedding params x tokens/s / 989 TFLOP/s (H100 dense bf16); params: "
        + ", ".join(f"{m} {meta[f'params_{m}']['non_embedding'] / 1e9:.3f} B" for m in models if f"params_{m}" in meta)
        + "; MFU+attn adds causal attention FLOPs (2 x layers x heads x head_dim x n^2 per pair).",
        "engine/bare = throughput of VllmEngine.score_prompts over bare LLM.classify, median of interleaved rounds.",
        "drift = max |score| difference for the same pairs: shuffled order vs first pass; repeat = same order again.",
        "pairs/s incl. tokenize: PromptBuilder.build (run before, not overlapped, as Reranker.score does) + engine; "
        + ", ".join(f"build {m} {meta[f'tokenize_{m}_s']:.2f} s" for m in models if f"tokenize_{m}_s" in meta)
        + ".",
        "",
        table,
    ]
    if bench.skipped:
        lines += ["", "skipped/failed: " + "; ".join(bench.skipped)]
    text = "\n".join(lines)
    (out / "gpu_table.md").write_text(text + "\n")
    return text
