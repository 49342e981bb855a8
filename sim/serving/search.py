"""The highest request rate a design sustains under an SLO: a bracketing search on the rate.

A rate *passes* when the run at it is stable and its p99 TTFT and p99 TPOT are within the SLO
(:func:`sim.serving.metrics.meets_slo`). Latency and backlog grow with the rate, so passing is taken
as monotone in the rate (seeded runs make it nearly so; a non-monotone point is kept in the record).

The bracket starts at ``[0, 1.2 x capacity]`` where ``capacity`` is the design's closed-batch
throughput in requests/s (every request queued at t = 0: the most it can serve). Each round tests
``k`` rates that cut the bracket into ``k + 1`` equal parts (``k`` = the workers available, so a round
runs in parallel), then the bracket becomes [highest passing rate, lowest failing rate above it].
When the top of the bracket passes, the bracket doubles. The search stops after ``max_rates`` rates or
when the bracket is narrower than ``RESOLUTION`` of its top.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RESOLUTION = 0.02
HEADROOM = 1.2


@dataclass
class RateSearch:
    capacity_per_s: float
    k: int = 2
    max_rates: int = 8
    lo: float = 0.0
    hi: float = 0.0
    tried: dict[float, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.capacity_per_s > 0:
            raise ValueError("capacity must be > 0")
        self.hi = HEADROOM * self.capacity_per_s

    @property
    def done(self) -> bool:
        return len(self.tried) >= self.max_rates or (self.hi - self.lo) <= RESOLUTION * self.hi

    def next_rates(self) -> list[float]:
        """The rates of the next round (empty when the search is over)."""
        if self.done:
            return []
        k = min(self.k, self.max_rates - len(self.tried))
        step = (self.hi - self.lo) / (k + 1)
        return [self.lo + step * (i + 1) for i in range(k)]

    def record(self, results: dict[float, bool]) -> None:
        """Results of one round: rate -> passed."""
        self.tried.update(results)
        passed = [r for r, ok in self.tried.items() if ok]
        self.lo = max(passed, default=0.0)
        failing = [r for r, ok in self.tried.items() if not ok and r > self.lo]
        if failing:
            self.hi = min(failing)
        elif self.lo >= self.hi * self.k / (self.k + 1) * (1 - 1e-9):    # the top rate tried passed
            self.hi *= 2.0

    @property
    def best(self) -> float | None:
        """The highest passing rate, or None when none passed."""
        passed = [r for r, ok in self.tried.items() if ok]
        return max(passed) if passed else None

    def summary(self) -> dict[str, Any]:
        return {"capacity_per_s": self.capacity_per_s, "bracket_per_s": [self.lo, self.hi],
                "rates_tried": len(self.tried), "best_rate_per_s": self.best,
                "rule": "bracket [0, 1.2 x closed-batch capacity], k-section rounds, doubled when its top passes"}
