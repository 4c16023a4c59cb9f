"""Tiny timing harness: medians of repeated warm runs, so a shared noisy machine still gives
comparable figures; every benchmark reports a ratio against an anchor timed in the same run."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds_per_call(fn: Callable[[], object], number: int, repeat: int = 7) -> float:
    """Median over ``repeat`` runs of the mean time of ``number`` calls (after one warm-up run)."""
    for _ in range(max(1, number // 10)):
        fn()
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        runs.append((time.perf_counter() - t0) / number)
    return statistics.median(runs)


def table(title: str, header: list[str], rows: list[list[object]]) -> str:
    """A markdown table, ready to paste into tests/bench/RESULTS.md."""
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f}"
