"""One long-lived vLLM engine loop per worker process: the GPU never drains between slices or chunks.

``LLM.classify`` adds a list of requests and steps the engine until all of them finish, so the batch
empties at the end of every call: with one call per slice the GPU idled at every slice and chunk
boundary. Here one thread owns the engine for the life of the worker. It creates the ``LLM`` (so
every engine call, CUDA graphs and streams included, happens on that thread, whichever thread or
Celery signal loads the engine), then loops: move queued requests into the engine, ``step()``,
resolve finished ones. Any thread submits a batch of token-id prompts and gets a Future of its log-odds,
so the next slice and the next chunk join the running batch while the current one is scored.

The request interface (``LLMEngine.add_request`` / ``step`` / ``abort_request`` with a
``vllm.inputs.tokens_input`` prompt and ``PoolingParams(task="classify")``) is what ``LLM.classify``
itself uses in vLLM 0.26 and 0.32, and it keeps at most ``2 x max_num_seqs`` requests in the engine,
as ``LLM.classify`` does: the scheduler's per-step cost grows with its queue.

Priorities (the live lane, worker/live_lane.py): a batch submitted with a ``priority`` below 0 goes to the
front of the queue and into the engine at the next fill, whatever the limit, so it joins the very next
engine step; when vLLM's scheduler runs the ``priority`` policy (RERANKQ_SCHEDULING_POLICY), its requests
also carry that priority, so the scheduler takes them ahead of batch prompts already waiting inside the engine.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from rerankq.logs import get_logger

log = get_logger("rerankq.engine")


class EngineClosed(RuntimeError):
    """The engine loop was closed before (or while) this batch was scored."""


@dataclass(eq=False)
class _Batch:
    """Prompts of one ``submit`` call; resolved as a whole, in input order."""

    prompts: Sequence[Sequence[int]]
    future: Future[list[float]]
    type_starts: Sequence[int | None] | None = None  # token types (BERT): where each document starts
    priority: int = 0  # below 0: ahead of every batch prompt (vLLM: lower is scheduled first)
    scores: list[float] = field(default_factory=list)
    remaining: int = 0
    next_index: int = 0  # the next prompt to hand to the engine
    in_engine: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.scores = [0.0] * len(self.prompts)
        self.remaining = len(self.prompts)


def _params(params: Any, batch: _Batch, i: int) -> Any:
    """The request's pooling params: the shared ones, or a copy telling where its token types turn 1."""
    start = batch.type_starts[i] if batch.type_starts is not None else None
    if start is None:
        return params
    own = params.clone()
    own.extra_kwargs = {**(own.extra_kwargs or {}), "compressed_token_type_ids": int(start)}
    return own


class EngineLoop:
    """Owns a ``vllm.LLM`` on a dedicated thread; ``submit`` is safe from any number of threads."""

    def __init__(self, make_llm: Callable[[], Any], name: str = "rerankq-engine"):
        self._cond = threading.Condition()
        self._queue: deque[_Batch] = deque()  # batches with prompts not yet in the engine, FIFO
        self._owner: dict[str, tuple[_Batch, int]] = {}  # request id -> (batch, index)
        self._cancel: list[_Batch] = []
        self._ids = itertools.count()
        self._closing = False
        self._ready: Future[None] = Future()
        self.llm: Any = None
        self.priorities = False  # whether vLLM's scheduler takes request priorities (its policy is "priority")
        self._thread = threading.Thread(target=self._run, args=(make_llm,), name=name, daemon=True)
        self._thread.start()
        self._ready.result()  # the engine's load error, if any, raised in the loading thread

    # ------------------------------------------------------------------ callers (any thread)
    def submit(
        self, prompts: Sequence[Sequence[int]], type_starts: Sequence[int | None] | None = None, priority: int = 0
    ) -> Future[list[float]]:
        """Queue prompts (token ids); the Future holds each prompt's log-odds, in order. ``type_starts``: per
        prompt, the position from which token type ids are 1 (BERT pairs), as vLLM's own score path passes
        them (``compressed_token_type_ids``). ``priority`` below 0: ahead of every waiting batch (the live lane)."""
        batch = _Batch(prompts, Future(), type_starts, priority)
        if not prompts:
            batch.future.set_result([])
            return batch.future
        batch.future.set_running_or_notify_cancel()
        with self._cond:
            if self._closing:
                raise EngineClosed("the engine is closed")
            if priority < 0:  # behind earlier urgent batches, ahead of every ordinary one
                at = next((i for i, b in enumerate(self._queue) if b.priority >= 0), len(self._queue))
                self._queue.insert(at, batch)
            else:
                self._queue.append(batch)
            self._cond.notify()
        return batch.future

    def cancel(self, future: Future[list[float]]) -> None:
        """Drop a batch's remaining prompts (its other slices failed, or its live request was cancelled): the
        engine aborts those it holds and never starts the rest; the Future fails with EngineClosed."""
        with self._cond:
            for batch in itertools.chain(self._queue, (b for b, _ in self._owner.values())):
                if batch.future is future:
                    self._cancel.append(batch)
                    self._cond.notify()
                    return

    def close(self, timeout: float = 60.0) -> None:
        """Fail what is still queued, shut the engine core down on its own thread, and wait for it."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ------------------------------------------------------------------ the loop (engine thread)
    def _run(self, make_llm: Callable[[], Any]) -> None:
        try:
            self.llm = make_llm()
            from vllm import PoolingParams
            from vllm.inputs import tokens_input

            engine = self.llm.llm_engine
            scheduler = engine.vllm_config.scheduler_config
            limit = 2 * int(scheduler.max_num_seqs)
            self.priorities = str(getattr(scheduler, "policy", "fcfs")).lower().endswith("priority")
        except BaseException as exc:  # noqa: BLE001 - handed to the loading thread
            self._ready.set_exception(exc)
            return
        self._ready.set_result(None)
        # The raw head output: with Qwen3-Reranker's original head (classifier_from_token no/yes) it is
        # one logit, logit(yes) − logit(no); sigmoid is applied by rerankq in float64 (rerankq/log_odds.py).
        params = PoolingParams(task="classify", use_activation=False)
        try:
            while True:
                with self._cond:
                    while not (self._closing or self._queue or self._owner or self._cancel):
                        self._cond.wait()
                    if self._closing:
                        break
                    cancelled, self._cancel = self._cancel, []
                for batch in cancelled:
                    self._drop(engine, batch, EngineClosed("cancelled"))
                self._fill(engine, params, tokens_input, limit)
                if self._owner:
                    self._step(engine)
        except BaseException as exc:  # noqa: BLE001 - the engine died: fail everyone, refuse new work
            log.critical("engine_loop_died", error=str(exc)[:500])
            self._fail_all(exc)
            with self._cond:
                self._closing = True
            self._shutdown()
            return
        self._fail_all(EngineClosed("the engine was closed"))
        self._shutdown()

    def _fill(self, engine: Any, params: Any, tokens_input: Callable[..., Any], limit: int) -> None:
        """Top the engine up to ``limit`` requests from the queue, oldest batch first; urgent batches (priority
        below 0, at the queue's front) go in whole, past the limit."""
        while True:
            with self._cond:
                if not self._queue:
                    return
                batch = self._queue[0]
            urgent = batch.priority < 0
            if not urgent and len(self._owner) >= limit:
                return
            start = batch.next_index
            end = len(batch.prompts) if urgent else min(len(batch.prompts), start + limit - len(self._owner))
            extra = {"priority": batch.priority} if self.priorities and batch.priority else {}
            try:
                for i in range(start, end):
                    rid = str(next(self._ids))
                    engine.add_request(rid, tokens_input(list(batch.prompts[i])), _params(params, batch, i), **extra)
                    self._owner[rid] = (batch, i)
                    batch.in_engine.add(rid)
                    batch.next_index = i + 1
            except Exception as exc:  # a prompt the engine refuses fails its batch, not the others
                self._drop(engine, batch, exc)
                continue
            if batch.next_index >= len(batch.prompts):
                with self._cond:
                    if self._queue and self._queue[0] is batch:
                        self._queue.popleft()

    def _step(self, engine: Any) -> None:
        try:
            outputs = engine.step()
        except Exception as exc:
            # One failing step fails every batch in flight; the loop stays up, so a health check can
            # tell a bad batch from a dead engine (the next step raises again).
            log.error("engine_step_failed", error=str(exc)[:500], in_flight=len(self._owner))
            for batch in {b for b, _ in self._owner.values()}:
                self._drop(engine, batch, exc)
            return
        for out in outputs:
            owner = self._owner.pop(out.request_id, None)
            if owner is None:
                continue
            batch, i = owner
            batch.in_engine.discard(out.request_id)
            batch.scores[i] = float(out.outputs.data[0])
            batch.remaining -= 1
            if batch.remaining == 0 and not batch.future.done():
                batch.future.set_result(batch.scores)

    def _drop(self, engine: Any, batch: _Batch, exc: BaseException) -> None:
        with self._cond:
            try:
                self._queue.remove(batch)
            except ValueError:
                pass
        if batch.in_engine:
            ids = list(batch.in_engine)
            for rid in ids:
                self._owner.pop(rid, None)
            batch.in_engine.clear()
            try:
                engine.abort_request(ids)
            except Exception as abort_exc:  # noqa: BLE001 - the batch fails anyway
                log.warning("engine_abort_failed", error=str(abort_exc)[:200])
        if not batch.future.done():
            batch.future.set_exception(exc)

    def _fail_all(self, exc: BaseException) -> None:
        with self._cond:
            batches = list(self._queue) + [b for b, _ in self._owner.values()]
            self._queue.clear()
        self._owner.clear()
        for batch in batches:
            if not batch.future.done():
                batch.future.set_exception(exc)

    def _shutdown(self) -> None:
        """Engine core down and the process group destroyed (vLLM warns at exit otherwise)."""
        llm, self.llm = self.llm, None
        if llm is None:
            return
        shutdown = getattr(getattr(getattr(llm, "llm_engine", None), "engine_core", None), "shutdown", None)
        try:
            if callable(shutdown):
                shutdown()
        except Exception as exc:  # noqa: BLE001
            log.warning("engine_shutdown_failed", error=str(exc)[:200])
        try:
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

            destroy_model_parallel()
            destroy_distributed_environment()
        except Exception as exc:  # noqa: BLE001
            log.warning("engine_teardown_failed", error=str(exc)[:200])
        del llm
