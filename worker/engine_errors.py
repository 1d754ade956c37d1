"""What to do when a worker's engine does not load, said next to the error (a newcomer offline on a CPU
otherwise reads only Hugging Face's "cannot find the appropriate snapshot folder")."""

from __future__ import annotations

from rerankq.model_files import local_model_path
from rerankq.settings import Settings


def first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def load_hint(settings: Settings) -> str | None:
    """How to go on when the model's files are not on this machine; None when they are (another cause)."""
    model = settings.model
    if local_model_path(model) is not None:
        return None
    return (
        f"the files of {model} are not on this machine and could not be downloaded: download them once with "
        f"network access (`hf download {model}`), or point RERANKQ_MODEL at a model directory, e.g. the tiny "
        f"random-weight model that `producer dev tiny-model DIR` writes (the demo's is {settings.tiny_model_dir}): "
        f"`RERANKQ_MODEL=DIR celery -A worker worker -Q gpu`"
    )


def engine_failure(exc: BaseException, settings: Settings) -> str:
    """One line for the log, the registry and stderr: the error, then what to do about it when known."""
    hint = load_hint(settings)
    return first_line(exc) + (f"; {hint}" if hint else "")
