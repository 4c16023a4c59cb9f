"""The cap on answers waiting in the server's buffers: who is reset when it is exceeded."""

from __future__ import annotations

from exporter.http.budget import OutputBudget


def test_within_the_cap_nobody_is_reset() -> None:
    budget: OutputBudget[str] = OutputBudget(cap=100)
    assert budget.hold("a", 40) == [] and budget.hold("b", 60) == []
    assert budget.total == 100


def test_over_the_cap_the_longest_holders_go_first_never_the_writer() -> None:
    budget: OutputBudget[str] = OutputBudget(cap=100)
    budget.hold("a", 40)
    budget.hold("b", 30)
    budget.hold("c", 20)
    assert budget.hold("d", 50) == ["a"]  # 140 -> 100
    assert budget.total == 100
    assert budget.hold("e", 250) == ["b", "c", "d"]  # alone over the cap: kept, bounded by
    assert budget.total == 250  # its own deadline
    assert budget.resets == 4


def test_release_and_a_new_hold_replace_the_old_count() -> None:
    budget: OutputBudget[str] = OutputBudget(cap=100)
    budget.hold("a", 80)
    budget.hold("a", 30)  # the same connection's next answer
    assert budget.total == 30
    budget.release("a")
    budget.release("a")
    assert budget.total == 0
    assert budget.hold("b", 0) == [] and budget.total == 0
