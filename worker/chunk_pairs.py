"""A chunk's pairs, from the message (inline jobs) or from the manifest rows it names."""

from __future__ import annotations

from dataclasses import dataclass

from rerankq.manifest_source import filesystem, read_segment, texts
from rerankq.prompt import Pair
from schemas import InlineSpec, ManifestSpec


@dataclass(frozen=True, slots=True)
class KeyedPair:
    query_id: str
    doc_id: str
    pair: Pair
    source: tuple[int, int] | None = None  # (segment index, row in its file) for manifest rows; else (0, position)


def load_pairs(spec: ManifestSpec | InlineSpec) -> list[KeyedPair]:
    if isinstance(spec, InlineSpec):
        return [KeyedPair(p.query_id, p.doc_id, Pair(p.query, p.document, p.instruction), (0, i)) for i, p in enumerate(spec.pairs)]
    fs, _ = filesystem(spec.uri)
    out: list[KeyedPair] = []
    for s, segment in enumerate(spec.segments):
        table = read_segment(fs, segment)
        file_rows = segment.rows if segment.rows is not None else range(segment.start, segment.stop)
        qids, dids = texts(table["query_id"]), texts(table["doc_id"])
        queries, docs = texts(table["query"]), texts(table["document"])
        n = table.num_rows
        instr = texts(table["instruction"]) if "instruction" in table.column_names else [None] * n
        for i in range(n):
            instruction = instr[i] if instr[i] is not None else spec.instruction
            out.append(KeyedPair(qids[i] or "", dids[i] or "", Pair(queries[i], docs[i], instruction), (s, file_rows[i])))
    return out
