"""The hop from the event loop to the handler threads and back."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref

import pytest

from exporter.http.handler_threads import HandlerThreads


class Answer:
    """Something a handler returns that a weak reference can follow."""


def test_results_and_errors_come_back_to_the_loop_from_named_threads() -> None:
    pool = HandlerThreads(2, "crankshaft-test")

    def where(x: int) -> tuple[int, str]:
        return x * 2, threading.current_thread().name

    def fails(_: int) -> int:
        raise ValueError("bad request body")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(*(pool.run(loop, where, i) for i in range(20)))
        assert [r[0] for r in results] == [i * 2 for i in range(20)]
        assert {r[1] for r in results} <= {"crankshaft-test_0", "crankshaft-test_1"}
        with pytest.raises(ValueError, match="bad request body"):
            await pool.run(loop, fails, 0)

    try:
        asyncio.run(main())
    finally:
        pool.shutdown()


def test_a_cancelled_wait_is_left_alone_and_the_threads_go_on() -> None:
    """The connection closed while its handler ran: the late result must not be set on the
    cancelled future (asyncio would raise InvalidStateError on the loop)."""
    pool = HandlerThreads(1, "crankshaft-test")
    release = threading.Event()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        errors: list[dict[str, object]] = []
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        slow = pool.run(loop, lambda _: release.wait(5), None)
        slow.cancel()
        release.set()
        assert await pool.run(loop, lambda x: x + 1, 1) == 2  # after the slow one, same thread
        await asyncio.sleep(0)
        assert errors == []

    try:
        asyncio.run(main())
    finally:
        pool.shutdown()


def test_after_shutdown_a_job_fails_at_once_and_the_threads_end() -> None:
    pool = HandlerThreads(3, "crankshaft-test")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert await pool.run(loop, str, 5) == "5"
        pool.shutdown()
        with pytest.raises(RuntimeError, match="shut down"):
            await pool.run(loop, str, 6)

    asyncio.run(main())
    for thread in pool._threads:
        thread.join(5)
        assert not thread.is_alive()


def test_an_idle_thread_does_not_keep_its_last_answer() -> None:
    """An answer can be a big JSON document: once delivered it is the connection's only."""
    pool = HandlerThreads(1, "crankshaft-test")

    async def main() -> weakref.ref[Answer]:
        answer = await pool.run(asyncio.get_running_loop(), lambda _: Answer(), None)
        return weakref.ref(answer)

    try:
        ref = asyncio.run(main())
        # The thread lets go right after handing the answer over; wait for that, no longer.
        deadline = time.monotonic() + 5
        while ref() is not None and time.monotonic() < deadline:
            gc.collect()
            time.sleep(0.01)
        assert ref() is None
    finally:
        pool.shutdown()


def test_urgent_jobs_go_ahead_of_those_already_waiting() -> None:
    """A scrape queued behind a crowd's JSON renders is taken first once a thread is free."""
    pool = HandlerThreads(1, "crankshaft-test")
    started, release = threading.Event(), threading.Event()
    order: list[str] = []

    def block(_: None) -> None:
        started.set()
        release.wait(5)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        busy = pool.run(loop, block, None)
        assert started.wait(5)
        waiting = [pool.run(loop, order.append, f"json-{i}") for i in range(3)]
        scrape = pool.run(loop, order.append, "scrape", urgent=True)
        assert pool.queued() == 4
        release.set()
        await asyncio.gather(busy, scrape, *waiting)

    try:
        asyncio.run(main())
    finally:
        pool.shutdown()
    assert order == ["scrape", "json-0", "json-1", "json-2"]
