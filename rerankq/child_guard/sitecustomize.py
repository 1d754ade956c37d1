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

Nothing here may stop a child from starting: every step is best effort.
"""

try:
    from rerankq.orphans import die_with_parent_from_env

    die_with_parent_from_env()
    import rerankq.torch_compat  # noqa: F401
except ImportError:  # rerankq is not importable from this child's path
    pass
