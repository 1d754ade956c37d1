"""One thread calling an engine that must not be called from two threads at once (the transformers
engine, custom engines without ``submit_log_odds``), taking the most urgent call first: a live request's
prompts (priority below 0) run before batch slices already waiting, never before the call that runs."""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class SerialExecutor:
    """``submit(fn, *args, priority=0, **kwargs) -> Future``; lower priority first, then in order of submission."""

    def __init__(self, name: str = "rerankq-engine"):
        self._heap: list[tuple[int, int, Future[Any], Callable[..., Any], tuple, dict]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, priority: int = 0, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the engine is closed")
            heapq.heappush(self._heap, (priority, next(self._order), future, fn, args, kwargs))
            self._cond.notify()
        return future

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap and not self._closed:
                    self._cond.wait()
                if not self._heap:
                    return
                _, _, future, fn, args, kwargs = heapq.heappop(self._heap)
            if not future.set_running_or_notify_cancel():  # cancelled while it waited: never called
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                future.set_exception(exc)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        with self._cond:
            self._closed = True
            if cancel_futures:
                for _, _, future, *_ in self._heap:
                    future.cancel()
                self._heap.clear()
            self._cond.notify_all()
        if wait:
            self._thread.join()
