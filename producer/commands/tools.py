"""Running things next to the ledger: the HTTP service, the end-to-end demo, a tiny offline model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from producer.commands.common import err, friendly, out


@friendly
def serve(
    host: Annotated[str, typer.Option(help="address to listen on (beyond loopback: needs an API key, or --open)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="port to listen on")] = 8000,
    open_: Annotated[
        bool, typer.Option("--open", help="meant to be open: no API key beyond loopback or behind a proxy (RERANKQ_OPEN)")
    ] = False,
) -> None:
    """The HTTP service: /v1/rerank, the jobs API (/docs), the web console at / and /metrics."""
    try:
        from producer.service.server import serve as run
    except ImportError as exc:
        from producer.errors import InputError

        raise InputError(f"`producer serve` needs the service extra: pip install 'rerankq[service]' ({exc})") from None
    run(host, port, open_=open_)


@friendly
def demo(
    pairs_per_query: Annotated[int, typer.Option(min=1, help="documents per query in the sample corpus")] = 25,
    queries: Annotated[int, typer.Option(min=1, help="queries in the sample corpus")] = 8,
    workdir: Annotated[
        Path | None, typer.Option(help="where the sample corpus, export and worker log go [default: ~/.cache/rerankq/demo]")
    ] = None,
) -> None:
    """The main job end to end on this machine: sample corpus → worker → SQL → export → top documents."""
    from producer.demo import default_workdir, run_demo

    raise typer.Exit(run_demo(workdir or default_workdir(), queries, pairs_per_query, out, err))


def tiny_model(
    directory: Annotated[Path, typer.Argument(help="where the model's files go (created if missing)")],
    seed: Annotated[int, typer.Option(help="seed of the random weights")] = 0,
    family: Annotated[
        str, typer.Option(help="qwen3 (Qwen3-Reranker, the real tokenizer), bert, xlm-roberta or gte (cross-encoders)")
    ] = "qwen3",
) -> None:
    """Write a random-weight reranker for offline tests and demos.

    Qwen3-Reranker with the real Qwen3 tokenizer, or a BERT, XLM-RoBERTa or mGTE cross-encoder shaped like the real ones, with a small tokenizer trained offline.
    """
    from producer.tiny_model import FAMILY_CHOICES, write_tiny

    if family not in FAMILY_CHOICES:
        raise typer.BadParameter(f"expected one of {', '.join(FAMILY_CHOICES)}", param_hint="--family")
    print(write_tiny(directory, family, seed))
