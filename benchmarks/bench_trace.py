"""Trace reading speed: JSONL rows/s and .npz load rows/s, min / median / max over repeats.

Reads the real logs in ../shared/data when present, otherwise a synthetic 12,806-row log written
in the vllm-moe-logger schema. Each read runs ``--repeat`` times (default 3) in this process (the
reader is what is timed; ``hetmoe trace inspect`` adds ~0.2 s of start-up).
Run: ``python benchmarks/bench_trace.py [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from workloads.traces.readers import read_trace
from workloads.shapes import load_model
from workloads.traces.format import load_npz, save_npz

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routing-logs"


def _synthetic_log(path: Path, rows: int = 12806) -> None:
    rng = np.random.default_rng(0)
    with open(path, "w") as fh:
        fh.write(json.dumps({"type": "meta", "layers_logged": [0], "top_k": 4}) + "\n")
        for i in range(rows - 1):
            ids = rng.choice(60, 4, replace=False).tolist()
            fh.write(json.dumps({"type": "route", "req_id": "r1", "token_idx": i % 25, "layer": 0,
                                 "topk_ids": ids, "topk_weights": rng.dirichlet(np.ones(4)).tolist()}) + "\n")


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    files = []
    if DATA.is_dir():
        files = [(p, "mixtral-8x7b" if "mixtral" in p.name else "qwen1.5-moe-a2.7b") for p in sorted(DATA.glob("*.jsonl"))]
    else:
        _synthetic_log(tmp / "synthetic.jsonl")
        files = [(tmp / "synthetic.jsonl", "qwen1.5-moe-a2.7b")]
    for path, model_name in files:
        model = load_model(model_name)
        trace = read_trace(path, model)
        rows = trace.meta["rows_read"]
        t_jsonl = timed(lambda: read_trace(path, model), args.repeat)
        npz = tmp / f"{path.stem}.npz"
        save_npz(trace, npz)
        t_npz = timed(lambda: load_npz(npz), args.repeat)
        med = statistics.median(t_jsonl)
        print(f"{path.name}: {rows:,} rows; JSONL min {min(t_jsonl):.3f} median {med:.3f} max {max(t_jsonl):.3f} s "
              f"({rows / med:,.0f} rows/s); .npz min {min(t_npz) * 1e3:.2f} median "
              f"{statistics.median(t_npz) * 1e3:.2f} max {max(t_npz) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
