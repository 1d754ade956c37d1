"""Run by every Python process started from a rerankq process that had to hide torch companions
(rerankq/torch_compat.py puts this folder first on PYTHONPATH): vLLM inspects a model's architecture in a
fresh ``python -m vllm.model_executor.models.registry`` subprocess, which would otherwise import the
mismatched torchvision and fail with "architectures ... are not supported"."""

import rerankq.torch_compat  # noqa: F401
