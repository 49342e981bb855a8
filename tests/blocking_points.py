"""Sweep points that wait for the test, so an interruption test has the same outcome on any machine.

:func:`install` replaces ``sim.api.simulate`` (which :func:`sim.sweep.run_point` calls) and
``sim.sweep.run_point`` with thin wrappers. A point whose policy is in ``block`` is computed as usual,
then, while its folder is written, stops after ``summary.csv`` and ``energy.csv`` (the half-written
state a SIGTERM used to leave behind), records ``started-<policy>`` (holding its process id) in the gate
folder, and waits until the test creates ``release`` there. Every point records ``ended-<policy>`` when
its ``run_point`` returns. A test sends its signal only once ``started-*`` and the other points'
``result.json`` exist, and releases the blocked point only after the sweep has answered: no sleep races
the run. Local worker processes are forked (Linux), so they inherit the wrappers; a Dask cluster with
``processes=False`` shares them; a subprocess installs them with ``python -m tests.blocking_points``.

    python -m tests.blocking_points GATE POLICY[,POLICY...] HETMOE-ARGUMENTS...
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

WAIT_S = 300.0          # a blocked point gives up (and fails) after this long: a broken test ends, never hangs

GATE: Path | None = None
BLOCK: frozenset[str] = frozenset()
_REAL: dict[str, Any] = {}


def install(gate: str | Path, block: set[str] | frozenset[str], monkeypatch: Any = None) -> None:
    """Wrap ``sim.api.simulate`` and ``sim.sweep.run_point``; ``monkeypatch`` (pytest's) undoes it after the test."""
    global GATE, BLOCK
    import sim.api
    import sim.sweep

    GATE, BLOCK = Path(gate), frozenset(block)
    GATE.mkdir(parents=True, exist_ok=True)
    _REAL.setdefault("simulate", sim.api.simulate)
    _REAL.setdefault("run_point", sim.sweep.run_point)
    for module, name, fn in ((sim.api, "simulate", simulate), (sim.sweep, "run_point", run_point)):
        if monkeypatch is not None:
            monkeypatch.setattr(module, name, fn)
        else:
            setattr(module, name, fn)


def simulate(**kwargs: Any) -> Any:
    result = _REAL["simulate"](**kwargs)
    if kwargs.get("policy") in BLOCK:
        real_write = result.write

        def write(folder: str | Path) -> Path:
            from sim.result import energy_rows, summary_row, write_csv

            folder = Path(folder)
            write_csv(folder / "summary.csv", [summary_row(result.data)])
            write_csv(folder / "energy.csv", energy_rows(result.data))
            assert GATE is not None
            (GATE / f"started-{kwargs['policy']}").write_text(str(os.getpid()))
            wait_for(GATE / "release")
            return real_write(folder)

        object.__setattr__(result, "write", write)        # Result is a frozen dataclass
    return result


def run_point(point: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    try:
        return _REAL["run_point"](point, *args, **kwargs)
    finally:
        assert GATE is not None
        (GATE / f"ended-{point.get('policy')}").write_text(str(os.getpid()))


def wait_until(ready: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    """Wait until ``ready()`` (a condition, not a guess at how long something takes); the timeout only
    ends a broken test instead of hanging it."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.01)


def wait_for(path: Path, timeout_s: float = WAIT_S) -> None:
    """Wait until ``path`` exists."""
    wait_until(path.exists, f"waiting for {path}", timeout_s)


if __name__ == "__main__":
    install(sys.argv[1], set(sys.argv[2].split(",")))
    from sim.cli import main

    sys.exit(main(sys.argv[3:]))
