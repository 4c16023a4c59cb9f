"""The threads that run request handlers, and the hop from the event loop to them and back.

A handler must not run on the loop: it may wait on a lock held through file I/O (the
send log's fsync, a history snapshot) or take tens of milliseconds (a big ingest batch).
``loop.run_in_executor`` makes that hop through two futures chained across threads
(concurrent.futures' and asyncio's, with their callbacks and state copies); at one scrape
a second that bookkeeping, run on cold caches, was a measurable part of a scrape's CPU
(tests/bench/bench_daemon.py).  Here a request is one queue entry, and its result one
``call_soon_threadsafe`` back to the loop.

Urgent jobs (a Prometheus scrape: it has a timeout, a person's JSON request has not) go
ahead of the queue.  Measured (tests/bench/bench_hostile.py): 1,000 clients asking for the
largest JSON answer at once queued 1,000 renders, each holding the recorder's lock, and a
scrape that could not be answered on the loop waited behind all of them: p99 1.5-2.1 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
A = TypeVar("A")

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[Any], Any], Any]


class HandlerThreads:
    """A fixed number of threads, started with the first job, each taking jobs in turn,
    urgent ones first."""

    def __init__(self, threads: int, name: str) -> None:
        self._size = threads
        self._name = name
        # One token a job (False to stop a thread): the jobs themselves wait in the two
        # deques, and a thread woken by a token takes the urgent one if there is one.
        self._tokens: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._urgent: deque[_Job] = deque()
        self._normal: deque[_Job] = deque()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._lock = threading.Lock()

    def run(self, loop: asyncio.AbstractEventLoop, fn: Callable[[A], T], arg: A,
            urgent: bool = False) -> asyncio.Future[T]:
        """``fn(arg)`` on one of the threads; the future is done on ``loop`` when it is."""
        if not self._threads:
            self._start()
        future: asyncio.Future[T] = loop.create_future()
        if self._closed:
            future.set_exception(RuntimeError("the handler threads are shut down"))
        else:
            (self._urgent if urgent else self._normal).append((loop, future, fn, arg))
            self._tokens.put(True)
        return future

    def queued(self) -> int:
        """Jobs waiting for a thread."""
        return len(self._urgent) + len(self._normal)

    def shutdown(self) -> None:
        """Let the threads end after the job each is on; jobs still queued are dropped."""
        with self._lock:
            self._closed = True
            for _ in self._threads:
                self._tokens.put(False)

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
            if not self._tokens.get() or self._closed:
                return
            job = self._take()
            loop, future, fn, arg = job
            try:
                result, error = fn(arg), None
            except BaseException as e:  # handed to the awaiting coroutine, as an executor does
                result, error = None, e
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, future, result, error)
            del job, future, result, error  # an idle thread must not pin the last answer

    def _take(self) -> _Job:
        """The next job, urgent first.  A token is put after its job, so one is queued
        while this thread holds a token; another thread may take the one looked for in
        between, so look again."""
        while True:
            with contextlib.suppress(IndexError):
                return self._urgent.popleft()
            with contextlib.suppress(IndexError):
                return self._normal.popleft()


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the awaiting coroutine was cancelled (its connection closed)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
