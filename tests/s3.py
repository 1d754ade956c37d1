"""A local S3-compatible server (moto's server mode) with authentication on: a bucket of manifests,
an admin whose keys may do anything and a user whose keys may do nothing (for "access denied")."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq

from tests.services import free_port, wait_port

REGION = "us-east-1"


class MotoS3:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.admin: tuple[str, str] = ("", "")
        self.nobody: tuple[str, str] = ("", "")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoS3:
        # The first 3 requests need no signature (they create the admin); every later one is checked.
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port(self.port, 60)
        iam = self.client("iam", ("AKIAANYBODY", "anything"))
        iam.create_user(UserName="admin")
        key = iam.create_access_key(UserName="admin")["AccessKey"]
        allow_all = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=json.dumps(allow_all))
        self.admin = (key["AccessKeyId"], key["SecretAccessKey"])
        iam = self.client("iam")
        iam.create_user(UserName="nobody")
        key = iam.create_access_key(UserName="nobody")["AccessKey"]
        self.nobody = (key["AccessKeyId"], key["SecretAccessKey"])
        return self

    def client(self, service: str, keys: tuple[str, str] | None = None):  # noqa: ANN201 - a boto3 client
        import boto3

        key, secret = keys or self.admin
        return boto3.client(
            service, endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=key, aws_secret_access_key=secret
        )

    def put_manifest(self, bucket: str, prefix: str, columns: dict[str, list], files: int = 2) -> None:
        """``files`` Parquet objects under ``s3://bucket/prefix/`` splitting the rows (small row groups)."""
        s3 = self.client("s3")
        if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
            s3.create_bucket(Bucket=bucket)
        table = pa.table(columns)
        step = -(-table.num_rows // files)
        for i in range(files):
            buf = io.BytesIO()
            pq.write_table(table.slice(i * step, step), buf, row_group_size=7)
            s3.put_object(Bucket=bucket, Key=f"{prefix.strip('/')}/part-{i:03d}.parquet", Body=buf.getvalue())

    def env(self, keys: tuple[str, str] | None = None) -> dict[str, str]:
        """What a producer or worker needs: the endpoint setting, and credentials the AWS way."""
        key, secret = keys or self.admin
        return {
            "RERANKQ_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
