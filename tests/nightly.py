"""Two nights of one knowledge base: night 2 edits some documents, adds pairs and drops pairs."""

from __future__ import annotations

import random

EDITED, NEW, REMOVED = 0.10, 0.05, 0.05


def night2(columns: dict[str, list], seed: int = 1) -> tuple[dict[str, list], dict[str, set]]:
    """A copy of night 1 with 10 % of the documents edited (at the start, so the edit survives
    truncation), 5 % of the pairs removed and 5 % new pairs (new documents of existing queries,
    kept contiguous with their query). Returns the columns and the (query_id, doc_id) sets changed."""
    rng = random.Random(seed)
    n = len(columns["query_id"])
    index = list(range(n))
    rng.shuffle(index)
    n_edit, n_removed, n_new = round(n * EDITED), round(n * REMOVED), round(n * NEW)
    edited, removed = set(index[:n_edit]), set(index[n_edit : n_edit + n_removed])
    new_after = sorted(rng.sample(range(n), n_new))
    out: dict[str, list] = {k: [] for k in columns}
    changes: dict[str, set] = {"edited": set(), "new": set(), "removed": set()}
    extra = 0
    for i in range(n):
        key = (columns["query_id"][i], columns["doc_id"][i])
        if i in removed:
            changes["removed"].add(key)
        else:
            for k in columns:
                out[k].append(columns[k][i])
            if i in edited:
                out["document"][-1] = f"edited {i} night two: " + columns["document"][i]
                changes["edited"].add(key)
        while new_after and new_after[0] == i:
            new_after.pop(0)
            extra += 1
            for k in columns:
                out[k].append(columns[k][i])
            out["doc_id"][-1] = f"new{extra:05d}"
            out["document"][-1] = f"a new document number {extra} about {rng.choice(['ranking', 'GPUs', 'search'])}"
            changes["new"].add((columns["query_id"][i], out["doc_id"][-1]))
    return out, changes
