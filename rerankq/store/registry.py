"""The worker registry: who is alive, what each holds, and named leases (one sweeper at a time).

Liveness is a heartbeat written on the worker's own timer, independent of its engine, so a long
chunk on a live worker is never mistaken for a dead one."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from rerankq.store.clock import GONE, aware, now, presumed_alive
from rerankq.store.db import session_factory
from rerankq.store.models import Lease, Worker
from schemas import WorkerStatus


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    worker_id: str
    host: str
    pid: int
    model: str
    engine: dict = field(default_factory=dict)


def worker_status(w: Worker, dead_after: float, at: datetime | None = None) -> WorkerStatus:
    at = at or now()
    seen = aware(w.last_seen)
    silent = (at - seen).total_seconds()  # type: ignore[operator]
    alive = presumed_alive(w.state, w.last_seen, dead_after, at)
    engine = dict(w.engine or {})
    if w.state in GONE:
        state = w.state
    elif not alive:
        state = "dead"
    elif w.state == "ready" and w.holding:
        state = "busy"
    else:
        state = w.state
    return WorkerStatus(
        worker_id=w.id,
        host=w.host,
        pid=w.pid,
        model=w.model,
        engine=engine,
        fingerprint=w.fingerprint,
        state=state,
        alive=alive,
        holding=list(w.holding or []),
        pairs_scored=w.pairs_scored or 0,
        pairs_per_second=w.pairs_per_second,
        started_at=aware(w.started_at),  # type: ignore[arg-type]
        last_seen=seen,  # type: ignore[arg-type]
        seconds_since_seen=max(0.0, silent),
        error=engine.get("error") if state == "failed" else None,
    )


class Registry:
    def __init__(self, url: str, connect_timeout: float = 5.0):
        self.session = session_factory(url, connect_timeout)

    def register(self, info: WorkerInfo) -> None:
        t = now()
        with self.session.begin() as s:
            s.merge(
                Worker(
                    id=info.worker_id,
                    host=info.host,
                    pid=info.pid,
                    model=info.model,
                    engine=info.engine,
                    state="loading",
                    holding=[],
                    pairs_scored=0,
                    started_at=t,
                    last_seen=t,
                )
            )

    def heartbeat(
        self,
        worker_id: str,
        *,
        state: str | None = None,
        holding: list[int] | None = None,
        fingerprint: str | None = None,
        pairs_per_second: float | None = None,
        add_scored: int = 0,
        engine: dict | None = None,
    ) -> bool:
        """Refresh ``last_seen`` (and whatever is given); False when the row is gone (re-register)."""
        values: dict = {"last_seen": now()}
        if state is not None:
            values["state"] = state
        if holding is not None:
            values["holding"] = list(holding)
        if fingerprint is not None:
            values["fingerprint"] = fingerprint
        if pairs_per_second is not None:
            values["pairs_per_second"] = pairs_per_second
        if engine is not None:
            values["engine"] = engine
        if add_scored:
            values["pairs_scored"] = Worker.pairs_scored + add_scored
        with self.session.begin() as s:
            return s.execute(update(Worker).where(Worker.id == worker_id).values(**values)).rowcount == 1

    def failed(self, worker_id: str, error: str) -> None:
        """The worker could not load its engine and exits: ``failed`` at once, with why, so nobody waits
        RERANKQ_WORKER_DEAD_AFTER for it (the error is kept with the engine's settings: no schema change)."""
        with self.session.begin() as s:
            w = s.get(Worker, worker_id)
            if w is not None:
                w.state, w.holding, w.last_seen = "failed", [], now()
                w.engine = {**(w.engine or {}), "error": error}

    def workers(self, dead_after: float, forget_after: float = 86400.0) -> list[WorkerStatus]:
        """Every worker seen in the last ``forget_after`` seconds, the live ones first."""
        at = now()
        with self.session() as s:
            rows = s.scalars(
                select(Worker).where(Worker.last_seen >= at - timedelta(seconds=forget_after)).order_by(Worker.id)
            ).all()
        out = [worker_status(w, dead_after, at) for w in rows]
        return sorted(out, key=lambda w: (not w.alive, w.worker_id))

    def alive(self, dead_after: float) -> list[WorkerStatus]:
        return [w for w in self.workers(dead_after) if w.alive]

    def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        """Take or renew the lease ``name`` for ``ttl`` seconds; False while another holder's is valid."""
        t = now()
        until = t + timedelta(seconds=ttl)
        with self.session.begin() as s:
            taken = s.execute(
                update(Lease)
                .where(Lease.name == name, (Lease.holder == holder) | (Lease.expires_at < t))
                .values(holder=holder, expires_at=until)
            ).rowcount
            if taken:
                return True
            if s.get(Lease, name) is not None:
                return False
        try:
            with self.session.begin() as s:
                s.add(Lease(name=name, holder=holder, expires_at=until))
            return True
        except IntegrityError:  # another worker created it first
            return False

    def release_lease(self, name: str, holder: str) -> None:
        with self.session.begin() as s:
            s.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))

    def release_dead(self, dead_after: float) -> int:
        """Workers presumed dead (silent for ``dead_after`` s) or stopped hold nothing any more: the sweeper
        has taken their chunks back, so the registry must not go on listing them as held."""
        cutoff = now() - timedelta(seconds=dead_after)
        with self.session.begin() as s:
            return s.execute(
                update(Worker)
                .where((Worker.last_seen < cutoff) | Worker.state.in_(GONE))
                .values(holding=[])
            ).rowcount

    def forget(self, older_than: float) -> int:
        """Drop workers not seen for ``older_than`` seconds (their history stays in chunks.worker)."""
        with self.session.begin() as s:
            return s.execute(delete(Worker).where(Worker.last_seen < now() - timedelta(seconds=older_than))).rowcount
