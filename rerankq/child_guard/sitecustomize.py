"""Run first by every Python process a rerankq process starts once this folder leads its PYTHONPATH
(rerankq/torch_compat.py, worker/engines/vllm_engine.py). Two jobs, both for children we cannot
otherwise reach (vLLM spawns them):

- die with the worker: a process whose parent is ``RERANKQ_DIE_WITH_PARENT`` asks the kernel for
  SIGKILL when that parent dies (PR_SET_PDEATHSIG). vLLM's engine core has no such guard (vLLM
  0.26; vllm-project/vllm#55510): a worker killed with -9 would leave it holding the GPU's memory,
  and the restarted worker could not load.
- hide mismatched torch companions (rerankq/torch_compat.py): vLLM inspects a model's architecture in
  a fresh ``python -m vllm.model_executor.models.registry`` subprocess, which would otherwise import
  the mismatched torchvision and fail with "architectures ... are not supported".

- run the hooks the parent names in ``RERANKQ_CHILD_HOOKS`` (``module:function,...``), e.g. the worker's
  patch of vLLM's batch-invariant linear layers (worker/engines/bi_linear.py), which must reach the
  engine core vLLM spawns. The names come from the environment: rerankq imports nothing of them.

Nothing here may stop a child from starting: every step is best effort.
"""

try:
    from rerankq.orphans import die_with_parent_from_env

    die_with_parent_from_env()
    import rerankq.torch_compat  # noqa: F401
except ImportError:  # rerankq is not importable from this child's path
    pass

try:
    import os as _os

    for _hook in filter(None, _os.environ.get("RERANKQ_CHILD_HOOKS", "").split(",")):
        import importlib as _importlib

        _module, _, _function = _hook.partition(":")
        getattr(_importlib.import_module(_module), _function)()
except Exception as _exc:  # noqa: BLE001 - never stop a child; say why its hook did not run
    import sys as _sys

    _sys.stderr.write(f"rerankq child_guard: RERANKQ_CHILD_HOOKS failed: {_exc!r}\n")
