"""Memory guard check: the estimate ``sim.resources`` refuses runs by, against the peak RSS measured.

For each model and size, ``hetmoe run`` runs in a fresh process (``--repeat`` times); the peak resident
memory of the child (``ru_maxrss``) is printed as min / median / max beside the estimate
(``RUN_BASE_BYTES + RUN_BYTES_PER_ROUTE x tokens x layers x top_k``). A guard is safe when the estimate
is at least the measured peak; it is useful when it is not much larger.

Run: ``python benchmarks/bench_memory.py [--repeat 3] [--tokens 16384 65536]``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile

CASES = (("olmoe-1b-7b", "maxnn"), ("olmoe-1b-7b", "all-digital"), ("mixtral-8x7b", "all-digital"),
         ("qwen3-30b-a3b", "all-digital"), ("deepseek-moe-16b", "all-digital"))

CHILD = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def peak_mib(cmd: list[str]) -> float:
    """Peak RSS (MiB) of ``cmd`` alone: measured by a fresh parent whose only child it is."""
    out = subprocess.run([sys.executable, "-c", CHILD, *cmd], check=True, capture_output=True, text=True).stdout
    return int(out.strip()) / 1024


def main() -> None:
    from sim.resources import run_bytes
    from workloads.shapes import load_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tokens", type=int, nargs="+", default=[16384, 65536])
    args = ap.parse_args()
    print(f"{'model':<18} {'policy':<12} {'tokens':>8}  {'peak RSS MiB (min / median / max)':>34}  "
          f"{'estimate MiB':>12}  estimate / peak")
    with tempfile.TemporaryDirectory() as out:
        for name, policy in CASES:
            model = load_model(name)
            for tokens in args.tokens:
                cmd = ["hetmoe", "run", "--model", name, "--policy", policy, "--tokens", str(tokens), "--out", out,
                       "--quiet"]
                peaks = [peak_mib(cmd) for _ in range(args.repeat)]
                est = run_bytes(tokens, model.num_layers, model.top_k) / 2**20
                print(f"{name:<18} {policy:<12} {tokens:>8,}  {min(peaks):>10.0f} / {statistics.median(peaks):>6.0f}"
                      f" / {max(peaks):>6.0f}      {est:>12,.0f}  {est / max(peaks):>6.2f}x"
                      + ("" if est >= max(peaks) else "  UNSAFE: the estimate is below the peak"))


if __name__ == "__main__":
    main()
