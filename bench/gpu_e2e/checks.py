"""Correctness of each e2e job: every manifest pair exactly once in the export, the ledger and the job's
status, and its scores against the bare engine's."""

from __future__ import annotations

from pathlib import Path


def pq_scores(path: str) -> dict:
    import pyarrow.parquet as pq

    t = pq.read_table(path).to_pydict()
    return dict(zip(zip(t["query_id"], t["doc_id"]), t["score"]))


def check_jobs(jobs: list[dict], manifest: Path, bare: dict) -> int:
    """Exactly once, against the manifest, the ledger and the export; scores against bare. Returns the pair count."""
    import sqlite3
    from datetime import datetime

    import pyarrow.parquet as pq

    man = pq.read_table(manifest, columns=["query_id", "doc_id"]).to_pydict()
    keys = list(zip(man["query_id"], man["doc_id"]))
    n = len(keys)

    def ts(v):  # noqa: ANN001, ANN202
        return datetime.fromisoformat(str(v)) if v else None

    for jb in jobs:
        job, status = jb["job"], jb["status"]
        con = sqlite3.connect(jb["db"])
        ex = pq.read_table(jb["export"]).to_pydict()
        ex_keys = list(zip(ex["query_id"], ex["doc_id"]))
        errors = [e for e in ex.get("error", []) if e is not None]
        nulls = sum(1 for s in ex["score"] if s is None)
        db_rows = con.execute("select count(*) from scores where job_id = ?", (job,)).fetchone()[0]
        chunk_rows = con.execute(
            "select id, state, pairs, scored, pair_errors, attempts, started_at, finished_at, worker from chunks where job_id = ? order by started_at",
            (job,),
        ).fetchall()
        con.close()
        jb["chunks"] = [dict(zip(("id", "state", "pairs", "scored", "pair_errors", "attempts", "started_at", "finished_at", "worker"), r)) for r in chunk_rows]
        chunk_text = []
        for r in jb["chunks"]:
            a, b = ts(r["started_at"]), ts(r["finished_at"])
            if a and b:
                r["seconds"] = (b - a).total_seconds()
                chunk_text.append(f"{r['pairs']} in {r['seconds']:.2f} s")
        jb["chunk_text"] = "; ".join(chunk_text)
        chunks_scored = sum(r[3] or 0 for r in chunk_rows)
        once = (
            len(ex_keys) == n and len(set(ex_keys)) == n and set(ex_keys) == set(keys) and nulls == 0 and not errors
            and db_rows == n and chunks_scored == n and status.get("pairs_scored") == n and status.get("state") == "completed"
        )  # fmt: skip
        e2e_scores = dict(zip(ex_keys, ex["score"]))
        cmp = {}
        for name in ("scores", "scores_pass2"):
            if bare.get(name):
                diffs = [abs(e2e_scores[k] - b) for k, b in zip(keys, bare[name]) if e2e_scores.get(k) is not None]
                cmp[name] = (max(diffs) if diffs else None, len(diffs))
        jb["correctness"] = {
            "export_rows": len(ex_keys), "export_distinct": len(set(ex_keys)), "manifest_pairs": n,
            "missing": len(set(keys) - set(ex_keys)), "extra": len(set(ex_keys) - set(keys)), "exactly_once": once,
            "null_scores": nulls, "errors": len(errors), "db_score_rows": db_rows, "chunks_scored_sum": chunks_scored,
            "status_pairs_scored": status.get("pairs_scored"), "status_state": status.get("state"),
            "max_abs_diff_vs_bare_pass1": cmp.get("scores", (None, 0))[0],
            "max_abs_diff_vs_bare_pass2": cmp.get("scores_pass2", (None, 0))[0],
            "compared": cmp.get("scores", (None, 0))[1],
        }  # fmt: skip
    return n


def query_groups(manifest: Path) -> list[list[int]]:
    """Row indexes of each query, in manifest order (the manifest keeps a query's rows contiguous)."""
    import pyarrow.parquet as pq

    qids = pq.read_table(manifest, columns=["query_id"]).column("query_id").to_pylist()
    groups: list[list[int]] = []
    for i, q in enumerate(qids):
        if not groups or qids[groups[-1][0]] != q:
            groups.append([])
        groups[-1].append(i)
    return groups


def drift(groups: list[list[int]], a: list[float], b: list[float], k: int = 10) -> dict:
    """How far two scorings of the same rows are apart: largest |a - b|, and the queries whose top k
    (by score, ties by row) is not the same list."""

    def top(scores: list[float], rows: list[int]) -> list[int]:
        return sorted(rows, key=lambda i: (-scores[i], i))[:k]

    changed = sum(1 for rows in groups if top(a, rows) != top(b, rows))
    return {"max_abs": max(abs(x - y) for x, y in zip(a, b)), "top10_changed": changed, "queries": len(groups)}


def compare_runs(jobs: list[dict], bare: dict, peer: dict, manifest: Path, result: dict) -> None:
    """Scores of runs against each other: first and last job, bare's passes, the peer against bare and
    against itself in shuffled order (the drift a user's own script shows)."""
    if len(jobs) > 1:
        a = pq_scores(jobs[0]["export"])
        b = pq_scores(jobs[-1]["export"])
        result["max_abs_diff_first_vs_last_job"] = max(abs(a[k] - b[k]) for k in a if k in b and a[k] is not None and b[k] is not None)
    if bare.get("scores_pass2"):
        result["max_abs_diff_bare_pass1_vs_pass2"] = max(abs(x - y) for x, y in zip(bare["scores"], bare["scores_pass2"]))
    if not peer.get("scores"):
        return
    import pyarrow.parquet as pq

    groups = query_groups(manifest)
    if bare.get("scores"):
        result["peer_vs_bare"] = drift(groups, peer["scores"], bare["scores"])
    man = pq.read_table(manifest, columns=["query_id", "doc_id"]).to_pydict()
    keys = list(zip(man["query_id"], man["doc_id"]))
    for jb in jobs:  # a fast-mode job against the peer: fast mode's drift under the worker's chunking
        scores = pq_scores(jb["export"])
        if all(scores.get(k) is not None for k in keys):
            jb["vs_peer"] = drift(groups, [scores[k] for k in keys], peer["scores"])
    if peer.get("scores_shuffled"):
        result["peer_shuffled"] = drift(groups, peer["scores"], peer["scores_shuffled"])
