"""What a score depends on, as one 32-byte key: the scoring context and the pair actually scored.

The **scoring context** is everything outside the pair that can move a score: the model files'
fingerprint (config, tokenizer, weights), the resolved dtype, quantization, ``max_length``, the
engine and its numerics mode (prefix caching, batch invariance, tensor parallelism) and the model
family's recipe (rerankq/families: e.g. ``qwen3-reranker-card/1``, ``cross-encoder-pair/bert/1``), so
scores of two families never share a cache entry. Its digest (64 hex characters) is what a worker records in the registry and in
``score_contexts``. A pair's key is 32 bytes of sha256 over (context digest, instruction, query,
document), laid out by ``pair_keys``, with the instruction resolved as the worker resolves it (row's,
else job's, else the default).

Weights fingerprint: files up to ``FULL_HASH_BYTES`` in all are hashed whole. Larger checkpoints
(the 8B model is 16 GB; a full hash is ~10-20 s of I/O on every worker start and every submission)
are hashed by their safetensors headers (names, dtypes, shapes, offsets), file sizes and three
4 KiB samples of *every* tensor (start, middle, end): a new training run, fine-tune or merge changes
every element of each tensor it touches, so it changes the samples. An edit confined to unsampled
bytes of a tensor would not be seen: set ``RERANKQ_FINGERPRINT_FULL_WEIGHTS=true`` to hash everything.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

from rerankq.prompt import PROMPT_RECIPE, Pair
from rerankq.settings import DEFAULT_INSTRUCTION, Settings

KEY_VERSION = 1
# What a cached score holds: since migration 0010, the probability and its log-odds. Part of every
# context, so entries written before (probability only) are never reused for a job that needs both.
SCORE_OUTPUT = "probability+log-odds"
FULL_HASH_BYTES = 256 * 1024 * 1024
SAMPLE_BYTES = 4096
# Files that change token ids or weights; generation settings and docs do not change a score.
TOKENIZER_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def _sha_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sample_safetensors(path: Path, h: hashlib._Hash) -> None:  # type: ignore[name-defined]
    """Header, then start/middle/end samples of every tensor's bytes."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = f.read(n)
        h.update(header)
        base = 8 + n
        for name, meta in sorted(json.loads(header).items()):
            if name == "__metadata__":
                continue
            begin, end = meta["data_offsets"]
            for at in sorted({begin, max(begin, (begin + end) // 2 - SAMPLE_BYTES // 2), max(begin, end - SAMPLE_BYTES)}):
                f.seek(base + at)
                h.update(f.read(min(SAMPLE_BYTES, end - at)))


def _sample_file(path: Path, h: hashlib._Hash, samples: int = 64) -> None:  # type: ignore[name-defined]
    """Other weight formats: evenly spaced samples over the whole file."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        for k in range(samples):
            f.seek(size * k // samples)
            h.update(f.read(SAMPLE_BYTES))


def model_fingerprint(model_path: str | Path, full: bool = False) -> str:
    """Digest of the files that decide a score (see the module docstring for what is read)."""
    root = Path(model_path)
    h = hashlib.sha256(f"rerankq-model-fingerprint/{KEY_VERSION}".encode())
    for name in TOKENIZER_FILES:
        if (root / name).is_file():
            h.update(f"\0{name}\0{_sha_file(root / name)}".encode())
    weights = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    total = sum(p.stat().st_size for p in weights)
    whole = full or total <= FULL_HASH_BYTES
    for p in weights:
        h.update(f"\0{p.relative_to(root)}\0{p.stat().st_size}\0".encode())
        if whole:
            h.update(_sha_file(p).encode())
        elif p.suffix == ".safetensors":
            _sample_safetensors(p, h)
        else:
            _sample_file(p, h)
    return h.hexdigest()


def batch_invariant() -> bool:
    return os.environ.get("VLLM_BATCH_INVARIANT", "0").strip().lower() not in ("", "0", "false", "no")


def configured(settings: Settings) -> dict:
    """The configured knobs (before resolution) a producer matches against workers' recorded contexts.

    Settings only, never the process environment: a GPU worker sets ``VLLM_BATCH_INVARIANT`` for itself,
    and a producer that never does must still match it."""
    return {
        "model": settings.model,
        "engine": settings.engine,
        "dtype": settings.dtype,
        "quantization": settings.quantization,
        "max_length": settings.max_length,
        "prefix_caching": settings.enable_prefix_caching,
        "batch_invariant": settings.batch_invariant,
        "numerics": settings.numerics,
        "bi_linear": settings.bi_linear,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "prompt_recipe": PROMPT_RECIPE,
        "scores": SCORE_OUTPUT,
    }


@dataclass(frozen=True)
class ScoringContext:
    """Everything besides the pair that can change a score, resolved (dtype ``auto`` made concrete)."""

    model_fingerprint: str
    engine: str
    dtype: str
    quantization: str | None
    max_length: int
    prefix_caching: bool
    batch_invariant: bool
    tensor_parallel_size: int
    prompt_recipe: str = PROMPT_RECIPE
    default_instruction: str = DEFAULT_INSTRUCTION
    # vLLM's resolved numerics (rerankq/numerics.py: mode, prefix caching, linear kernels), e.g.
    # "deterministic prefix linear=cublas-pad32"; "" for engines without (hf, custom).
    numerics: str = ""
    scores: str = SCORE_OUTPUT

    def as_dict(self) -> dict:
        return asdict(self)

    @cached_property
    def digest(self) -> str:
        fields = self.as_dict()
        if not fields["numerics"]:  # engines without numerics modes keep the digests they always had
            del fields["numerics"]
        canonical = json.dumps({"v": KEY_VERSION, **fields}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def keys(self, instructions: Iterable[str | None], queries: Iterable[str | None], documents: Iterable[str | None]) -> list[bytes | None]:
        """Keys of many pairs (instructions already resolved to the row's or job's; None = the default)."""
        return pair_keys(self.digest, instructions, queries, documents, self.default_instruction)

    def key(self, pair: Pair) -> bytes | None:
        return self.keys([pair.instruction], [pair.query], [pair.document])[0]


def pair_keys(
    context_digest: str,
    instructions: Iterable[str | None],
    queries: Iterable[str | None],
    documents: Iterable[str | None],
    default_instruction: str = DEFAULT_INSTRUCTION,
) -> list[bytes | None]:
    """8 bytes of sha256(context, len+instruction, len+query) then 24 bytes of sha256(the same, document).

    The first part keeps the entries of one query together in the cache's B-tree, so looking up a
    query's documents (manifest order) touches a few pages instead of one page per pair; 192 bits of
    the full digest still make a collision out of reach. Consecutive rows of one query share the
    hashed head (copied, not recomputed). None where the query or document is missing."""
    base = hashlib.sha256(bytes.fromhex(context_digest))
    out: list[bytes | None] = []
    last: tuple[str, str] | None = None
    head, prefix = base, b""
    for instruction, query, document in zip(instructions, queries, documents):
        if query is None or document is None:
            out.append(None)
            continue
        instruction = default_instruction if instruction is None else instruction
        if last != (instruction, query):
            bi, bq = instruction.encode("utf-8", "surrogatepass"), query.encode("utf-8", "surrogatepass")
            head = base.copy()
            head.update(len(bi).to_bytes(8, "little") + bi + len(bq).to_bytes(8, "little") + bq)
            prefix = head.digest()[:8]
            last = (instruction, query)
        h = head.copy()
        h.update(document.encode("utf-8", "surrogatepass"))
        out.append(prefix + h.digest()[:24])
    return out


def context_for(settings: Settings, model_path: str | Path, dtype: str | None = None) -> ScoringContext:
    """The context a worker with these settings and these model files scores in."""
    from rerankq.families import family_for_config, model_config
    from rerankq.model_files import resolve_dtype
    from rerankq.numerics import engine_numerics

    resolved = dtype or resolve_dtype(settings.dtype, str(model_path), settings.engine)
    config = model_config(model_path)
    family = family_for_config(config, str(model_path))
    return ScoringContext(
        model_fingerprint=model_fingerprint(model_path, settings.fingerprint_full_weights),
        engine=settings.engine,
        dtype=resolved,
        quantization=settings.quantization,
        max_length=family.max_length(config, settings.max_length),
        prefix_caching=settings.enable_prefix_caching,
        batch_invariant=batch_invariant(),
        tensor_parallel_size=settings.tensor_parallel_size,
        prompt_recipe=family.recipe,
        numerics=engine_numerics(settings).label if settings.engine == "vllm" else "",
    )


def worker_context(settings: Settings) -> ScoringContext:
    from rerankq.model_files import resolve_model

    return context_for(settings, resolve_model(settings.model))

