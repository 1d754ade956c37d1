"""Timing helpers shared by the CPU and GPU benchmarks (standard library only)."""

from __future__ import annotations

import gc
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def interleave(
    variants: dict[str, Callable[[], Any]],
    reps: int,
    warmup: int = 1,
    log: Callable[[str], None] = print,
    settle: float = 0.0,
    cpu_probe: Callable[[], dict[str, float]] | None = None,
) -> tuple[dict[str, list[float]], dict[str, dict[str, list[float]]]]:
    """Run every variant ``warmup`` times, then ``reps`` rounds; the order reverses every other round
    (A,B,C / C,B,A / ...) so slow drift of the machine's load hits every variant alike. ``settle``
    seconds of sleep before each run let spinning threads of the previous one go idle.

    Returns wall seconds per variant and, with ``cpu_probe`` (cumulative CPU seconds by process
    group), the CPU seconds each run used per group: unlike wall time, hardly moved by other load."""
    names = list(variants)
    for w in range(warmup):
        for name in names:
            seconds, _ = timed(variants[name])
            log(f"  warm-up {w + 1} {name}: {seconds:.3f} s")
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, dict[str, list[float]]] = {name: {} for name in names}
    for r in range(reps):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            gc.collect()
            time.sleep(settle)
            before = cpu_probe() if cpu_probe else {}
            seconds, _ = timed(variants[name])
            after = cpu_probe() if cpu_probe else {}
            times[name].append(seconds)
            for group in after:
                cpu[name].setdefault(group, []).append(after[group] - before.get(group, 0.0))
            used = ", ".join(f"{g} {v[-1]:.2f}" for g, v in cpu[name].items())
            log(f"  round {r + 1} {name}: {seconds:.3f} s" + (f" (CPU s: {used})" if used else ""))
    return times, cpu


def paired_ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    """Median over rounds of den_time/num_time: throughput of ``num`` relative to ``den`` (1.0 = equal)."""
    return statistics.median(d / n for n, d in zip(times[num], times[den]))


def row(name: str, seconds: Sequence[float], pairs: int, tokens: int, extra: dict[str, Any] | None = None) -> dict:
    med = statistics.median(seconds)
    return {
        "path": name,
        "reps": len(seconds),
        "median_s": med,
        "min_s": min(seconds),
        "max_s": max(seconds),
        "pairs_per_s": pairs / med,
        "tokens_per_s": tokens / med,
        **(extra or {}),
    }


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str]]) -> str:
    """columns: (key, header, format spec)."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        cells = []
        for key, _, spec in columns:
            value = r.get(key)
            cells.append("–" if value is None else format(value, spec) if spec else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "python": platform.python_version(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }


def libpq(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as psycopg and psql take it."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def stop_process_groups(procs: Sequence[subprocess.Popen], timeout: float = 60) -> None:
    """SIGTERM each process group (workers shut down warm), then SIGKILL what is still there after ``timeout``."""
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def start_worker(index: int, cwd: Path, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """`celery -A worker worker -Q gpu` as users run it, named w<index> (several on one host), in a process group of
    its own (stop_process_groups), its output in ``log_path``."""
    log = open(log_path, "wb")  # noqa: SIM115 - the worker writes to it for its whole life
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "gpu", "--loglevel", "INFO", "-n", f"w{index}@%h"],
        cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def fleet_env(code: Path, db: str, broker: str, model: str, chunk_size: int) -> dict[str, str]:
    """The environment of a night on the fleet engine (bench/fleet_engine.py: a GPU's pace, no scores computed)."""
    return {
        **os.environ, "PYTHONPATH": str(code), "RERANKQ_DATABASE_URL": db, "RERANKQ_BROKER_URL": broker,
        "RERANKQ_MODEL": model, "RERANKQ_ENGINE": "bench.fleet_engine:factory", "RERANKQ_DTYPE": "float32",
        "RERANKQ_MAX_LENGTH": "512", "RERANKQ_LOG_JSON": "true", "RERANKQ_WARM_UP": "false",
        "RERANKQ_CHUNK_SIZE": str(chunk_size),
    }  # fmt: skip


def wait_workers_ready(logs: Sequence[Path]) -> None:
    """Until every worker's log says Celery's `` ready.``."""
    while sum(" ready." in p.read_text(errors="replace") for p in logs) < len(logs):
        time.sleep(1)
