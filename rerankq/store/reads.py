"""Reading the ledger for people: resolve a job id prefix, a job's status (counts, errors, who
holds its running chunks), the job list, and the totals /metrics reports."""

from __future__ import annotations

from sqlalchemy import func, or_, select, text
from sqlalchemy.orm import Session

from rerankq.store.actor import Actor, tenant_filter
from rerankq.store.base import LedgerBase
from rerankq.store.clock import aware, now, presumed_alive
from rerankq.store.errors import AmbiguousJob, UnknownJob
from rerankq.store.models import Chunk, Job, Score, Worker
from schemas import ChunkCounts, ChunkHolder, JobState, JobStatus


class Reads(LedgerBase):
    def resolve_job(self, job: str, show: int = 10, actor: Actor | None = None) -> str:
        """The full id of the job whose id is ``job`` or starts with it, as git resolves a commit.
        UnknownJob when none matches, AmbiguousJob (listing up to ``show`` of them) when several do.
        ``actor``: only the jobs it sees count (another tenant's job is unknown, never ambiguous)."""
        job = job.strip()
        if not job:
            raise UnknownJob(job)
        pattern = job.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        visible = tenant_filter(Job.owner, actor)
        with self.session() as s:
            found = s.get(Job, job)
            if found is not None and (actor is None or actor.sees(found.owner)):
                return job
            query = select(Job.id).where(Job.id.like(pattern, escape="\\"), *visible).order_by(Job.id).limit(show + 1)
            matches = s.scalars(query).all()
        if not matches:
            raise UnknownJob(job)
        if len(matches) > 1:
            raise AmbiguousJob(job, [*matches[:show], *(["…"] if len(matches) > show else [])])
        return matches[0]

    def status(self, job_id: str) -> JobStatus:
        with self.session() as s:
            return self._status(s, self._job(s, job_id))

    def list_jobs(self, limit: int = 50, exclude_name: str | None = None, actor: Actor | None = None) -> list[JobStatus]:
        """Newest first; ``exclude_name`` leaves out e.g. the many one-chunk jobs of interactive reranks;
        ``actor``: only the jobs it sees."""
        with self.session() as s:
            stmt = select(Job).where(*tenant_filter(Job.owner, actor)).order_by(Job.created_at.desc()).limit(limit)
            if exclude_name is not None:
                stmt = stmt.where(or_(Job.name.is_(None), Job.name != exclude_name))
            jobs = s.scalars(stmt).all()
            return [self._status(s, j) for j in jobs]

    def job_counts(self) -> dict[str, int]:
        """Jobs per state (metrics)."""
        with self.session() as s:
            return {state: n for state, n in s.execute(select(Job.state, func.count()).group_by(Job.state))}

    def pairs_scored_total(self) -> int:
        """Pairs scored by finished chunks, all jobs (metrics; grows as chunks finish)."""
        with self.session() as s:
            return int(s.scalar(select(func.coalesce(func.sum(Chunk.scored), 0)).where(Chunk.state == "done")) or 0)

    def inline_pairs(self, job_id: str) -> list[dict]:
        """The pairs an inline job's chunks carry (stage 1), in order: what it takes to submit it again."""
        with self.session() as s:
            specs = s.scalars(
                select(Chunk.spec).where(Chunk.job_id == job_id, Chunk.stage == 1).order_by(Chunk.seq)
            ).all()
        return [p for spec in specs if spec.get("kind") == "inline" for p in spec["pairs"]]

    def query_id_sample(self, job_ids: list[str], size: int = 20_000) -> list[str]:
        """About ``size`` query ids drawn from the jobs' score rows, one per sampled pair (a query with
        many documents comes up often): where to cut a job into pieces of similar size. PostgreSQL
        samples pages (TABLESAMPLE SYSTEM, repeatable); SQLite walks the key index at even steps.
        Every row when the jobs hold fewer than ``size`` pairs."""
        params = {f"j{i}": j for i, j in enumerate(job_ids)}
        jobs = ", ".join(f":{k}" for k in params)
        with self.session() as s:
            total = s.scalar(select(func.coalesce(func.sum(Job.pairs_total), 0)).where(Job.id.in_(job_ids))) or 0
            if self.dialect == "postgresql":
                pct = min(100.0, 100.0 * size / max(total, 1))
                sql = f"SELECT query_id FROM scores TABLESAMPLE SYSTEM (:pct) REPEATABLE (0) WHERE job_id IN ({jobs})"
                return list(s.scalars(text(sql), {**params, "pct": pct}))
            step = max(1, int(total) // max(size, 1))
            sql = (
                "SELECT query_id FROM (SELECT query_id, row_number() OVER (ORDER BY job_id, query_id, doc_id) AS n "
                f"FROM scores WHERE job_id IN ({jobs})) WHERE n % :step = 0"
            )
            return list(s.scalars(text(sql), {**params, "step": step}))

    def score_count(self, job_id: str) -> int:
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(Score).where(Score.job_id == job_id)) or 0

    def _status(self, s: Session, job: Job) -> JobStatus:
        counts = ChunkCounts()
        scored = failed = 0
        for stage, state, n, n_scored, n_errors, n_pairs in s.execute(
            select(
                Chunk.stage, Chunk.state, func.count(), func.sum(Chunk.scored), func.sum(Chunk.pair_errors),
                func.sum(Chunk.pairs),
            )
            .where(Chunk.job_id == job.id)
            .group_by(Chunk.stage, Chunk.state)
        ):  # fmt: skip
            setattr(counts, state, getattr(counts, state) + n)
            if stage != 1:  # a cascade's stage 2 re-scores pairs stage 1 counted
                continue
            if state == "done":
                scored, failed = scored + (n_scored or 0), failed + (n_errors or 0)
            elif state == "failed":
                failed += n_pairs or 0
        started, finished = aware(job.started_at), aware(job.finished_at)
        end = finished or (now() if started else None)
        elapsed = (end - started).total_seconds() if started and end else None
        return JobStatus(
            job_id=job.id,
            name=job.name,
            kind=job.kind,
            state=JobState(job.state),
            manifest=job.manifest,
            pairs_total=job.pairs_total,
            pairs_scored=scored,
            pairs_failed=failed,
            pairs_reused=job.pairs_reused or 0,
            submitting=bool(job.submitting),
            model=job.model,
            score_context=job.score_context,
            instruction=job.instruction,
            then_model=job.then_model,
            then_top=job.then_top,
            then_context=job.then_context,
            chunks_total=job.chunks_total,
            chunks=counts,
            created_at=aware(job.created_at),  # type: ignore[arg-type]
            started_at=started,
            finished_at=finished,
            elapsed_seconds=elapsed,
            pairs_per_second=(scored / elapsed) if elapsed else None,
            errors=self._errors(s, job, failed),
            holders=self._holders(s, job.id),
        )

    @staticmethod
    def _errors(s: Session, job: Job, pairs_failed: int) -> list[str]:
        """The job's own error, then up to 20 chunk errors and (when pairs failed) 5 pair errors."""
        errors = [
            f"chunk {seq}: {err}"
            for seq, err in s.execute(
                select(Chunk.seq, Chunk.error)
                .where(Chunk.job_id == job.id, Chunk.error.is_not(None))
                .order_by(Chunk.seq)
                .limit(20)
            )
        ]
        if pairs_failed:
            errors += [
                f"pair ({qid!r}, {did!r}): {err}"
                for qid, did, err in s.execute(
                    select(Score.query_id, Score.doc_id, Score.error)
                    .where(Score.job_id == job.id, Score.error.is_not(None))
                    .limit(5)
                )
            ]
        return [job.error, *errors] if job.error else errors

    def _holders(self, s: Session, job_id: str) -> list[ChunkHolder]:
        """Running chunks and their workers, alive or presumed dead (heartbeat older than dead_after)."""
        at = now()
        rows = s.execute(
            select(Chunk.seq, Chunk.worker, Worker.last_seen, Worker.state)
            .outerjoin(Worker, Worker.id == Chunk.worker)
            .where(Chunk.job_id == job_id, Chunk.state == "running")
            .order_by(Chunk.seq)
        ).all()
        return [
            ChunkHolder(
                chunk=seq,
                worker_id=worker,
                alive=presumed_alive(state, seen, self.dead_after, at),
                last_seen=aware(seen),
            )
            for seq, worker, seen, state in rows
        ]
