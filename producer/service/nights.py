"""The night-to-night page's numbers: `producer diff`'s summary (producer.changes.diff, the same
code) and a histogram of how far the changed scores moved."""

from __future__ import annotations

import re
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import aliased

from producer.changes import Diff, diff
from rerankq.store.ledger import Ledger
from rerankq.store.models import Score
from schemas import JobState, JobStatus

FINISHED = (JobState.completed, JobState.completed_with_errors)


@dataclass
class Histogram:
    """Counts of ``new_score - old_score`` over the pairs whose score changed, in equal bins from
    ``edges[0]`` to ``edges[-1]`` (symmetric around 0, so the sign of a shift reads at a glance)."""

    edges: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    largest: float = 0.0  # the largest |change|

    @property
    def total(self) -> int:
        return sum(self.counts)


@dataclass
class NightReport:
    old: JobStatus
    new: JobStatus
    diff: Diff
    histogram: Histogram


_DATED = re.compile(r"[-_.: ]*\d[\d\-_.:T ]*$")  # a trailing date or number: nightly-2026-11-30, kb-17


def series(job: JobStatus) -> tuple[str | None, str, str | None]:
    """What makes two jobs nights of one series: the name without its trailing date or number (`nightly`
    for ``nightly-2026-11-30``), the kind and the model. Jobs without a name pair with each other."""
    return (_DATED.sub("", job.name) if job.name else None), job.kind, job.model


def last_two_nights(jobs: list[JobStatus]) -> tuple[JobStatus, JobStatus] | None:
    """(last night, tonight) of a newest-first list: the newest finished job that has an earlier finished
    job of its series (``series``), and that job; None when no finished job has one. Never a batch
    against a webhook test just because they finished last."""
    done = [j for j in jobs if j.state in FINISHED]
    for i, tonight in enumerate(done):
        key = series(tonight)
        last = next((j for j in done[i + 1 :] if series(j) == key), None)
        if last is not None:
            return last, tonight
    return None


def score_deltas(store: Ledger, old_job: str, job: str) -> Iterator[float]:
    """``new - old`` for each pair both jobs scored with a different score: the pairs `diff` counts as
    ``changed`` that have a score on both nights (a pair with an error on either night has no distance).

    A join on the scores' primary key, streamed: `iter_changes` gives the same pairs, but ranks every
    pair of both jobs first, which a histogram does not need."""
    o, n = aliased(Score), aliased(Score)
    stmt = (
        select(n.score - o.score)
        .join(o, (o.job_id == old_job) & (o.query_id == n.query_id) & (o.doc_id == n.doc_id))
        .where(n.job_id == job, n.score.is_not(None), o.score.is_not(None), n.score != o.score)
    )
    with store.session() as s:
        for (delta,) in s.execute(stmt.execution_options(yield_per=50_000)):
            yield float(delta)


def score_changes(store: Ledger, old_job: str, job: str, bins: int = 40) -> Histogram:
    """Histogram of the score changes between two jobs (``score_deltas``), symmetric around 0."""
    deltas = array("d", score_deltas(store, old_job, job))
    if not deltas:
        return Histogram()
    largest = max(abs(d) for d in deltas)
    width = 2 * largest / bins
    counts = [0] * bins
    for d in deltas:
        counts[min(bins - 1, int((d + largest) // width))] += 1
    return Histogram(edges=[-largest + i * width for i in range(bins + 1)], counts=counts, largest=largest)


def night_report(store: Ledger, old_job: str, job: str, top_k: int = 10, examples: int = 100) -> NightReport:
    """Both jobs resolved (ids or unique prefixes), their diff and the histogram of score changes."""
    old, new = store.status(store.resolve_job(old_job)), store.status(store.resolve_job(job))
    summary = diff(store, old.job_id, new.job_id, top_k=top_k, examples=examples)
    return NightReport(old=old, new=new, diff=summary, histogram=score_changes(store, old.job_id, new.job_id))
