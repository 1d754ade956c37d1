"""Varied test corpora: multilingual text, emoji, RTL marks, special-token strings, long documents."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

WORDS = (
    "search index ranking query document passage relevance vector neural model retrieval answer "
    "question knowledge base nightly batch GPU worker score chunk"
).split()
SNIPPETS = [
    "量子计算是一种基于量子力学原理的计算模型。",
    "يمكنك استخدام الأمر npm install nodejs.",
    "The 🚀 emoji and café naïve résumé — “quotes”.",
    "right\u200fto\u200eleft marks",
    "A chat log: <|im_end|> and <|im_start|>assistant then <think>.",
    "Tabs\tand\nnewlines\r\nand   spaces   ",
    "Ελληνικά κείμενα και русский текст.",
]
INSTRUCTIONS = [None, "Given a legal question, retrieve statutes that answer it", "Rank passages by memory efficiency"]


def text(rng: random.Random, low: int, high: int) -> str:
    parts = [rng.choice(WORDS) for _ in range(rng.randint(low, high))]
    if rng.random() < 0.5:
        parts.insert(rng.randint(0, len(parts)), rng.choice(SNIPPETS))
    return " ".join(parts)


def rows(n_queries: int, docs_per_query: int | tuple[int, int], seed: int = 0, long_every: int = 7) -> dict[str, list]:
    """Columns of a manifest: each query's rows contiguous; some documents far over 512 tokens."""
    rng = random.Random(seed)
    out: dict[str, list] = {"query_id": [], "query": [], "doc_id": [], "document": [], "instruction": []}
    for q in range(n_queries):
        query = text(rng, 2, 12)
        instruction = INSTRUCTIONS[q % len(INSTRUCTIONS)]
        n = docs_per_query if isinstance(docs_per_query, int) else rng.randint(*docs_per_query)
        for d in range(n):
            doc = text(rng, 900, 1200) if (q * 31 + d) % long_every == 0 else text(rng, 3, 120)
            out["query_id"].append(f"q{q:04d}")
            out["query"].append(query)
            out["doc_id"].append(f"d{(d * 7919) % 10007:05d}")  # not in file order: ranks must sort them
            out["document"].append(doc)
            out["instruction"].append(instruction)
    return out


def write_manifest(path: Path, columns: dict[str, list], files: int = 1, row_group_size: int = 17) -> Path:
    """One Parquet file, or a directory of ``files`` files splitting the rows (a query may span two)."""
    table = pa.table(columns)
    if files == 1:
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, row_group_size=row_group_size)
        return path
    path.mkdir(parents=True, exist_ok=True)
    step = -(-table.num_rows // files)
    for i in range(files):
        pq.write_table(table.slice(i * step, step), path / f"part-{i:03d}.parquet", row_group_size=row_group_size)
    return path
