"""Error bars over noise seeds (pure functions): the rule that decides "within the accuracy budget", and
paired differences between placements measured with common random numbers.

Every placement is measured over the same ``n`` noise seeds, and seed ``k`` draws the same programming and
read noise for every placement (common random numbers), so two placements are compared seed by seed: the
difference ``d_k = a_k - b_k`` has mean ``d`` and standard error ``s_d / sqrt(n)`` (``s_d`` the sample
standard deviation, ddof = 1), which is smaller than the unpaired one when the seeds' noise moves both alike.

Quantiles are Student's t (the seed count is small), from the standard table; between tabulated degrees of
freedom the next smaller one is used, which errs wide.
"""

from __future__ import annotations

from math import ceil, inf, sqrt
from typing import Sequence

# Student's t quantiles by degrees of freedom: one-sided 95 % (t_0.95) and two-sided 95 % (t_0.975)
T95 = {1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860, 9: 1.833, 10: 1.812,
       12: 1.782, 15: 1.753, 20: 1.725, 30: 1.697, 60: 1.671, 120: 1.658}
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000, 120: 1.980}
Z95, Z975 = 1.645, 1.960        # the normal limits beyond the table


def t_quantile(table: dict[int, float], limit: float, df: int) -> float:
    """The table's quantile at ``df`` degrees of freedom (the next smaller tabulated df between entries;
    ``limit`` beyond the last; infinite at df < 1)."""
    if df < 1:
        return inf
    if df > max(table):
        return limit
    return table[max(k for k in table if k <= df)]


def upper_bound(mean: float, std: float, n: int) -> float:
    """One-sided 95 % upper confidence bound of a mean over ``n`` seeds: ``mean + t_0.95(n - 1) s / sqrt(n)``;
    infinite with one seed (no error estimate)."""
    return mean + t_quantile(T95, Z95, n - 1) * std / sqrt(n) if n > 1 else inf


def paired(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Paired difference ``a - b`` over common seeds: mean, standard error, ``t = mean / SE``, whether it is
    separable at two-sided 95 % (``|t| > t_0.975(n - 1)``), and the seed count that would separate a
    difference of this size and spread (``None`` when the difference is zero)."""
    n = len(a)
    if n != len(b) or n < 2:
        return {"n": n, "mean": (sum(a) / n - sum(b) / n) if n and n == len(b) else float("nan"),
                "se": float("nan"), "t": float("nan"), "separable": False, "seeds_needed": None}
    d = [x - y for x, y in zip(a, b)]
    mean = sum(d) / n
    sd = sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    se = sd / sqrt(n)
    t = mean / se if se > 0 else (inf if mean else 0.0)
    separable = abs(t) > t_quantile(T975, Z975, n - 1)
    return {"n": n, "mean": mean, "se": se, "t": t, "separable": bool(separable),
            "seeds_needed": None if mean == 0 else seeds_to_separate(mean, sd)}


def seeds_to_separate(mean: float, sd: float, most: int = 10_000) -> int | None:
    """Smallest seed count ``n >= 2`` with ``|mean| > t_0.975(n - 1) sd / sqrt(n)`` (None beyond ``most``)."""
    if sd == 0:
        return 2
    n = max(2, ceil((Z975 * sd / abs(mean)) ** 2))   # t >= z, so the answer is at least the normal-limit one;
    while n <= most:                                  # t(n - 1) / sqrt(n) falls with n: walk up to the first
        if abs(mean) > t_quantile(T975, Z975, n - 1) * sd / sqrt(n):
            return n
        n += 1
    return None
