"""mGTE (gte-multilingual-reranker-base's shape, tiny random weights) on this machine's CPU: vLLM's log-odds
against the card's raw logit (transformers' port of mGTE, called as the card calls it), with vLLM's engine core
in this process or in its own (the GPU default), and how far the reference moves without the NTK positions.

    VLLM_CPU_KVCACHE_SPACE=1 python bench/gte_fidelity.py [--engine-process]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import rerankq.torch_compat  # noqa: F401 - before transformers

CHECKPOINT = Path.home() / ".cache" / "rerankq" / "tiny-gte-cross-encoder"
PAIRS = [
    ("capital of China?", "Beijing is the capital of China."),
    ("capital of China?", "Paris is the capital of France."),
    ("量子计算", "量子计算是一种基于力学原理的模型。"),
    ("x", "y"),
    ("water energy light", "search index ranking query document passage " * 120),  # cut at 512 tokens
]


def card(path: Path, pairs: list[tuple[str, str]], plain_rotary: bool = False) -> list[float]:
    import torch
    from transformers import AutoTokenizer, GteForSequenceClassification

    from rerankq.families.gte import prepare
    from rerankq.families.gte_config import gte_config

    prepare()
    raw = json.loads((path / "config.json").read_text())
    if plain_rotary:
        raw = {k: v for k, v in raw.items() if k != "rope_scaling"}
    model = GteForSequenceClassification.from_pretrained(str(path), config=gte_config(raw), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    inputs = tokenizer([q for q, _ in pairs], [d for _, d in pairs], padding=True, truncation="only_second",
                       return_tensors="pt", max_length=512)  # fmt: skip
    with torch.inference_mode():
        return model(**inputs, return_dict=True).logits.view(-1).float().tolist()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine-process", action="store_true")
    args = parser.parse_args()
    from producer.tiny_model import ensure_tiny
    from rerankq.prompt import Pair
    from rerankq.settings import Settings
    from worker.engines import load_reranker

    path = ensure_tiny(CHECKPOINT, "gte", 0)
    reference = card(path, PAIRS)
    plain = card(path, PAIRS, plain_rotary=True)
    settings = Settings(model=str(path), engine="vllm", dtype="float32", max_length=512, enforce_eager=True,
                        engine_process=args.engine_process)  # fmt: skip
    reranker = load_reranker(settings)
    try:
        results = reranker.score([Pair(q, d) for q, d in PAIRS])
    finally:
        reranker.close()
    print(json.dumps({
        "engine_process": args.engine_process,
        "pairs": len(PAIRS),
        "truncated": sum(r.truncated for r in results),
        "max_abs_logit_vs_card": max(abs(r.logit - x) for r, x in zip(results, reference)),
        "reference_moved_without_ntk": max(abs(a - b) for a, b in zip(reference, plain)),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
