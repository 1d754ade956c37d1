"""Lookups the user gets wrong: an unknown job id, or a prefix several jobs share."""

from __future__ import annotations

from collections.abc import Sequence


class UnknownJob(LookupError):
    def __init__(self, job_id: str):
        super().__init__(f"no job {job_id!r} in the ledger (see `producer list`)")


class AmbiguousJob(UnknownJob):
    """A job id prefix that several jobs share."""

    def __init__(self, prefix: str, matches: Sequence[str]):
        LookupError.__init__(
            self, f"job id prefix {prefix!r} is ambiguous: it matches {', '.join(matches)} (give more characters)"
        )
