"""A render begun after a request arrived answers it; one begun before does not."""

from __future__ import annotations

import math

from exporter.http.fresh_renders import KEEP, FreshRenders


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_request_that_waited_while_a_render_began_takes_that_render() -> None:
    clock = Clock()
    renders = FreshRenders(clock)
    made: list[int] = []

    def render() -> bytes:
        made.append(1)
        return b"doc %d" % len(made)

    arrived_early = clock.now - 1.0  # queued before the render below began
    assert renders.get("json", clock.now, render) == b"doc 1"
    assert renders.get("json", arrived_early, render) == b"doc 1"
    assert renders.shared == 1
    clock.now += 0.5
    # Arrived after that render began: it might miss a change, so it gets its own.
    assert renders.get("json", clock.now, render) == b"doc 2"
    assert renders.get("csv", arrived_early, render) == b"doc 3"  # another document
    assert renders.get("json", math.inf, render) == b"doc 4"  # arrival unknown: never shared
    assert len(made) == 4


def test_only_a_few_documents_are_kept() -> None:
    clock = Clock()
    renders = FreshRenders(clock)
    for n in range(KEEP + 3):
        renders.get(("json", n), clock.now, lambda n=n: b"x" * n)
    assert len(renders._made) == KEEP
    assert set(renders._made) == {("json", n) for n in range(3, KEEP + 3)}
