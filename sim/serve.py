"""One serving run: a request stream through the iteration scheduler on the engine, priced over the
measured window (``hetmoe serve``; DESIGN §9).

Everything a static run decides before time runs is decided the same way: the chip, the placement,
the mapping onto tiles and the SRAM residency (by expected use, counted on the routing trace cut into
micro-batches of the token budget). The KV cache lives in DRAM: its capacity is
``memory.dram.capacity_gib`` less the digital weights that are not SRAM-resident, in tokens of
``kv_elements_per_token x layers x activation bytes``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, replace
from typing import Any

import numpy as np

from arch.derived import derived_figures
from arch.errors import HetmoeError
from arch.spec import ChipSpec
from workloads.requests import RequestStream, trace_rows
from workloads.shapes import ModelShape
from workloads.traces.synthetic import SyntheticSpec

from .api import resolve_inputs
from .engine.iteration import IterationRunner
from .engine.simulator import COUNTER_INDEX, Counters, Engine
from .engine.workplan import build_plan
from .mapping import Mapping, build_mapping
from .metrics import price
from .placement import POLICIES, PlacementContext, place
from .resources import MemoryLimit
from .serving.metrics import measured_window, request_metrics, stability
from .serving.scheduler import Scheduler, SchedulerConfig

TRACE_CAP_TOKENS = 131_072      # synthetic routes drawn for a stream: its tokens, at most this many (then reused)
KINDS = ("tile", "local_digital", "link", "simd", "dram")


def kv_capacity(chip: ChipSpec, model: ModelShape, mapping: Mapping) -> tuple[int | None, dict[str, Any]]:
    """KV-cache capacity in tokens (None: unbounded) and how it was found."""
    kv_bytes = model.kv_elements_per_token() * model.num_layers * chip.precision.activation_bits / 8
    wbits = chip.precision.digital_weight_bits
    in_dram = sum(m.params * wbits / 8 for i, m in enumerate(model.matrices)
                  if mapping.digital[i] and not mapping.resident[i])
    info = {"kv_bytes_per_token": kv_bytes, "dram_weight_bytes": in_dram}
    cap = chip.memory.dram.capacity_gib
    if cap is None:
        return None, {**info, "rule": "unbounded: memory.dram.capacity_gib not given"}
    free = cap * 2**30 - in_dram
    if free < kv_bytes * 16:
        raise HetmoeError(f"{chip.name}: the digital weights held in DRAM ({in_dram / 2**30:.2f} GiB) leave no room "
                          f"for a KV cache in memory.dram.capacity_gib = {cap:g} GiB; raise it or move weights")
    tokens = int(free // kv_bytes)
    return tokens, {**info, "dram_capacity_bytes": cap * 2**30,
                    "rule": f"(memory.dram.capacity_gib {cap:g} GiB - {in_dram / 2**30:.2f} GiB of DRAM-held digital "
                            f"weights) / {kv_bytes:,.0f} B per token"}


def serve(hw, model, trace=None, policy: str = "maxnn", *, stream: RequestStream, fraction: float = 0.125,
          score: str = "gate_rows", scope: str = "layer", seed: int = 0,
          scheduler: SchedulerConfig = SchedulerConfig(), kv_capacity_tokens: int | None = None,
          warmup_fraction: float = 0.1, slo_ttft_ms: float | None = None, slo_tpot_ms: float | None = None,
          checkpoint: str | None = None, stats=None, placement_file: str | None = None,
          hw_overrides: dict | None = None, fill: str | None = None, memory: MemoryLimit | None = None,
          label: str | None = None, keep_log: bool = True) -> dict[str, Any]:
    """Run ``stream`` on one placement of one chip; returns the result dict (``metrics`` has the
    serving figures of :data:`sim.serving.metrics.SERVING_METRICS`)."""
    wall0 = time.perf_counter()
    if policy not in POLICIES:
        place(policy, None)
    if not 0.0 <= warmup_fraction < 0.5:
        raise HetmoeError(f"--warmup-fraction {warmup_fraction}: allowed [0, 0.5)")
    if trace is None or trace == "synthetic":
        trace = SyntheticSpec(tokens=min(stream.tokens, TRACE_CAP_TOKENS), requests=1, seed=seed)
    chip, shape, tr, st = resolve_inputs(hw, model, trace, seed=seed, fill=fill, checkpoint=checkpoint, stats=stats,
                                         hw_overrides=hw_overrides, memory=memory)
    placement = place(policy, PlacementContext(shape, tr, st, fraction, score, scope, seed, placement_file))
    plan = build_plan(tr, shape, "prefill", scheduler.max_num_batched_tokens)      # expected uses, for residency
    mapping = build_mapping(chip, shape, placement, plan)
    engine = Engine(chip, shape, mapping, plan, max_inflight=scheduler.max_inflight)
    if kv_capacity_tokens is None:
        kv_tokens, kv_info = kv_capacity(chip, shape, mapping)
    else:
        kv_tokens, kv_info = kv_capacity_tokens, {"rule": f"--kv-capacity-tokens {kv_capacity_tokens}"}
    cfg = replace(scheduler, kv_capacity_tokens=kv_tokens)
    offset, reuse = trace_rows(stream, tr.tokens)
    runner = IterationRunner(engine, tr, offset)
    sched = Scheduler(engine.env, stream, cfg, runner)
    window = measured_window(sched.arrival_ps, warmup_fraction)
    snaps: dict[str, dict[str, Any]] = {}

    def snapshot(name: str) -> None:
        snaps[name] = {"C": engine.st.C.copy(), "busy": engine.st.cal[:, 3].copy(), "tokens": sched.processed_tokens,
                       "emitted": sched.emitted_tokens, "finished": sched.finished,
                       "in_system": int(np.searchsorted(sched.arrival_ps, engine.env.now, side="right"))
                       - sched.finished, "t_ps": engine.env.now}

    def watcher():
        for name, t in (("a", window["t_a_ps"]), ("b", window["t_b_ps"])):
            if t > engine.env.now:
                yield engine.env.timeout(t - engine.env.now)
            snapshot(name)

    sched.start()
    if not window["closed"]:
        engine.env.process(watcher())
    from .engine.kernels import compile_notice
    with compile_notice(engine.k):
        engine.env.run()
    makespan_ps = int(engine.env.now)
    if window["closed"]:
        snaps["a"] = {"C": np.zeros_like(engine.st.C), "busy": np.zeros(engine.st.cal.shape[0], np.int64),
                      "tokens": 0, "emitted": 0, "finished": 0, "in_system": stream.requests, "t_ps": 0}
        snapshot("b")
    a, b = snaps["a"], snaps["b"]
    win_ps = max(b["t_ps"] - a["t_ps"], 1)
    win_s = win_ps * 1e-12
    counters = Counters(**{name: float(b["C"][i] - a["C"][i]) for name, i in COUNTER_INDEX.items()})
    energy = price(chip, counters, win_ps / 1000.0, mapping.report["tiles_powered"])
    total_pj = sum(v for d in energy.values() for v in d.values())
    tokens = b["tokens"] - a["tokens"]
    recs = sched.records()
    m = request_metrics(recs, window, slo_ttft_ms, slo_tpot_ms)
    arrivals_in = window["hi"] - window["lo"]
    stab = (stability(a["in_system"], b["in_system"], arrivals_in) if not window["closed"] else
            {"stable": True, "basis": "closed batch"})
    busy = (b["busy"] - a["busy"]).astype(np.float64) / win_ps
    util = _utilisation(chip, engine, busy, b["C"] - a["C"], win_ps / 1000.0)
    log = sched.log_array()
    in_win = (log[:, 1] >= a["t_ps"]) & (log[:, 1] <= b["t_ps"]) if log.size else np.zeros(0, bool)
    offered = stream.meta.get("rate_per_s")
    if offered is None and not window["closed"]:
        offered = (arrivals_in - 1) / win_s if arrivals_in > 1 else float("nan")
    energy_j = total_pj * 1e-12
    metrics = {
        "offered_rate_per_s": offered if offered is not None else float("nan"),
        "window_s": win_s, "makespan_s": makespan_ps * 1e-12, "requests": stream.requests,
        "window_tokens": tokens, "window_output_tokens": b["emitted"] - a["emitted"],
        "throughput_tokens_per_s": tokens / win_s,
        "output_tokens_per_s": (b["emitted"] - a["emitted"]) / win_s,
        "requests_per_s": (b["finished"] - a["finished"]) / win_s,
        "energy_j": energy_j, "energy_per_token_uj": energy_j / tokens * 1e6 if tokens else float("nan"),
        "average_power_w": energy_j / win_s, "tokens_per_s_per_w": tokens / energy_j if energy_j else float("nan"),
        **m, "stable": stab["stable"],
        "goodput_requests_per_s": m["slo_met_requests"] / win_s if not window["closed"] else float("nan"),
        "mean_batch_tokens": float(log[in_win, 2].mean()) if in_win.any() else float("nan"),
        "mean_batch_seqs": float(log[in_win, 3].mean()) if in_win.any() else float("nan"),
        "peak_batch_tokens": sched.peak_tokens, "peak_batch_seqs": sched.peak_seqs,
        "peak_kv_tokens": sched.peak_blocks * cfg.block_size, "peak_waiting": sched.peak_waiting,
        "binding_resource": util["binding"], "binding_utilisation": util["binding_utilisation"],
    }
    hw_figures = derived_figures(chip)
    fp = hw_figures.get("footprint_mm2", float("nan")) if hw_figures.get("area_modelled") else float("nan")
    metrics["chip_footprint_mm2"] = fp
    metrics["tokens_per_s_per_mm2"] = metrics["throughput_tokens_per_s"] / fp if fp == fp and fp > 0 else float("nan")
    config = {"hw": chip.name, "hw_source": chip.source, "model": shape.name, "policy": policy, "fraction": fraction,
              "score": score, "scope": scope, "seed": seed, "label": label or _label(policy, fraction),
              "scheduler": asdict(cfg), "warmup_fraction": warmup_fraction, "slo_ttft_ms": slo_ttft_ms,
              "slo_tpot_ms": slo_tpot_ms, "hw_overrides": hw_overrides or {}, "stream": stream.meta,
              "trace": tr.meta.get("source"), "checkpoint": checkpoint}
    run_id = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:10]
    from .provenance import code_fingerprint
    out = {"kind": "serving", "run_id": run_id, "code_fingerprint": code_fingerprint(), "config": config,
           "metrics": metrics, "window": {k: v for k, v in window.items()}, "stability": stab,
           "energy_pj": energy, "utilisation": util["summary"], "kv_cache": {**kv_info, "capacity_tokens": kv_tokens},
           "routes": reuse, "hw_figures": hw_figures,
           "engine": {"iterations": sched.iterations, "layer_visits": runner.layer_visits, "bookings": engine.bookings,
                      "calendar_gaps_closed": engine.gaps_closed, "simpy_now_ps": makespan_ps,
                      "tokens_run": runner.tokens, "residency_rule": "SRAM residency by expected use on the trace cut "
                      f"into micro-batches of {cfg.max_num_batched_tokens} tokens"},
           "conservation": {"requests_finished": sched.finished, "tokens_emitted": sched.emitted_tokens,
                            "tokens_expected": int(stream.output_tokens.sum()), "tokens_processed": sched.processed_tokens},
           "wall_s": time.perf_counter() - wall0}
    if keep_log:
        out["iteration_log"] = {"columns": list(Scheduler.LOG_COLUMNS), "rows": log.tolist()}
        out["requests_table"] = {k: v.tolist() for k, v in recs.items()}
    return out


def _label(policy: str, fraction: float) -> str:
    return policy if policy in ("all-analog", "all-digital") else f"{policy} {fraction:.1%}".replace(".0%", "%")


def _utilisation(chip: ChipSpec, engine: Engine, busy: np.ndarray, dC: np.ndarray, win_ns: float) -> dict[str, Any]:
    """Per resource kind the mean and max delivered fraction over the window, and the busiest kind: busy
    time for tiles, local digital units and the SIMD cores; bytes or bits carried / (bandwidth x window)
    for DRAM channels and NoC links (as :func:`sim.api.utilisation`)."""
    q = engine.q
    spans = {"tile": (0, q.T), "local_digital": (q.r_ld0, q.r_link0), "link": (q.r_link0, q.r_simd),
             "simd": (q.r_simd, q.r_simd + 1), "dram": (q.r_dram0, q.r_dram0 + q.n_dram)}
    delivered = {
        "dram": dC[q.o_dram_bytes:q.o_dram_bytes + q.n_dram] * 8 / (chip.memory.dram.bandwidth_gbps * win_ns),
        "link": dC[q.o_link_bits:q.o_link_bits + (q.r_simd - q.r_link0)]
        / (np.asarray(engine.net.link_bandwidth, float) * win_ns),
    }
    summary, best, best_u = {}, "", -1.0
    for kind, (lo, hi) in spans.items():
        vals = delivered[kind] if kind in delivered else busy[lo:hi]
        if kind == "tile":
            vals = vals[engine.map.tiles_used]
        if vals.size == 0:
            continue
        summary[f"{kind}_mean"] = float(vals.mean())
        summary[f"{kind}_max"] = float(vals.max())
        if vals.max() > best_u:
            best, best_u = kind, float(vals.max())
    return {"summary": summary, "binding": best, "binding_utilisation": best_u}


# ------------------------------------------------------------------------------------------- many runs
def point(kwargs: dict[str, Any], arrival: Any, keep_log: bool = False) -> dict[str, Any]:
    """One serving run in a worker: :func:`serve` with the stream re-timed by ``arrival`` (an
    :class:`workloads.requests.ArrivalSpec`; the request lengths stay as drawn)."""
    from workloads.requests import with_rate
    kw = dict(kwargs)
    if arrival is not None:           # None: the stream's own arrivals (an arrivals file)
        kw["stream"] = with_rate(kw["stream"], arrival, kw.get("seed", 0))
    return serve(**kw, keep_log=keep_log)


def _gather(executor: Any, jobs: list[tuple[Any, tuple]], bar: Any = None) -> list[dict[str, Any]]:
    futures = [executor.submit(point, *args) for _, args in jobs]
    out = []
    for f in futures:
        out.append(f.result())
        if bar is not None:
            bar.update(1)
    return out


def search_designs(designs: list[dict[str, Any]], arrival: Any, executor: Any, *, max_rates: int = 8, k: int = 2,
                   bar: Any = None) -> list[dict[str, Any]]:
    """Each design's highest rate under its SLO (``designs``: keyword arguments of :func:`serve`, the SLO
    and stream included); all designs' rates of a round run at once on ``executor``. Returns, per design,
    the closed-batch capacity run, every rate tried (slim) and the full result at the best rate."""
    from workloads.requests import ArrivalSpec

    from .serving.metrics import binding, meets_slo
    from .serving.search import RateSearch

    closed = _gather(executor, [(i, (d, ArrivalSpec("closed"))) for i, d in enumerate(designs)], bar)
    searches = [RateSearch(max(c["metrics"]["requests_per_s"], 1e-9), k=k, max_rates=max_rates) for c in closed]
    tried: list[dict[float, dict[str, Any]]] = [{} for _ in designs]
    while True:
        jobs = [(i, r) for i, s in enumerate(searches) for r in s.next_rates()]
        if not jobs:
            break
        results = _gather(executor, [(i, (designs[i], ArrivalSpec(arrival.process, r, arrival.cv), True))
                                     for i, r in jobs], bar)
        rounds: list[dict[float, bool]] = [{} for _ in designs]
        for (i, r), res in zip(jobs, results):
            d = designs[i]
            res["metrics"]["meets_slo"] = meets_slo(res["metrics"], d.get("slo_ttft_ms"), d.get("slo_tpot_ms"))
            res["metrics"]["fails_on"] = binding(res["metrics"], d.get("slo_ttft_ms"), d.get("slo_tpot_ms"))
            tried[i][r] = res
            rounds[i][r] = res["metrics"]["meets_slo"]
        for s, rd in zip(searches, rounds):
            if rd:
                s.record(rd)
    out = []
    for i, d in enumerate(designs):
        best = searches[i].best
        above = [tried[i][r]["metrics"]["fails_on"] for r in sorted(tried[i]) if best is None or r > best]
        points = [{k2: v for k2, v in tried[i][r].items() if k2 not in ("iteration_log", "requests_table")}
                  for r in sorted(tried[i])]
        out.append({"label": closed[i]["config"]["label"], "hw": closed[i]["config"]["hw"],
                    "policy": d.get("policy"), "fraction": d.get("fraction"),
                    "max_inflight": closed[i]["config"]["scheduler"]["max_inflight"],
                    "capacity": {k2: v for k2, v in closed[i].items() if k2 not in ("iteration_log", "requests_table")},
                    "search": searches[i].summary(), "points": points,
                    "best": tried[i][best] if best is not None else None,
                    "limited_by": above[0] if above else ""})
    return out


def merge_depths(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per design (chip, policy, fraction): the pipeline depth with the highest rate under the
    SLO (ties: the higher tokens/s/W); the others are kept under ``alternatives``."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for f in found:
        groups.setdefault((f["hw"], f["label"]), []).append(f)

    def key(f: dict[str, Any]) -> tuple:
        b = f["best"]
        return (-1.0, 0.0) if b is None else (b["metrics"]["offered_rate_per_s"], b["metrics"]["tokens_per_s_per_w"])

    out = []
    for items in groups.values():
        items = sorted(items, key=key, reverse=True)
        top = dict(items[0])
        top["alternatives"] = [{"max_inflight": f["max_inflight"], "points": f["points"], "search": f["search"],
                                "best_rate_per_s": f["search"]["best_rate_per_s"]} for f in items[1:]]
        out.append(top)
    return out


def fixed_rates(designs: list[dict[str, Any]], arrivals: list[Any], executor: Any, bar: Any = None
                ) -> list[dict[str, Any]]:
    """Every design at every arrival process (no search); same shape as :func:`search_designs`."""
    from .serving.metrics import binding, meets_slo

    jobs = [(i, (d, a, True)) for i, d in enumerate(designs) for a in arrivals]
    results = _gather(executor, jobs, bar)
    out = []
    for i, d in enumerate(designs):
        mine = [r for (j, _), r in zip(jobs, results) if j == i]
        for r in mine:
            r["metrics"]["meets_slo"] = meets_slo(r["metrics"], d.get("slo_ttft_ms"), d.get("slo_tpot_ms"))
            r["metrics"]["fails_on"] = binding(r["metrics"], d.get("slo_ttft_ms"), d.get("slo_tpot_ms"))
        out.append({"label": mine[0]["config"]["label"], "hw": mine[0]["config"]["hw"], "policy": d.get("policy"),
                    "fraction": d.get("fraction"), "max_inflight": mine[0]["config"]["scheduler"]["max_inflight"],
                    "capacity": None, "search": None,
                    "points": [{k: v for k, v in r.items() if k not in ("iteration_log", "requests_table")}
                               for r in mine],
                    "best": mine[-1], "limited_by": ""})
    return out


def write_study(out_dir: Any, found: list[dict[str, Any]], stream: RequestStream, *, searching: bool,
                slo: tuple, notes: list[str], command: str) -> Any:
    """``serving.json`` (the study: workload, SLO, every design with its points and operating point) and
    ``serving.csv`` (one row per run); the report and plots are drawn from these files alone."""
    from pathlib import Path

    from arch.safeio import dumps_json, write_text

    from .result import write_csv

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    first = found[0]["points"][0] if found and found[0]["points"] else {}
    study = {"kind": "serving-study", "mode": "slo-search" if searching else "fixed-load", "command": command,
             "slo": {"ttft_p99_ms": slo[0], "tpot_p99_ms": slo[1]},
             "stream": {**stream.meta, "requests": stream.requests,
                        "prompt_tokens_mean": float(stream.prompt_tokens.mean()),
                        "output_tokens_mean": float(stream.output_tokens.mean())},
             "scheduler": first.get("config", {}).get("scheduler"), "window": first.get("window"),
             "routes": first.get("routes"), "notes": notes, "designs": found}
    slim(study)
    rows = []
    for d in found:
        for p in d["points"]:
            m = p["metrics"]
            rows.append({"label": d["label"], "hw": d["hw"], "max_inflight": p["config"]["scheduler"]["max_inflight"],
                         **{k: v for k, v in m.items() if not isinstance(v, (list, dict))}})
    write_csv(out / "serving.csv", rows)
    write_text(out / "serving.json", dumps_json(_finite(study), default=_jsonable) + "\n")
    return out


def slim(study: dict[str, Any]) -> None:
    """Keep one iteration log (the timeline plot's: the first maxnn design's, else the first) and no
    per-request tables, so serving.json stays small."""
    keep = next((d for d in study["designs"] if d["policy"] == "maxnn" and d.get("best")), None) or next(
        (d for d in study["designs"] if d.get("best")), None)
    for d in study["designs"]:
        if d.get("best"):
            d["best"] = {k: v for k, v in d["best"].items()
                         if k != "requests_table" and (k != "iteration_log" or d is keep)}


def _finite(x: Any) -> Any:
    """NaN and infinities as null (JSON has neither)."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, (float, np.floating)) and not np.isfinite(x):
        return None
    return x


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)
