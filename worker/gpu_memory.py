"""GPU memory in use, read through NVML: device-wide, so it counts vLLM's engine core, which runs in
a process of its own on a GPU (torch in the worker's process sees no CUDA context at all)."""

from __future__ import annotations

import functools
import glob
import os

from rerankq.logs import get_logger

log = get_logger("rerankq.worker")


@functools.cache
def _nvml():  # noqa: ANN202 - the pynvml module (nvidia-ml-py), or vLLM's vendored copy, or None
    if not glob.glob("/dev/nvidia[0-9]*"):  # no NVIDIA device here: do not import vLLM to find out
        return None
    try:
        import pynvml

        return pynvml
    except ImportError:
        try:
            from vllm.third_party import pynvml

            return pynvml
        except ImportError:
            return None


def gpu_memory_used() -> dict[str, float]:
    """Bytes in use per visible CUDA device (``cuda:0`` …, numbered as the worker sees them); empty
    without a GPU or NVML."""
    nvml = _nvml()
    if nvml is None:
        return {}
    try:
        nvml.nvmlInit()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is None:
            indices = list(range(nvml.nvmlDeviceGetCount()))
        else:
            indices = [int(x) for x in visible.split(",") if x.strip().isdigit()]
        return {
            f"cuda:{i}": float(nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(index)).used)
            for i, index in enumerate(indices)
        }
    except Exception as exc:  # noqa: BLE001 - no driver, no device: nothing to report
        log.debug("nvml_unavailable", error=str(exc)[:200])
        return {}
