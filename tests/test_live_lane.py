"""The live lane (issue 28) without worker processes: the engine loop's priorities and cancellation on a
fake vLLM engine, the worker's lane thread against real Redis, and the service's side (429 past the bound,
504 with the request taken off the lane, no ledger row) with a registry row standing for a worker.
(tests/test_live_lane_workers.py runs real workers and `producer serve` on PostgreSQL.)"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from rerankq.live import LIVE_PRIORITY, LivePair, LiveReply, LiveRequest, cancel_key, lane_key, reply_key
from rerankq.settings import Settings
from tests.conftest import migrate
from tests.polling import wait_for
from tests.services import redis_client


# --- the engine loop ----------------------------------------------------------------------------------
class FakeEngine:
    """vLLM's LLMEngine as the loop uses it: ``step`` finishes the first waiting request in the scheduler's
    order (priority, then arrival) when the policy is priority, else in arrival order."""

    def __init__(self, policy: str, max_num_seqs: int = 2):
        self.vllm_config = SimpleNamespace(scheduler_config=SimpleNamespace(max_num_seqs=max_num_seqs, policy=policy))
        self.policy = policy
        self.waiting: list[tuple[int, int, str]] = []
        self.added: list[tuple[str, int]] = []
        self.aborted: list[str] = []
        self.finished: list[str] = []
        self.gate = threading.Event()  # steps run only while set
        self.gate.set()
        self._n = 0

    def add_request(self, rid: str, prompt, params, priority: int = 0) -> None:  # noqa: ANN001
        self._n += 1
        self.added.append((rid, priority))
        self.waiting.append((priority if self.policy == "priority" else 0, self._n, rid))

    def step(self) -> list:
        self.gate.wait()
        time.sleep(0.001)
        if not self.waiting:
            return []
        self.waiting.sort()
        _, _, rid = self.waiting.pop(0)
        self.finished.append(rid)
        return [SimpleNamespace(request_id=rid, outputs=SimpleNamespace(data=[float(rid)]))]

    def abort_request(self, ids: list[str]) -> None:
        self.aborted.extend(ids)
        self.waiting = [w for w in self.waiting if w[2] not in ids]


def loop_over(engine: FakeEngine):  # noqa: ANN201
    from worker.engines.engine_loop import EngineLoop

    return EngineLoop(lambda: SimpleNamespace(llm_engine=engine))


def test_urgent_prompts_enter_the_engine_first_and_carry_vllm_priority():
    engine = FakeEngine("priority", max_num_seqs=2)  # the loop keeps 4 requests in the engine
    engine.gate.clear()
    loop = loop_over(engine)
    try:
        batch = loop.submit([[1, 2, 3]] * 12)
        wait_for(lambda: len(engine.added) == 4, 30, "the engine filled to its limit")
        live = loop.submit([[4, 5]] * 3, priority=LIVE_PRIORITY)
        engine.gate.set()
        assert len(live.result(30)) == 3 and len(batch.result(30)) == 12
        order = [rid for rid, _ in engine.added]
        live_ids = [rid for rid, p in engine.added if p == LIVE_PRIORITY]
        assert len(live_ids) == 3, engine.added
        assert order.index(live_ids[0]) == 4, "the live prompts went in past the limit, before the waiting batch prompts"
        assert all(p == 0 for rid, p in engine.added if rid not in live_ids)
        done = engine.finished
        assert max(done.index(r) for r in live_ids) < len(done) - 8, "scheduled ahead of the batch prompts waiting"
    finally:
        loop.close()


def test_fcfs_engines_get_no_priority_argument():
    engine = FakeEngine("fcfs")
    loop = loop_over(engine)
    try:
        assert loop.submit([[1]] * 2, priority=LIVE_PRIORITY).result(30)
        assert [p for _, p in engine.added] == [0, 0], "vLLM refuses priorities unless its policy is priority"
    finally:
        loop.close()


def test_a_cancelled_batch_is_aborted_in_the_engine():
    from worker.engines.engine_loop import EngineClosed

    engine = FakeEngine("priority")
    engine.gate.clear()
    loop = loop_over(engine)
    try:
        future = loop.submit([[1]] * 3, priority=LIVE_PRIORITY)
        wait_for(lambda: len(engine.added) == 3, 30, "the prompts in the engine")
        loop.cancel(future)
        engine.gate.set()
        with pytest.raises(EngineClosed):
            future.result(30)
        unfinished = sorted(rid for rid, _ in engine.added if rid not in engine.finished)
        assert len(unfinished) >= 2 and sorted(engine.aborted) == unfinished, "the step under way finished one at most"
        assert loop.submit([[1]]).result(30), "the loop goes on"
    finally:
        loop.close()


# --- the worker's lane thread ---------------------------------------------------------------------------
class HeldEngine:
    """An engine whose futures resolve only when the test says so; ``cancel`` is the engine loop's."""

    name = "held"
    priorities = True

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, Future]] = []
        self.cancelled: list[Future] = []

    def submit_log_odds(self, prompts, type_starts=None, priority: int = 0) -> Future:  # noqa: ANN001
        future: Future = Future()
        future.set_running_or_notify_cancel()
        self.calls.append((len(prompts), priority, future))
        return future

    def cancel(self, future: Future) -> None:
        from worker.engines.engine_loop import EngineClosed

        self.cancelled.append(future)
        future.set_exception(EngineClosed("cancelled"))

    def close(self) -> None:
        pass


CACHED = {"Beijing is the capital.": (0.75, 1.0986122886681098)}  # a document the night scored: (P(yes), log-odds)


def cached(pairs: list) -> list:  # noqa: ANN001 - the worker's score-cache lookup (worker/tasks.py: _live_cached)
    return [CACHED.get(p.document) for p in pairs]


@pytest.fixture()
def lane(tiny_model: Path, redis_url: str):  # noqa: ANN201
    from rerankq.prompt import PromptBuilder
    from worker.engines.base import Reranker
    from worker.live_lane import LiveLane

    redis_client(redis_url).flushdb()
    settings = Settings(model=str(tiny_model), broker_url=redis_url, max_length=512, live_in_flight=2)
    engine = HeldEngine()
    reranker = Reranker(PromptBuilder.from_model(str(tiny_model), 512), engine, pipeline_pairs=0)
    lane = LiveLane(settings, reranker, "test-worker", cached=cached).start()
    yield SimpleNamespace(engine=engine, settings=settings, redis=redis_client(redis_url), key=lane.key)
    lane.stop()


def push(lane, documents: list[str], deadline: float | None = None, cancelled: bool = False) -> LiveRequest:  # noqa: ANN001
    """A request on the lane; ``cancelled``: its client gone before any worker took it (the mark set first, or
    the lane could take it between the push and the mark)."""
    from rerankq.live import new_id

    request = LiveRequest(
        id=new_id(), model=lane.settings.model, deadline=deadline or time.time() + 60,
        pairs=[LivePair(query="capital of China?", document=d) for d in documents],
    )  # fmt: skip
    if cancelled:
        lane.redis.set(cancel_key(request.id), b"1", ex=60)
    lane.redis.rpush(lane.key, request.model_dump_json())
    return request


def test_the_lane_scores_ahead_replies_and_aborts_a_cancelled_request(lane):
    first = push(lane, ["Beijing", "Paris"])
    wait_for(lambda: len(lane.engine.calls) == 1, 30, "the first request in the engine")
    n, priority, future = lane.engine.calls[0]
    assert (n, priority) == (2, LIVE_PRIORITY), "the live priority reaches the engine"
    future.set_result([3.0, -1.0])
    wait_for(lambda: lane.redis.exists(reply_key(first.id)), 30, "the reply")
    assert 0 < lane.redis.ttl(reply_key(first.id)) <= 60, "a reply nobody reads expires"
    reply = LiveReply.model_validate_json(lane.redis.blpop([reply_key(first.id)], timeout=30)[1])
    assert reply.error is None and [r.logit for r in reply.results] == [3.0, -1.0]
    assert reply.results[0].score == pytest.approx(1 / (1 + 2.718281828459045**-3.0)) and reply.results[0].tokens > 0

    running = push(lane, ["Beijing"])  # in the engine, then its client leaves: aborted there, no reply
    wait_for(lambda: len(lane.engine.calls) == 2, 30, "the second request in the engine")
    lane.redis.set(cancel_key(running.id), b"1", ex=60)
    wait_for(lambda: lane.engine.cancelled, 30, "the engine told to abort it")
    assert lane.engine.cancelled == [lane.engine.calls[1][2]]

    waiting = push(lane, ["Beijing"], cancelled=True)  # cancelled before any worker began it: never reaches the engine
    expired = push(lane, ["Beijing"], deadline=time.time() - 1)  # nobody waits for it any more
    last = push(lane, ["Paris"])
    wait_for(lambda: len(lane.engine.calls) == 3, 30, "the last request in the engine")
    lane.engine.calls[2][2].set_result([0.0])
    assert lane.redis.blpop([reply_key(last.id)], timeout=30) is not None
    assert len(lane.engine.calls) == 3, "the cancelled and the expired request were skipped"
    for gone in (running, waiting, expired):
        assert not lane.redis.exists(reply_key(gone.id))
    assert lane.redis.llen(lane.key) == 0


def test_cached_pairs_answer_from_the_cache_and_copies_reach_the_engine_once(lane):
    """What a night scored answers with the cached score itself (the search box and the export agree bit for
    bit); the misses reach the engine, each distinct pair once, and every copy gets its one result."""
    request = push(lane, ["Paris", "Beijing is the capital.", "Paris", "Rome"])
    wait_for(lambda: len(lane.engine.calls) == 1, 30, "the misses in the engine")
    n, _, future = lane.engine.calls[0]
    assert n == 2, "Paris once, Rome once; the cached document never reaches the engine"
    future.set_result([2.0, -2.0])
    reply = LiveReply.model_validate_json(lane.redis.blpop([reply_key(request.id)], timeout=30)[1])
    assert [(r.score, r.logit) for r in reply.results][1] == CACHED["Beijing is the capital."]
    assert [r.logit for r in reply.results] == [2.0, CACHED["Beijing is the capital."][1], 2.0, -2.0]
    everything_cached = push(lane, ["Beijing is the capital."])
    reply = LiveReply.model_validate_json(lane.redis.blpop([reply_key(everything_cached.id)], timeout=30)[1])
    assert reply.error is None and reply.results[0].score == 0.75 and len(lane.engine.calls) == 1


def test_a_worker_takes_no_more_than_its_room(lane):
    requests = [push(lane, [f"doc {i}"]) for i in range(4)]
    wait_for(lambda: len(lane.engine.calls) == 2, 30, "two requests in the engine")
    time.sleep(0.5)  # the lane keeps polling: it must not take a third while two are in flight
    assert len(lane.engine.calls) == 2 and lane.redis.llen(lane.key) == 2, "the rest wait for a worker with room"
    lane.engine.calls[0][2].set_result([1.0])
    wait_for(lambda: len(lane.engine.calls) == 3, 30, "room for one more")
    for _, _, future in lane.engine.calls[1:]:
        future.set_result([1.0])
    wait_for(lambda: len(lane.engine.calls) == 4, 30, "the last one")
    lane.engine.calls[3][2].set_result([1.0])
    for r in requests:
        assert lane.redis.blpop([reply_key(r.id)], timeout=30) is not None


# --- the service's side -------------------------------------------------------------------------------
@pytest.fixture()
def settings(tmp_path: Path, redis_url: str, tiny_model: Path) -> Settings:
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    migrate(db)
    redis_client(redis_url).flushdb()
    return Settings(
        database_url=db, broker_url=redis_url, model=str(tiny_model), max_length=512, rerank_timeout=1.0,
        max_interactive_backlog=2,
    )  # fmt: skip


def lane_worker(settings: Settings, live: bool = True) -> None:
    """A registry row for a live worker of the model that runs (or does not run) a live lane; nothing scores."""
    from rerankq.store.registry import Registry, WorkerInfo

    registry = Registry(settings.database)
    registry.register(WorkerInfo("gpu-node-1:7:x", "gpu-node-1", 7, settings.model, {"live_lane": live}))
    registry.heartbeat("gpu-node-1:7:x", state="ready")


def client(settings: Settings) -> TestClient:
    from producer.service import create_app

    return TestClient(create_app(settings))


BODY = {"query": "capital of China?", "documents": ["Beijing", "Paris"]}


def test_past_the_bound_429_and_a_timed_out_request_leaves_the_lane(settings):
    lane_worker(settings)
    r = redis_client(settings.broker)
    key = lane_key(settings.queue, settings.model)
    with client(settings) as c:
        timed_out = c.post("/v1/rerank", json=BODY)
        assert timed_out.status_code == 504, timed_out.text
        assert timed_out.json()["detail"].startswith("no worker scored the request within 1 s (RERANKQ_RERANK_TIMEOUT)")
        assert r.llen(key) == 0, "taken off the lane: no worker will ever score it"
        marks = [k for k in r.keys("rerankq:live:cancel:*")]
        assert len(marks) == 1 and 0 < r.ttl(marks[0]), "and marked cancelled, in case a worker took it meanwhile"

        r.rpush(key, "waiting-1", "waiting-2")  # two requests of other clients wait for a worker
        full = c.post("/v1/rerank", json=BODY)
        assert full.status_code == 429, full.text
        assert full.headers["retry-after"] == "1"
        assert "interactive queue is full (2 requests waiting for a worker, RERANKQ_MAX_INTERACTIVE_BACKLOG=2)" in full.json()["detail"]
        assert r.lrange(key, 0, -1) == [b"waiting-1", b"waiting-2"], "a refused request is not queued"
        text = c.get("/metrics").text
        model = settings.model
        assert f'rerankq_live_requests_total{{model="{model}",outcome="timeout"}} 1.0' in text
        assert f'rerankq_live_requests_total{{model="{model}",outcome="full"}} 1.0' in text
        assert c.get("/v1/jobs", params={"interactive": "true"}).json() == [], "no job per live request"


def test_a_reply_answers_in_vllm_shape_best_first(settings):
    lane_worker(settings)
    r = redis_client(settings.broker)
    key = lane_key(settings.queue, settings.model)

    def worker() -> None:  # what worker/live_lane.py does, by hand
        raw = r.blpop([key], timeout=30)[1]
        request = LiveRequest.model_validate_json(raw)
        assert [p.document for p in request.pairs] == BODY["documents"]
        results = [{"score": 0.25, "logit": -1.0986, "tokens": 10}, {"score": 0.75, "logit": 1.0986, "tokens": 11}]
        r.rpush(reply_key(request.id), json.dumps({"id": request.id, "worker": "w", "results": results}))

    thread = threading.Thread(target=worker)
    thread.start()
    with client(settings.model_copy(update={"rerank_timeout": 30.0})) as c:
        answer = c.post("/v1/rerank", json=BODY)
    thread.join()
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["id"].startswith("rerank-") and body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0
    assert body["results"] == [
        {"index": 1, "relevance_score": 0.75, "document": {"text": "Paris"}},
        {"index": 0, "relevance_score": 0.25, "document": {"text": "Beijing"}},
    ]


def test_workers_without_a_lane_still_get_jobs_and_no_worker_is_503(settings):
    with client(settings) as c:
        assert c.post("/v1/rerank", json=BODY).status_code == 503, "no worker alive: at once, as before"
        lane_worker(settings, live=False)
        assert c.post("/v1/rerank", json=BODY).status_code == 504
        assert [j["state"] for j in c.get("/v1/jobs", params={"interactive": "true"}).json()] == ["cancelled"]
    assert redis_client(settings.broker).llen(lane_key(settings.queue, settings.model)) == 0
