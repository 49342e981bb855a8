"""Engine speed and memory (issue: OLMoE-1B-7B, 16 layers, 12,800-token seeded synthetic trace, aimc-3d-moe).

Prints, per placement and mode: wall seconds, simulated token-layers per second, engine events per
second and that rate as a fraction of raw SimPy throughput measured in the same run (a loop of
resource request, timeout, release); then wall time at 1x, 4x and 16x the tokens and peak memory.
Targets (2 cores): prefill (micro-batch 64) <= 5 s per placement; decode (batch 32) <= 10 s;
16x the tokens <= 17x the time; memory grows with the trace arrays, not with the number of events.

Run: ``python benchmarks/bench_engine.py [--tokens 12800] [--scale 1,4,16]``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import simpy

from sim.api import build_run
from workloads.shapes import load_model
from workloads.traces.synthetic import SyntheticSpec, synthesize


def raw_simpy_rate(n: int = 200_000) -> float:
    """Events/s of a request -> timeout -> release loop (3 events per iteration)."""
    env = simpy.Environment()
    res = simpy.Resource(env, 1)

    def loop():
        for _ in range(n):
            with res.request() as req:
                yield req
                yield env.timeout(1)

    env.process(loop())
    t0 = time.perf_counter()
    env.run()
    return 3 * n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=12800, help="tokens of the base trace")
    ap.add_argument("--scale", default="1,4,16", help="trace multiples for the scaling check")
    ap.add_argument("--policies", default="all-analog,all-digital,maxnn")
    args = ap.parse_args()
    model = load_model("olmoe-1b-7b")
    trace = synthesize(SyntheticSpec(tokens=args.tokens, requests=50, seed=0), model)
    raw = raw_simpy_rate()
    print(f"raw SimPy: {raw:,.0f} events/s (request/timeout/release loop)")
    for mode, batch in (("prefill", 64), ("decode", 32)):
        for policy in args.policies.split(","):
            run = build_run("aimc-3d-moe", model, trace, policy, mode=mode, batch=batch)
            env = run.engine.env
            t0 = time.perf_counter()
            run.engine.start()
            events = 0
            while True:
                try:
                    env.step()
                except simpy.core.EmptySchedule:
                    break
                events += 1
            wall = time.perf_counter() - t0
            tl = trace.tokens * model.num_layers
            ops = run.engine.bookings + events
            print(f"{mode:7s} {policy:12s} batch {batch:3d}: {wall:6.2f} s wall, {tl / wall:,.0f} token-layers/s, "
                  f"{events / wall:,.0f} SimPy events/s + {run.engine.bookings / wall:,.0f} calendar bookings/s; "
                  f"operations {ops / wall:,.0f}/s = {ops / wall / raw:.3f} x raw SimPy "
                  f"({events:,} events, {run.engine.bookings:,} bookings, {run.plan.n_mb} micro-batches)")
    base = None
    ctx = mp.get_context("spawn")
    for k in (int(x) for x in args.scale.split(",")):
        with ctx.Pool(1) as pool:   # a fresh process per scale, so its peak RSS is its own
            wall, rss_mib, arrays_mib, tokens = pool.apply(_scaled, (args.tokens, k))
        base = base or wall
        print(f"scale {k:2d}x ({tokens:,} tokens, maxnn prefill): {wall:6.2f} s = {wall / base:5.2f}x the 1x time; "
              f"peak RSS {rss_mib:7.1f} MiB (trace + plan arrays {arrays_mib:6.1f} MiB)")


def _scaled(tokens: int, k: int) -> tuple[float, float, float, int]:
    model = load_model("olmoe-1b-7b")
    tr = synthesize(SyntheticSpec(tokens=tokens, requests=50, seed=0), model).tile(k)
    t0 = time.perf_counter()
    run = build_run("aimc-3d-moe", model, tr, "maxnn", batch=64)
    run.engine.run()
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    arrays = (tr.experts.nbytes + tr.weights.nbytes + run.plan.counts.nbytes) / 2**20
    return wall, rss, arrays, tr.tokens


if __name__ == "__main__":
    main()
