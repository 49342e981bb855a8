"""``hetmoe run``: one simulation, written as result.json + CSV."""

from __future__ import annotations

import argparse
import sys

from ..placement import POLICIES
from ..result import corrections, fmt_number
from .common import (FMT, add_budget_arg, add_common_run_args, add_utilisation_arg, check_budget, memory_limit,
                     run_kwargs)
from .hw import warn_reticle


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="simulate one placement and write result.json + CSV", formatter_class=FMT,
                       description="Simulate MoE inference of --model on --hw with one placement policy; "
                                   "write result.json, summary.csv, energy.csv and utilisation.csv (see "
                                   "--utilisation) to --out. Before a run expected to take over a minute or write "
                                   "over 100 MB, one line on standard error says both; progress goes to standard "
                                   "error (a bar on a terminal, else a line every ~10 s); after the run, one line "
                                   "each for warm-up rows dropped, MoE layers filled by --fill and calendar gaps "
                                   "the engine closed.")
    add_common_run_args(p, default_tokens=4096)
    p.add_argument("--policy", default="maxnn", metavar="NAME", help=f"placement policy: {', '.join(POLICIES)}")
    p.add_argument("--fraction", type=float, default=0.125,
                   help="digital share of routed experts for the budget policies (0..1)")
    p.add_argument("--placement-file", metavar="FILE", help="YAML/JSON list for policy 'explicit', or a scores file of hetmoe sensitivity for "
                        "policy 'sensitivity'")
    p.add_argument("--trace-events", metavar="FILE",
                   help="also write a Chrome trace-event JSON (Perfetto): every booking with its micro-batch, layer "
                        "and bytes, and each micro-batch's stages joined by dependency arrows (its critical path)")
    p.add_argument("--trace-window", metavar="N|START:END",
                   help="--trace-events: keep the first N micro-batches, or the bookings overlapping START to END "
                        "microseconds of simulated time (default: the whole run; a trace above ~100 MiB is warned)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_utilisation_arg(p)
    add_budget_arg(p)
    p.set_defaults(handler=run, interrupt_note="nothing was written to {out} (result files are written when the run "
                                             "finishes); run the command again")


def run(args: argparse.Namespace) -> int:
    from arch import load_chip

    from ..api import simulate
    from ..report import budget as area_budget

    limit = check_budget(args.area_budget_mm2)
    kw = run_kwargs(args)
    warn_reticle(load_chip(kw["hw"], kw["hw_overrides"]))
    result = simulate(policy=args.policy, fraction=args.fraction, placement_file=args.placement_file,
                      trace_events=args.trace_events, trace_window=args.trace_window, progress=not args.quiet,
                      memory=memory_limit(args), **kw)
    for line in corrections(result.data):
        print(f"hetmoe: note: {line}", file=sys.stderr)
    area_budget.annotate([result.data], limit)
    result.write(args.out)
    m = result.metrics
    p = result.data["placement"]
    print(f"{p['policy']}: {m['tokens']} tokens in {m['makespan_s'] * 1e3:.3f} ms simulated "
          f"({result.wall_s:.2f} s wall)")
    for key, unit, scale in (("throughput_tokens_per_s", "tokens/s", 1), ("energy_per_token_uj", "uJ/token", 1),
                             ("tokens_per_s_per_w", "tokens/s/W", 1), ("average_power_w", "W", 1),
                             ("latency_p50_us", "us", 1), ("latency_p99_us", "us", 1),
                             ("analog_exposure_macs", "share", 1), ("chip_footprint_mm2", "mm^2", 1),
                             ("tokens_per_s_per_mm2", "tokens/s/mm^2", 1)):
        print(f"  {key:<28} {fmt_number(m[key] * scale)} {unit}")
    if "area_budget" in result.data:
        b = result.data["area_budget"]
        print(f"  area budget {b['budget_mm2']:,.1f} mm^2: " + ("within it" if b["feasible"] else
                                                               f"INFEASIBLE ({b['reason']})"))
    detail = result.data.get("utilisation_detail", "full")
    print(f"wrote {args.out}/" + ", ".join(result.files)
          + {"full": "", "summary": " (utilisation: statistics per resource kind; --utilisation full for every "
                                    "resource)",
             "none": " (no utilisation.csv: --utilisation none)"}[detail])
    return 0
