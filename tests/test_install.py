"""A newcomer's first hour: a fresh venv, exactly the README's CPU install line (the locked versions of
constraints.txt), then the README's "Using it" commands (`producer dev tiny-model`, `producer db upgrade`,
a worker started as the README says, a one-pair `producer rerank`), with no manual step in between.

Slow (minutes: pip resolves and installs vLLM's CPU build; pip's cache makes a rerun faster) and
marked ``install`` so it can be run or skipped on its own: ``pytest -m install``."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.services import REDIS_URL

pytestmark = [pytest.mark.slow, pytest.mark.install]

REPO = Path(__file__).resolve().parents[1]


def readme_line(prefix: str) -> str:
    """The README's command starting with ``prefix``, as printed (its ``# comment`` removed)."""
    for line in (REPO / "README.md").read_text().splitlines():
        if line.startswith(prefix):
            return line.split("  #", 1)[0].strip()
    raise AssertionError(f"no README line starts with {prefix!r}")


def venv_env(venv: Path, **extra: str) -> dict[str, str]:
    """A shell as a user has it after `source venv/bin/activate`: nothing of this test run's Python leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RERANKQ_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(PATH=f"{venv / 'bin'}:{env['PATH']}", VIRTUAL_ENV=str(venv), **extra)
    # This machine cannot reach download.pytorch.org (its CPU torch wheel is in pip's find-links):
    # fail that index at once rather than after pip's five retries per package.
    env.setdefault("PIP_RETRIES", "0")
    return env


def run(command: str, env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(2400)
def test_readme_install_line_gives_a_working_install(tmp_path: Path) -> None:
    install = readme_line('pip install -c constraints.txt -e ".[cpu]"')  # the locked versions (scripts/lock.sh)
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in install, install
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = venv_env(venv)

    t0 = time.monotonic()
    installed = run(install, env, REPO, timeout=1800)
    install_seconds = time.monotonic() - t0
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    print(f"\n`{install}` took {install_seconds:.0f} s")

    # The README's own words, run from outside the checkout so only the installed package can answer.
    home = tmp_path / "home"
    home.mkdir()
    model = tmp_path / "tiny-model"
    tiny = run(f"producer dev tiny-model {shlex.quote(str(model))}", env, home, 600)
    assert tiny.returncode == 0, tiny.stdout[-2000:] + tiny.stderr[-4000:]
    assert (model / "config.json").exists()

    settings = dict(
        RERANKQ_DATABASE_URL=f"sqlite:///{tmp_path / 'rerankq.db'}",
        RERANKQ_BROKER_URL=f"{REDIS_URL}/15",
        RERANKQ_MODEL=str(model),
        RERANKQ_ENFORCE_EAGER="true",  # starts in ~40 s instead of ~70 s on a CPU
        VLLM_CPU_KVCACHE_SPACE="1",
    )
    env = venv_env(venv, **settings)
    upgraded = run(readme_line("producer db upgrade"), env, home, 120)
    assert upgraded.returncode == 0, upgraded.stderr

    subprocess.run([str(venv / "bin" / "python"), "-c", f"import redis; redis_client('{REDIS_URL}/15').flushdb()"])
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            ["bash", "-c", "celery -A worker worker -Q gpu"], env=env, cwd=home, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        ranked = run('producer rerank --query "capital of China?" --doc "Beijing is the capital of China." --json --timeout 600', env, home, 700)
        log_text = log_path.read_text(errors="replace")
        assert ranked.returncode == 0, ranked.stderr[-3000:] + log_text[-4000:]
        rows = json.loads(ranked.stdout)
        assert len(rows) == 1 and rows[0]["rank"] == 1 and 0.0 <= rows[0]["score"] <= 1.0, rows
        assert re.search(r"worker|queued|running", ranked.stderr), "rerank says what it waits for"
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    for line in log_path.read_text(errors="replace").splitlines():
        assert line.startswith("{"), f"a worker log line that is not JSON: {line[:300]}"
