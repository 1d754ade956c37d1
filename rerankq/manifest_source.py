"""Where manifests live and how rows come out of them: shared by the producer (validation, planning)
and the worker (reading its chunk's rows itself, so manifests never pass through the broker)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rerankq.settings import Settings, get_settings
from schemas import ManifestSegment

REQUIRED_COLUMNS = ("query_id", "query", "doc_id", "document")
OPTIONAL_COLUMNS = ("instruction",)
COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS


class ManifestError(ValueError):
    """Bad manifest input, worded for the user: names the file, row and field."""


@dataclass(frozen=True, slots=True)
class ManifestFile:
    path: str
    size: int


def normalize_uri(uri: str) -> str:
    """Local paths become absolute, so workers on the same filesystem find them."""
    scheme = urlparse(uri).scheme
    if scheme and len(scheme) > 1:  # not a Windows drive letter
        return uri
    return str(Path(uri).expanduser().resolve())


def check_allowed(uri: str, settings: Settings) -> None:
    scheme = urlparse(uri).scheme if "://" in uri else "file"
    if scheme not in settings.manifest_schemes:
        raise ManifestError(f"{uri}: scheme {scheme!r} is not allowed (RERANKQ_MANIFEST_SCHEMES={settings.manifest_schemes})")
    if settings.manifest_roots:
        target = uri if "://" in uri else str(Path(uri).resolve())
        roots = [r if "://" in r else str(Path(r).resolve()) for r in settings.manifest_roots]
        if not any(target == r or target.startswith(r.rstrip("/") + "/") for r in roots):
            raise ManifestError(f"{uri}: outside the allowed manifest roots (RERANKQ_MANIFEST_ROOTS)")


def _s3(settings: Settings) -> pafs.S3FileSystem:
    """S3 at RERANKQ_S3_ENDPOINT_URL (MinIO, Ceph, moto, ...). Credentials and region come from the
    AWS SDK's usual sources (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, AWS_REGION, instance
    roles): rerankq never reads, stores or logs them."""
    endpoint = urlparse(settings.s3_endpoint_url or "")
    return pafs.S3FileSystem(
        endpoint_override=endpoint.netloc + endpoint.path.rstrip("/"),
        scheme=endpoint.scheme or "https",
        connect_timeout=settings.connect_timeout,
    )


def filesystem(uri: str, settings: Settings | None = None) -> tuple[pafs.FileSystem, str]:
    if "://" in uri:
        settings = settings or get_settings()
        try:
            if urlparse(uri).scheme == "s3" and settings.s3_endpoint_url:
                return _s3(settings), uri.split("://", 1)[1]
            return pafs.FileSystem.from_uri(uri)  # real AWS: finds the bucket's region itself
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise ManifestError(store_error(uri, exc)) from None
    return pafs.LocalFileSystem(), uri


def store_error(where: str, exc: BaseException) -> str:
    """An object store's failure in one line that says what to do (never a credential: none is in it)."""
    text = str(exc)
    if "ACCESS_DENIED" in text or "AccessDenied" in text or "INVALID_ACCESS_KEY" in text:
        return (
            f"{where}: access denied by the object store (check the AWS_* credentials in the environment "
            "and the bucket's policy)"
        )
    if "NO_SUCH_BUCKET" in text or "NoSuchBucket" in text:
        return f"{where}: no such bucket"
    if "NETWORK_CONNECTION" in text or "Could not connect" in text:
        return f"{where}: cannot reach the object store (RERANKQ_S3_ENDPOINT_URL for an S3-compatible one)"
    return f"{where}: cannot open ({text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__})"


def _not_found(uri: str, fs: pafs.FileSystem, path: str) -> str:
    """Which part is missing: on an object store, the bucket or the key."""
    if not isinstance(fs, pafs.LocalFileSystem) and "/" in path.strip("/"):
        bucket = path.split("/", 1)[0]
        try:
            if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
                return f"{uri}: no such bucket {bucket!r}"
        except OSError:
            pass
        return f"{uri}: no such key (no object at or under it in bucket {bucket!r})"
    return f"{uri}: no such file or directory"


def list_files(uri: str, settings: Settings | None = None) -> tuple[pafs.FileSystem, list[ManifestFile]]:
    """The Parquet files of a manifest (one file, or a directory of them), in a stable order."""
    fs, path = filesystem(uri, settings)
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise ManifestError(_not_found(uri, fs, path))
        if info.type == pafs.FileType.File:
            return fs, [ManifestFile(path, info.size)]
        dataset = ds.dataset(path, format="parquet", filesystem=fs, exclude_invalid_files=False)
        files = sorted(dataset.files)
        if not files:
            raise ManifestError(f"{uri}: the directory holds no Parquet files")
        return fs, [ManifestFile(f, fs.get_file_info(f).size) for f in files]
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(store_error(uri, exc)) from None


def open_parquet(fs: pafs.FileSystem, path: str) -> pq.ParquetFile:
    try:
        source = fs.open_input_file(path)
    except OSError as exc:
        raise ManifestError(store_error(path, exc)) from None
    try:
        return pq.ParquetFile(source)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(f"{path}: not a readable Parquet file ({exc})") from None


def read_segment(fs: pafs.FileSystem, segment: ManifestSegment) -> pa.Table:
    """Rows [start, stop) of one file, reading only the row groups that hold them."""
    try:
        size = fs.get_file_info(segment.path).size
    except OSError as exc:
        raise ManifestError(store_error(segment.path, exc)) from None
    pf = open_parquet(fs, segment.path)
    if size != segment.size or pf.metadata.num_rows != segment.file_rows:
        raise ManifestError(f"{segment.path}: the file changed after the job was submitted (size or row count differs)")
    names = set(pf.schema_arrow.names)
    columns = [c for c in COLUMNS if c in names]
    if segment.rows is not None:
        return _read_rows(pf, columns, segment.rows)
    groups, first, offset = [], None, 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if offset + n > segment.start and offset < segment.stop:
            groups.append(g)
            first = offset if first is None else first
        offset += n
    table = pf.read_row_groups(groups, columns=columns)
    return table.slice(segment.start - (first or 0), segment.stop - segment.start)


def _read_rows(pf: pq.ParquetFile, columns: list[str], rows: list[int]) -> pa.Table:
    """Only the named rows (ascending), one row group in memory at a time: the rows left to score after
    reuse may be scattered over far more of the file than they number."""
    import bisect

    pieces, offset = [], 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        lo, hi = bisect.bisect_left(rows, offset), bisect.bisect_left(rows, offset + n)
        if hi > lo:
            group = pf.read_row_group(g, columns=columns)
            pieces.append(group.take(pa.array([r - offset for r in rows[lo:hi]], pa.int64())))
        offset += n
    return pa.concat_tables(pieces) if pieces else pf.schema_arrow.empty_table().select(columns)


def texts(column: pa.ChunkedArray | pa.Array) -> list[str | None]:
    """A string column as Python strings; binary columns are decoded as UTF-8 (None where invalid)."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column.to_pylist()
    out: list[str | None] = []
    for value in column.to_pylist():
        try:
            out.append(None if value is None else value.decode("utf-8"))
        except UnicodeDecodeError:
            out.append(None)
    return out
