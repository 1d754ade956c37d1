"""Hostile batch files against `producer serve` on loopback (issue 25): the service's peak RSS, its CPU
and wall time, and what it writes, for one huge line and for millions of tiny bad lines.

    python bench/abuse_bench.py                     # all cases, ~2 minutes on 2 cores
    python bench/abuse_bench.py --case long-line --line-mb 300
    python bench/abuse_bench.py --case good-lines --good-mb 100 400   # + producer submit FILE.jsonl, with a redis-server
    python bench/abuse_bench.py --case good-lines --good-mb 100 --one-query   # the largest chunks

``good-lines`` (issue 25, bounded submission): files of only good lines, each submitted through the service
and through ``producer submit FILE.jsonl``; a private redis-server on loopback (nothing on disk) takes the
jobs' chunks, no worker scores them. The CLI's peak is its ``ru_maxrss``; its baseline is the peak of the same
command for a one-line file (imports, settings, the ledger's connection).

Each case runs in a fresh service process (SQLite ledger and RERANKQ_FILES_DIR in a temporary
directory; no worker or broker is needed: every line fails). The peak is the process's VmHWM, reset
(``/proc/PID/clear_refs``) once the service answers, so it measures the case, not the start-up. The
upload is streamed by the client in 1 MiB pieces, so the client's memory stays out of it."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
from bench.common import stop_process_groups  # noqa: E402
from tests.services import free_port, wait_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
MIB = 1 << 20


def _proc(pid: int) -> tuple[int, int, float]:
    """(VmRSS, VmHWM) in bytes and CPU seconds (user + system) of ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text()
    kb = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith(("VmRSS", "VmHWM"))}
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return kb["VmRSS"], kb["VmHWM"], (int(fields[11]) + int(fields[12])) / TICK


def long_line(mb: int) -> Iterator[bytes]:
    """One request line of ``mb`` MiB (a single document), then a newline."""
    yield b'{"custom_id": "huge", "method": "POST", "url": "/v1/rerank", "body": {"query": "q", "documents": ["'
    piece = b"a" * MIB
    for _ in range(mb):
        yield piece
    yield b'"]}}\n'


def tiny_lines(count: int) -> Iterator[bytes]:
    """``count`` lines of one character each: every one a bad line."""
    block = b"x\n" * (MIB // 2)
    for _ in range(count // (MIB // 2)):
        yield block
    yield b"x\n" * (count % (MIB // 2))


def valid_lines(mb: int, one_query: bool = False) -> Iterator[bytes]:
    """Good lines of about 20 KiB (one query, ten documents of 2 KiB) up to ``mb`` MiB: the shape that
    held the most when a batch's pairs were kept for its submission. ``one_query``: every line asks the same
    query, so their runs join one chunk (producer/chunk_plans.py): the largest chunks."""
    docs = [f"document {i} " + "lorem ipsum dolor sit amet " * 75 for i in range(10)]
    total, i = 0, 0
    while total < mb * MIB:
        query = "one query" if one_query else f"query {i}"
        line = json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/rerank", "body": {"query": query, "documents": docs}})
        total += len(line) + 1
        i += 1
        yield line.encode() + b"\n"


def multipart(parts: Iterator[bytes], filename: str) -> Iterator[bytes]:
    yield b'--B0UND\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
    yield b'--B0UND\r\nContent-Disposition: form-data; name="file"; filename="' + filename.encode() + b'"\r\n\r\n'
    yield from parts
    yield b"\r\n--B0UND--\r\n"


def _codes(batch: dict) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in (batch.get("errors") or {}).get("data", []):
        counts[e["code"]] = counts.get(e["code"], 0) + 1
    return counts


def _case_env(case_dir: Path, broker: str) -> dict[str, str]:
    """A case's own SQLite ledger (migrated), files directory and TMPDIR."""
    case_dir.mkdir()
    db = f"sqlite:///{case_dir / 'ledger.db'}"
    env = {
        **os.environ, "RERANKQ_DATABASE_URL": db, "RERANKQ_FILES_DIR": str(case_dir / "files"),
        "RERANKQ_BROKER_URL": broker, "RERANKQ_LOG_JSON": "true", "TMPDIR": str(case_dir / "tmp"),
        "RERANKQ_MAX_FILE_BYTES": str(2 * 1024**3),
    }  # fmt: skip
    (case_dir / "tmp").mkdir()
    subprocess.run([_exe(), "db", "upgrade"], env=env, check=True, capture_output=True)
    return env


def _exe() -> str:
    return str(Path(sys.executable).with_name("producer"))


def cli_submit(name: str, path: Path, workdir: Path, broker: str) -> dict:
    """``producer submit FILE.jsonl`` in a child process: its peak RSS (ru_maxrss) and CPU."""
    env = _case_env(workdir / name, broker)
    t0 = time.perf_counter()
    child = subprocess.Popen([_exe(), "submit", str(path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, _, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t0
    out, err = child.stdout.read().decode(), child.stderr.read().decode()  # type: ignore[union-attr]
    return {
        "case": name, "input_bytes": path.stat().st_size, "job": out.strip()[-36:], "error": err.strip()[-300:] or None,
        "peak_rss_mb": round(usage.ru_maxrss * 1024 / MIB), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "wall_s": round(wall, 2),
    }  # fmt: skip


def _pending_chunks(env: dict[str, str]) -> tuple[int, int]:
    """(chunks, pairs) the case's ledger recorded for its batch's job."""
    import sqlite3

    with sqlite3.connect(env["RERANKQ_DATABASE_URL"].removeprefix("sqlite:///")) as db:
        return db.execute("SELECT count(*), coalesce(sum(pairs), 0) FROM chunks").fetchone()


def good_lines(sizes: list[int], workdir: Path, broker: str | None, one_query: bool = False) -> list[dict]:
    """Files of only good lines through the service and through the CLI, with a Redis to queue on."""
    redis = None
    if broker is None:
        from tests.services import PrivateRedis

        redis = PrivateRedis()
        redis.start()
        broker = redis.url
    results = []
    try:
        one = workdir / "one-line.jsonl"
        one.write_bytes(next(valid_lines(1)))
        results.append(cli_submit("cli-one-line", one, workdir, broker))
        for mb in sizes:
            name = f"good-lines-{mb}mb" + ("-one-query" if one_query else "")
            results.append(run_case(name, valid_lines(mb, one_query), workdir, broker))
            path = workdir / f"{name}.jsonl"
            with open(path, "wb") as f:
                for line in valid_lines(mb, one_query):
                    f.write(line)
            result = cli_submit(f"cli-{name}", path, workdir, broker)
            result["chunks_pairs"] = _pending_chunks(_env_of(workdir / f"cli-{name}"))
            result["peak_over_one_line_mb"] = result["peak_rss_mb"] - results[0]["peak_rss_mb"]
            results.append(result)
            path.unlink()
    finally:
        if redis is not None:
            redis.stop()
    return results


def _env_of(case_dir: Path) -> dict[str, str]:
    return {"RERANKQ_DATABASE_URL": f"sqlite:///{case_dir / 'ledger.db'}"}


def run_case(name: str, parts: Iterator[bytes], workdir: Path, broker: str) -> dict:
    case_dir = workdir / name
    env = _case_env(case_dir, broker)
    exe = _exe()
    port = free_port()
    log = open(case_dir / "service.log", "wb")  # noqa: SIM115
    service = subprocess.Popen([exe, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_port(port, 120)
        requests.get(f"{url}/healthz", timeout=30).raise_for_status()
        rss0, _, cpu0 = _proc(service.pid)
        Path(f"/proc/{service.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS: the peak of this case only
        t0 = time.perf_counter()
        up = requests.post(
            f"{url}/v1/files", data=multipart(parts, f"{name}.jsonl"), timeout=600,
            headers={"content-type": "multipart/form-data; boundary=B0UND"},
        )  # fmt: skip
        up.raise_for_status()
        t_upload = time.perf_counter() - t0
        created = requests.post(f"{url}/v1/batches", json={"input_file_id": up.json()["id"], "endpoint": "/v1/rerank"}, timeout=600)
        t_total = time.perf_counter() - t0
        _, hwm, cpu1 = _proc(service.pid)
        body = created.json()
        error_file = body.get("error_file_id") if created.status_code == 200 else None
        files = case_dir / "files"
        written = sum(p.stat().st_size for p in files.iterdir()) - up.json()["bytes"]
        spooled = sum(p.stat().st_size for p in (case_dir / "tmp").rglob("*") if p.is_file())
        return {
            "case": name, "input_bytes": up.json()["bytes"], "status": created.status_code,
            "batch_status": body.get("status"), "request_counts": body.get("request_counts"),
            "answer": None if created.status_code == 200 else body,
            "errors": _codes(body) if created.status_code == 200 else None,
            "error_file_bytes": written if error_file else 0, "tmpdir_bytes": spooled,
            "rss_before_mb": round(rss0 / MIB), "peak_rss_mb": round(hwm / MIB), "peak_over_start_mb": round((hwm - rss0) / MIB),
            "cpu_s": round(cpu1 - cpu0, 2), "upload_s": round(t_upload, 2), "wall_s": round(t_total, 2),
            "chunks_pairs": _pending_chunks(env) if created.status_code == 200 else None,
        }  # fmt: skip
    finally:
        stop_process_groups([service])
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--case", choices=["long-line", "tiny-lines", "tiny-lines-at-cap", "valid-lines", "good-lines", "all"], default="all"
    )
    parser.add_argument("--valid-mb", type=int, default=100)
    parser.add_argument("--good-mb", type=int, nargs="+", default=[100, 400], help="good-lines: the files' sizes in MiB")
    parser.add_argument("--good-broker", default=None, help="good-lines: a Redis URL (default: a private redis-server)")
    parser.add_argument("--one-query", action="store_true", help="good-lines: every line asks the same query")
    parser.add_argument("--broker", default="redis://127.0.0.1:1/0", help="a Redis the valid lines' job may use (default: none)")
    parser.add_argument("--line-mb", type=int, default=300)
    parser.add_argument("--lines", type=int, default=4_000_000)
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    cases = {
        "long-line": lambda: long_line(args.line_mb),
        "tiny-lines": lambda: tiny_lines(args.lines),
        "tiny-lines-at-cap": lambda: tiny_lines(50_000),  # RERANKQ_BATCH_MAX_LINES' default: the error file's cap
        "valid-lines": lambda: valid_lines(args.valid_mb),  # no broker: measured up to the submission's refusal (503)
    }
    chosen = list(cases) if args.case == "all" else [args.case]
    workdir = Path(tempfile.mkdtemp(prefix="rerankq-abuse-"))
    results = []
    try:
        if args.case == "good-lines":
            for result in good_lines(args.good_mb, workdir, args.good_broker, args.one_query):
                print(json.dumps(result), flush=True)
                results.append(result)
            chosen = []
        for name in chosen:
            result = run_case(name, cases[name](), workdir, args.broker)
            print(json.dumps(result), flush=True)
            results.append(result)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
