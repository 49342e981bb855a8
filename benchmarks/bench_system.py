"""System-of-chips speed and memory (issue 31): ``hetmoe system run`` end to end, repeated, min / median / max.

Case: DeepSeek-V3 prefill of 4,096 tokens (seeded synthetic trace, micro-batches of 64), maxnn 12.5 %, on the
fitted ``aimc-3d-moe`` system with 8 ``a100-gpu`` chips for the digital side (``hetmoe system fit --model
deepseek-v3 --chip aimc-3d-moe --digital a100-gpu:8 --policy maxnn --fraction 0.125``: 67 analog chips, 75 in
all, on aimc-rack's switch). Each repeat is a fresh process (imports, trace, placement, layout, all-to-all,
pricing, result.json, report.md and both figures); its wall time and peak RSS (``os.wait4``) are recorded.
Targets on 2 cores: <= 60 s, <= 2 GiB. Also: a one-chip OLMoE ``hetmoe system run`` against ``hetmoe run``
(the same single-chip engine; target: no slower).

Run: ``python benchmarks/bench_system.py [--tokens 4096] [--repeat 3] [--skip-one-chip]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
HETMOE = [sys.executable, "-m", "sim.cli"]
TARGET_S, TARGET_GIB = 60.0, 2.0


def run(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GiB) of one fresh process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr.read().decode()}")
    rss_kib = usage.ru_maxrss if sys.platform != "darwin" else usage.ru_maxrss / 1024
    return wall, rss_kib / 2 ** 20


def table(name: str, walls: list[float], rss: list[float]) -> str:
    return (f"{name:<44} wall s: min {min(walls):6.2f}  median {statistics.median(walls):6.2f}  max {max(walls):6.2f}"
            f"   peak RSS GiB: min {min(rss):5.2f}  median {statistics.median(rss):5.2f}  max {max(rss):5.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-one-chip", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fitted = tmp / "deepseek-v3-rack.yaml"
        subprocess.run(HETMOE + ["system", "fit", "--model", "deepseek-v3", "--chip", "aimc-3d-moe", "--digital",
                                 "a100-gpu:8", "--policy", "maxnn", "--fraction", "0.125", "--out", str(fitted)],
                       env=ENV, check=True)
        cmd = HETMOE + ["system", "run", "--system", str(fitted), "--model", "deepseek-v3", "--policy", "maxnn",
                        "--fraction", "0.125", "--tokens", str(args.tokens), "--quiet", "--out", str(tmp / "run")]
        walls, rss = zip(*(run(cmd) for _ in range(args.repeat)))
        rows = [table(f"deepseek-v3 {args.tokens} tok, 75-chip rack", list(walls), list(rss))]
        ok = max(walls) <= TARGET_S and max(rss) <= TARGET_GIB
        if not args.skip_one_chip:
            common = ["--model", "olmoe-1b-7b", "--policy", "maxnn", "--tokens", "12800", "--quiet"]
            one = [run(HETMOE + ["system", "run", "--system", "aimc-3d-moe", *common, "--out", str(tmp / "one")])
                   for _ in range(args.repeat)]
            ref = [run(HETMOE + ["run", "--hw", "aimc-3d-moe", *common, "--out", str(tmp / "ref")])
                   for _ in range(args.repeat)]
            rows.append(table("olmoe 12800 tok, one-chip system run", [w for w, _ in one], [r for _, r in one]))
            rows.append(table("olmoe 12800 tok, hetmoe run (reference)", [w for w, _ in ref], [r for _, r in ref]))
    print("\n".join(rows))
    print(f"target: deepseek-v3 case <= {TARGET_S:g} s and <= {TARGET_GIB:g} GiB: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
