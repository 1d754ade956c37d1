"""Submission with reuse: pairs whose score is cached under the workers' scoring context are copied
into the job's scores at once; only the others are chunked, enqueued and scored. Which context: here
(``choose_context``). A manifest is looked up piece by piece as it is recorded (producer/streaming.py,
rerankq/store/submissions.py); inline pairs are staged and recorded here (``record_pairs``).

Where the lookup happens: in the producer, against the SQL ledger, under a context **recorded by a
worker** (``score_contexts``, written when its engine has loaded). The producer may run where the
model's files are not (a laptop submitting to GPU hosts), and even where they are it cannot resolve
everything a worker does (``dtype=auto`` depends on the worker's GPU), while a context no worker
ever ran cannot have cached a score. The context is chosen so:

1. recorded contexts whose configured settings (model, engine, dtype, quantization, max_length,
   prefix caching, batch invariance, tensor parallelism, prompt recipe) equal this producer's and
   that were seen within ``RERANKQ_REUSE_CONTEXT_MAX_AGE``;
2. if the model's files are on this machine, only those with the same model fingerprint;
3. those of live workers (registry) if any, else all remaining; exactly one must be left.

Zero or several (say, the weights were replaced in place and both versions ran recently with no
live worker to tell) means no reuse: every pair is scored, and the reason is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from producer.chunk_plans import inline_chunks
from rerankq.model_files import local_model_path
from rerankq.score_key import configured, model_fingerprint, pair_keys
from rerankq.settings import Settings
from rerankq.store.contexts import recorded_contexts
from rerankq.store.ledger import Ledger
from rerankq.store.records import NewChunk
from rerankq.store.reuse_stage import ReuseStage
from schemas import InlinePair

if TYPE_CHECKING:  # pyarrow (under manifest_source) loads only where a manifest is read
    from sqlalchemy.orm import Session



@dataclass(frozen=True, slots=True)
class ContextChoice:
    digest: str | None
    reason: str


def choose_context(store: Ledger, settings: Settings) -> ContextChoice:
    """The scoring context to look cached scores up under, or None and why not (module docstring)."""
    wanted = configured(settings)
    found = recorded_contexts(store, wanted, settings.reuse_context_max_age)
    if not found:
        return ContextChoice(None, "no worker has recorded a scoring context for these settings yet")
    local = local_model_path(settings.model)
    if local:
        fingerprint = model_fingerprint(local, settings.fingerprint_full_weights)
        found = [c for c in found if c.context.get("model_fingerprint") == fingerprint]
        if not found:
            return ContextChoice(None, f"no worker has run the model files found here ({local})")
    from rerankq.store.registry import Registry

    live = {w.fingerprint for w in Registry(settings.database, settings.connect_timeout).alive(settings.worker_dead_after)}
    pick = [c for c in found if c.digest in live] or found
    digests = sorted({c.digest for c in pick})
    if len(digests) > 1:
        return ContextChoice(
            None,
            f"ambiguous: workers ran {len(digests)} different scoring contexts with these settings "
            f"({', '.join(d[:12] for d in digests)}); start workers, or pin the model files here",
        )
    return ContextChoice(digests[0], f"context {digests[0][:12]}")


# --- inline pairs ---------------------------------------------------------------------------------
def record_pairs(
    stage: ReuseStage,
    context: str,
    items: Sequence[InlinePair],
    *,
    instruction: str | None,
    name: str | None,
    chunk_size: int,
    model: str,
    notify: str | None = None,
    kind: str = "inline",
    also: Callable[[Session, str], None] | None = None,
) -> tuple[str, list, int, int]:
    """Stage ``items`` (validated and grouped by query already, instruction filled from the job's) and
    record the job over the misses; ``also`` as for ``Ledger.create_job``."""
    keys = pair_keys(context, [p.instruction for p in items], [p.query for p in items], [p.document for p in items])

    def plan(misses: Iterator[tuple[int, str, bytes]]) -> list[NewChunk]:
        runs: list[list[InlinePair]] = []
        last: str | None = None
        for seq, qid, _ in misses:
            if qid != last or not runs:
                runs.append([])
            last = qid
            runs[-1].append(items[seq])
        return inline_chunks(runs, chunk_size)

    stage.add(keys, [p.query_id for p in items], [p.doc_id for p in items])
    return stage.record(
        plan, context, kind=kind, name=name, instruction=instruction, model=model, notify=notify, also=also
    )
