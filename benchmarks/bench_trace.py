"""Trace reading speed: JSONL rows/s and .npz load rows/s.

Reads the real logs in ../shared/data when present, otherwise a synthetic 12,806-row log written
in the vllm-moe-logger schema. Run: ``python benchmarks/bench_trace.py``.
"""

from __future__ import annotations

import json
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


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
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
        t_jsonl = best_of(lambda: read_trace(path, model))
        npz = tmp / f"{path.stem}.npz"
        save_npz(trace, npz)
        t_npz = best_of(lambda: load_npz(npz))
        print(f"{path.name}: {rows} rows; JSONL {t_jsonl:.3f} s = {rows / t_jsonl:,.0f} rows/s; "
              f".npz {t_npz * 1e3:.2f} ms = {rows / t_npz:,.0f} rows/s")


if __name__ == "__main__":
    main()
