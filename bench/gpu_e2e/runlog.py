"""The e2e kit's shared state: one clock, one result dict, its log lines and problems, and a command runner
that logs every command's output to $OUT/commands.log."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

T0 = time.monotonic()
RESULT: dict = {"steps": {}, "problems": []}


def log(msg: str) -> None:
    print(f"[e2e {time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def elapsed() -> float:
    return time.monotonic() - T0


def save(out: Path) -> None:
    (out / "e2e_result.json").write_text(json.dumps(RESULT, indent=2, default=str))


def problem(text: str) -> None:
    log("PROBLEM: " + text)
    RESULT["problems"].append(text)


def run(cmd: list[str], env: dict, cwd: Path, out: Path, name: str, timeout: float = 300, check: bool = True):
    """Run a command, log its output to $OUT/cmd_<name>.log, return (rc, stdout, seconds)."""
    t = time.monotonic()
    p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    s = time.monotonic() - t
    with open(out / "commands.log", "a") as f:
        f.write(f"\n$ {' '.join(cmd)}   (cwd {cwd}, rc {p.returncode}, {s:.2f} s)\n--- stdout\n{p.stdout[-20000:]}\n--- stderr\n{p.stderr[-20000:]}\n")
    if check and p.returncode != 0:
        problem(f"`{' '.join(cmd[3:] if cmd[1:3] == ['-m', 'producer.cli'] else cmd)}` exited {p.returncode}: "
                f"{(p.stderr or p.stdout).strip()[-1500:]}")
    return p.returncode, p.stdout, s
