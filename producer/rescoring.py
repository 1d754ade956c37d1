"""Re-scoring a whole job under the scoring context workers run now: submit it again, then cancel it.

A module of its own: it calls submission, which uses job control, so job control never has to import
submission (no import circle; ``lint-imports`` checks)."""

from __future__ import annotations

from collections.abc import Callable

from producer.errors import InputError
from producer.job_control import ledger
from producer.submission import submit_manifest, submit_pairs
from rerankq.settings import Settings, get_settings


def rescore(job_id: str, settings: Settings | None = None, report: Callable[[str], None] | None = None) -> str:
    """Re-score a whole job under the scoring context workers run now (e.g. after its checkpoint was
    replaced in place): submit it again (same manifest, name, instruction, model and cascade; scores
    cached under the new context are reused), then cancel the old job. Returns the new job's id."""
    settings = settings or get_settings()
    store = ledger(settings)
    st = store.status(store.resolve_job(job_id))
    if st.kind == "manifest" and st.manifest:
        then = f"{st.then_model}:top={st.then_top}" if st.then_model else None
        new = submit_manifest(
            st.manifest, instruction=st.instruction, name=st.name, settings=settings, model=st.model, then=then, report=report
        )
    else:
        pairs = store.inline_pairs(st.job_id)
        if len(pairs) != st.pairs_total:  # pairs reused at submission were never written into a chunk
            raise InputError(
                f"job {st.job_id}: {st.pairs_total - len(pairs):,} of its pairs came from the score cache and their "
                "texts are not kept: submit the pairs again"
            )
        new = submit_pairs(pairs, name=st.name, settings=settings, model=st.model, report=report)
    store.cancel(st.job_id)
    return new
