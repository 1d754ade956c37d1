"""Processes the e2e kit starts: a private Redis (Debian's redis-server unpacked with dpkg -x) and rerankq
workers as users run them (`celery -A worker worker -Q gpu`), each stopped with SIGTERM and waited for."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from runlog import RESULT, log, problem


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_redis(debs: Path, root: Path, port: int, out: Path) -> str | None:
    """Debian's redis-server, unpacked privately (dpkg -x into root, never /). Returns its URL or None."""
    if port_open(port):
        log(f"something already listens on {port}: using it as Redis (FLUSHDB first: no stale chunks of an earlier run)")
        try:
            import redis

            redis.Redis(port=port).flushdb()
        except Exception as exc:
            problem(f"FLUSHDB on the Redis already at {port} failed: {exc!r}")
        return f"redis://127.0.0.1:{port}/0"
    root.mkdir(parents=True, exist_ok=True)
    try:
        for deb in sorted(debs.glob("*.deb")):
            subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True, capture_output=True)
    except Exception as exc:
        problem(f"dpkg -x of the Redis packages failed: {exc!r} {getattr(exc, 'stderr', b'')[-300:]!r}")
        return None
    libs = ":".join(str(p) for p in (root / "usr/lib/x86_64-linux-gnu", root / "lib/x86_64-linux-gnu") if p.exists())
    server = root / "usr/bin/redis-server"
    env = {**os.environ, "LD_LIBRARY_PATH": libs + (":" + os.environ["LD_LIBRARY_PATH"] if os.environ.get("LD_LIBRARY_PATH") else "")}
    version = subprocess.run([str(server), "--version"], env=env, capture_output=True, text=True)
    log(f"redis-server --version: rc {version.returncode} {(version.stdout + version.stderr).strip()[:300]}")
    p = subprocess.run(
        [str(server), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--daemonize", "yes", "--logfile", str(out / "redis.log"), "--dir", str(root)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    if p.returncode != 0:
        problem(f"redis-server failed to start: rc {p.returncode} {(p.stdout + p.stderr).strip()[:500]}")
        return None
    for _ in range(50):
        if port_open(port):
            RESULT["redis"] = version.stdout.strip()
            return f"redis://127.0.0.1:{port}/0"
        time.sleep(0.1)
    problem("redis-server started but its port never opened")
    return None


def stop_redis(port: int) -> None:
    try:
        import redis

        redis.Redis(port=port).shutdown(nosave=True)
    except Exception:  # noqa: S110 (already gone: nothing to stop)
        pass


def worker_command(pool: str, concurrency: int) -> list[str]:
    """`celery -A worker worker -Q gpu` as users run it; ``--pool`` other than "default" overrides the app's pool."""
    cmd = [sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "gpu", "--loglevel", "INFO"]
    return cmd if pool == "default" else [*cmd, "--pool", pool, "--concurrency", str(concurrency)]


class Worker:
    def __init__(self, env: dict, project: Path, log_path: Path, cmd: list[str]):  # noqa: D107
        self.log_path = log_path
        self.f = open(log_path, "wb")
        self.t_start = time.monotonic()
        self.p = subprocess.Popen(
            cmd, cwd=project, env=env, stdout=self.f, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float) -> dict:
        """Seconds from spawn to engine_loading, engine_ready and Celery's 'ready.' line."""
        seen: dict[str, float] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            t = self.text()
            now = time.monotonic() - self.t_start
            for key, pat in (("engine_loading", '"event": "engine_loading"'), ("engine_ready", '"event": "engine_ready"'),
                             ("celery_ready", r"celery@\S+ ready\.")):  # fmt: skip
                if key not in seen and (re.search(pat, t) if key == "celery_ready" else pat in t):
                    seen[key] = now
                    log(f"worker: {key} after {now:.1f} s")
            if "engine_ready" in seen and "celery_ready" in seen:
                return seen
            if self.p.poll() is not None:
                problem(f"worker exited with {self.p.returncode} before it was ready; log tail: {t[-3000:]}")
                return seen
            time.sleep(0.25)
        problem(f"worker not ready after {timeout:.0f} s; log tail: {self.text()[-3000:]}")
        return seen

    def stop(self, timeout: float = 90) -> float:
        t = time.monotonic()
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                problem(f"worker ignored SIGTERM for {timeout:.0f} s: SIGKILL")
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()
        # the process group (prompt helper, any engine core) must be gone before the GPU is reused
        for _ in range(100):
            try:
                os.killpg(self.p.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            problem("worker's process group still alive 10 s after the worker exited: SIGKILL")
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.f.close()
        return time.monotonic() - t
