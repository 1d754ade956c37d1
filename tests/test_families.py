"""Model families (rerankq/families): each checkpoint's recipe, engine call, scoring context and reference.

Cross-encoders are judged against sentence-transformers' CrossEncoder and transformers' own tokenizer on
tiny random checkpoints shaped like the real ones (`producer dev tiny-model --family bert|xlm-roberta`);
a worker on a checkpoint of no family refuses to start and names the supported ones; a cascade from a
cross-encoder to Qwen3-Reranker runs as one job. mGTE (`--family gte`), whose config class is hub code, is judged
against transformers' own port of it, read as its card reads it (the raw logit)."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import rerankq.torch_compat  # noqa: F401 - before transformers (hides mismatched torchvision)
from producer.tiny_model import ensure_tiny, ensure_tiny_model
from rerankq.families import FAMILIES, UnsupportedModel, builder_for, family_of
from rerankq.prompt import Pair
from rerankq.score_key import context_for
from rerankq.settings import Settings
from tests.conftest import base_env, migrate, producer
from tests.corpus import rows, write_manifest
from tests.services import redis_client
from tests.workers import WorkerProcess

ROOT = Path.home() / ".cache" / "rerankq"
CROSS = {"bert": "bert-cross-encoder", "xlm-roberta": "xlm-roberta-cross-encoder", "gte": "gte-cross-encoder"}
MAX_LENGTH = 256


@pytest.fixture(scope="module")
def checkpoints(tiny_model) -> dict[str, Path]:
    """The tiny checkpoint of every family (built once per machine)."""
    out = {"qwen3": tiny_model}
    for family in CROSS:
        out[family] = ensure_tiny(ROOT / f"tiny-{family}-cross-encoder", family, 0)
    return out


def corpus_pairs(seed: int = 3, n_queries: int = 4) -> list[Pair]:
    """The shared test corpus (scripts, emoji, long documents) and a few edge pairs."""
    columns = rows(n_queries=n_queries, docs_per_query=(3, 8), seed=seed)
    pairs = [Pair(q, d) for q, d in zip(columns["query"], columns["document"])]
    return pairs + [Pair("x", "y"), Pair("capital of China?", "Beijing is the capital of China.")]


# --- the registry ----------------------------------------------------------------------------------------
def test_each_checkpoint_gets_its_family(checkpoints):
    assert family_of(checkpoints["qwen3"]).name == "qwen3-reranker"
    for family, name in CROSS.items():
        assert family_of(checkpoints[family]).name == name
    assert {f.name for f in FAMILIES} == {"qwen3-reranker", *CROSS.values()}


def test_unsupported_checkpoints_are_refused_naming_the_families(checkpoints, tmp_path):
    other = tmp_path / "gpt2"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    with pytest.raises(UnsupportedModel) as info:
        family_of(other)
    message = str(info.value)
    assert "GPT2LMHeadModel" in message
    for family in FAMILIES:
        assert family.name in message and family.architectures[0] in message
    two = tmp_path / "two-labels"
    shutil.copytree(checkpoints["bert"], two)
    config = json.loads((two / "config.json").read_text())
    config["id2label"] = {"0": "no", "1": "yes"}
    (two / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModel, match="2 labels"):
        family_of(two)
    with pytest.raises(UnsupportedModel, match="no readable config.json"):
        family_of(tmp_path)
    jina = tmp_path / "jina-reranker-v2-shaped"  # XLM-RoBERTa by name, its own modeling code by auto_map
    shutil.copytree(checkpoints["xlm-roberta"], jina)
    config = json.loads((jina / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "jinaai/xlm-roberta-flash-implementation--configuration_xlm_roberta.XLMRobertaFlashConfig",
        "AutoModelForSequenceClassification": "jinaai/xlm-roberta-flash-implementation--modeling_xlm_roberta.XLMRobertaForSequenceClassification",
    }  # fmt: skip
    (jina / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModel, match=r"xlm-roberta-cross-encoder\): it brings its own model code"):
        family_of(jina)


# --- the pair recipe ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", list(CROSS))
def test_pairs_are_the_tokenizers_own(checkpoints, family):
    """Token ids (and BERT's token types) are transformers' ``tokenizer(query, document)``; over-long pairs lose
    the end of the document only (``truncation="only_second"``); special-token strings in text stay text."""
    from transformers import AutoTokenizer

    path = checkpoints[family]
    family_of(path).prepare()  # mGTE: config.json's model_type "new" is rerankq's config class, not hub code
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    pairs = corpus_pairs()
    for max_length in (512, 64):
        builder = builder_for(path, max_length)
        prompts = builder.build(pairs)
        truncated = 0
        for pair, prompt in zip(pairs, prompts):
            if prompt.error is not None:  # a query longer than the pair may be: transformers refuses it too
                assert "the query takes" in prompt.error
                with pytest.raises(Exception, match="too short to respect the provided max_length"):
                    tokenizer(pair.query, pair.document, truncation="only_second", max_length=max_length)
                continue
            want = tokenizer(pair.query, pair.document, truncation="only_second", max_length=max_length)
            assert prompt.token_ids == want["input_ids"], pair
            assert len(prompt.token_ids) <= max_length
            truncated += prompt.truncated
            if family == "bert":
                assert prompt.token_type_start == want["token_type_ids"].index(1)
            else:
                assert prompt.token_type_start is None and not builder.token_types
        assert truncated > 0  # the corpus has documents longer than both lengths
    builder = builder_for(path, 512)
    special = Pair("is [SEP] a token?", "no: </s> <s> [CLS] [SEP] <pad> stay text")
    want = tokenizer(special.query, special.document, split_special_tokens=True)["input_ids"]
    assert builder.build([special])[0].token_ids == want != tokenizer(special.query, special.document)["input_ids"]
    long_query = builder.build([Pair("capital " * 600, "d"), Pair("", "d"), Pair("q", None)])
    assert "the query takes" in long_query[0].error and long_query[0].token_ids is None
    assert [p.error for p in long_query[1:]] == ["query is empty", "document is missing"]
    assert builder.head_tokens(None, "capital " * 600) >= builder.body_budget


def test_max_length_is_capped_at_the_models_positions(checkpoints):
    assert builder_for(checkpoints["bert"], 8192).max_length == 512
    assert builder_for(checkpoints["xlm-roberta"], 8192).max_length == 8192  # 8194 positions, 2 skipped
    assert builder_for(checkpoints["xlm-roberta"], 9000).max_length == 8192
    assert builder_for(checkpoints["bert"], 300).max_length == 300
    assert builder_for(checkpoints["gte"], 9000).max_length == 8192  # rotary: max_position_embeddings


def test_prompt_helpers_build_each_familys_prompts(checkpoints):
    """The worker's tokenizer processes rebuild the family's builder from its name and tokenizer."""
    from worker.prompt_pool import PromptPool

    pairs = corpus_pairs(seed=4, n_queries=2)
    for family in CROSS:
        builder = builder_for(checkpoints[family], MAX_LENGTH)
        pool = PromptPool(builder, processes=1)
        try:
            assert pool.submit(pairs).result(timeout=120) == builder.build(pairs)
        finally:
            pool.close()


@pytest.mark.parametrize("family", list(CROSS))
def test_service_token_counts_follow_the_family(checkpoints, family):
    """/v1/rerank's usage and truncate_prompt_tokens (producer/prompt_tokens.py) build the family's pairs."""
    from producer.prompt_tokens import Tokens

    builder = builder_for(checkpoints[family], MAX_LENGTH)
    tokens = Tokens(builder)
    query, document = "capital of China?", "Beijing is the capital of China. " * 20
    full = builder.build([Pair(query, document)])[0]
    assert tokens.prompt_tokens(query, [document, "x"], None) == len(full.token_ids) + len(builder.build([Pair(query, "x")])[0].token_ids)
    cut = tokens.fit(query, document, None, 40, None)
    assert document.startswith(cut) and len(cut) < len(document)
    prompt = builder.build([Pair(query, cut)])[0]
    assert len(prompt.token_ids) <= 40 and not prompt.truncated


def test_submission_refuses_a_query_the_cross_encoder_cannot_fit(checkpoints, sqlite_url, redis_url, tmp_path):
    """With the model's files here, a query that leaves no room in BERT's 512 positions is refused at submission,
    by row and field, before anything is recorded; a query of ordinary length passes."""
    migrate(sqlite_url)
    columns = {
        "query_id": ["q1", "q1", "q2"], "query": ["capital " * 600] * 2 + ["a query of thirty characters.."],
        "doc_id": ["d1", "d2", "d3"], "document": ["x", "y", "z"],
    }  # fmt: skip
    env = base_env(checkpoints["bert"], sqlite_url, redis_url)
    out = producer("submit", str(write_manifest(tmp_path / "long.parquet", columns)), env=env)
    assert out.returncode != 0 and "query" in out.stderr and "max_length 512" in out.stderr, out.stderr
    assert "row 0" in out.stderr or "row 1" in out.stderr, out.stderr
    columns = {k: v[2:] for k, v in columns.items()}
    ok = producer("submit", str(write_manifest(tmp_path / "short.parquet", columns)), env=env)
    assert ok.returncode == 0, ok.stderr


# --- scoring contexts ----------------------------------------------------------------------------------------
def test_families_never_share_a_scoring_context(checkpoints):
    contexts = {f: context_for(Settings(model=str(p), engine="vllm", dtype="float32", max_length=8192), p) for f, p in checkpoints.items()}
    assert contexts["qwen3"].prompt_recipe == "qwen3-reranker-card/1"  # Qwen3's cached scores stay valid
    assert contexts["bert"].prompt_recipe == "cross-encoder-pair/bert/1"
    assert contexts["xlm-roberta"].prompt_recipe == "cross-encoder-pair/xlm-roberta/1"
    assert contexts["gte"].prompt_recipe == "cross-encoder-pair/gte/1"
    assert contexts["bert"].max_length == 512 and contexts["xlm-roberta"].max_length == 8192
    assert len({c.digest for c in contexts.values()}) == len(contexts)
    # The recipe alone separates them: the same files under another family's recipe are another context.
    bert = contexts["bert"]
    assert replace(bert, prompt_recipe=contexts["xlm-roberta"].prompt_recipe).digest != bert.digest
    pair = Pair("q", "d")
    assert len({c.key(pair) for c in contexts.values()}) == len(contexts)


def test_engine_call_follows_the_family(checkpoints):
    """Qwen3-Reranker loads with its no/yes head overrides; cross-encoders load as they are (mGTE as vLLM's
    GteNewForSequenceClassification), never with prefix caching (bidirectional attention), whatever the settings
    ask, and never running code shipped with the checkpoint."""
    from worker.engines.vllm_engine import HF_OVERRIDES, engine_kwargs

    settings = Settings(model="m", dtype="float32", numerics="deterministic", enable_prefix_caching=True)
    qwen = engine_kwargs(settings, "m", "float32", on_gpu=True, family=family_of(checkpoints["qwen3"]))
    assert qwen["hf_overrides"] == HF_OVERRIDES and qwen["enable_prefix_caching"] is True
    for family in CROSS:
        kwargs = engine_kwargs(settings, "m", "float32", on_gpu=True, family=family_of(checkpoints[family]))
        overrides = {"architectures": ["GteNewForSequenceClassification"]} if family == "gte" else None
        assert kwargs.get("hf_overrides") == overrides and kwargs["enable_prefix_caching"] is False
        assert kwargs["runner"] == "pooling" and not kwargs.get("trust_remote_code")


# --- fidelity: the engines against each card's reference ----------------------------------------------------------
def cross_encoder_reference(path: Path, pairs: list[Pair]) -> tuple[list[float], list[float]]:
    """sentence-transformers' CrossEncoder: its score (sigmoid of the one logit) and its raw logit."""
    from sentence_transformers import CrossEncoder

    texts = [(p.query, p.document) for p in pairs]
    model = CrossEncoder(str(path), device="cpu", max_length=512)
    probability = model.predict(texts, batch_size=8, convert_to_numpy=True).tolist()
    logits = model.predict(texts, batch_size=8, activation_fn=lambda x: x, convert_to_numpy=True).tolist()
    return probability, logits


def gte_card_reference(path: Path, pairs: list[Pair]) -> tuple[list[float], list[float]]:
    """gte-multilingual-reranker-base's card: ``tokenizer(pairs, padding=True, truncation=..., max_length=512)``,
    ``model(**inputs).logits.view(-1).float()`` (raw). Its model is the hub's code; here transformers' own port
    of mGTE over the same files (CrossEncoder cannot load the hub's config class offline)."""
    import torch
    from transformers import AutoTokenizer

    from rerankq.families.gte import load_reference, prepare

    prepare()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = load_reference(str(path), torch.float32).eval()
    logits: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(pairs), 8):
            batch = pairs[start : start + 8]
            inputs = tokenizer([p.query for p in batch], [p.document for p in batch], padding=True,
                               truncation="only_second", return_tensors="pt", max_length=512)  # fmt: skip
            logits += model(**inputs, return_dict=True).logits.view(-1).float().tolist()
    return [1 / (1 + math.exp(-x)) for x in logits], logits


@pytest.mark.slow
@pytest.mark.parametrize("family", list(CROSS))
def test_engines_score_as_the_card_does(checkpoints, family):
    """vLLM (CPU build) and transformers give the card's reference within 1e-5 over the corpus (long documents
    cut at 512 tokens, as the reference cuts them): CrossEncoder's score (sigmoid of the one logit) for BERT and
    XLM-RoBERTa, the raw logit for mGTE (its card's activation), each family's log-odds its raw logit."""
    from worker.engines import load_reranker

    path = checkpoints[family]
    pairs = corpus_pairs()
    reference = gte_card_reference if family == "gte" else cross_encoder_reference
    probability, logits = reference(path, pairs)
    assert max(probability) - min(probability) > 0.05  # random weights, but scores that differ
    raw = family_of(path).activation == "raw"
    for engine in ("vllm", "hf"):
        settings = Settings(model=str(path), engine=engine, dtype="float32", max_length=512, enforce_eager=True)
        reranker = load_reranker(settings)
        try:
            results = reranker.score(pairs)
        finally:
            reranker.close()
        for pair, r, p, x in zip(pairs, results, probability, logits):
            assert r.error is None, (engine, pair, r.error)
            assert abs(r.score - p) <= 1e-5, (engine, family, r.score, p)
            assert abs(r.logit - x) <= (1e-5 if raw else 1e-4), (engine, family, r.logit, x)
            assert r.score == pytest.approx(1 / (1 + math.exp(-r.logit)), abs=1e-12)
        assert any(r.truncated for r in results)


# --- workers: refusal, a cascade across families, /v1/rerank's path -------------------------------------------------
@pytest.mark.slow
def test_worker_refuses_an_unsupported_checkpoint(checkpoints, pg_url, redis_url, tmp_path):
    other = tmp_path / "not-a-reranker"
    shutil.copytree(checkpoints["bert"], other)
    config = json.loads((other / "config.json").read_text())
    config["architectures"] = ["BertForMaskedLM"]
    (other / "config.json").write_text(json.dumps(config))
    migrate(pg_url)
    env = base_env(other, pg_url, redis_url)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    assert worker.proc.wait(timeout=300) != 0
    log = worker.log()
    assert "BertForMaskedLM" in log and all(f.name in log for f in FAMILIES), log[-3000:]
    listed = json.loads(producer("workers", "--json", env=env, check=True).stdout)
    failed = [w for w in listed if w["state"] == "failed"]
    assert failed and failed[0]["state"] == "failed" and "xlm-roberta-cross-encoder" in (failed[0].get("error") or "")


@pytest.fixture(scope="module")
def stack(checkpoints, pg_url, redis_url, tmp_path_factory):
    """Two real workers (vLLM CPU build): the XLM-RoBERTa cross-encoder and Qwen3-Reranker."""
    tmp = tmp_path_factory.mktemp("families")
    models = {"cross": checkpoints["xlm-roberta"], "qwen": ensure_tiny_model(ROOT / "tiny-qwen3-reranker-seed2", 2)}
    migrate(pg_url)
    redis_client(redis_url).flushdb()
    envs = {name: base_env(path, pg_url, redis_url, RERANKQ_MAX_LENGTH=MAX_LENGTH) for name, path in models.items()}
    workers = {name: WorkerProcess(envs[name], tmp / f"worker-{name}.log").start() for name in models}
    for w in workers.values():
        w.wait_ready()
    yield models, envs, workers
    for w in workers.values():
        w.terminate()


def hf_reference(model: Path, pairs: list[Pair]) -> list[tuple[float, float]]:
    from worker.engines import load_reranker

    reranker = load_reranker(Settings(model=str(model), engine="hf", dtype="float32", max_length=MAX_LENGTH))
    try:
        return [(r.score, r.logit) for r in reranker.score(pairs)]
    finally:
        reranker.close()


@pytest.mark.slow
def test_cascade_from_a_cross_encoder_to_qwen3_is_one_job(stack, tmp_path):
    models, envs, workers = stack
    top = 3
    columns = rows(n_queries=5, docs_per_query=(2, 9), seed=8)
    manifest = write_manifest(tmp_path / "m.parquet", columns)
    sub = producer(
        "submit", str(manifest), "--model", str(models["cross"]), "--then", f"{models['qwen']}:top={top}",
        "--chunk-size", "20", env=envs["cross"], check=True,
    )  # fmt: skip
    job = sub.stdout.strip().splitlines()[-1]
    waited = producer("wait", job, "--timeout", "600", env=envs["cross"], timeout=700)
    assert waited.returncode == 0, waited.stderr + workers["qwen"].log()[-3000:] + workers["cross"].log()[-3000:]
    out = tmp_path / "cascade.parquet"
    producer("export", job, "--out", str(out), env=envs["cross"], check=True)
    exported = pq.read_table(out).to_pylist()
    assert len(exported) == len(columns["query_id"])
    pairs = [Pair(q, d, i) for q, d, i in zip(columns["query"], columns["document"], columns["instruction"])]
    keys = list(zip(columns["query_id"], columns["doc_id"]))
    cross = dict(zip(keys, hf_reference(models["cross"], pairs)))
    qwen = dict(zip(keys, hf_reference(models["qwen"], pairs)))
    for qid in sorted(set(columns["query_id"])):
        group = sorted((r for r in exported if r["query_id"] == qid), key=lambda r: r["rank"])
        k = min(top, len(group))
        best = sorted(group, key=lambda r: (-cross[qid, r["doc_id"]][1], r["doc_id"]))[:k]
        assert {r["doc_id"] for r in group[:k]} == {r["doc_id"] for r in best}, "Qwen3 re-scores the cross-encoder's top k"
        assert [r["ranked_by_stage"] for r in group] == [2] * k + [1] * (len(group) - k)
        assert [r["stage2_logit"] for r in group[:k]] == sorted((r["stage2_logit"] for r in group[:k]), reverse=True)
        for r in group:
            assert r["score"] == pytest.approx(cross[qid, r["doc_id"]][0], abs=1e-5)
            assert r["logit"] == pytest.approx(cross[qid, r["doc_id"]][1], abs=1e-4)
            if r["stage2_score"] is not None:
                assert r["stage2_score"] == pytest.approx(qwen[qid, r["doc_id"]][0], abs=1e-5)
    status = json.loads(producer("status", job, "--json", env=envs["cross"], check=True).stdout)
    assert status["state"] == "completed" and status["then_model"] == str(models["qwen"])

    # Again: stage 1 comes from the cache under the cross-encoder's own context, stage 2 from Qwen3's.
    again = producer(
        "submit", str(manifest), "--model", str(models["cross"]), "--then", f"{models['qwen']}:top={top}", "--wait",
        env=envs["cross"], timeout=700,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    second = again.stdout.strip().splitlines()[0]
    status = json.loads(producer("status", second, "--json", env=envs["cross"], check=True).stdout)
    assert status["state"] == "completed" and status["pairs_reused"] == len(exported)
    producer("export", second, "--out", str(tmp_path / "again.parquet"), env=envs["cross"], check=True)
    assert pq.read_table(tmp_path / "again.parquet").to_pylist() == exported


@pytest.mark.slow
def test_rerank_through_a_cross_encoder_worker(stack):
    """`producer rerank` (the path /v1/rerank takes): a cross-encoder's scores and log-odds, ranked by them."""
    models, envs, _ = stack
    docs = ["Beijing is the capital of China.", "Paris is the capital of France.", "量子计算 🚀", "water energy light"]
    out = producer("rerank", "--query", "capital of China?", *sum((["--doc", d] for d in docs), []), "--json",
                   "--model", str(models["cross"]), "--timeout", "300", env=envs["cross"], check=True)  # fmt: skip
    ranked = json.loads(out.stdout)
    want = hf_reference(models["cross"], [Pair("capital of China?", d) for d in docs])
    assert [r["rank"] for r in ranked] == [1, 2, 3, 4]
    assert [r["logit"] for r in ranked] == sorted((r["logit"] for r in ranked), reverse=True)
    for r in ranked:
        assert r["score"] == pytest.approx(want[int(r["doc_id"])][0], abs=1e-5)
        assert r["logit"] == pytest.approx(want[int(r["doc_id"])][1], abs=1e-4)


@pytest.mark.slow
def test_batch_file_through_a_cross_encoder_worker(stack, tmp_path):
    """A vLLM run-batch file scored by the cross-encoder: each line's relevance_score is the family's score."""
    models, envs, _ = stack
    docs = ["Beijing is the capital of China.", "Paris is the capital of France.", "量子计算 🚀"]
    lines = [
        {"custom_id": "a", "method": "POST", "url": "/v1/rerank", "body": {"query": "capital of China?", "documents": docs}},
        {"custom_id": "b", "method": "POST", "url": "/v1/rerank", "body": {"query": "water energy", "documents": docs[1:], "top_n": 1}},
    ]  # fmt: skip
    requests = tmp_path / "requests.jsonl"
    requests.write_text("".join(json.dumps(line) + "\n" for line in lines))
    sub = producer("submit", str(requests), "--model", str(models["cross"]), "--wait", env=envs["cross"], timeout=700)
    assert sub.returncode == 0, sub.stdout + sub.stderr
    job = sub.stdout.strip().splitlines()[0].split()[-1]
    out = producer("export", job, "--format", "jsonl", "--out", "-", env=envs["cross"], check=True).stdout
    answers = {a["custom_id"]: a for a in map(json.loads, out.splitlines())}
    for line in lines:
        body, results = line["body"], answers[line["custom_id"]]["response"]["body"]["results"]
        want = hf_reference(models["cross"], [Pair(body["query"], d) for d in body["documents"]])
        assert len(results) == body.get("top_n", len(body["documents"]))
        best = max(range(len(want)), key=lambda i: want[i][1])
        assert results[0]["index"] == best
        for r in results:
            assert r["relevance_score"] == pytest.approx(want[r["index"]][0], abs=1e-5)


@pytest.mark.slow
def test_rerank_through_an_mgte_worker(checkpoints, pg_url, redis_url, tmp_path):
    """A worker on the mGTE checkpoint starts without the hub's code and `producer rerank` (/v1/rerank's path)
    gives the card's raw logit as `logit`, its sigmoid as `score`, ranked by them."""
    path = checkpoints["gte"]
    migrate(pg_url)
    env = base_env(path, pg_url, redis_url, RERANKQ_MAX_LENGTH=MAX_LENGTH)
    worker = WorkerProcess(env, tmp_path / "worker-gte.log").start()
    try:
        worker.wait_ready()
        docs = ["Beijing is the capital of China.", "Paris is the capital of France.", "量子计算 🚀", "water energy light"]
        out = producer("rerank", "--query", "capital of China?", *sum((["--doc", d] for d in docs), []), "--json",
                       "--model", str(path), "--timeout", "300", env=env, check=True)  # fmt: skip
    finally:
        worker.terminate()
    ranked = json.loads(out.stdout)
    probability, logits = gte_card_reference(path, [Pair("capital of China?", d) for d in docs])
    assert [r["rank"] for r in ranked] == [1, 2, 3, 4]
    assert [r["logit"] for r in ranked] == sorted((r["logit"] for r in ranked), reverse=True)
    for r in ranked:
        assert r["logit"] == pytest.approx(logits[int(r["doc_id"])], abs=1e-5)
        assert r["score"] == pytest.approx(probability[int(r["doc_id"])], abs=1e-5)
    assert "new-impl" not in worker.log()  # transformers never asked for the hub's code
