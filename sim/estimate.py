"""What a run will cost before it starts: host wall time and bytes written, and the per-resource utilisation detail
kept by default (``--utilisation``).

Wall time. The engine's host time is one stage call per (micro-batch, layer) plus one calendar booking per resource an
operation holds; on large meshes the bookings of NoC links dominate (every hop of every message books a link). The
estimate is

    seconds = STARTUP_S + visits x (SECONDS_PER_VISIT + bookings_per_visit / BOOKINGS_PER_S)
    bookings_per_visit = BOOKINGS_PER_SLOT_HOP x analog crossbar slots per layer x (mean hops + 1)

with ``visits`` = micro-batches (decode steps) x layers and the mean hop count of a W x H mesh (W + H) / 3.
Measured on the development host (2 shared x86 cores, numba-compiled kernel, olmoe-1b-7b, maxnn 12.5 %, 512 synthetic
tokens, micro-batch 64): hermes-64 at 1,024 tiles x 84 tiers on a 32 x 32 mesh made 31.97 M bookings (128 visits,
5,376 slots a layer, 21.3 mean hops: 2.2 bookings per slot-hop) in about 1.5 s of engine time; at 4,096 tiles x 21 tiers
on 64 x 64, 80.6 M bookings (2.7 per slot-hop) in about 4.2 s: about 19 M bookings/s. aimc-3d-moe (8 x 8, local digital
units, 2,048 tokens: 512 visits, 1.2 M bookings) took 1.05 s in all, about 1 ms a visit of stage overhead; there the
formula over-counts bookings (local reductions send fewer messages), which only matters for runs far below a minute.
It is an order-of-magnitude figure ("about"), never a promise; a faster or busier host scales it.

Output size. ``utilisation.csv`` holds one row per resource (tiles, local digital units, SIMD cores, DRAM channels, NoC
links) with ``--utilisation full``; ``result.json`` holds a fixed part (~16 KB) plus the mean tile utilisation of every
NoC node holding tiles (the heat map's input) with ``full``. The bytes per row and per node below were measured on the
same runs (tile rows ~60 B, link rows ~90 B, node entries ~38 B); ``summary`` keeps one row of statistics per resource
kind instead (~1 KB) and ``none`` no file at all. ``compare`` and ``sweep`` also write ``results.json`` (every run's
result.json, indented alike).
"""

from __future__ import annotations

import math
from typing import Any

DETAILS = ("full", "summary", "none")
SUMMARY_ABOVE = 10_000          # resources (tiles + local digital units + SIMD cores + DRAM channels + NoC links)

STARTUP_S = 1.0                 # interpreter, imports, compiled-kernel cache load, placement and mapping
SECONDS_PER_VISIT = 1e-3        # stage-call overhead per (micro-batch, layer)
BOOKINGS_PER_S = 19e6           # calendar bookings per second of engine time
BOOKINGS_PER_SLOT_HOP = 2.5     # bookings per analog slot per hop of a layer visit

ROW_BYTES = {"tile": 60, "local_digital": 72, "simd": 62, "dram": 90, "noc_link": 90}
RESULT_BASE_BYTES = 16_000
NODE_BYTES = 38                 # one "(x, y)": utilisation entry of tile_utilisation_by_node
SUMMARY_CSV_BYTES = 1_000

ANNOUNCE_SECONDS = 60.0
ANNOUNCE_BYTES = 100e6


def noc_shape(chip: Any) -> tuple[int, int, float]:
    """Nodes, directed links and the mean hop count of the chip's NoC, from its description (nothing built)."""
    noc = chip.noc
    if noc.topology == "mesh":
        W, H = int(noc.width), int(noc.height)
        return W * H, 2 * (W * (H - 1) + H * (W - 1)), (W + H) / 3
    nodes = len(noc.nodes)
    return nodes, 2 * len(noc.edges), max(1.0, math.log2(max(nodes, 2)))


def resource_counts(chip: Any) -> dict[str, int]:
    """Rows of a full utilisation table, by kind (as :func:`sim.api.utilisation` writes them)."""
    nodes, links, _ = noc_shape(chip)
    return {"tile": int(chip.analog.tile_count), "local_digital": nodes if chip.analog.local_digital else 0,
            "simd": int(chip.digital.simd.cores), "dram": int(chip.memory.dram.channels), "noc_link": links}


def tile_nodes(chip: Any) -> int:
    """NoC nodes that hold tiles (entries of ``tile_utilisation_by_node``)."""
    nodes, _, _ = noc_shape(chip)
    if not chip.analog.tile_count:
        return 0
    if chip.noc.topology != "mesh":
        return len(getattr(chip.noc, "tile_nodes", ()) or ()) or 1
    per = max(1, int(getattr(chip.noc, "tiles_per_node", 1) or 1))
    return min(nodes, math.ceil(chip.analog.tile_count / per))


def default_detail(chip: Any) -> str:
    """``summary`` above :data:`SUMMARY_ABOVE` resources, ``full`` below."""
    return "summary" if sum(resource_counts(chip).values()) > SUMMARY_ABOVE else "full"


def resolve_detail(chip: Any, detail: str | None) -> str:
    if detail in (None, "auto"):
        return default_detail(chip)
    if detail not in DETAILS:
        from arch.errors import HetmoeError
        raise HetmoeError(f"--utilisation {detail!r}: allowed {', '.join(DETAILS)}")
    return detail


def run_bytes(chip: Any, detail: str) -> dict[str, int]:
    """Bytes a run writes into its folder with this detail: ``utilisation.csv`` and ``result.json``."""
    counts = resource_counts(chip)
    if detail == "full":
        csv = 60 + sum(ROW_BYTES[k] * n for k, n in counts.items())
        result = RESULT_BASE_BYTES + NODE_BYTES * tile_nodes(chip)
    else:
        csv = SUMMARY_CSV_BYTES if detail == "summary" else 0
        result = RESULT_BASE_BYTES + (1_500 if detail == "summary" else 0)
    return {"utilisation.csv": csv, "result.json": result}


def micro_batches(tokens: int, batch: int, mode: str = "prefill", requests: int = 1) -> int:
    """Micro-batches (prefill) or decode steps a run of ``tokens`` makes, roughly (no request boundaries)."""
    if mode == "prefill":
        return max(1, math.ceil(tokens / max(1, batch)), requests)
    return max(1, math.ceil(tokens / max(1, min(batch, max(1, requests)))))


def run_seconds(chip: Any, layers: int, n_mb: int, slots: int | None = None) -> float:
    """Host seconds of one run (see the module docs); ``slots``: analog crossbar slots the placement uses
    (default: every slot of the chip, an upper bound)."""
    if slots is None:
        slots = int(chip.analog.tile_count) * int(getattr(chip.analog.tile, "tiers", 1) or 1)
    _, _, hops = noc_shape(chip)
    visits = n_mb * max(1, layers)
    per_visit = BOOKINGS_PER_SLOT_HOP * slots / max(1, layers) * (hops + 1)
    return STARTUP_S + visits * (SECONDS_PER_VISIT + per_visit / BOOKINGS_PER_S)


def size_text(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            v = n / scale
            return f"{v:.1f} {unit}" if v < 10 else f"{v:,.0f} {unit}"
    return f"{n:.0f} B"


def time_text(s: float) -> str:
    if s < 90:
        return f"{max(1, round(s))} s"
    if s < 5400:
        return f"{round(s / 60)} min"
    return f"{s / 3600:.1f} h"


def plan_line(runs: list[dict[str, Any]], *, jobs: int = 1, collected: bool = False, force: bool = False
              ) -> str | None:
    """One line saying the expected wall time and output of ``runs`` (each ``{"chip", "detail", "seconds"}``;
    ``seconds`` None when unknown), or None when neither is large (> 1 min, > 100 MB) and not ``force``.
    ``collected``: the runs are also gathered into ``results.json`` (compare, sweep)."""
    if not runs:
        return None
    sizes = [run_bytes(r["chip"], r["detail"]) for r in runs]
    total = sum(sum(s.values()) for s in sizes) * (2 if collected else 1)    # results.json repeats each result
    known = [r["seconds"] for r in runs if r.get("seconds") is not None]
    seconds = sum(known) / max(1, min(jobs, len(runs))) if known else None
    if not force and (seconds is None or seconds <= ANNOUNCE_SECONDS) and total <= ANNOUNCE_BYTES:
        return None
    biggest = max(range(len(runs)), key=lambda i: sizes[i]["utilisation.csv"])
    csv = sizes[biggest]["utilisation.csv"]
    n = len(runs)
    what = (f"{n} run{'s' if n != 1 else ''} x {size_text(csv)} utilisation.csv" if n > 1 else
            f"{size_text(csv)} utilisation.csv, {size_text(sizes[0]['result.json'])} result.json")
    head = (f"about {time_text(seconds)} and " if seconds is not None else "") + f"{size_text(total)} of output expected"
    line = f"hetmoe: {head} ({what})"
    full = [r for r in runs if r["detail"] == "full"]
    if full:
        lean = sum(sum(run_bytes(r["chip"], "summary" if r["detail"] == "full" else r["detail"]).values())
                   for r in runs) * (2 if collected else 1)
        if lean < total / 2:
            line += f"; --utilisation summary keeps it to {size_text(lean)}"
    return line
