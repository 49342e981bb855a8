"""Progress reporting for long loops: :mod:`arch.progress` (kept there, beside :mod:`arch.safeio`, so every layer,
``workloads`` and ``sim.functional`` included, can use it); re-exported here for the simulator's modules."""

from arch.progress import (CLOCK, DEFAULT_INTERVAL_S, INTERVAL_ENV, LineProgress, NoProgress, interval_s,  # noqa: F401
                           progress)
