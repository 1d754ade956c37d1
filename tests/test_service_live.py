"""`producer serve` against a real worker (`celery -A worker worker -Q gpu`, tiny model, vLLM CPU build),
real Redis and PostgreSQL: the seeds' `requests` snippet and the `cohere` SDK unchanged, non-ASCII
round trips, the interactive path during a running job, the console in a real headless Chromium
(Selenium with Debian's chromium + chromium-driver), worker metrics, Celery task events and Flower."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest
import requests

from rerankq.routing import model_queue
from tests.conftest import base_env, migrate
from tests.corpus import rows, write_manifest
from tests.polling import wait_for
from tests.services import free_port, wait_port
from tests.workers import REPO, WorkerProcess

pytestmark = pytest.mark.slow
MAX_LENGTH = 512
Q = "What is the capital of China?"
DOCS = [
    "The capital of China is Beijing.",
    "Gravity is a force that attracts two bodies towards each other.",
    "北京是中华人民共和国的首都。",
    "عاصمة الصين هي بكين.",
    "Beijing 🏯 is China's capital 🇨🇳 city.",
]




class Live:
    def __init__(self, tiny_model: Path, db: str, broker: str, tmp: Path):
        self.tmp = tmp
        self.metrics_port = free_port()
        self.env = base_env(tiny_model, db, broker, RERANKQ_MAX_LENGTH=MAX_LENGTH, RERANKQ_METRICS_PORT=self.metrics_port)
        self.env.pop("CUDA_VISIBLE_DEVICES", None)
        self.worker = WorkerProcess({**self.env, "CUDA_VISIBLE_DEVICES": ""}, tmp / "worker.log").start()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.service_log = open(tmp / "service.log", "wb")  # noqa: SIM115
        exe = str(Path(sys.executable).with_name("producer"))
        self.service = subprocess.Popen(
            [exe, "serve", "--port", str(self.port)], cwd=REPO,
            env={**os.environ, **self.env, "RERANKQ_MANIFEST_ROOTS": json.dumps([str(tmp)])},  # the manifests it may read
            stdout=self.service_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_port(self.port, 60)
        self.worker.wait_ready()

    def submit(self, n_queries: int, docs: int, chunk_size: int, name: str) -> str:
        # each job its own texts: the same texts again would be served from the score cache, not scored
        seed = zlib.crc32(name.encode())
        manifest = write_manifest(self.tmp / f"{name}.parquet", rows(n_queries=n_queries, docs_per_query=docs, seed=seed))
        r = requests.post(f"{self.url}/v1/jobs", json={"manifest": str(manifest), "chunk_size": chunk_size, "name": name}, timeout=60)
        assert r.status_code == 201, r.text
        return r.json()["job_id"]

    def status(self, job_id: str) -> dict:
        return requests.get(f"{self.url}/v1/jobs/{job_id}", timeout=30).json()

    def close(self) -> None:
        self.service.terminate()
        self.service.wait(30)
        self.worker.terminate()


@pytest.fixture(scope="module")
def live(tiny_model, pg_url, redis_url, tmp_path_factory):
    migrate(pg_url)
    stack = Live(tiny_model, pg_url, redis_url, tmp_path_factory.mktemp("live"))
    yield stack
    stack.close()


def test_the_seeds_requests_snippet_runs_as_is(live, capsys):
    url, q, docs = live.url, Q, DOCS
    # --- the snippet from the deployment guides, unchanged ---
    r = requests.post(url + "/v1/rerank", json={"query": q, "documents": docs}).json()
    for item in r["results"]:
        print(item["relevance_score"], item["document"])
    # ---
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == len(docs)
    scores = [item["relevance_score"] for item in r["results"]]
    assert scores == sorted(scores, reverse=True)
    assert sorted(item["index"] for item in r["results"]) == list(range(len(docs)))
    for item in r["results"]:
        assert item["document"] == {"text": docs[item["index"]]}, "non-ASCII text round-trips"
    assert r["model"] and r["id"].startswith("rerank-")
    assert r["usage"]["prompt_tokens"] == r["usage"]["total_tokens"] > 0

    # The same scores as the CLI's path (producer.rerank), per document.
    from producer import rerank
    from rerankq.settings import Settings

    ranked = rerank(q, docs, settings=Settings(**{k.removeprefix("RERANKQ_").lower(): v for k, v in live.env.items() if k.startswith("RERANKQ_")}))
    by_index = {item["index"]: item["relevance_score"] for item in r["results"]}
    for x in ranked:
        assert by_index[int(x.doc_id)] == pytest.approx(x.score, abs=1e-6)


def test_request_options(live):
    post = lambda body: requests.post(live.url + "/v1/rerank", json=body, timeout=120)  # noqa: E731
    full = post({"query": Q, "documents": DOCS}).json()["results"]
    objects = post({"query": Q, "documents": [{"text": d} for d in DOCS], "model": live.env["RERANKQ_MODEL"]}).json()["results"]
    assert objects == full, "documents as {text} objects score as strings"
    top = post({"query": Q, "documents": DOCS, "top_n": 2, "return_documents": False}).json()["results"]
    assert top == full[:2], "vLLM's route keeps `document` (its RerankResult requires it)"
    cohere_top = requests.post(live.url + "/v2/rerank", json={"query": Q, "documents": DOCS, "top_n": 2, "return_documents": False}, timeout=120)
    assert cohere_top.json()["results"] == [{"index": x["index"], "relevance_score": x["relevance_score"]} for x in full[:2]]  # Cohere's: left out
    for alias in ("/rerank", "/v2/rerank"):
        assert requests.post(live.url + alias, json={"query": Q, "documents": DOCS}, timeout=120).json()["results"] == full
    raw = post({"query": Q, "documents": DOCS, "use_activation": False}).json()["results"]
    assert [x["index"] for x in raw] == [x["index"] for x in full], "the same order: ranks follow the log-odds"
    for x, y in zip(raw, full):  # vLLM's use_activation false: the log-odds, whose sigmoid is the probability
        assert y["relevance_score"] == pytest.approx(1 / (1 + math.exp(-x["relevance_score"])), abs=1e-12) != x["relevance_score"]
    instructed = post({"query": Q, "documents": DOCS, "instruction": "Rank passages written in Arabic first"}).json()["results"]
    assert {x["index"]: x["relevance_score"] for x in instructed} != {x["index"]: x["relevance_score"] for x in full}

    long_doc = "Beijing " * 300
    cut = post({"query": Q, "documents": [long_doc, DOCS[1]], "max_tokens_per_doc": 5}).json()
    assert cut["results"][0]["document"]["text"] in (long_doc, DOCS[1]), "the original text comes back"
    from producer.prompt_tokens import Tokens
    from rerankq.prompt import PromptBuilder

    tokens = Tokens(PromptBuilder.from_model(live.env["RERANKQ_MODEL"], MAX_LENGTH))
    short = tokens.truncate(long_doc, 5)
    assert long_doc.startswith(short) and 0 < len(short) < 40, short
    manual = post({"query": Q, "documents": [short, tokens.truncate(DOCS[1], 5)]}).json()
    by = lambda r: {x["index"]: x["relevance_score"] for x in r["results"]}  # noqa: E731
    assert by(cut) == by(manual)


def test_cohere_sdk_unchanged(live):
    import cohere

    co = cohere.ClientV2(api_key="unused", base_url=live.url)  # the SDK needs a key even where none is checked
    response = co.rerank(model=live.env["RERANKQ_MODEL"], query=Q, documents=DOCS, top_n=3)  # the workers' model
    with pytest.raises(cohere.core.ApiError) as refused:  # a model no live worker serves: 404 at once (vLLM's answer), not after 120 s
        co.rerank(model="rerank-v3.5", query=Q, documents=DOCS)
    assert refused.value.status_code == 404 and "no worker runs rerank-v3.5" in str(refused.value.body)
    assert len(response.results) == 3
    scores = [x.relevance_score for x in response.results]
    assert scores == sorted(scores, reverse=True)
    full = requests.post(live.url + "/v1/rerank", json={"query": Q, "documents": DOCS}, timeout=120).json()["results"]
    assert [(x.index, x.relevance_score) for x in response.results] == [(x["index"], x["relevance_score"]) for x in full[:3]]
    with pytest.raises(cohere.core.ApiError) as err:
        co.rerank(model="rerank-v3.5", query=Q, documents=[])
    assert err.value.status_code == 400 and "field 'documents'" in str(err.value.body)


def test_interactive_requests_pass_a_running_job(live):
    """A job of many chunks is running; each rerank request is answered before the job ends: the worker
    took the interactive chunk between two batch chunks (latency figures: bench/service_bench.py)."""
    job = live.submit(n_queries=150, docs=20, chunk_size=40, name="nightly-big")
    wait_for(lambda: live.status(job)["state"] == "running", 120, "the job to start")
    answered_while_running = 0
    for i in range(3):
        r = requests.post(live.url + "/v1/rerank", json={"query": f"{Q} {i}", "documents": DOCS}, timeout=120)
        assert r.status_code == 200, r.text
        status = live.status(job)
        answered_while_running += status["state"] == "running"
        assert status["chunks"]["pending"] > 0 or status["state"] != "running"
    assert answered_while_running == 3, "every request overtook the batch job's remaining chunks"
    requests.post(f"{live.url}/v1/jobs/{job}/cancel", timeout=30)


def test_worker_metrics_and_service_metrics(live):
    # a job of its own: /v1/rerank and producer rerank go through the live lane and leave no job behind
    job = live.submit(n_queries=2, docs=3, chunk_size=10, name="metrics")
    wait_for(lambda: live.status(job)["state"] == "completed", 300, "the metrics test's job")
    requests.post(live.url + "/v1/rerank", json={"query": Q, "documents": DOCS}, timeout=120).raise_for_status()
    text = requests.get(f"http://127.0.0.1:{live.metrics_port}/metrics", timeout=10).text
    pairs = float(re.search(r'^rerankq_worker_pairs_scored_total\{model="[^"]+"\} (\S+)$', text, re.M).group(1))
    tokens = float(re.search(r'^rerankq_worker_tokens_scored_total\{model="[^"]+"\} (\S+)$', text, re.M).group(1))
    assert pairs > 0 and tokens > pairs
    assert re.search(r'^rerankq_worker_chunk_duration_seconds_count\{model="[^"]+"\} [1-9]', text, re.M)
    assert "rerankq_worker_engine_busy_ratio{model=" in text and 'rerankq_worker_engine_memory_bytes{device="cpu",model=' in text
    service = requests.get(f"{live.url}/metrics", timeout=10).text
    assert re.search(r'^rerankq_workers_alive\{model="[^"]+"\} 1\.0$', service, re.M), service
    workers = requests.get(f"{live.url}/v1/workers", timeout=10).json()
    assert [w["alive"] for w in workers] == [True]
    wait_for(  # the registry's count arrives with the worker's next heartbeat (RERANKQ_HEARTBEAT_INTERVAL)
        lambda: requests.get(f"{live.url}/v1/workers", timeout=10).json()[0]["pairs_scored"] > 0, 60, "the heartbeat"
    )
    assert re.search(r"^rerankq_pairs_scored_total [1-9]", service, re.M)
    assert re.search(r'^rerankq_jobs\{state="completed"\} [1-9]', service, re.M)
    assert re.search(r"^rerankq_rerank_duration_seconds_count [1-9]", service, re.M)


def test_worker_sends_task_events(live):
    """Celery's own event receiver sees the chunk task sent, received, started and succeeded."""
    from producer import submit_pairs, wait
    from producer.queueing import broker_app
    from rerankq.settings import Settings

    settings = Settings(broker_url=live.env["RERANKQ_BROKER_URL"], database_url=live.env["RERANKQ_DATABASE_URL"], model=live.env["RERANKQ_MODEL"])
    app = broker_app(settings)
    seen: list[dict] = []
    ready = threading.Event()

    def listen() -> None:
        with app.connection_for_read() as conn:
            receiver = app.events.Receiver(conn, handlers={"*": seen.append})
            ready.set()
            with contextlib.suppress(Exception):
                receiver.capture(limit=None, timeout=60, wakeup=False)

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    ready.wait(10)
    time.sleep(1)
    job_id = submit_pairs([{"query_id": "q", "doc_id": "d", "query": Q, "document": DOCS[0]}], settings=settings)
    wait(job_id, timeout=120, settings=settings)

    def kinds() -> set[str]:
        return {e["type"] for e in seen if e.get("name") == "rerankq.score_chunk" or e["type"].startswith("task-")}

    wait_for(lambda: {"task-sent", "task-received", "task-started", "task-succeeded"} <= kinds(), 30, f"task events, got {kinds()}")
    sent = [e for e in seen if e["type"] == "task-sent"]
    queue = model_queue("gpu", live.env["RERANKQ_MODEL"])  # the model's own queue (rerankq/routing.py)
    assert any(e.get("name") == "rerankq.score_chunk" and e.get("queue") == queue for e in sent), sent[:3]
    assert any(e["type"] == "worker-heartbeat" for e in seen) or any(e["type"] == "task-succeeded" for e in seen)


def test_flower_lists_the_chunk_tasks(live, tmp_path):
    port = free_port()
    log = open(tmp_path / "flower.log", "wb")  # noqa: SIM115
    flower = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker", "flower", f"--port={port}", "--address=127.0.0.1"],
        env={**os.environ, **live.env, "FLOWER_UNAUTHENTICATED_API": "true"}, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_port(port, 60)
        time.sleep(2)  # its event receiver connects
        job = live.submit(n_queries=2, docs=3, chunk_size=3, name="flower")
        wait_for(lambda: live.status(job)["state"] == "completed", 120, "the job")

        def tasks() -> dict:
            return requests.get(f"http://127.0.0.1:{port}/api/tasks", timeout=10).json()

        found = wait_for(lambda: [t for t in tasks().values() if t.get("name") == "rerankq.score_chunk" and t.get("state") == "SUCCESS"], 30, "Flower to list the tasks")
        assert len(found) >= 2
        assert "rerankq.score_chunk" in requests.get(f"http://127.0.0.1:{port}/tasks", timeout=10).text or found
    finally:
        flower.terminate()
        flower.wait(30)


# --- the console in a real browser -------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not Path(chromium).exists() or not Path(driver_path).exists():
        pytest.fail("needs Debian's chromium and chromium-driver (scripts/test.sh installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,900"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_console_try_it_shows_the_ranked_result(live, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(live.url + "/try")
    assert "Try it" in browser.find_element(By.TAG_NAME, "h1").text
    browser.find_element(By.ID, "query").send_keys(Q)
    browser.find_element(By.ID, "documents").send_keys("\n".join(DOCS[:2] + DOCS[3:]))  # chromedriver: no astral emoji in send_keys
    browser.find_element(By.ID, "rank").click()
    WebDriverWait(browser, 120).until(lambda d: d.find_element(By.ID, "try-results").is_displayed())
    rows_ = browser.find_elements(By.CSS_SELECTOR, "#try-results tbody tr")
    shown = [[c.text for c in r.find_elements(By.TAG_NAME, "td")] for r in rows_]
    api = requests.post(live.url + "/v1/rerank", json={"query": Q, "documents": DOCS[:2] + DOCS[3:]}, timeout=120).json()
    assert [s[2] for s in shown] == [x["document"]["text"] for x in api["results"]], "same ranking as the API"
    assert [float(s[1]) for s in shown] == pytest.approx([x["relevance_score"] for x in api["results"]], abs=1e-6)
    assert "عاصمة الصين" in browser.page_source
    _screenshot(browser, "console-try.png")


def test_console_shows_a_running_jobs_progress_moving(live, browser):
    """The pages re-render their rows as the job moves, so every read finds its element afresh and a read that
    meets an element just replaced (StaleElementReferenceException) is tried again, not failed."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def wait(seconds: float) -> WebDriverWait:
        return WebDriverWait(browser, seconds, 0.2, ignored_exceptions=(StaleElementReferenceException,))

    def fresh(read):  # noqa: ANN001, ANN202 - a read of elements that a re-render may replace mid-read
        return wait(30).until(lambda d: (read(d),))[0]

    job = live.submit(n_queries=150, docs=20, chunk_size=40, name="nightly-console")
    browser.get(live.url + "/")
    row = f'tr[data-job="{job}"]'
    wait(60).until(lambda d: d.find_elements(By.CSS_SELECTOR, row))

    def scored() -> int:
        cells = browser.find_elements(By.CSS_SELECTOR, f"{row} td.scored")
        return int(cells[0].text.split("/")[0].replace(",", "").strip()) if cells else -1

    first = wait(120).until(lambda d: scored() if scored() > 0 else None)
    wait(120).until(lambda d: scored() > first)
    state = fresh(lambda d: d.find_element(By.CSS_SELECTOR, f"{row} td.state").text)
    assert state in ("running", "completed")
    if state == "running":
        _screenshot(browser, "console.png")

    browser.get(f"{live.url}/jobs/{job}")
    wait(300).until(lambda d: d.find_element(By.ID, "state").text == "completed")  # a bound, not a speed: CI is loaded
    assert fresh(lambda d: d.find_element(By.CSS_SELECTOR, '[data-chunk-state="done"]').text) == "75"
    browser.find_element(By.ID, "query-id").send_keys("q0003")
    browser.find_element(By.CSS_SELECTOR, "#query-form button").click()
    wait(30).until(lambda d: d.find_element(By.ID, "query-results").is_displayed())
    ranks = fresh(lambda d: [r.find_elements(By.TAG_NAME, "td")[0].text for r in d.find_elements(By.CSS_SELECTOR, "#query-results tbody tr")])
    assert ranks == [str(i) for i in range(1, 21)]
    assert "20 documents scored for query q0003" in fresh(lambda d: d.find_element(By.ID, "query-message").text)


def _screenshot(browser, name: str) -> None:
    """Kept under RERANKQ_SCREENSHOT_DIR when set (docs/console.png is made this way)."""
    target = os.environ.get("RERANKQ_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(target) / name))

