"""Reservation calendars: the engine's model of a contended resource.

A calendar holds the busy intervals booked on one resource, sorted and disjoint. An operation that
is ready at ``t`` and needs the resource for ``d`` ps takes the earliest gap ``[s, s + d)`` with
``s >= t`` (so a short operation may use an idle gap before a longer one booked later: requests are
served as soon as the resource is free for their whole duration). Gangs (an operation that needs
several resources at once, e.g. all tiles of a matrix) start at the earliest time that fits on all.
Intervals that ended before the simulation clock are dropped.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Callable, Sequence


class Calendar:
    __slots__ = ("starts", "ends", "busy_ps", "clock")

    def __init__(self, clock: Callable[[], float]) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.busy_ps = 0
        self.clock = clock

    def fit(self, t: int, d: int) -> int:
        """Earliest start ``>= t`` at which ``[start, start + d)`` is free."""
        ends = self.ends
        if not ends or t >= ends[-1]:
            return t
        starts = self.starts
        i = bisect_right(ends, t)
        n = len(starts)
        while i < n and starts[i] < t + d:
            if ends[i] > t:
                t = ends[i]
            i += 1
        return t

    def book(self, s: int, d: int) -> None:
        if d <= 0:
            return
        self.busy_ps += d
        starts, ends = self.starts, self.ends
        if not starts or s >= starts[-1]:
            if ends and ends[-1] == s:          # touches the last interval: extend it
                ends[-1] = s + d
            else:
                starts.append(s)
                ends.append(s + d)
                if len(starts) > 64:
                    self._prune()
            return
        i = bisect_left(starts, s)
        e = s + d
        if i and ends[i - 1] == s:                # coalesce with the interval before
            if starts[i] == e:                    # ... and the one after
                ends[i - 1] = ends[i]
                del starts[i], ends[i]
            else:
                ends[i - 1] = e
        elif starts[i] == e:                      # coalesce with the interval after
            starts[i] = s
        else:
            starts.insert(i, s)
            ends.insert(i, e)


    def _prune(self) -> None:
        k = bisect_right(self.ends, int(self.clock()))
        if k:
            del self.starts[:k]
            del self.ends[:k]


def gang_fit_same(cals: Sequence[Calendar], d: int, t: int) -> int:
    """Earliest common start ``>= t`` for every calendar busy the same ``d`` (a NoC path's links)."""
    while True:
        t0 = t
        for c in cals:
            t = c.fit(t, d)
        if t == t0:
            return t


def gang_fit(cals: Sequence[Calendar], durs: Sequence[int], t: int) -> int:
    """Earliest common start ``>= t`` for ``cals[i]`` busy ``durs[i]`` each."""
    if len(cals) == 1:
        return cals[0].fit(t, durs[0])
    while True:
        t0 = t
        for c, d in zip(cals, durs):
            t = c.fit(t, d)
        if t == t0:
            return t
