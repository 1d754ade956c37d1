"""The producer's own failures, worded for the user: the CLI prints them as one `error:` line
(exit 3) and the service answers them as 4xx/503."""

from __future__ import annotations


class BrokerUnavailable(RuntimeError):
    """The broker cannot be reached, or failed while chunks were being enqueued."""


class InputError(ValueError):
    """Bad inline input, worded for the user."""

