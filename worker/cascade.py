"""A cascade's hand-off: after a stage-1 chunk is scored, each of its queries' ``top`` best pairs
become one stage-2 chunk for the second model. A chunk always holds every pair of its queries, so
the top pairs are known the moment the chunk is scored: stage 2 streams behind stage 1, and no pass
over the whole job is needed."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from rerankq.store.records import NewChunk
from schemas import InlineSpec, ManifestSegment, ManifestSpec
from worker.chunk_pairs import KeyedPair
from worker.engines.base import PairScore


def top_pairs(keyed: Sequence[KeyedPair], results: Sequence[PairScore], top: int) -> list[int]:
    """Positions of each query's ``top`` best scored pairs, ranked as the export ranks them (log-odds,
    then doc_id in byte order); pairs that failed never go on."""
    by_query: dict[str, list[int]] = defaultdict(list)
    for i, (k, r) in enumerate(zip(keyed, results)):
        if r.score is not None and r.error is None:
            by_query[k.query_id].append(i)
    chosen: list[int] = []
    for positions in by_query.values():
        positions.sort(key=lambda i: (*_best_first(results[i]), keyed[i].doc_id.encode("utf-8", "surrogatepass")))
        chosen += positions[:top]
    return sorted(chosen)


def _best_first(r: PairScore) -> tuple[float, float]:
    """Sort key, best first: log-odds (a cached score from before log-odds has none), then probability."""
    return (-r.logit if r.logit is not None else float("inf"), -r.score)  # type: ignore[operator]


def stage2_chunk(spec: ManifestSpec | InlineSpec, keyed: Sequence[KeyedPair], chosen: Sequence[int]) -> NewChunk | None:
    """The stage-2 chunk over the chosen pairs: the same manifest rows (or inline pairs), nothing else."""
    if not chosen:
        return None
    if isinstance(spec, InlineSpec):
        pairs = [spec.pairs[keyed[i].source[1]] for i in chosen]  # type: ignore[index]
        return NewChunk(InlineSpec(pairs=pairs).model_dump(mode="json"), len(pairs))
    rows: dict[int, list[int]] = defaultdict(list)
    for i in chosen:
        segment, row = keyed[i].source  # type: ignore[misc]
        rows[segment].append(row)
    segments = []
    for index, picked in sorted(rows.items()):
        old, picked = spec.segments[index], sorted(picked)
        segments.append(
            ManifestSegment(
                path=old.path, start=picked[0], stop=picked[-1] + 1, size=old.size, file_rows=old.file_rows, rows=picked
            )
        )
    new = ManifestSpec(uri=spec.uri, segments=segments, instruction=spec.instruction)
    return NewChunk(new.model_dump(mode="json"), len(chosen))
