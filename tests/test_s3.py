"""`s3://` manifests as the README promises, against a local S3-compatible server (moto, with
authentication on) through pyarrow's S3 filesystem: the endpoint comes from RERANKQ_S3_ENDPOINT_URL,
credentials from the AWS_* environment and never appear in any output; a missing bucket, a missing key
and denied access are each one clear line (exit 3)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas import ManifestSpec
from tests.conftest import migrate, producer
from tests.corpus import rows
from tests.s3 import MotoS3
from tests.services import REDIS_URL, redis_client

BUCKET, PREFIX = "corpus", "candidates"


@pytest.fixture(scope="module")
def s3() -> Iterator[MotoS3]:
    server = MotoS3().start()
    server.put_manifest(BUCKET, PREFIX, rows(n_queries=5, docs_per_query=(3, 9), seed=3, long_every=10**9), files=2)
    yield server
    server.stop()


@pytest.fixture()
def env(s3: MotoS3, tmp_path: Path) -> dict[str, str]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    migrate(url)
    broker = f"{REDIS_URL}/11"
    redis_client(broker).flushdb()
    return {"RERANKQ_DATABASE_URL": url, "RERANKQ_BROKER_URL": broker, **s3.env()}


def no_secret(result, *secrets: str) -> None:  # noqa: ANN001
    for secret in secrets:
        assert secret not in result.stdout + result.stderr, "a credential was printed"


def test_submit_s3_prefix_and_the_worker_reads_its_rows(s3: MotoS3, env, monkeypatch):
    columns = rows(n_queries=5, docs_per_query=(3, 9), seed=3, long_every=10**9)
    submitted = producer("submit", f"s3://{BUCKET}/{PREFIX}/", "--chunk-size", "10", env=env)
    assert submitted.returncode == 0, submitted.stderr
    no_secret(submitted, s3.admin[1])
    job_id = submitted.stdout.split()[-1]
    status = json.loads(producer("status", job_id, "--json", env=env, check=True).stdout)
    assert status["pairs_total"] == len(columns["query_id"]) and status["manifest"] == f"s3://{BUCKET}/{PREFIX}/"

    # The worker's own reading path (worker/chunk_pairs.py), with the worker's settings and credentials.
    from sqlalchemy import create_engine, text

    from rerankq.settings import get_settings
    from worker.chunk_pairs import load_pairs

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        with create_engine(env["RERANKQ_DATABASE_URL"]).connect() as conn:
            specs = [json.loads(s) if isinstance(s, str) else s for (s,) in conn.execute(text("SELECT spec FROM chunks ORDER BY seq"))]
        read = [kp for spec in specs for kp in load_pairs(ManifestSpec.model_validate(spec))]
    finally:
        get_settings.cache_clear()
    assert [(k.query_id, k.doc_id, k.pair.query, k.pair.document) for k in read] == list(
        zip(columns["query_id"], columns["doc_id"], columns["query"], columns["document"])
    )


@pytest.mark.parametrize(
    ("uri", "keys", "expected"),
    [
        ("s3://no-such-bucket/candidates/", "admin", "error: s3://no-such-bucket/candidates/: no such bucket 'no-such-bucket'"),
        (f"s3://{BUCKET}/no-such-prefix/", "admin", f"error: s3://{BUCKET}/no-such-prefix/: no such key (no object at or under it in bucket '{BUCKET}')"),
        (f"s3://{BUCKET}/{PREFIX}/part-009.parquet", "admin", f"error: s3://{BUCKET}/{PREFIX}/part-009.parquet: no such key"),
        (f"s3://{BUCKET}/{PREFIX}/", "nobody", f"error: s3://{BUCKET}/{PREFIX}/: access denied by the object store (check the AWS_* credentials in the environment and the bucket's policy)"),
        (f"s3://{BUCKET}/{PREFIX}/", "forged", f"error: s3://{BUCKET}/{PREFIX}/: access denied by the object store"),
    ],
)
def test_s3_failures_are_one_clear_line(s3: MotoS3, env, uri: str, keys: str, expected: str):
    creds = {"admin": s3.admin, "nobody": s3.nobody, "forged": (s3.admin[0], "not-the-secret")}[keys]
    result = producer("submit", uri, env={**env, **s3.env(creds)})
    assert result.returncode == 3, result.stderr
    assert result.stderr.startswith(expected) and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    no_secret(result, *creds, s3.admin[1])


def test_unreachable_endpoint_is_one_clear_line(s3: MotoS3, env):
    from tests.services import free_port

    result = producer("submit", f"s3://{BUCKET}/{PREFIX}/", env={**env, "RERANKQ_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"})
    assert result.returncode == 3
    assert result.stderr.startswith(f"error: s3://{BUCKET}/{PREFIX}/: cannot reach the object store"), result.stderr
