"""The console's pages in a real headless Chromium (Selenium, Debian's chromium + chromium-driver) over a
real SQLite ledger filled the way the system fills it: two nights of one knowledge base submitted with
`producer.submit_manifest` (the second reusing the first's scores from the score cache), their chunks
scored by a stand-in worker (the pairs read from the manifest as a worker reads them, a score from the
texts only, written with `Ledger.finish_chunk` and the worker's cache keys), a third job still running,
and real worker-registry rows. No engine runs here: the worker's path is tested in test_service_live.py.

Screenshots go to $RERANKQ_SCREENSHOT_DIR when set (``RERANKQ_SCREENSHOT_DIR=docs`` makes docs/console-*.png)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import update

from producer import submit_manifest
from producer.changes import iter_changes
from producer.waiting import NO_WORKER
from producer.waiting import no_worker as no_worker_words
from rerankq.score_key import context_for
from rerankq.settings import Settings
from rerankq.store.contexts import record_worker_context
from rerankq.store.ledger import Ledger
from rerankq.store.models import Chunk, Job, Worker
from rerankq.store.progress import throughput
from rerankq.store.records import ScoreRow
from rerankq.store.registry import Registry, WorkerInfo
from schemas import ChunkCounts, JobState, JobStatus
from tests.conftest import migrate
from tests.corpus import rows, write_manifest
from tests.nightly import night2
from tests.services import POSTGRES_URL, create_database, drop_database, free_port, redis_client, wait_port
from worker.chunk_pairs import load_pairs

GIB = 2**30
TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\s\((just now|\d+ s ago|\d+ min ago|\d+ h ago|\d+ days ago)\)$")
BUSY, LOADING, DEAD = "gpu-node-1:4242:a1b2", "gpu-node-1:4243:c3d4", "gpu-node-2:977:e5f6"
OTHER, OTHER_MODEL = "gpu-node-3:31:a7b8", "Qwen/Qwen3-Reranker-8B"  # a worker of another model, on the same ledger


def fake_score(instruction: str | None, query: str, document: str) -> float:
    """A score that depends on the texts only, as the model's does (an edited document scores anew)."""
    digest = hashlib.sha256(f"{instruction}\x00{query}\x00{document}".encode()).digest()
    return int.from_bytes(digest[:6], "big") / 2**48


def score_pending(store: Ledger, settings: Settings, job_id: str, worker: str, limit: int | None = None) -> list[int]:
    """Score the job's pending chunks (the first ``limit``) as a worker would; returns their chunk ids."""
    context = context_for(settings, settings.model)
    done = []
    for msg in store.resumable(job_id)[:limit]:
        assert store.begin_chunk(job_id, msg.chunk_id, worker, settings.model, context=context.digest) is None
        keyed = load_pairs(msg.spec)
        keys = context.keys([k.pair.instruction for k in keyed], [k.pair.query for k in keyed], [k.pair.document for k in keyed])
        rows_ = [ScoreRow(k.query_id, k.doc_id, fake_score(k.pair.instruction, k.pair.query, k.pair.document), None, key) for k, key in zip(keyed, keys)]
        assert store.finish_chunk(job_id, msg.chunk_id, rows_)
        done.append(msg.chunk_id)
    return done


def replay_times(store: Ledger, job_id: str, start: datetime, seconds_per_chunk: list[float], finished: bool = True) -> None:
    """Put the job's done chunks on a timeline (they were scored in a blink here): chunk k takes
    ``seconds_per_chunk[k % len]`` after the one before, as one worker scoring them in turn would."""
    with store.session.begin() as s:
        chunks = s.query(Chunk).filter(Chunk.job_id == job_id, Chunk.state == "done").order_by(Chunk.seq).all()
        t = start
        for k, chunk in enumerate(chunks):
            chunk.started_at = t
            t = t + timedelta(seconds=seconds_per_chunk[k % len(seconds_per_chunk)])
            chunk.finished_at = t
        values = {"created_at": start - timedelta(seconds=4), "started_at": start}
        if finished:
            values["finished_at"] = t
        s.execute(update(Job).where(Job.id == job_id).values(**values))


class Console:
    """The ledger, its jobs and workers, and `producer serve`'s app under uvicorn in a thread."""

    def __init__(self, tmp: Path, tiny_model: Path, redis_url: str):
        url = f"sqlite:///{tmp / 'ledger.db'}"
        migrate(url)
        self.settings = Settings(database_url=url, broker_url=redis_url, model=str(tiny_model), dtype="float32", max_length=512)
        self.store = Ledger(url)
        self.registry = Registry(url)
        at = datetime.now(UTC)
        self.registry.register(WorkerInfo(BUSY, "gpu-node-1", 4242, str(tiny_model), {"engine": "vllm", "gpu_memory_bytes": 71.3 * GIB}))
        self.registry.register(WorkerInfo(LOADING, "gpu-node-1", 4243, str(tiny_model), {"engine": "vllm"}))
        self.registry.register(WorkerInfo(DEAD, "gpu-node-2", 977, str(tiny_model), {"engine": "vllm"}))
        self.registry.register(WorkerInfo(OTHER, "gpu-node-3", 31, OTHER_MODEL, {"engine": "vllm"}))
        self.registry.heartbeat(OTHER, state="ready", fingerprint="8b" * 32)
        record_worker_context(self.store, BUSY, self.settings, context_for(self.settings, tiny_model))

        night1 = rows(n_queries=200, docs_per_query=20, seed=7, long_every=50)
        self.night1 = submit_manifest(str(write_manifest(tmp / "night1.parquet", night1)), name="nightly-2026-11-29", chunk_size=100, settings=self.settings)
        score_pending(self.store, self.settings, self.night1, BUSY)
        replay_times(self.store, self.night1, at - timedelta(hours=23), [0.16, 0.135, 0.145, 0.165, 0.13, 0.15, 0.175, 0.14])
        columns, self.edits = night2(night1, seed=3)
        self.night2_columns = columns
        self.night2 = submit_manifest(str(write_manifest(tmp / "night2.parquet", columns)), name="nightly-2026-11-30", chunk_size=25, settings=self.settings)
        score_pending(self.store, self.settings, self.night2, BUSY)
        replay_times(self.store, self.night2, at - timedelta(minutes=41), [0.041, 0.036, 0.039, 0.034, 0.043, 0.037, 0.035, 0.045])
        self.running = submit_manifest(
            str(write_manifest(tmp / "adhoc.parquet", rows(n_queries=150, docs_per_query=20, seed=11, long_every=50))), name="legal-statutes", chunk_size=100, settings=self.settings
        )  # fmt: skip
        score_pending(self.store, self.settings, self.running, BUSY, limit=12)
        replay_times(self.store, self.running, datetime.now(UTC) - timedelta(seconds=2), [0.16, 0.14, 0.17, 0.15], finished=False)
        self.held = self.store.resumable(self.running)[0].chunk_id
        digest = context_for(self.settings, tiny_model).digest
        assert self.store.begin_chunk(self.running, self.held, BUSY, str(tiny_model), context=digest) is None

        self.registry.heartbeat(BUSY, state="ready", holding=[self.held], pairs_per_second=1287.4, add_scored=48_230)
        self.registry.heartbeat(LOADING, state="loading")
        self.registry.heartbeat(DEAD, state="ready", holding=[], pairs_per_second=655.0, add_scored=9_120)
        at = datetime.now(UTC)
        with self.store.session.begin() as s:  # started hours ago; the third silent for 5 minutes: presumed dead
            for worker, started, seen in ((BUSY, 6 * 3600, 0), (LOADING, 40, 0), (DEAD, 9 * 3600, 300)):
                s.execute(update(Worker).where(Worker.id == worker).values(started_at=at - timedelta(seconds=started), last_seen=at - timedelta(seconds=seen)))
        self.server, self.url = serve(self.settings)


def serve(settings: Settings):  # noqa: ANN201 - (uvicorn.Server, base URL)
    import uvicorn

    from producer.service import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    wait_port(port, 30)
    return server, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def console(tmp_path_factory, tiny_model, redis_url):
    stack = Console(tmp_path_factory.mktemp("console"), tiny_model, redis_url)
    yield stack
    stack.server.should_exit = True


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
                "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,900", "--force-device-scale-factor=1"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def screenshot(browser, name: str) -> None:  # noqa: ANN001
    """The whole page (the window grown to the document's height), kept under RERANKQ_SCREENSHOT_DIR when set."""
    target = os.environ.get("RERANKQ_SCREENSHOT_DIR")
    if not target:
        return
    height = browser.execute_script("return document.documentElement.scrollHeight")
    metrics = {"width": 1280, "height": max(600, min(height, 2400)), "deviceScaleFactor": 1, "mobile": False}
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)  # a window cannot outgrow the screen
    Path(target).mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(Path(target) / name))
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def settled(read):  # noqa: ANN001, ANN201
    """``read()`` again when a page's refresh replaced an element mid-read (StaleElementReferenceException)."""
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(50):
        try:
            return read()
        except StaleElementReferenceException:
            time.sleep(0.1)
    return read()


def cells(browser, selector: str) -> list[str]:  # noqa: ANN001
    from selenium.webdriver.common.by import By

    return settled(lambda: [c.text for c in browser.find_elements(By.CSS_SELECTOR, selector)])


def wait(browser, predicate, timeout: float = 20):  # noqa: ANN001, ANN201
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, 0.1).until(lambda d: predicate(d))


# JS: how many pixels of the canvas under ``el`` are near the series colour (#1d64d8), i.e. the chart was drawn.
BLUE_PIXELS = """
const canvas = arguments[0].querySelector("canvas");
if (!canvas) return -1;
const {width, height} = canvas;
const px = canvas.getContext("2d").getImageData(0, 0, width, height).data;
let n = 0;
for (let i = 0; i < px.length; i += 4) {
  if (px[i + 3] > 0 && Math.abs(px[i] - 29) < 40 && Math.abs(px[i + 1] - 100) < 40 && Math.abs(px[i + 2] - 216) < 40) n++;
}
return n;
"""


# --- the job's rate over time (the core read, exactly) ---------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path):
    """A fresh ledger on each database (its own database on PostgreSQL)."""
    url = f"sqlite:///{tmp_path / 'l.db'}" if request.param == "sqlite" else create_database(POSTGRES_URL)
    migrate(url)
    yield url
    if request.param == "postgresql":
        from rerankq.store.db import get_engine

        get_engine(url).dispose()
        drop_database(POSTGRES_URL, url)


def test_throughput_and_score_changes_read_the_ledger(ledger_url, tmp_path, redis_url, tiny_model):
    """The two reads behind the charts, exactly, on SQLite (naive times) and PostgreSQL (partitioned scores)."""
    from producer.changes import diff
    from producer.service.nights import score_changes

    settings = Settings(database_url=ledger_url, broker_url=redis_url, model=str(tiny_model), dtype="float32", max_length=512)
    store = Ledger(ledger_url)
    Registry(ledger_url).register(WorkerInfo("w", "h", 1, str(tiny_model)))
    record_worker_context(store, "w", settings, context_for(settings, tiny_model))
    night1 = rows(n_queries=6, docs_per_query=10, seed=2)
    job = submit_manifest(str(write_manifest(tmp_path / "m.parquet", night1)), chunk_size=10, settings=settings)
    assert throughput(store.session, job) == [], "nothing finished: nothing to chart"
    score_pending(store, settings, job, "w")
    start = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
    replay_times(store, job, start, [10, 10, 10, 5, 5, 20])  # finishes at 10, 20, 30, 35, 40, 60 s
    points = throughput(store.session, job)  # 6 chunks: 2 buckets of 30 s
    assert [p.width for p in points] == [30.0, 30.0]
    assert [p.at for p in points] == [start.timestamp() + 30, start.timestamp() + 60]
    assert [p.pairs_per_second for p in points] == [20 / 30, 40 / 30]  # 10, 20 in the first; 30 (at 30 s), 35, 40, 60 in the second
    assert sum(p.pairs_per_second * p.width for p in points) == 60 == store.status(job).pairs_scored

    columns, edits = night2(night1, seed=4)
    tonight = submit_manifest(str(write_manifest(tmp_path / "n.parquet", columns)), chunk_size=10, settings=settings)
    score_pending(store, settings, tonight, "w")
    histogram = score_changes(store, job, tonight, bins=8)
    assert histogram.total == len(edits["edited"]) == diff(store, job, tonight).changed > 0
    assert len(histogram.edges) == 9 and histogram.edges[0] == -histogram.largest
    assert histogram.edges[-1] == pytest.approx(histogram.largest)
    assert score_changes(store, job, job).total == 0, "a job against itself: nothing moved"


def test_throughput_ends_at_the_jobs_last_chunk(tmp_path, redis_url, tiny_model):
    """Issue 27: the chart ran past the job's end. 21 chunks 0.1 s apart: 7 buckets of 0.3 s, where
    2.1 / 0.3 rounds to 7.000000000000001 and a ceil drew an 8th bucket, 0.3 s after the job had ended."""
    url = f"sqlite:///{tmp_path / 'l.db'}"
    migrate(url)
    settings = Settings(database_url=url, broker_url=redis_url, model=str(tiny_model), dtype="float32", max_length=512)
    store = Ledger(url)
    job = submit_manifest(str(write_manifest(tmp_path / "m.parquet", rows(n_queries=21, docs_per_query=2, seed=2))), chunk_size=2, settings=settings)
    score_pending(store, settings, job, "w")
    start = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
    replay_times(store, job, start, [0.1])
    points = throughput(store.session, job)
    assert len(points) == 7 and points[-1].at == pytest.approx(start.timestamp() + 2.1)
    assert sum(p.pairs_per_second * p.width for p in points) == pytest.approx(42)


# --- pages in the browser --------------------------------------------------------------------------------


def test_a_job_whose_every_pair_was_reused_reads_done(tmp_path, redis_url, tiny_model, browser):
    """The issue's "0 / 2,000": the same manifest submitted again scores nothing; its job is complete at
    once and every page says all its pairs are done, reused."""
    from selenium.webdriver.common.by import By

    url = f"sqlite:///{tmp_path / 'l.db'}"
    migrate(url)
    settings = Settings(database_url=url, broker_url=redis_url, model=str(tiny_model), dtype="float32", max_length=512)
    store = Ledger(url)
    Registry(url).register(WorkerInfo("w", "h", 1, str(tiny_model)))
    record_worker_context(store, "w", settings, context_for(settings, tiny_model))
    manifest = str(write_manifest(tmp_path / "m.parquet", rows(n_queries=6, docs_per_query=10, seed=5)))
    score_pending(store, settings, submit_manifest(manifest, chunk_size=10, settings=settings), "w")
    again = submit_manifest(manifest, name="nightly-again", chunk_size=10, settings=settings)
    status = store.status(again)
    assert (status.state.value, status.pairs_total, status.pairs_reused, status.pairs_scored, status.chunks_total) == ("completed", 60, 60, 0, 0)
    server, base = serve(settings)
    try:
        browser.get(base + "/")
        row = f'tr[data-job="{again}"]'
        wait(browser, lambda d: cells(d, f"{row} td.done"))
        assert cells(browser, f"{row} td.done") == ["60 / 60"] and cells(browser, f"{row} td.reused") == ["60"]
        assert cells(browser, f"{row} td.scored") == ["0"]
        browser.get(f"{base}/jobs/{again}")
        assert browser.find_element(By.ID, "done").text == "60 / 60"
        assert browser.find_element(By.ID, "reused-share").text == "100.0 % of the pairs came from the score cache"
        wait(browser, lambda d: d.find_element(By.ID, "rate-note").text.startswith("No chunk was scored (every pair reused"))
        assert not browser.find_elements(By.CSS_SELECTOR, "#rate-chart canvas"), "no empty chart"
    finally:
        server.should_exit = True


def test_jobs_page_counts_reused_pairs_as_done(console, browser):
    """Item 1: a completed nightly job that reused most of its scores reads 400 / 400 with a full bar,
    and shows its reused pairs next to its scored ones; a running job's bar is as full as its done pairs."""
    night2 = console.store.status(console.night2)
    assert night2.state.value == "completed" and night2.pairs_reused > night2.pairs_scored > 0
    browser.get(console.url + "/")
    row = f'tr[data-job="{console.night2}"]'
    wait(browser, lambda d: cells(d, f"{row} td.done"))
    time.sleep(1.5)  # the page's own refresh has replaced the rows: check what it drew too
    assert cells(browser, f"{row} td.done") == [f"{night2.pairs_total:,} / {night2.pairs_total:,}"]
    assert cells(browser, f"{row} td.scored") == [f"{night2.pairs_scored:,}"]
    assert cells(browser, f"{row} td.reused") == [f"{night2.pairs_reused:,}"]
    filled = browser.execute_script(
        "const b = document.querySelector(arguments[0] + ' .bar'); let w = 0;"
        "b.querySelectorAll('.seg').forEach((s) => w += s.getBoundingClientRect().width); return w / b.getBoundingClientRect().width;",
        row,
    )
    assert filled == pytest.approx(1.0, abs=0.01), "a completed job is a full bar"
    running = console.store.status(console.running)
    done = running.pairs_scored + running.pairs_failed + running.pairs_reused
    assert 0 < done < running.pairs_total
    assert cells(browser, f'tr[data-job="{console.running}"] td.done') == [f"{done:,} / {running.pairs_total:,}"]
    assert cells(browser, f'tr[data-job="{console.running}"] td.state') == ["running"]
    screenshot(browser, "console-jobs.png")


def test_jobs_page_names_each_jobs_model_and_its_legend_wraps_between_items(console, browser):
    """Issue 27: the Jobs page had no model column, and its legend wrapped in the middle of an item."""
    from selenium.webdriver.common.by import By

    browser.get(console.url + "/")
    heads = cells(browser, "#jobs thead th")
    assert heads[:4] == ["job", "name", "model", "state"]
    row = f'tr[data-job="{console.night2}"]'
    for _ in ("server", "page"):  # as the server rendered it, then after the page's own refresh
        model = browser.find_element(By.CSS_SELECTOR, f"{row} td.model")
        assert (model.text, model.get_attribute("title")) == (Path(console.settings.model).name, console.settings.model), "a directory: its last part"
        time.sleep(1.5)
    from producer.service.console import model_name

    assert model_name("Qwen/Qwen3-Reranker-8B") == "Qwen/Qwen3-Reranker-8B" and model_name(None) == "–"
    assert browser.execute_script("return document.querySelector('#jobs thead').getBoundingClientRect().width") <= 1280 - 40
    legend = browser.find_elements(By.CSS_SELECTOR, ".legend .item")
    assert [i.text for i in legend] == ["reused", "scored", "failed"]
    for width in (1280, 700, 420):  # narrow windows wrap the legend: between its items only
        browser.set_window_size(width, 900)
        lines = browser.execute_script("return [...document.querySelectorAll('.legend .item')].map((i) => i.getClientRects().length)")
        assert lines == [1, 1, 1], (width, lines)
    browser.set_window_size(1280, 900)


def test_job_page_shows_the_reused_share_and_pairs_per_second_over_time(console, browser):
    from selenium.webdriver.common.by import By

    job = console.store.status(console.night2)
    browser.get(f"{console.url}/jobs/{console.night2[:6]}")  # a unique prefix, as the CLI takes
    assert browser.find_element(By.TAG_NAME, "h1").text == f"Job {console.night2}"
    assert browser.find_element(By.ID, "done").text == f"{job.pairs_total:,} / {job.pairs_total:,}"
    assert browser.find_element(By.ID, "reused").text == f"{job.pairs_reused:,}"
    assert browser.find_element(By.ID, "scored").text == f"{job.pairs_scored:,}"
    assert browser.find_element(By.ID, "model").text.startswith(f"{job.model} · context {job.score_context[:12]}")
    share = f"{100 * job.pairs_reused / job.pairs_total:.1f} %"
    assert browser.find_element(By.ID, "reused-share").text.startswith(share)
    chart = browser.find_element(By.ID, "rate-chart")
    wait(browser, lambda d: d.execute_script(BLUE_PIXELS, chart) > 200)  # the curve is on the canvas
    drawn = browser.execute_script("return arguments[0]._chart.data", chart)
    points = throughput(console.store.session, console.night2)
    assert len(points) > 3
    assert drawn[1][1:] == pytest.approx([p.pairs_per_second for p in points])
    origin = points[0].at - points[0].width  # x: seconds since the job started
    assert drawn[0] == pytest.approx([0] + [p.at - origin for p in points])
    assert sum(p.pairs_per_second * p.width for p in points) == pytest.approx(job.pairs_scored)
    # issue 27: a 78 s job was drawn to ~105 s; the x axis ends at the job's end
    span = (job.finished_at - job.started_at).total_seconds()
    assert drawn[0][-1] == pytest.approx(span, abs=0.01)
    x_scale = browser.execute_script("const s = arguments[0]._chart.scales.x; return [s.min, s.max]", chart)
    assert x_scale == pytest.approx([0, span], abs=0.01)
    assert browser.find_element(By.ID, "no-holders").text == "No chunk is running."
    assert not browser.find_element(By.ID, "holders").is_displayed(), "item 13: no table of headers only"
    screenshot(browser, "console-job.png")


def test_running_job_page_lists_its_holders_and_follows_the_query_link(console, browser):
    from selenium.webdriver.common.by import By

    browser.get(f"{console.url}/jobs/{console.running}")
    held = console.store.status(console.running).holders
    assert [h.worker_id for h in held] == [BUSY]
    wait(browser, lambda d: d.find_element(By.ID, "holders").is_displayed())
    assert not browser.find_element(By.ID, "no-holders").is_displayed()
    row = cells(browser, "#holders tbody td")
    assert row[:3] == [str(held[0].chunk), BUSY, "yes"] and TIME.match(row[3]), row
    assert browser.execute_script(BLUE_PIXELS, browser.find_element(By.ID, "rate-chart")) > 100
    # a link from the night-to-night page opens a query's ranking directly
    browser.get(f"{console.url}/jobs/{console.night2}?query_id=q0003")
    wait(browser, lambda d: d.find_element(By.ID, "query-results").is_displayed())
    docs = console.night2_columns["query_id"].count("q0003")
    assert browser.find_element(By.ID, "query-message").text == f"{docs} documents scored for query q0003"
    assert cells(browser, "#query-results tbody tr td:first-child") == [str(i) for i in range(1, docs + 1)]


def test_workers_page(console, browser):
    from selenium.webdriver.common.by import By

    for worker in (BUSY, LOADING, OTHER):  # alive now, however long the tests before this one took
        console.registry.heartbeat(worker)
    browser.get(console.url + "/workers")
    time.sleep(2.5)  # after the page's first refresh from /v1/workers
    assert settled(lambda: browser.find_element(By.ID, "summary").text) == "1 worker loading its engine, 1 worker busy, 1 worker ready"

    def row(worker: str) -> list[str]:
        return cells(browser, f'tr[data-worker="{worker}"] td')

    busy, loading, dead, other = row(BUSY), row(LOADING), row(DEAD), row(OTHER)
    context = context_for(console.settings, console.settings.model).digest[:12]
    assert busy[:7] == [BUSY, context, "busy", str(console.held), "48,230", "1287.4", "71.3 GiB"], busy
    assert loading[1:4] == ["–", "loading", "–"] and loading[6] == "–", loading
    assert dead[2] == "dead" and dead[5] == "655.0", dead
    assert other[1:3] == ["8b" * 6, "ready"], other
    assert re.search(r"\(5 min ago\)$", dead[8]), dead[8]
    assert all(TIME.match(c) for c in busy[7:] + loading[7:] + dead[7:])
    # grouped by model, a header per model with its live count, the live workers first within a model
    def table() -> tuple[list[str], list[str]]:
        rows = browser.find_elements(By.CSS_SELECTOR, "#workers tbody tr")
        order = [tr.get_attribute("data-model") or tr.get_attribute("data-worker") for tr in rows]
        return order, [r.text for r in rows if r.get_attribute("data-model")]

    order, headers = settled(table)
    groups = {console.settings.model: [*sorted([BUSY, LOADING]), DEAD], OTHER_MODEL: [OTHER]}
    assert order == [x for model, workers in sorted(groups.items()) for x in (model, *workers)], order
    assert headers == [f"{m} · {2 if m == console.settings.model else 1} alive" for m in sorted(groups)]
    screenshot(browser, "console-workers.png")


def test_night_to_night_page_is_producer_diff(console, browser):
    from selenium.webdriver.common.by import By

    from producer.changes import diff

    expected = diff(console.store, console.night1, console.night2, top_k=10, examples=100)
    browser.get(console.url + "/nights")  # by default tonight's job and last night's of the same name
    counts = {c.get_attribute("data-count"): c.find_element(By.TAG_NAME, "b").text for c in browser.find_elements(By.CSS_SELECTOR, "#summary .card")}
    assert counts == {
        "unchanged": f"{expected.unchanged:,}", "changed": f"{expected.changed:,}", "moved": f"{expected.moved:,}",
        "new": f"{expected.new:,}", "removed": f"{expected.removed:,}", "queries_top_k_changed": f"{expected.queries_top_k_changed:,}",
    }  # fmt: skip
    # the test's own edits: every edited document scores anew, the new and removed pairs are counted as such
    assert expected.changed == len(console.edits["edited"]) > 0
    assert (expected.new, expected.removed) == (len(console.edits["new"]), len(console.edits["removed"]))
    listed = cells(browser, "#topk-queries li")
    assert listed == expected.examples and 0 < len(listed) <= expected.queries_top_k_changed
    chart = browser.find_element(By.ID, "changes-chart")
    wait(browser, lambda d: d.execute_script(BLUE_PIXELS, chart) > 200)
    counts_drawn = browser.execute_script("return arguments[0]._chart.data[1]", chart)
    old = {(r["query_id"], r["doc_id"]): r for r in iter_changes(console.store, console.night1, console.night2)}
    changed = [r["new_score"] - r["old_score"] for r in old.values() if r["change"] == "changed"]
    assert sum(counts_drawn) == len(changed) == expected.changed
    centers = browser.execute_script("return arguments[0]._chart.data[0]", chart)
    below = sum(n for x, n in zip(centers, counts_drawn) if x < 0)
    assert below == sum(1 for d in changed if d < 0), "each change in the bin of its sign"
    screenshot(browser, "console-nights.png")

    # chosen explicitly, by prefix, in the other order: the same numbers with new and removed swapped
    browser.get(f"{console.url}/nights?old={console.night2[:8]}&new={console.night1[:8]}&top_k=3")
    swapped = {c.get_attribute("data-count"): c.find_element(By.TAG_NAME, "b").text for c in browser.find_elements(By.CSS_SELECTOR, "#summary .card")}
    assert (swapped["new"], swapped["removed"]) == (counts["removed"], counts["new"])
    assert swapped["changed"] == counts["changed"]
    assert "top 3 changed" in browser.find_element(By.CSS_SELECTOR, '[data-count="queries_top_k_changed"]').text

    browser.get(f"{console.url}/nights?old=zzzz&new={console.night1[:8]}")  # a mistyped id: said on the page
    assert browser.find_element(By.ID, "nights-error").text == "no job 'zzzz' in the ledger (see producer list)"
    assert browser.find_elements(By.CSS_SELECTOR, "#nights-form select")


def test_night_to_night_compares_last_night_of_the_same_name_by_default():
    """Issue 27: the newest two finished jobs were compared whatever they were (a batch against a webhook
    test): by default tonight's job is compared with the last finished job of its series (its name without
    the date, its kind and model); a job with no earlier one of its series is passed over."""
    from producer.service.nights import last_two_nights, series

    def job(name: str | None, state: str = "completed", kind: str = "manifest", model: str = "m") -> JobStatus:
        at = datetime.now(UTC)
        return JobStatus(
            job_id=f"{name}-{state}-{kind}-{model}", name=name, kind=kind, state=JobState(state), manifest=None, pairs_total=1,
            pairs_scored=1, pairs_failed=0, chunks_total=1, chunks=ChunkCounts(), created_at=at, started_at=at,
            finished_at=at, elapsed_seconds=1.0, pairs_per_second=1.0, model=model,
        )  # fmt: skip

    assert series(job("nightly-2026-11-30")) == series(job("nightly-2026-12-01")) == ("nightly", "manifest", "m")
    assert series(job("nightly-2026-11-30")) != series(job("nightly-2026-11-30", model="8b"))
    tonight, webhook, batch, running, last_night = (
        job("kb-2026-12-01"), job("webhook-test", kind="inline"), job(None, kind="batch"), job("kb-2026-12-02", "running"),
        job("kb-2026-11-30"),
    )  # fmt: skip
    newest_first = [running, webhook, batch, tonight, job("legal"), last_night, job("kb-2026-11-29")]
    assert last_two_nights(newest_first) == (last_night, tonight)
    assert last_two_nights([webhook, batch, tonight]) is None, "nothing of the same series: no default comparison"
    assert last_two_nights([webhook, job("webhook-test", kind="inline")])[1] is webhook


def test_server_and_page_write_times_alike(console, browser):
    """timefmt (server) and console.js (after a refresh) give the same strings, UTC whatever the zone."""
    from producer.service import timefmt

    browser.get(console.url + "/")
    now = datetime.now(UTC)
    for ago in (timedelta(seconds=2), timedelta(seconds=42), timedelta(minutes=3, seconds=5), timedelta(hours=5), timedelta(days=3)):
        at = now - ago
        js = browser.execute_script("return [rerankq.absolute(arguments[0]), rerankq.relative(arguments[0])]", at.isoformat())
        assert js == [timefmt.absolute(at), timefmt.relative(at, now)], ago
    paris = datetime(2026, 12, 1, 2, 30, tzinfo=timezone(timedelta(hours=1)))
    assert timefmt.absolute(paris) == "2026-12-01 01:30:00 UTC"
    assert timefmt.absolute(datetime(2026, 12, 1, 1, 30)) == "2026-12-01 01:30:00 UTC", "naive (SQLite) times are UTC"
    assert timefmt.relative(now + timedelta(seconds=30), now) == "just now", "a clock a little ahead"
    assert timefmt.relative(now - timedelta(hours=47), now) == "47 h ago"
    assert str(timefmt.when(None)) == '<span class="muted">–</span>'


def test_times_of_one_second_read_alike(console, browser):
    """Issue 27: created "45 s ago" next to started "47 s ago" for the same second. Both the server and the
    page count from the second shown, and every time on a page from one `now`."""
    from selenium.webdriver.common.by import By

    from producer.service import timefmt
    from rerankq.store.records import NewChunk

    second = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=45)
    created, started, at = second + timedelta(seconds=0.1), second + timedelta(seconds=0.9), second + timedelta(seconds=45.5)
    assert timefmt.relative(created, at) == timefmt.relative(started, at) == "45 s ago"
    browser.get(console.url + "/workers")
    js = browser.execute_script(
        "return [rerankq.relative(arguments[0], arguments[2]), rerankq.relative(arguments[1], arguments[2])]",
        created.isoformat(), started.isoformat(), at.timestamp() * 1000,
    )  # fmt: skip
    assert js == ["45 s ago", "45 s ago"]
    spec = {"kind": "inline", "pairs": [{"query_id": "q", "doc_id": "d", "query": "q", "document": "d"}]}
    job, _ = console.store.create_job(kind="inline", chunks=[NewChunk(spec, 1)], name="one-second", model=console.settings.model)
    with console.store.session.begin() as s:
        s.execute(update(Job).where(Job.id == job).values(state="running", created_at=created, started_at=started))
    try:
        browser.get(f"{console.url}/jobs/{job}")
        shown = lambda d: [d.find_element(By.CSS_SELECTOR, f"#{row} .ago").text for row in ("created", "started")]  # noqa: E731
        first = shown(browser)
        assert first[0] == first[1], first  # rendered by the server
        time.sleep(2.5)  # the page's own refresh redrew `started`
        again = shown(browser)
        assert again[0] == again[1] and re.fullmatch(r"\(4\d s ago\)", again[0]), again
    finally:
        console.store.cancel(job)


def test_one_timestamp_format_on_every_page(console, browser):
    """Item 13: every time on every page is `YYYY-MM-DD HH:MM:SS UTC (… ago)`, server- or script-rendered."""
    from selenium.webdriver.common.by import By

    pages = ["/", f"/jobs/{console.night2}", f"/jobs/{console.running}", "/workers", "/nights"]
    for page in pages:
        browser.get(console.url + page)
        time.sleep(2.5)  # past the pages' first refresh
        shown = [t.text for t in browser.find_elements(By.TAG_NAME, "time")]
        assert shown, page
        assert all(TIME.match(t) for t in shown), (page, [t for t in shown if not TIME.match(t)])
        body = browser.find_element(By.TAG_NAME, "body").text
        assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:|\+00:00|\d\d:\d\d:\d\d\.\d", body), page


# --- no worker alive: answered at once ------------------------------------------------------------------


@pytest.fixture()
def no_worker(tmp_path, tiny_model, redis_url):
    """A ledger whose only worker stopped: nothing would ever score a request."""
    url = f"sqlite:///{tmp_path / 'l.db'}"
    migrate(url)
    redis_client(redis_url).flushdb()
    settings = Settings(database_url=url, broker_url=redis_url, model=str(tiny_model), max_length=512, rerank_timeout=120)
    registry = Registry(url)
    registry.register(WorkerInfo("gpu-node-1:1:x", "gpu-node-1", 1, str(tiny_model), {}))
    registry.heartbeat("gpu-node-1:1:x", state="stopped")
    server, base = serve(settings)
    yield settings, base
    server.should_exit = True


def test_rerank_with_no_worker_alive_is_503_at_once(no_worker):
    import requests

    settings, base = no_worker
    started = time.monotonic()
    r = requests.post(base + "/v1/rerank", json={"query": "capital of China?", "documents": ["Beijing", "Paris"]}, timeout=30)
    assert r.status_code == 503, r.text
    assert time.monotonic() - started < 5, "not after RERANKQ_RERANK_TIMEOUT (120 s)"
    # the model is not the default (a directory): the hint names it, or the worker would load the default
    said = f"no worker alive: start one with `RERANKQ_MODEL={settings.model} celery -A worker worker -Q gpu`"
    assert r.json()["detail"] == said == no_worker_words(settings.model)
    assert NO_WORKER == "no worker alive: start one with `celery -A worker worker -Q gpu`", "the default model's"
    assert redis_client(settings.broker).dbsize() == 0, "nothing enqueued"
    assert requests.get(base + "/v1/jobs?interactive=true", timeout=10).json() == [], "no job recorded"
    summary = requests.get(base + "/v1/workers/summary", timeout=10).json()
    assert summary == {"alive": False, "summary": said}


def test_a_worker_that_failed_to_load_is_not_waited_for(tmp_path, tiny_model, redis_url):
    """Issue 27: a worker whose engine did not load says `failed` at once (worker/liveness.py): not
    `1 worker loading its engine` until RERANKQ_WORKER_DEAD_AFTER; /v1/rerank answers 503 with its error."""
    import requests

    from worker.liveness import Liveness

    url = f"sqlite:///{tmp_path / 'l.db'}"
    migrate(url)
    settings = Settings(database_url=url, broker_url=redis_url, model=str(tiny_model), max_length=512, rerank_timeout=120, worker_dead_after=600)
    registry = Registry(url)
    liveness = Liveness(registry, WorkerInfo("gpu-node-1:1:x", "gpu-node-1", 1, str(tiny_model), {}), 30, 600).start()
    server, base = serve(settings)
    try:
        assert requests.get(base + "/v1/workers/summary", timeout=10).json() == {"alive": True, "summary": "1 worker loading its engine"}
        liveness.fail("CUDA out of memory")
        said = f"no worker alive (the last worker to start failed to load its engine: CUDA out of memory): start one with `RERANKQ_MODEL={tiny_model} celery -A worker worker -Q gpu`"
        assert requests.get(base + "/v1/workers/summary", timeout=10).json() == {"alive": False, "summary": said}
        [w] = requests.get(base + "/v1/workers", timeout=10).json()
        assert (w["state"], w["alive"], w["error"]) == ("failed", False, "CUDA out of memory")
        started = time.monotonic()
        r = requests.post(base + "/v1/rerank", json={"query": "capital of China?", "documents": ["Beijing"]}, timeout=30)
        assert (r.status_code, r.json()["detail"]) == (503, said)
        assert time.monotonic() - started < 5
    finally:
        server.should_exit = True


def test_try_page_says_no_worker_is_alive_instead_of_ranking(no_worker, browser):
    from selenium.webdriver.common.by import By

    settings, base = no_worker
    browser.get(base + "/try")
    command = f"RERANKQ_MODEL={settings.model} celery -A worker worker -Q gpu"
    shown = f"no worker alive: start one with {command}"  # the command is set as code
    assert browser.find_element(By.ID, "workers-note").text == f"Workers: {shown}"
    assert browser.find_element(By.CSS_SELECTOR, "#workers-note code").text == command
    browser.find_element(By.ID, "query").send_keys("capital of China?")
    browser.find_element(By.ID, "documents").send_keys("Beijing is the capital.\nParis is in France.")
    started = time.monotonic()
    browser.find_element(By.ID, "rank").click()
    wait(browser, lambda d: d.find_element(By.ID, "try-message").text not in ("", "Ranking…"), timeout=10)
    assert time.monotonic() - started < 5
    message = browser.find_element(By.ID, "try-message")
    assert message.text == shown and "error" in message.get_attribute("class")
    assert message.find_element(By.TAG_NAME, "code").text == command
    assert not browser.find_element(By.ID, "try-results").is_displayed()
    assert browser.find_element(By.ID, "rank").is_enabled()
    screenshot(browser, "console-try-no-worker.png")


def test_try_page_says_what_a_waiting_request_waits_for(tmp_path, tiny_model, redis_url, browser):
    """A live worker that never takes the chunk (loading its engine): the page says so while it waits,
    then shows the 504 with the same words."""
    from selenium.webdriver.common.by import By

    url = f"sqlite:///{tmp_path / 'l.db'}"
    migrate(url)
    settings = Settings(database_url=url, broker_url=redis_url, model=str(tiny_model), max_length=512, rerank_timeout=5)
    registry = Registry(url)
    registry.register(WorkerInfo("gpu-node-1:1:x", "gpu-node-1", 1, str(tiny_model), {}))  # registered: loading
    server, base = serve(settings)
    try:
        browser.get(base + "/try")
        browser.find_element(By.ID, "query").send_keys("capital of China?")
        browser.find_element(By.ID, "documents").send_keys("Beijing is the capital.")
        browser.find_element(By.ID, "rank").click()
        message = browser.find_element(By.ID, "try-message")
        wait(browser, lambda d: "waiting for a worker" in message.text, timeout=10)
        assert re.fullmatch(r"Ranking… \d+ s, waiting for a worker \(1 worker loading its engine\)", message.text), message.text
        wait(browser, lambda d: "error" in message.get_attribute("class"), timeout=20)
        assert message.text == "no worker scored the request within 5 s (RERANKQ_RERANK_TIMEOUT); 1 worker loading its engine"
    finally:
        server.should_exit = True


def test_a_request_whose_last_worker_dies_while_it_waits_is_503(tmp_path, tiny_model, redis_url):
    """The only worker is alive when the request arrives, then falls silent: the request does not wait
    for RERANKQ_RERANK_TIMEOUT, it is answered 503 within a few seconds and its job cancelled."""
    from fastapi.testclient import TestClient

    from producer.service import create_app

    url = f"sqlite:///{tmp_path / 'l.db'}"
    migrate(url)
    settings = Settings(database_url=url, broker_url=redis_url, model=str(tiny_model), max_length=512, rerank_timeout=60, worker_dead_after=1.0)
    registry, store = Registry(url), Ledger(url)
    registry.register(WorkerInfo("gpu-node-1:1:x", "gpu-node-1", 1, str(tiny_model), {}))
    stop = threading.Event()

    def heartbeat_until_the_request_is_queued() -> None:  # then the worker "dies": no more heartbeats
        while not stop.is_set() and not store.list_jobs(1):
            registry.heartbeat("gpu-node-1:1:x", state="ready")
            time.sleep(0.1)

    beats = threading.Thread(target=heartbeat_until_the_request_is_queued, daemon=True)
    beats.start()
    try:
        with TestClient(create_app(settings)) as c:
            started = time.monotonic()
            r = c.post("/v1/rerank", json={"query": "capital of China?", "documents": ["Beijing", "Paris"]})
            took = time.monotonic() - started
            jobs = c.get("/v1/jobs", params={"interactive": "true"}).json()
    finally:
        stop.set()
    assert r.status_code == 503, r.text
    assert r.json()["detail"] == no_worker_words(settings.model)
    assert took < 10, "not after RERANKQ_RERANK_TIMEOUT (60 s)"
    assert [j["state"] for j in jobs] == ["cancelled"]


def test_a_job_whose_model_no_worker_runs_says_so(console, browser):
    """Issue 16: the job page (and GET /v1/jobs/{id}) says what the job waits for, naming its model."""
    import requests
    from selenium.webdriver.common.by import By

    from rerankq.store.records import NewChunk

    for worker in (BUSY, OTHER):  # alive now, however long the tests before this one took
        console.registry.heartbeat(worker)
    spec = {"kind": "inline", "pairs": [{"query_id": "q", "doc_id": "d", "query": "q", "document": "d"}]}
    job, _ = console.store.create_job(kind="inline", chunks=[NewChunk(spec, 1)], name="big-model", model="Qwen/Qwen3-Reranker-4B")
    expected = "no worker runs Qwen/Qwen3-Reranker-4B"
    assert expected in requests.get(f"{console.url}/v1/jobs/{job}", timeout=10).json()["waiting"]
    browser.get(f"{console.url}/jobs/{job}")
    waiting = browser.find_element(By.ID, "waiting")
    assert waiting.text.startswith(f"queued: {expected} (workers alive run "), waiting.text
    assert browser.find_element(By.CSS_SELECTOR, "#waiting code").text.startswith("RERANKQ_MODEL=Qwen/Qwen3-Reranker-4B celery")
    time.sleep(2.5)  # after the page's own refresh from the API, still said
    assert browser.find_element(By.ID, "waiting").text.startswith(f"queued: {expected}")
    console.store.cancel(job)
