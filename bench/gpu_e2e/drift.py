"""How far two scorings of one manifest are apart, across calls: each side a `producer export` parquet or a bare.py
JSON (its "scores", in manifest order). Prints and writes (--json) the largest |A - B| and the queries whose top 10
differs (checks.drift). No GPU, no engine.
  python3 bench/gpu_e2e/drift.py --manifest M --a det=/keep/export-det-1.parquet --b fast=/tmp/e2e/8b/run/peer.json"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from checks import drift, pq_scores, query_groups


def scores(path: str, manifest: Path) -> list[float]:
    """The side's scores in manifest order."""
    if path.endswith(".json"):
        return json.loads(Path(path).read_text())["scores"]
    import pyarrow.parquet as pq

    man = pq.read_table(manifest, columns=["query_id", "doc_id"]).to_pydict()
    by_key = pq_scores(path)
    return [by_key[k] for k in zip(man["query_id"], man["doc_id"])]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--a", required=True, metavar="LABEL=PATH")
    ap.add_argument("--b", action="append", required=True, metavar="LABEL=PATH", help="repeat: each against --a")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    manifest = Path(args.manifest)
    groups = query_groups(manifest)
    a_label, _, a_path = args.a.partition("=")
    a = scores(a_path, manifest)
    result = {}
    for side in args.b:
        label, _, path = side.partition("=")
        d = drift(groups, a, scores(path, manifest))
        result[f"{label} vs {a_label}"] = d
        print(f"{label} vs {a_label}: max |d| {d['max_abs']:.3e}; queries whose top 10 differs {d['top10_changed']}/{d['queries']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
