"""Serving speed and memory: the whole ``hetmoe serve`` command, min / median / max over repeats.

Cases (issue #26's targets on 2 cores):

1. one fixed-rate run: 500 Poisson requests of OLMoE-1B-7B (prompt 256, output 64: 160 k tokens) on
   ``aimc-3d-moe``, maxnn 12.5 %, pipeline depth 1 (target <= 30 s), with the peak resident memory of
   the process (target <= 2 x the trace and plan arrays);
2. the SLO search of that placement over at most 8 rates with ``--jobs 2`` (target <= 2 min).

Each case runs ``--repeat`` times (default 3) as a fresh process, the way a user waits for it.
Run: ``python benchmarks/bench_serving.py [--repeat 3] [--requests 500]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of the children, for one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak, before) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--requests", type=int, default=500)
    args = ap.parse_args()
    exe = [sys.executable, "-m", "sim.cli"]
    common = ["serve", "--requests", str(args.requests), "--prompt-tokens", "256", "--output-tokens", "64",
              "--policy", "maxnn", "--baseline", "none", "--quiet"]
    tokens = args.requests * (256 + 64 - 1)
    trace_mib = min(tokens, 131_072) * 16 * 8 * (2 + 4) / 2**20     # OLMoE: 16 layers, top-8, int16 ids + f32 weights
    cases = [
        ("fixed rate 10 req/s, depth 1 (target <= 30 s)", common + ["--rate", "10", "--serve-inflight", "1",
                                                                     "--jobs", "1"]),
        ("SLO search, <= 8 rates, --jobs 2 (target <= 120 s)", common + ["--slo-ttft-ms", "500", "--slo-tpot-ms", "50",
                                                                          "--serve-inflight", "1", "--jobs", "2"]),
    ]
    print(f"{args.requests} requests, {tokens:,} tokens; routing-trace arrays ~{trace_mib:,.0f} MiB")
    print(f"{'case':<55} {'min':>8} {'median':>8} {'max':>8}   peak RSS")
    for name, cmd in cases:
        walls, peaks = [], []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as out:
                w, p = run(exe + cmd + ["--out", out])
            walls.append(w)
            peaks.append(p)
        print(f"{name:<55} {min(walls):8.1f} {statistics.median(walls):8.1f} {max(walls):8.1f}   "
              f"{max(peaks):,.0f} MiB (largest child process)")


if __name__ == "__main__":
    main()
