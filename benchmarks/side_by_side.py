"""What every benchmark shares: measuring the classic approach and ours in turn, in one process."""

from __future__ import annotations


def alternate(rounds: int, measure_classic, measure_ours, show) -> tuple[list, list]:
    """Measure classic, then ours, `rounds` times; print each round with show(value). Returns both lists.

    Taking turns spreads any disturbance from other work on the machine over both approaches.
    """
    classic, ours = [], []
    for round_number in range(1, rounds + 1):
        classic.append(measure_classic())
        ours.append(measure_ours())
        print(f"round {round_number}: classic {show(classic[-1])}, ours {show(ours[-1])}")
    return classic, ours
