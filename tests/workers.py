"""Real worker processes, started with the very command users run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CELERY = [sys.executable, "-m", "celery"]
WORKER_COMMAND = ["-A", "worker", "worker", "-Q", "gpu"]


def is_ready_line(line: str) -> bool:
    """Celery's "celery@host ready." (consuming): a JSON event with RERANKQ_LOG_JSON=true, else plain text."""
    if line.startswith("{"):
        try:
            event = json.loads(line)
        except ValueError:
            return False
        return event.get("logger") == "celery.apps.worker" and str(event.get("event", "")).endswith(" ready.")
    return line.rstrip().endswith(" ready.")


class WorkerProcess:
    def __init__(self, env: dict[str, str], log_path: Path, extra_args: tuple[str, ...] = ()):
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.args = [*CELERY, *WORKER_COMMAND, "--loglevel", "INFO", *extra_args]
        self.proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115
        self._offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen(self.args, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 300) -> WorkerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")[self._offset :]
            if any(is_ready_line(line) for line in text.splitlines()):
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{text[-4000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready in {timeout} s:\n{self.log()[-4000:]}")

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def terminate(self, timeout: float = 120) -> int:
        """SIGTERM: Celery's warm shutdown (the running chunk finishes first)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    def group_alive(self) -> list[int]:
        """PIDs still in the worker's process group (an orphaned engine would show here)."""
        out = subprocess.run(["pgrep", "-g", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]
