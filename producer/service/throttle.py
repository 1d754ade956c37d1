"""Token buckets for /login: per client address and for everyone, so guessing keys costs time
(a key of `producer keys create` has 256 bits and cannot be guessed; RERANKQ_API_KEY may be weaker)."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict


class Bucket:
    """``capacity`` attempts at once, refilled at ``per_second``."""

    __slots__ = ("tokens", "at")

    def __init__(self, capacity: float, at: float):
        self.tokens, self.at = capacity, at


class Throttle:
    def __init__(
        self, per_client: int = 5, client_per_second: float = 0.2, overall: int = 30, overall_per_second: float = 2.0,
        max_clients: int = 10_000,
    ):  # fmt: skip
        self.per_client, self.client_rate = per_client, client_per_second
        self.overall, self.overall_rate = overall, overall_per_second
        self.max_clients = max_clients  # bounded memory: the longest-idle addresses are forgotten first
        self._clients: OrderedDict[str, Bucket] = OrderedDict()
        self._all = Bucket(overall, time.monotonic())
        self._lock = threading.Lock()

    @staticmethod
    def _refill(bucket: Bucket, capacity: float, rate: float, t: float) -> None:
        bucket.tokens = min(capacity, bucket.tokens + (t - bucket.at) * rate)
        bucket.at = t

    def take(self, client: str) -> float:
        """0 if an attempt from ``client`` may go ahead now (and counts it), else seconds to wait."""
        t = time.monotonic()
        with self._lock:
            bucket = self._clients.pop(client, None) or Bucket(self.per_client, t)
            self._clients[client] = bucket
            while len(self._clients) > self.max_clients:
                self._clients.popitem(last=False)
            self._refill(bucket, self.per_client, self.client_rate, t)
            self._refill(self._all, self.overall, self.overall_rate, t)
            waits = [(1 - b.tokens) / r for b, r in ((bucket, self.client_rate), (self._all, self.overall_rate)) if b.tokens < 1]
            if waits:
                return max(1.0, math.ceil(max(waits)))
            bucket.tokens -= 1
            self._all.tokens -= 1
            return 0.0
