"""Which manifests the service reads: only under the roots the operator names (RERANKQ_MANIFEST_ROOTS,
local directories and object-store prefixes such as ``s3://bucket/nightly``); with none named, no path
at all. The CLI keeps reading whatever its user can read: this check is the service's alone.

Local paths are resolved (symlinks, ``..``) before they are compared, and so is every file of a
directory manifest, so a link inside a root cannot lead outside it. A refusal reads the same whether the
path exists or not, so the service reveals nothing about its host's files."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from producer.service.errors import ServiceError
from rerankq.manifest_source import list_files
from rerankq.settings import Settings


def _refused(uri: str, roots: list[str]) -> ServiceError:
    if not roots:
        return ServiceError(
            403, "field 'manifest': this service reads no manifest paths (RERANKQ_MANIFEST_ROOTS names none): "
            "upload the pairs as a batch file (POST /v1/files) or submit with `producer submit`",
        )  # fmt: skip
    return ServiceError(403, f"field 'manifest': {uri!r} is not under a directory this service reads (RERANKQ_MANIFEST_ROOTS)")


def _local(uri: str) -> str | None:
    """The path a local manifest names, else None (an object-store URI)."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return parts.path if parts.netloc in ("", "localhost") else None
    return uri if "://" not in uri else None


def _under(target: str, root: str) -> bool:
    return target == root or target.startswith(root.rstrip("/") + "/")


def _real(path: str) -> str:
    return os.path.realpath(os.path.expanduser(path))


def allowed_manifest(uri: str, settings: Settings) -> str:
    """The manifest as the service will read it (a local one resolved), or 403 when it is not under a root."""
    roots = list(settings.manifest_roots)
    local = _local(uri)
    if "\0" in uri or not roots:
        raise _refused(uri, roots)
    if local is None:
        scheme_path = uri.split("://", 1)[1]
        if any(seg in (".", "..") for seg in scheme_path.split("/")) or not any("://" in r and _under(uri, r) for r in roots):
            raise _refused(uri, roots)
        return uri
    local_roots = [_real(r.removeprefix("file://")) for r in roots if "://" not in r or r.startswith("file://")]
    target = _real(local)
    if not any(_under(target, r) for r in local_roots):
        raise _refused(uri, roots)
    if os.path.isdir(target):  # every file of a directory manifest, resolved, stays under a root
        _, files = list_files(target, settings)
        if not all(any(_under(_real(f.path), r) for r in local_roots) for f in files):
            raise _refused(uri, roots)
    return target
