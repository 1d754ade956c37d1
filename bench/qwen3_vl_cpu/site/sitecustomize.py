"""Loaded by every Python process started with ``PYTHONPATH=bench/qwen3_vl_cpu/site`` (vLLM's subprocesses too)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torchvision_shim  # noqa: E402

torchvision_shim.install()
