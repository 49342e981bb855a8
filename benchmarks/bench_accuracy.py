"""Speed and memory of ``hetmoe accuracy`` on a random checkpoint of OLMoE-1B-7B's shape, scaled to 2 cores.

Scale (stated): OLMoE-1B-7B has hidden 2048, 16 layers, 64 experts of width 1024 (top-8), 16 heads of
128, vocabulary 50,304. The benchmark keeps the expert count, top-k, head dim and routing and divides
hidden size and expert width by 4 (512, 256; 4 heads), layers by 4 (4) and the vocabulary by ~6
(8,192): 4 x (64 x 3 x 512 x 256 + 4 x 512^2) + 2 x 8192 x 512 = 113 M weights, fp16 on disk.
Evaluation: 8 sequences x 512 tokens (4,088 predicted tokens) on ``aimc-3d-moe`` (512 x 512 slots,
PCM noise); one noise seed, so each run is the clean model plus one placement.

Each case runs the whole command (``python -m sim.cli accuracy ...``: reading, programming, forward,
metrics, writing) in a fresh process, at least 3 times, and prints min/median/max wall seconds,
predicted tokens per second (per variant: clean + placement = 2 forward passes) and the peak
resident memory against the largest decoder layer's weights in fp32.

Run: ``python benchmarks/bench_accuracy.py [--repeats 3] [--devices numpy,cpu]``. The noisy pass
against IBM aihwkit on the same weights and tokens, one thread each: ``benchmarks/bench_noisy_pass.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.moe_checkpoints import olmoe_config, write_olmoe  # noqa: E402

SCALED = olmoe_config(hidden=512, layers=4, heads=4, experts=64, top_k=8, width=256, vocab=8192,
                      norm_topk_prob=False)
# peak resident memory of the command's own address space: VmHWM (ru_maxrss would carry the parent's
# high-water mark across fork + exec on Linux)
RUNNER = ("import sys; from sim.cli import main; rc = main(sys.argv[1:]); "
          "print('PEAK_RSS_KIB', next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM'))); "
          "sys.exit(rc)")


def layer_bytes(cfg: dict) -> int:
    h, w, e = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_experts"]
    return 4 * (4 * h * h + e * h + e * 3 * h * w)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--devices", default="numpy,cpu", help="numpy and/or torch devices (cpu, cuda)")
    ap.add_argument("--sequences", type=int, default=8)
    ap.add_argument("--length", type=int, default=512)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hetmoe-bench-acc-"))
    t0 = time.perf_counter()
    ckpt = write_olmoe(work / "ckpt", SCALED, seed=0, shards=2, dtype="float16")
    ids = np.random.default_rng(0).integers(0, SCALED["vocab_size"], (args.sequences, args.length + 1))
    np.save(work / "ids.npy", ids)
    predicted = args.sequences * args.length
    print(f"checkpoint: {sum(f.stat().st_size for f in ckpt.glob('*.safetensors')) / 2**20:.0f} MiB fp16 "
          f"(written in {time.perf_counter() - t0:.1f} s); largest layer {layer_bytes(SCALED) / 2**20:.0f} MiB fp32; "
          f"{predicted} predicted tokens")
    print(f"{'device':<8} {'placement':<12} {'wall s min/median/max':<24} {'tokens/s (2 variants)':<22} peak RSS")
    for device in args.devices.split(","):
        if device != "numpy":
            try:
                import torch  # noqa: F401
            except ImportError:
                print(f"{device:<8} skipped: torch is not installed")
                continue
        for policy in ("all-digital", "all-analog", "maxnn"):
            walls, peaks = [], []
            for _ in range(args.repeats):
                cmd = [sys.executable, "-c", RUNNER, "accuracy", "--checkpoint", str(ckpt), "--eval",
                       str(work / "ids.npy"), "--hw", "aimc-3d-moe", "--policy", policy, "--fraction", "0.125",
                       "--noise-seeds", "1", "--device", device, "--quiet", "--out", str(work / "out")]
                t = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True,
                                      cwd=Path(__file__).resolve().parents[1])
                walls.append(time.perf_counter() - t)
                if proc.returncode:
                    raise SystemExit(proc.stderr)
                peaks.append(int(proc.stdout.rsplit("PEAK_RSS_KIB", 1)[1].split()[0]) / 1024)
            med = statistics.median(walls)
            result = json.loads((work / "out" / "accuracy.json").read_text())
            label = result["placements"][0]["label"]
            print(f"{device:<8} {label:<12} {min(walls):6.2f} / {med:6.2f} / {max(walls):6.2f}    "
                  f"{2 * predicted / med:10,.0f}             {max(peaks):,.0f} MiB "
                  f"({max(peaks) * 2**20 / layer_bytes(SCALED):.1f}x the largest layer)")


if __name__ == "__main__":
    main()
