"""Streaming submission: a manifest is checked, recorded and queued piece by piece (a batch of up to
``BATCH_ROWS`` rows of one file), so the workers start on the first chunks while the rest is still read.

For each clean piece, in one transaction (rerankq/store/submissions.py): its pairs looked up in the score
cache and the hits copied into the job's scores (when the job reuses), the chunks closed by its misses
recorded; then those chunks are published. A query's run is never cut: its rows wait until the query
ends. A chunk is closed once the planner has opened the next one (or it is full), so chunks are as large
as before; a query text repeated after its chunk was sent starts that text's next chunk
(producer/chunk_plans.py, ``take_closed``).

A bad row refuses the job: at the first problem its pending chunks are cancelled (workers skip them) and
it fails with the rows, files and fields found so far; the rest of the manifest is still checked and the
job's error then lists every problem (the first 50). It keeps ``submitting``, so nothing is exported from
it. A bad row in the first piece refuses before anything is recorded, as before."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from producer.chunk_plans import ChunkPacker
from producer.errors import BrokerUnavailable, InputError
from producer.manifest import CheckedBatch, CheckedManifest
from producer.queueing import enqueue
from rerankq.logs import get_logger
from rerankq.manifest_source import ManifestError
from rerankq.score_key import pair_keys
from rerankq.settings import DEFAULT_INSTRUCTION, Settings
from rerankq.store.ledger import Ledger
from rerankq.store.records import NewChunk
from rerankq.store.submissions import PieceRows, Submission, SubmissionStopped
from schemas import ChunkMessage, ManifestSegment, ManifestSpec

log = get_logger("rerankq.streaming")
Row = tuple[int, int]  # (file index, row in that file)
KEY_HEAD = 8  # a cache key's first bytes, standing for its instruction and query (rerankq/score_key.py)


@dataclass
class Submitted:
    job_id: str
    pairs: int  # rows of the manifest
    reused: int
    chunks: int


class StreamPlanner:
    """The misses' query runs packed into chunks as they come (producer/chunk_plans.py); ``closed()``
    hands out the chunks no later run will join, ``rest()`` the others at the end."""

    def __init__(self, uri: str, instruction: str | None, chunk_size: int):
        self.uri, self.instruction = uri, instruction
        self.packer: ChunkPacker[list[Row]] = ChunkPacker(chunk_size, streaming=True)
        self.files: dict[int, tuple[str, int | None, int]] = {}
        self.run: list[Row] = []
        self.heads: set[bytes] = set()
        self.current: str | None = None

    def feed(self, batch: CheckedBatch, misses: list[int], heads: Sequence[bytes], cut: int | None = None) -> None:
        """The piece's misses (indexes into it, in order); ``heads``: each row's text head, or its cache key
        whose first ``cut`` bytes stand for its instruction and query."""
        self.files[batch.file_index] = (batch.file.path, batch.file.size, batch.file_rows)
        qids, first, f = batch.values["query_id"], batch.first_row, batch.file_index
        run, seen = self.run, self.heads
        for i in misses:
            qid = qids[i]
            if qid != self.current and run:
                self._end_run()
                run, seen = self.run, self.heads
            self.current = qid
            run.append((f, first + i))
            seen.add(heads[i][:cut] if cut else heads[i])

    def _end_run(self) -> None:
        self.packer.add(self.run, len(self.run), self.heads)
        self.run, self.heads = [], set()

    def closed(self) -> list[NewChunk]:
        return [self._spec(runs) for runs, _ in self.packer.take_closed()]

    def rest(self) -> list[NewChunk]:
        if self.run:
            self._end_run()
        return [self._spec(runs) for runs, _ in self.packer.chunks()]

    def _spec(self, runs: list[list[Row]]) -> NewChunk:
        rows = sorted(r for run in runs for r in run)
        by_file: dict[int, list[int]] = {}
        for f, r in rows:
            by_file.setdefault(f, []).append(r)
        segments = []
        for f, local in by_file.items():
            path, size, file_rows = self.files[f]
            start, stop = local[0], local[-1] + 1
            dense = stop - start == len(local)
            segments.append(
                ManifestSegment(path=path, start=start, stop=stop, size=size, file_rows=file_rows, rows=None if dense else local)
            )
        spec = ManifestSpec(uri=self.uri, segments=segments, instruction=self.instruction)
        return NewChunk(spec=spec.model_dump(mode="json"), pairs=len(rows))


class _Publisher:
    """Chunks published as their piece commits; after a broker failure the rest are only recorded (stamped
    as sent: the sweeper re-sends them) and the failure is raised once the job is submitted."""

    def __init__(self, store: Ledger, settings: Settings, started: float, job: Callable[[], str]):
        self.store, self.settings, self.started, self.job = store, settings, started, job
        self.sent = 0
        self.failed: BrokerUnavailable | None = None

    def __call__(self, messages: list[ChunkMessage]) -> None:
        if not messages or self.failed is not None:
            return
        try:
            enqueue(messages, self.store, self.settings, mark=False)
        except BrokerUnavailable as exc:
            self.failed = exc
            return
        if not self.sent:
            log.info("first_chunk_queued", job_id=self.job(), since_submit_s=round(time.perf_counter() - self.started, 3))
        self.sent += len(messages)


def submit_stream(
    checked: CheckedManifest,
    store: Ledger,
    settings: Settings,
    context: str | None,
    *,
    chunk_size: int,
    on_job: Callable[[str], None] | None = None,
    **job: object,
) -> Submitted:
    """Check, record and queue ``checked`` piece by piece (module docstring); ``context``: the scoring
    context to reuse cached scores under (None: every pair is scored). ``on_job`` is told the job id once
    the job exists (its first piece recorded). ManifestError for bad rows, after the job (if any) is refused."""
    started = time.perf_counter()
    job_id = str(uuid.uuid4())
    planner = StreamPlanner(checked.uri, checked.instruction, chunk_size)
    publish = _Publisher(store, settings, started, lambda: job_id)
    submission: Submission | None = None
    refused = cancelled = 0
    try:
        for batch in checked.stream():
            if batch is None:  # the first bad row: stop the job at once, then check the rest
                if submission is not None:
                    cancelled = submission.refuse(checked.problems.report(checked.uri, _refused(job_id, None)))
                    refused = 1
                    log.warning("submission_refused", job_id=job_id, chunks_cancelled=cancelled)
                continue
            if submission is None:
                submission = Submission(store, job_id, context, settings.cache_touch_interval)
                submission.open(kind="manifest", manifest=checked.uri, instruction=checked.instruction, model=settings.model, **job)
                if on_job is not None:
                    on_job(job_id)
            rows, heads = _piece(batch, context, checked.instruction)

            def plan(misses: list[int], batch: CheckedBatch = batch, heads: Sequence[bytes] = heads) -> list[NewChunk]:
                planner.feed(batch, misses, heads, KEY_HEAD if context is not None else None)
                return planner.closed()

            publish(submission.record(rows, plan).messages)
        if checked.problems.count or checked.total == 0:
            if submission is not None:
                submission.refuse(checked.problems.report(checked.uri, _refused(job_id, cancelled)))
            checked.raise_problems(_refused(job_id, cancelled) if submission is not None else "nothing was submitted")
        assert submission is not None  # rows were read and none was bad
        last = submission.record(PieceRows([], []), lambda _: planner.rest(), final=True)
        publish(last.messages)
        reused = submission.reused
    except SubmissionStopped as exc:  # cancelled meanwhile: what was recorded stays cancelled
        raise InputError(str(exc)) from None
    except ManifestError:  # refused above, with every problem
        raise
    except BaseException as exc:  # a database or reading failure, Ctrl-C: the job can never be whole
        if submission is not None and not refused:
            _abandon(submission, exc)
        raise
    finally:
        if submission is not None:
            submission.close()
    log.info(
        "submission_streamed", job_id=job_id, pairs=checked.total, reused=reused, chunks=submission.chunks,
        chunks_sent=publish.sent, submit_s=round(time.perf_counter() - started, 2),
    )  # fmt: skip
    if publish.failed is not None:
        raise BrokerUnavailable(
            f"{publish.failed}; job {job_id} is recorded whole: the sweeper re-sends its unsent chunks "
            f"(or run `producer resume {job_id}`)"
        )
    return Submitted(job_id, checked.total, reused, submission.chunks)


def _piece(batch: CheckedBatch, context: str | None, instruction: str | None) -> tuple[PieceRows, Sequence[bytes]]:
    """A piece's rows for the ledger and each row's planning head: its cache key (whose first ``KEY_HEAD``
    bytes are the instruction and query part) with reuse, else its text head."""
    values = batch.values
    if context is None:
        return PieceRows(values["query_id"], values["doc_id"]), batch.heads
    keys = pair_keys(context, batch.instructions, values["query"], values["document"], DEFAULT_INSTRUCTION)
    return PieceRows(values["query_id"], values["doc_id"], keys), keys


def _refused(job_id: str, cancelled: int | None) -> str:
    chunks = "" if cancelled is None else f", {cancelled} queued chunk(s) cancelled"
    return f"job {job_id} refused{chunks}, nothing is exported from it"


def _abandon(submission: Submission, exc: BaseException) -> None:
    """Fail the half-recorded job (its pending chunks cancelled), best effort: if the database is away it
    stays ``submitting`` until ``producer cancel``."""
    reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    try:
        submission.refuse(f"submission stopped before the whole manifest was recorded: {reason}")
    except Exception as again:
        log.warning("submission_abandon_failed", job_id=submission.job_id, error=str(again).splitlines()[0][:200])
