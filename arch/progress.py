"""One progress helper for every long loop (engine layers, sweep points, serving runs, checkpoint experts,
forward steps).

- on a terminal: a tqdm bar on standard error;
- otherwise (``nohup``, a batch scheduler, CI, a pipe): one plain line on standard error at most every
  :func:`interval_s` seconds (``HETMOE_PROGRESS_INTERVAL_S``, default 10), e.g.
  ``hetmoe: engine 1,234/4,096 layers (30 %), 12 s elapsed, about 28 s left``; the first line comes only once an
  interval has passed, so a short run prints nothing;
- ``quiet``: nothing at all.

The clock is a parameter (``clock``, default :data:`CLOCK`, ``time.monotonic``) so tests drive it by hand.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, TextIO

INTERVAL_ENV = "HETMOE_PROGRESS_INTERVAL_S"
DEFAULT_INTERVAL_S = 10.0
CLOCK: Callable[[], float] = time.monotonic


def interval_s() -> float:
    """Seconds between plain progress lines: ``HETMOE_PROGRESS_INTERVAL_S`` (> 0), else 10."""
    text = os.environ.get(INTERVAL_ENV, "")
    try:
        value = float(text)
    except ValueError:
        return DEFAULT_INTERVAL_S
    return value if value > 0 and value == value else DEFAULT_INTERVAL_S


class NoProgress:
    """Says nothing (``--quiet``, or work too small to report)."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "NoProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class LineProgress(NoProgress):
    """Plain lines on ``stream``: at most one per ``interval`` seconds of ``clock``, none before the first
    interval has passed (a short run prints nothing)."""

    def __init__(self, total: int, desc: str, unit: str, *, stream: TextIO | None = None,
                 clock: Callable[[], float] | None = None, interval: float | None = None) -> None:
        self.total, self.desc, self.unit = int(total), desc, unit
        self.stream = stream
        self.clock = clock or CLOCK
        self.interval = interval if interval is not None else interval_s()
        self.n = 0
        self.start = self.clock()
        self.last = self.start
        self.lines = 0

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self.say(now)

    def line(self, now: float) -> str:
        elapsed = now - self.start
        done = min(self.n, self.total) if self.total > 0 else self.n
        text = f"hetmoe: {self.desc} {done:,}/{self.total:,} {self.unit}"
        if self.total > 0:
            text += f" ({100 * done // self.total} %)"
        text += f", {_duration(elapsed)} elapsed"
        if 0 < done < self.total:
            text += f", about {_duration(elapsed * (self.total - done) / done)} left"
        return text

    def say(self, now: float) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        print(self.line(now), file=stream, flush=True)
        self.lines += 1


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def progress(total: int, desc: str, unit: str, *, quiet: bool = False, stream: TextIO | None = None,
             clock: Callable[[], float] | None = None, interval: float | None = None,
             terminal: bool | None = None, leave: bool = False) -> Any:
    """A progress reporter with ``update(n)`` and ``close()``: a tqdm bar when standard error (``stream``) is
    a terminal, plain lines otherwise (see the module docs), nothing when ``quiet``. ``terminal`` overrides
    the terminal check (tests)."""
    if quiet:
        return NoProgress()
    out = stream if stream is not None else sys.stderr
    if terminal is None:
        try:
            terminal = bool(out.isatty())
        except (AttributeError, ValueError):
            terminal = False
    if terminal:
        try:
            from tqdm import tqdm
        except ImportError:  # pragma: no cover - tqdm is a dependency
            pass
        else:
            return tqdm(total=total, desc=desc, unit=unit, leave=leave, file=out)
    return LineProgress(total, desc, unit, stream=stream, clock=clock, interval=interval)
