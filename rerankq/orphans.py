"""Children that die with the worker, even when it is killed with -9 (Linux PR_SET_PDEATHSIG).

Used by the tokenizer helpers (worker/prompt_pool.py) and, through child_guard/sitecustomize.py, by
vLLM's engine core process, which vLLM starts itself and leaves running when its parent is killed."""

from __future__ import annotations

import os

PARENT_ENV = "RERANKQ_DIE_WITH_PARENT"


def die_with_parent(parent_pid: int) -> bool:
    """Ask for SIGKILL when ``parent_pid`` (this process's parent) dies; exit now if it already has.
    False when this process is not that pid's child, or the platform has no prctl."""
    if os.getppid() != parent_pid:
        return False
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent_pid:  # the parent died before the prctl
        os._exit(0)
    return True


def die_with_parent_from_env() -> bool:
    """``die_with_parent`` for a process started with RERANKQ_DIE_WITH_PARENT set (its direct children only)."""
    parent = os.environ.get(PARENT_ENV, "")
    return parent.isdigit() and die_with_parent(int(parent))
