"""The worker's heartbeat: a thread of its own, on its own timer, independent of the engine loop,
so a long chunk on a live worker keeps a fresh ``last_seen`` and is never taken away.

Each beat also gives the sweeper a turn. A worker sweeps only after its own heartbeats have
succeeded for ``worker_dead_after`` seconds: right after a database outage every worker looks
silent, and none must be declared dead before it had the chance to beat again."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from rerankq.logs import get_logger
from rerankq.store.registry import Registry, WorkerInfo

log = get_logger("rerankq.liveness")


class Liveness:
    def __init__(
        self,
        registry: Registry,
        info: WorkerInfo,
        interval: float,
        dead_after: float,
        sweep: Callable[[], object] | None = None,
    ):
        self.registry, self.info = registry, info
        self.interval, self.dead_after = interval, dead_after
        self.sweep = sweep
        self._lock = threading.Lock()
        self._holding: dict[int, float] = {}
        self._update: dict = {}
        self._stop = threading.Event()
        self._healthy_since: float | None = None
        self._thread = threading.Thread(target=self._run, name="rerankq-heartbeat", daemon=True)

    @property
    def worker_id(self) -> str:
        return self.info.worker_id

    def start(self) -> Liveness:
        self.registry.register(self.info)
        self._healthy_since = time.monotonic()
        self._thread.start()
        return self

    def set(self, **values: object) -> None:
        """Report ``state``/``fingerprint`` with the next beat (sent now, from the caller's thread)."""
        with self._lock:
            self._update.update(values)
        self._beat()

    def hold(self, chunk_id: int) -> None:
        with self._lock:
            self._holding[chunk_id] = time.monotonic()

    def release(self, chunk_id: int, pairs: int = 0) -> None:
        with self._lock:
            started = self._holding.pop(chunk_id, None)
            if pairs and started is not None:
                seconds = time.monotonic() - started
                self._update["pairs_per_second"] = pairs / seconds if seconds > 0 else None
                self._update["add_scored"] = self._update.get("add_scored", 0) + pairs

    def _beat(self) -> bool:
        with self._lock:
            update, self._update = self._update, {}
            holding = sorted(self._holding)
        try:
            if not self.registry.heartbeat(self.worker_id, holding=holding, **update):
                self.registry.register(self.info)  # forgotten (e.g. pruned after a long outage)
                self.registry.heartbeat(self.worker_id, holding=holding, **update)
        except Exception as exc:  # the database is away: keep what was not sent, try again next beat
            with self._lock:
                added = update.pop("add_scored", 0)
                update.update(self._update)
                self._update = update
                if added:
                    self._update["add_scored"] = self._update.get("add_scored", 0) + added
            if self._healthy_since is not None:
                log.warning("heartbeat_failed", error=str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
            self._healthy_since = None
            return False
        if self._healthy_since is None:
            self._healthy_since = time.monotonic()
            log.info("heartbeat_restored")
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if not self._beat() or self.sweep is None:
                continue
            if self._healthy_since is not None and time.monotonic() - self._healthy_since >= self.dead_after:
                try:
                    self.sweep()
                except Exception as exc:
                    log.warning("sweep_failed", error=str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)

    def fail(self, error: str) -> None:
        """The engine did not load and the worker exits: no more beats, and ``failed`` (with why) at once."""
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)
        self.registry.failed(self.worker_id, error)

    def stop(self, state: str = "stopped") -> None:
        """Last beat on a clean exit: the registry shows the worker stopped, not dead."""
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)
        self.set(state=state)
