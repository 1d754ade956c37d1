"""Issue 29: a bge-reranker-v2-m3-shaped cross-encoder through rerankq's engine loop against bare vLLM, one call.

Each step a fresh process (this driver never imports torch):
 1. checkpoint: random weights, the real BAAI/bge-reranker-v2-m3 config (BGE_RERANKER_V2_M3), bf16, built
    with transformers (on the GPU when there is one), tokenizer files from --tok (the tiny model's: a directory
    or .tar.xz); ``--shape bert-large`` builds a BERT-large-shaped one instead (--tok then a BERT tokenizer's);
    ``--ckpt DIR`` scores a checkpoint as it is (the tiny xlm-roberta model on a CPU).
 2. manifest: 64 documents per query (bench/pairs.py), ~341 tokens/pair with the tiny XLM-R tokenizer
    (its ids span a small range; the compute depends on the token count only).
 3. peer: bare.py ``LLM.classify`` as a user's own script (e2e.py's PEER_SETTINGS: batch invariance off;
    prefix caching as the family sets it, off for encoders), the worker's engine arguments otherwise; two
    passes. If it fails, the worker configurations still run (no reference then).
 4. worker: loop_probe.py, one fresh process per ``--config`` (VllmEngine through its engine loop), with
    the peer's scores as reference: max |worker - peer| per configuration.
Prints a short table last ($OUT/table.md, $OUT/cross_encoder.json, every child's log under $OUT).

GPU (bench/gpu_e2e/README.md, bundle unpacked):
  PYTHONPATH=/tmp/vllm-bundle/site:$PWD /opt/torch/.venv/bin/python3 bench/gpu_e2e/cross_encoder_probe.py \
      --tok .gpu-e2e/kit/xlmr-tok.tar.xz --pairs 32768 --config worker: --config worker-fast:RERANKQ_NUMERICS=fast
  (the tokenizer tarball: `producer dev tiny-model /tmp/xlmr --family xlm-roberta` then
  `tar -C /tmp/xlmr -cJf .gpu-e2e/kit/xlmr-tok.tar.xz $(cd /tmp/xlmr && ls | grep -i token)`)
CPU smoke (~2 min on 2 cores; vLLM's CPU build wants VLLM_CPU_KVCACHE_SPACE=1 beside other work):
  VLLM_CPU_KVCACHE_SPACE=1 python bench/gpu_e2e/cross_encoder_probe.py --ckpt TINY_XLMR_DIR --pairs 128 --config cpu:
  (TINY_XLMR_DIR from `producer dev tiny-model DIR --family xlm-roberta`; a tiny `--family bert` one runs the same)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
T0 = time.monotonic()

# BAAI/bge-reranker-v2-m3's config.json (transformers 4.38), as published.
BGE_RERANKER_V2_M3: dict = dict(
    architectures=["XLMRobertaForSequenceClassification"], attention_probs_dropout_prob=0.1, bos_token_id=0,
    classifier_dropout=None, eos_token_id=2, hidden_act="gelu", hidden_dropout_prob=0.1, hidden_size=1024,
    id2label={"0": "LABEL_0"}, initializer_range=0.02, intermediate_size=4096, label2id={"LABEL_0": 0},
    layer_norm_eps=1e-05, max_position_embeddings=8194, model_type="xlm-roberta", num_attention_heads=16,
    num_hidden_layers=24, output_past=True, pad_token_id=1, position_embedding_type="absolute", type_vocab_size=1,
    use_cache=True, vocab_size=250002,
)  # fmt: skip
# A BERT-large-shaped cross-encoder (bert-large-uncased's encoder, one label), for the bert-cross-encoder family.
BERT_LARGE: dict = dict(
    architectures=["BertForSequenceClassification"], attention_probs_dropout_prob=0.1, classifier_dropout=None,
    hidden_act="gelu", hidden_dropout_prob=0.1, hidden_size=1024, id2label={"0": "LABEL_0"}, initializer_range=0.02,
    intermediate_size=4096, label2id={"LABEL_0": 0}, layer_norm_eps=1e-12, max_position_embeddings=512,
    model_type="bert", num_attention_heads=16, num_hidden_layers=24, pad_token_id=0, position_embedding_type="absolute",
    type_vocab_size=2, vocab_size=30522,
)  # fmt: skip
SHAPES = {"bge-reranker-v2-m3": BGE_RERANKER_V2_M3, "bert-large": BERT_LARGE}
DOCS_PER_QUERY = 64
DOC_WORDS = (38, 59)  # ~341 tokens/pair with the tiny XLM-R tokenizer (about 6 tokens a word)


def log(msg: str) -> None:
    print(f"[ce {time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def build_checkpoint(directory: Path, tok: Path, shape: str) -> dict:
    """Random bf16 weights with the real config; the tokenizer files from ``tok`` (a directory or .tar.xz)."""
    import rerankq.torch_compat  # noqa: F401, I001  (first: hides a torchvision built for another torch)

    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    t = time.monotonic()
    directory.mkdir(parents=True, exist_ok=True)
    if tok.is_dir():
        for f in tok.glob("*"):  # the tokenizer's files only: a model directory's weights and config stay
            if f.is_file() and ("token" in f.name or f.name.endswith(".model")):
                shutil.copy(f, directory / f.name)
    else:
        with tarfile.open(tok) as archive:
            archive.extractall(directory, filter="data")
    fields = dict(SHAPES[shape])
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForSequenceClassification.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(directory)
    return {"params": sum(p.numel() for p in model.parameters()), "build_s": time.monotonic() - t,
            "config": {k: v for k, v in json.loads((directory / "config.json").read_text()).items() if not isinstance(v, dict)}}  # fmt: skip


def make_manifest(path: Path, n: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sys.path.insert(0, str(ROOT))
    from bench.pairs import make_pairs

    pairs = make_pairs(n, seed=0, docs_per_query=DOCS_PER_QUERY, query_words=(4, 16), doc_words=DOC_WORDS)
    pq.write_table(pa.table({"query": [p.query for p in pairs], "document": [p.document for p in pairs]}), path)


def child_run(cmd: list[str], env: dict, logfile: Path, timeout: float) -> int:
    with open(logfile, "w") as f:
        try:
            return subprocess.run(cmd, env=env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            return 124


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tok", help="tokenizer.json + tokenizer_config.json: a directory or .tar.xz (to build the checkpoint)")
    ap.add_argument("--ckpt", help="score this checkpoint as it is (no build)")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="bge-reranker-v2-m3", help="the config to build (--tok's family)")
    ap.add_argument("--pairs", type=int, default=32768)
    ap.add_argument("--config", action="append", default=[], help="worker configurations: loop_probe.py's NAME:RERANKQ_X=V,...")
    ap.add_argument("--work", default="/tmp/ce-probe")
    ap.add_argument("--budget", type=float, default=560)
    ap.add_argument("--child-build", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_build:
        print(json.dumps(build_checkpoint(Path(args.child_build), Path(args.tok), args.shape)))
        return 0
    sys.path.insert(0, str(HERE))
    from e2e import PEER_SETTINGS
    from loop_probe import RUN_SH_ENV

    out = Path(os.environ.get("OUT", "/tmp/ce-out"))
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("RERANKQ_")}
    base_env.update({**RUN_SH_ENV, "PYTHONUNBUFFERED": "1", "OUT": str(out)})
    base_env["PYTHONPATH"] = os.pathsep.join(x for x in (base_env.get("PYTHONPATH"), str(ROOT)) if x)
    result: dict = {"pairs": args.pairs, "shape": None if args.ckpt else args.shape, "configs": args.config or ["worker:"]}

    ckpt = Path(args.ckpt) if args.ckpt else work / f"ckpt-{args.shape}"
    if not args.ckpt:
        if not args.tok:
            raise SystemExit("--tok (tokenizer files) or --ckpt")
        shutil.rmtree(ckpt, ignore_errors=True)
        p = subprocess.run([sys.executable, __file__, "--tok", args.tok, "--shape", args.shape, "--child-build", str(ckpt)], env=base_env,
                           cwd=ROOT, capture_output=True, text=True)  # fmt: skip
        if p.returncode != 0:
            raise SystemExit(f"checkpoint build failed: {p.stderr[-3000:]}")
        result["checkpoint"] = json.loads(p.stdout.strip().splitlines()[-1])
        log(f"checkpoint {ckpt}: {result['checkpoint']['params']:,} parameters in {result['checkpoint']['build_s']:.1f} s")
    manifest = work / "manifest.parquet"
    make_manifest(manifest, args.pairs)
    log(f"manifest {manifest}: {args.pairs} pairs, {DOCS_PER_QUERY} documents per query")

    peer_json = work / "peer.json"
    peer_json.unlink(missing_ok=True)
    env = {**base_env, **PEER_SETTINGS, "RERANKQ_MODEL": str(ckpt)}
    rc = child_run([sys.executable, str(HERE / "bare.py"), "--manifest", str(manifest), "--json", str(peer_json),
                    "--label", "peer", "--passes", "2", "--deadline", str(max(0.0, args.budget - 200 - (time.monotonic() - T0)))],
                   env, out / "peer.log", args.budget - (time.monotonic() - T0))  # fmt: skip
    peer: dict | None = None
    if rc != 0 or not peer_json.exists():  # the worker configurations still run (one device call is precious)
        log(f"peer (bare.py) FAILED rc {rc}: {(out / 'peer.log').read_text()[-3000:]}")
        result["peer"] = {"failed": rc}
    else:
        peer = json.loads(peer_json.read_text())
        result["peer"] = {k: v for k, v in peer.items() if not k.startswith("scores")}
        log(f"peer: {peer['pairs']} pairs, {peer['tokens'] / peer['pairs']:.1f} tokens/pair, start {peer['engine_start_s']:.1f} s, "
            f"passes {[round(s, 2) for s in peer['passes_s']]} s")  # fmt: skip

    probe_json = out / "probe.json"
    cmd = [sys.executable, str(HERE / "loop_probe.py"), "--manifest", str(manifest), "--ckpt", str(ckpt), "--pairs", str(args.pairs),
           "--json", str(probe_json), "--budget", str(max(60.0, args.budget - (time.monotonic() - T0)))]  # fmt: skip
    if peer is not None:
        cmd += ["--ref", str(peer_json)]
    for spec in args.config or ["worker:"]:
        cmd += ["--config", spec]
    rc = child_run(cmd, base_env, out / "loop_probe.log", max(60.0, args.budget + 30 - (time.monotonic() - T0)))
    probes = json.loads(probe_json.read_text()) if probe_json.exists() else {}
    result["worker"] = probes
    (out / "cross_encoder.json").write_text(json.dumps(result, indent=1))
    table = render(peer, probes)
    (out / "table.md").write_text(table + "\n")
    print((out / "loop_probe.log").read_text()[-3000:], flush=True)
    print(table, flush=True)
    failed = peer is None or rc != 0 or not probes or any("failed" in r for r in probes.values())
    return 1 if failed else 0


def render(peer: dict | None, probes: dict) -> str:
    """Markdown: the peer's passes, then each worker configuration, pairs/s against the peer's best pass."""
    lines = []
    best = float("nan")
    if peer is not None:
        n, tokens = peer["pairs"], peer["tokens"]
        best = n / min(peer["passes_s"])
        lines += [f"{n} pairs, {tokens / n:.1f} tokens/pair; {peer.get('versions', '')}", f"engine: {peer.get('kwargs')}", ""]
    lines += ["| run | engine start s | pass 1 pairs/s | pass 2 pairs/s | tokens/s (best) | vs peer best | max abs diff vs peer |",
              "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    if peer is None:
        lines.append("| peer: bare LLM.classify (batch invariance off) | FAILED | | | | | |")
    else:
        p = [n / s for s in peer["passes_s"]]
        lines.append(f"| peer: bare LLM.classify (batch invariance off) | {peer['engine_start_s']:.1f} | {p[0]:,.1f} | "
                     f"{p[1] if len(p) > 1 else float('nan'):,.1f} | {best * tokens / n:,.0f} | 1.00 | 0 |")  # fmt: skip
    for name, r in probes.items():
        if "failed" in r:
            lines.append(f"| worker {name} | FAILED rc {r['failed']} | | | | | |")
            continue
        top = max(r["pairs_per_s"], r["shuffled_pairs_per_s"])
        lines.append(f"| worker {name} (BI {r.get('batch_invariant')}), pass 2 shuffled | {r['engine_start_s']:.1f} | "
                     f"{r['pairs_per_s']:,.1f} | {r['shuffled_pairs_per_s']:,.1f} | {top * r['tokens'] / r['pairs']:,.0f} | "
                     f"{top / best:.2f} | {r.get('drift_max', float('nan')):.2e} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
