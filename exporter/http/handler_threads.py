"""The threads that run request handlers, and the hop from the event loop to them and back.

A handler must not run on the loop: it may wait on a lock held through file I/O (the
send log's fsync, a history snapshot) or take tens of milliseconds (a big ingest batch).
``loop.run_in_executor`` makes that hop through two futures chained across threads
(concurrent.futures' and asyncio's, with their callbacks and state copies); at one scrape
a second that bookkeeping, run on cold caches, was a measurable part of a scrape's CPU
(tests/bench/bench_daemon.py).  Here a request is one queue entry, and its result one
``call_soon_threadsafe`` back to the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
A = TypeVar("A")

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[Any], Any], Any]


class HandlerThreads:
    """A fixed number of threads, started with the first job, each taking jobs in turn."""

    def __init__(self, threads: int, name: str) -> None:
        self._size = threads
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._lock = threading.Lock()

    def run(self, loop: asyncio.AbstractEventLoop, fn: Callable[[A], T],
            arg: A) -> asyncio.Future[T]:
        """``fn(arg)`` on one of the threads; the future is done on ``loop`` when it is."""
        if not self._threads:
            self._start()
        future: asyncio.Future[T] = loop.create_future()
        if self._closed:
            future.set_exception(RuntimeError("the handler threads are shut down"))
        else:
            self._jobs.put((loop, future, fn, arg))
        return future

    def shutdown(self) -> None:
        """Let the threads end after the job each is on; jobs still queued are dropped."""
        with self._lock:
            self._closed = True
            for _ in self._threads:
                self._jobs.put(None)

    def _start(self) -> None:
        with self._lock:
            if self._threads or self._closed:
                return
            for i in range(self._size):
                thread = threading.Thread(target=self._work, name=f"{self._name}_{i}",
                                          daemon=True)
                thread.start()
                self._threads.append(thread)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None or self._closed:
                return
            loop, future, fn, arg = job
            try:
                result, error = fn(arg), None
            except BaseException as e:  # handed to the awaiting coroutine, as an executor does
                result, error = None, e
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, future, result, error)
            del job, future, result, error  # an idle thread must not pin the last answer


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the awaiting coroutine was cancelled (its connection closed)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
