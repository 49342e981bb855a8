"""``hetmoe serve``: requests that arrive, iterations that mix them, latency from arrival."""

from __future__ import annotations

import argparse

from .common import FMT, add_serving_args, run_serving

DEFAULT_POLICIES = ("all-analog", "maxnn", "all-digital")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", formatter_class=FMT, help="serve a request stream: TTFT, TPOT, goodput, highest rate under an SLO",
        description="Run requests that arrive (Poisson, gamma, fixed interval, a closed batch, or an arrivals "
                    "file) through an iteration-level scheduler as vLLM's (running decodes first, then chunked "
                    "prefill up to --max-num-batched-tokens, at most --max-num-seqs running, a KV cache in DRAM "
                    "with preemption) on each placement and chip. With --slo-ttft-ms / --slo-tpot-ms, find each "
                    "design's highest request rate whose p99 TTFT and p99 TPOT meet the SLO and report tokens/s, "
                    "tokens/s/W and tokens/s/mm^2 there; with --rate, run the given rates. Writes OUT/report.md, "
                    "OUT/serving.json, OUT/serving.csv and plots (p99 latency against rate, tokens/s/W at the SLO, "
                    "batch and queue over time). Default designs: all-analog, maxnn 12.5% and all-digital on "
                    "aimc-3d-moe, and all-digital on the a100-gpu baseline.")
    p.add_argument("--hw", action="append", metavar="NAME|FILE",
                   help="hardware preset or YAML file; repeat for several chips (default: aimc-3d-moe)")
    p.add_argument("--policy", action="append", metavar="NAME",
                   help=f"placement policy; repeatable (default: {', '.join(DEFAULT_POLICIES)})")
    p.add_argument("--fraction", type=float, default=0.125,
                   help="digital share of routed experts for the budget policies (0..1)")
    p.add_argument("--baseline", default="a100-gpu", metavar="NAME|FILE|none",
                   help="also serve with all-digital on this digital-only system; none: no baseline")
    add_serving_args(p)
    p.add_argument("--out", default="reports/serve", metavar="DIR", help="output folder")
    p.set_defaults(handler=run_serve, interrupt_note="nothing was written to {out}; run the command again")


def run_serve(args: argparse.Namespace) -> int:
    return run_serving(args, args.hw or ["aimc-3d-moe"], args.policy or list(DEFAULT_POLICIES), [args.fraction])
