"""Engine speed and memory: what the user waits for, repeated, min / median / max.

Cases (OLMoE-1B-7B, 16 layers, seeded synthetic trace, aimc-3d-moe, the CLI's defaults otherwise):

1. ``hetmoe run`` end to end (a fresh process: imports, trace, placement, plan, mapping, engine,
   pricing, writing) per placement (all-analog, maxnn 12.5 %, all-digital) and mode (prefill at
   micro-batch 64, decode at batch 32). Targets on 2 cores at 12,800 tokens: prefill <= 1.5 s,
   decode <= 2.5 s.
2. The engine alone (``Engine.run`` after ``build_run``) for the same cases, with its rates:
   calendar bookings per second and simulated token-layers per second.
3. Scaling: maxnn prefill at 1x and 16x the tokens in fresh processes (target: 16x the tokens
   <= 16.5x the time), with peak RSS against the trace and plan arrays (target <= 2x).
4. A 60-point ``hetmoe sweep --jobs 2`` at 4,096 tokens (target <= 25 s).
5. The first run after an install: ``hetmoe run`` on the CLI's defaults with an empty kernel cache
   (``NUMBA_CACHE_DIR`` pointed at a new folder), i.e. the one-off compile of the engine's kernels.

Each case runs ``--repeat`` times (default 3). The first compile of the engine's kernels is done
once before timing (``numba`` caches it on disk; a new install pays it once). The timed processes
run with Python's bytecode cache, as an installed package has it: ``PYTHONDONTWRITEBYTECODE`` (set
on some development machines) is removed from their environment, since with it every start
compiles hetmoe's sources again (~0.1 s).

Run: ``python benchmarks/bench_engine.py [--tokens 12800] [--repeat 3] [--skip-sweep] [--skip-first-run]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"prefill": 1.5, "decode": 2.5}
POLICIES = ("all-analog", "maxnn", "all-digital")
MODES = (("prefill", 64), ("decode", 32))


ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def stats(xs: list[float]) -> str:
    return f"min {min(xs):6.2f}  median {statistics.median(xs):6.2f}  max {max(xs):6.2f}"


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=ENV)
    return time.perf_counter() - t0


def end_to_end(tokens: int, repeat: int) -> None:
    print(f"\n1. hetmoe run end to end, {tokens:,} tokens (s)")
    with tempfile.TemporaryDirectory() as out:
        for mode, batch in MODES:
            for policy in POLICIES:
                # all-digital decode holds 8.1 GiB of weights and KV cache: past the preset's 8 GiB HBM
                # (refused by the DRAM capacity check), so every case gets 16 GiB; capacity does not change timing
                cmd = ["hetmoe", "run", "--policy", policy, "--mode", mode, "--batch", str(batch), "--tokens",
                       str(tokens), "--set", "memory.dram.capacity_gib=16", "--out", out, "--quiet"]
                walls = [timed(cmd) for _ in range(repeat)]
                verdict = "meets" if statistics.median(walls) <= TARGETS[mode] else "misses"
                print(f"  {mode:7s} {policy:11s} {stats(walls)}  target {TARGETS[mode]} s: {verdict}")


def engine_alone(tokens: int, repeat: int) -> None:
    from sim.api import build_run
    from workloads.shapes import load_model
    from workloads.traces.synthetic import SyntheticSpec, synthesize

    model = load_model("olmoe-1b-7b")
    trace = synthesize(SyntheticSpec(tokens=tokens, requests=8, seed=0), model)
    print(f"\n2. engine alone (Engine.run), {tokens:,} tokens")
    for mode, batch in MODES:
        for policy in POLICIES:
            walls, bookings = [], 0
            for _ in range(repeat):
                run = build_run("aimc-3d-moe", model, trace, policy, mode=mode, batch=batch,
                                hw_overrides={"memory": {"dram": {"capacity_gib": 16}}})
                t0 = time.perf_counter()
                run.engine.run()
                walls.append(time.perf_counter() - t0)
                bookings = run.engine.bookings
            med = statistics.median(walls)
            print(f"  {mode:7s} {policy:11s} {stats(walls)} s; {bookings / med:12,.0f} bookings/s, "
                  f"{tokens * model.num_layers / med:10,.0f} token-layers/s ({bookings:,} bookings)")


SCALED = """
import json, resource, sys, time
from sim.api import build_run
from workloads.shapes import load_model
from workloads.traces.synthetic import SyntheticSpec, synthesize
tokens = int(sys.argv[1])
t0 = time.perf_counter()
model = load_model("olmoe-1b-7b")
tr = synthesize(SyntheticSpec(tokens=tokens, requests=8, seed=0), model)
run = build_run("aimc-3d-moe", model, tr, "maxnn", batch=64)
run.engine.run()
wall = time.perf_counter() - t0
arrays = tr.experts.nbytes + tr.weights.nbytes + run.plan.counts.nbytes + run.plan.experts.nbytes
print(json.dumps({"wall": wall, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "arrays": arrays}))
"""


def scaling(tokens: int, repeat: int) -> None:
    print("\n3. scaling, maxnn prefill, fresh process each (trace, plan, mapping, engine)")
    base = None
    for k in (1, 16):
        rows = [json.loads(subprocess.run([sys.executable, "-c", SCALED, str(tokens * k)], check=True, env=ENV,
                                          capture_output=True, text=True).stdout) for _ in range(repeat)]
        walls = [r["wall"] for r in rows]
        med = statistics.median(walls)
        base = base or med
        rss, arrays = max(r["rss"] for r in rows) / 2**20, rows[0]["arrays"] / 2**20
        print(f"  {k:2d}x ({tokens * k:,} tokens): {stats(walls)} s = {med / base:5.2f}x the 1x time; "
              f"peak RSS {rss:7.1f} MiB, trace + plan arrays {arrays:6.1f} MiB")


def sweep(repeat: int) -> None:
    spec = {"hw": "aimc-3d-moe", "model": "olmoe-1b-7b", "tokens": 4096,
            "policies": ["maxnn", "random", "frequency", "maxnn-lowest"],
            "fractions": [0.0625, 0.125, 0.25, 0.5, 0.75], "modes": ["prefill"],
            "hw_overrides": [{}, {"analog.adc.bits": 6}, {"analog.tile.tiers": 32}]}
    points = len(spec["policies"]) * len(spec["fractions"]) * len(spec["modes"]) * len(spec["hw_overrides"])
    print(f"\n4. hetmoe sweep --jobs 2, {points} points at 4,096 tokens (s)")
    walls = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as out:
            path = Path(out) / "spec.yaml"
            path.write_text(json.dumps(spec))
            walls.append(timed(["hetmoe", "sweep", str(path), "--jobs", "2", "--out", str(Path(out) / "s"),
                                "--quiet"]))
    print(f"  {stats(walls)}  target 25 s: {'meets' if statistics.median(walls) <= 25 else 'misses'}")


def first_run(repeat: int) -> None:
    print("\n5. first run after an install (empty kernel cache: numba compiles the engine once) (s)")
    walls = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            subprocess.run(["hetmoe", "run", "--out", out, "--quiet"], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env={**ENV, "NUMBA_CACHE_DIR": cache})   # (its compile notice)
            walls.append(time.perf_counter() - t0)
    print(f"  {stats(walls)}  (once per install; later runs load the compiled kernels from the cache)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=12800)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--skip-first-run", action="store_true", help="skip case 5 (about a minute per repeat)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as out:   # compile (or load) the kernels once before timing
        subprocess.run(["hetmoe", "run", "--tokens", "64", "--out", out, "--quiet"], check=True,
                       stdout=subprocess.DEVNULL, env=ENV)
    end_to_end(args.tokens, args.repeat)
    engine_alone(args.tokens, args.repeat)
    scaling(args.tokens, args.repeat)
    if not args.skip_sweep:
        sweep(args.repeat)
    if not args.skip_first_run:
        first_run(args.repeat)


if __name__ == "__main__":
    main()
