"""``simulate(...) -> Result``: the same run as ``hetmoe run``, usable from a notebook."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from arch import load_chip
from arch.derived import derived_figures
from arch.errors import HetmoeError
from arch.safeio import is_zip
from arch.spec import ChipSpec
from workloads.checkpoints.stats import ExpertStats, compute_stats, synthetic_stats
from workloads.shapes import ModelShape, load_model
from workloads.traces.format import RoutingTrace
from workloads.traces.readers import read_trace, require_complete
from workloads.traces.synthetic import SyntheticSpec, synthesize

from .engine.simulator import Engine, Timeline
from .engine.workplan import WorkPlan, build_plan
from .mapping import Mapping, build_mapping, plan_kv_tokens
from .metrics import area_metrics, exposure, percentiles_us, price, steady_metrics, steady_state
from .placement import POLICIES, Placement, PlacementContext, place
from .resources import MemoryLimit, ReadGuard, check_model, check_reader, check_run
from .result import Result


def resolve_inputs(hw: str | ChipSpec, model: str | ModelShape, trace: str | RoutingTrace | SyntheticSpec | None,
                   *, seed: int = 0, fill: str | None = None, checkpoint: str | None = None,
                   stats: ExpertStats | None = None, hw_overrides: dict | None = None,
                   memory: MemoryLimit | None = None, processes: int = 1
                   ) -> tuple[ChipSpec, ModelShape, RoutingTrace, ExpertStats]:
    """Load the chip, model, trace and scores of a run. With ``memory``, refuse (before allocating) a
    trace that would not fit, counting ``processes`` runs side by side (see :mod:`sim.resources`)."""
    chip = hw if isinstance(hw, ChipSpec) else load_chip(hw, hw_overrides)
    shape = model if isinstance(model, ModelShape) else load_model(model)
    if trace is None or trace == "synthetic":
        trace = SyntheticSpec(seed=seed)

    def check(tokens: int) -> None:
        if memory is not None:
            check_run(memory, tokens, shape.num_layers, shape.top_k, shape.name, processes, chip)

    if isinstance(trace, SyntheticSpec):
        check(trace.tokens)
        if memory is not None:
            check_model(memory, shape, processes, synthetic=True)   # experts x layers, before any is built
        trace = synthesize(trace, shape)
    elif not isinstance(trace, RoutingTrace):
        if memory is not None and Path(trace).is_file() and Path(trace).suffix != ".npz" and not is_zip(trace):
            check_reader(memory, str(trace))
        trace = read_trace(trace, shape, fill=fill, seed=seed,
                           guard=None if memory is None else ReadGuard(memory))   # counts as it reads
        if memory is not None:
            check_model(memory, shape, processes)    # its per-matrix tables (experts x layers), before any is built
    check(trace.tokens)
    require_complete(trace, shape)
    if stats is None:
        stats = compute_stats(checkpoint, shape) if checkpoint else synthetic_stats(shape, seed)
    return chip, shape, trace, stats


def simulate(hw: str | ChipSpec, model: str | ModelShape, trace: str | RoutingTrace | SyntheticSpec | None = None,
             policy: str = "maxnn", *, fraction: float = 0.125, score: str = "gate_rows", scope: str = "layer",
             mode: str = "prefill", batch: int = 64, seed: int = 0, context_tokens: int = 512,
             max_inflight: int = 4, fill: str | None = None, checkpoint: str | None = None,
             stats: ExpertStats | None = None, placement_file: str | None = None,
             hw_overrides: dict | None = None, trace_events: str | Path | None = None,
             placement_trace: str | None = None, progress: bool = False,
             memory: MemoryLimit | None = None, trace_window: str | None = None,
             utilisation: str | None = None) -> Result:
    """Run one simulation and return its :class:`Result` (see ``sim.metrics.METRICS``).

    ``placement_trace``: a trace file the placement is decided on (``frequency`` counts) when it
    differs from the priced ``trace`` (e.g. pricing the routes a placement took under noise).
    ``progress``: a progress bar on standard error (a terminal only) for runs of many micro-batches.
    ``memory``: refuse a run whose estimated peak memory exceeds this limit (``sim.resources``); None
    applies no limit (the command line always passes one). ``trace_window``: the part of the run the
    Chrome trace holds (``N`` micro-batches or ``START:END`` µs, :class:`sim.report.timeline.Window`).
    ``utilisation``: per-resource utilisation kept, ``full`` (a row per resource), ``summary`` (statistics per
    kind) or ``none``; None: ``summary`` above :data:`sim.estimate.SUMMARY_ABOVE` resources, else ``full``.
    With ``progress``, the expected wall time and output size are said first when large (:mod:`sim.estimate`)."""
    from . import estimate

    wall0 = time.perf_counter()
    if trace_events:
        from .report.timeline import Window
        window = Window.parse(trace_window)          # a bad window is refused before the run
    elif trace_window:
        raise HetmoeError("--trace-window needs --trace-events FILE")
    run = build_run(hw, model, trace, policy, fraction=fraction, score=score, scope=scope, mode=mode, batch=batch,
                    seed=seed, context_tokens=context_tokens, max_inflight=max_inflight, fill=fill,
                    checkpoint=checkpoint, stats=stats, placement_file=placement_file, hw_overrides=hw_overrides,
                    timeline=bool(trace_events), placement_trace=placement_trace,
                    memory=memory)
    chip, shape, tr, st, placement, plan, mapping, engine = (
        run.chip, run.model, run.trace, run.stats, run.placement, run.plan, run.mapping, run.engine)
    detail = estimate.resolve_detail(chip, utilisation)
    timeline = engine.timeline
    nodes = mapping.network.node_count
    seconds = estimate.run_seconds(chip, shape.num_layers, plan.n_mb, int(mapping.report["crossbar_slots_used"]))
    if progress:
        import sys
        line = estimate.plan_line([{"chip": chip, "detail": detail, "seconds": seconds}])
        if line:
            print(line, file=sys.stderr)
    work = plan.n_mb * shape.num_layers
    bar = _progress(work * (1 + nodes // 1000), work, "engine", "layers") if progress else None
    engine.progress = bar
    makespan_ps = engine.run()
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - wall0
    data = assemble(chip, shape, tr, st, placement, plan, mapping, engine, makespan_ps, dict(
        hw=chip.name, hw_source=chip.source, model=shape.name, policy=policy, fraction=fraction, score=score,
        scope=scope, mode=mode, batch=batch, seed=seed, context_tokens=context_tokens, max_inflight=max_inflight,
        fill=fill, checkpoint=checkpoint, hw_overrides=hw_overrides or {}, placement_trace=placement_trace),
        detail=detail)
    if trace_events:
        import sys

        from .report.timeline import estimate_bytes, size_warning, write_chrome_trace
        kept = sum(1 for r in timeline.records if window.keeps(r[4], r[1], r[2]))
        stages = sum(1 for s in timeline.stages if window.keeps(s[0], s[3], s[4]))
        line = size_warning(estimate_bytes(kept, stages), window)
        if line:
            print(line, file=sys.stderr)
        data["trace_events"] = {"file": str(trace_events), **write_chrome_trace(timeline, engine, trace_events,
                                                                                 window)}
    return Result(data, wall)


def _progress(work: int, total: int, desc: str, unit: str):
    """Progress on standard error (:mod:`sim.progress`: a bar on a terminal, a plain line every ~10 s
    otherwise; the lines start only after the first interval, so a short run prints none); on a terminal, no
    bar when ``work`` (stage calls) is small."""
    import sys
    if work < 20_000 and sys.stderr.isatty():
        return None
    from .progress import progress
    return progress(total, desc, unit)


def point_accuracy(hw: str | ChipSpec, checkpoint: str, eval_file: str, *, policy: str, fraction: float,
                   noise_seeds: int = 3, seed: int = 0, score: str = "gate_rows", scope: str = "layer",
                   trace=None, fill: str | None = None, hw_overrides: dict | None = None,
                   placement_file: str | None = None, **_: Any) -> dict[str, Any]:
    """The accuracy of one placement (``hetmoe accuracy`` for a single policy), for sweep points.

    Returns ``{"placement": row, "meta": rest}`` where ``row`` is that placement's entry of
    ``accuracy.json`` and ``meta`` the rest (clean loss, noise model, evaluation data)."""
    from workloads.evaldata import load_eval

    from .functional.architecture import read_architecture
    from .functional.evaluate import PlacementRequest, evaluate

    if not checkpoint:
        raise HetmoeError("an accuracy point (eval) needs a checkpoint")
    arch = read_architecture(checkpoint)
    chip, _, tr, st = resolve_inputs(hw, checkpoint, trace, seed=seed, fill=fill, checkpoint=checkpoint,
                                     hw_overrides=hw_overrides)
    data = load_eval(eval_file, arch.shape.vocab_size)
    result = evaluate(arch, checkpoint, data, chip, [PlacementRequest(policy, fraction)], st, tr,
                      noise_seeds=noise_seeds, seed=seed, score=score, scope=scope, placement_file=placement_file)
    row = result.pop("placements")[0]
    return {"placement": row, "meta": result}


@dataclass(frozen=True, eq=False)
class Run:
    """Everything a run is built from, before the engine runs (for tests and notebooks)."""

    chip: ChipSpec
    model: ModelShape
    trace: RoutingTrace
    stats: ExpertStats
    placement: Placement
    plan: WorkPlan
    mapping: Mapping
    engine: Engine


def build_run(hw, model, trace=None, policy: str = "maxnn", *, fraction: float = 0.125, score: str = "gate_rows",
              scope: str = "layer", mode: str = "prefill", batch: int = 64, seed: int = 0, context_tokens: int = 512,
              max_inflight: int = 4, fill: str | None = None, checkpoint: str | None = None,
              stats: ExpertStats | None = None, placement_file: str | None = None, hw_overrides: dict | None = None,
              timeline: bool = False, placement_trace: str | None = None,
              memory: MemoryLimit | None = None) -> Run:
    if policy not in POLICIES:
        place(policy, None)  # raises with the list of valid policies
    if max_inflight < 1:
        raise HetmoeError(f"--max-inflight {max_inflight}: allowed an integer >= 1 (micro-batches)")
    if seed < 0:
        raise HetmoeError(f"--seed {seed}: allowed an integer >= 0")
    chip, shape, tr, st = resolve_inputs(hw, model, trace, seed=seed, fill=fill, checkpoint=checkpoint,
                                         stats=stats, hw_overrides=hw_overrides, memory=memory)
    ptr = read_trace(placement_trace, shape) if placement_trace else tr
    placement = place(policy, PlacementContext(shape, ptr, st, fraction, score, scope, seed, placement_file))
    plan = build_plan(tr, shape, mode, batch, context_tokens)
    kv_tokens, kv_rule = plan_kv_tokens(plan)
    mapping = build_mapping(chip, shape, placement, plan, kv_tokens=kv_tokens, kv_rule=kv_rule)
    engine = Engine(chip, shape, mapping, plan, Timeline() if timeline else None, max_inflight)
    return Run(chip, shape, tr, st, placement, plan, mapping, engine)


def assemble(chip, shape, tr, st, placement, plan, mapping, engine, makespan_ps, config,
             detail: str = "full") -> dict[str, Any]:
    """The result dict of a finished run. ``detail`` (``full``, ``summary``, ``none``): what is kept per
    resource: every row (``utilisation_rows``, and ``tile_utilisation_by_node`` for the heat map), statistics per
    kind (``utilisation_stats``), or neither; ``utilisation`` (kind means and maxima) and ``bottleneck`` always."""
    makespan_ns = makespan_ps / 1000.0
    energy = price(chip, engine.c, makespan_ns, mapping.report["tiles_powered"])
    domains = {d: sum(v.values()) for d, v in energy.items()}
    total_pj = sum(domains.values())
    tokens = tr.tokens
    seconds = makespan_ns * 1e-9
    mb_lat = np.asarray(engine.mb_end_ps, np.int64) - (np.asarray(engine.mb_start_ps, np.int64)
                                                       if plan.mode == "decode" else 0)
    tok_lat = np.repeat(mb_lat, plan.mb_tokens)
    p50, p95, p99 = percentiles_us(tok_lat)
    ends = np.asarray(engine.mb_end_ps, np.int64)
    if plan.mode == "decode":
        firsts = plan.mb_of_token[plan.first_token_of_seq]
        ttft = ends[firsts] - np.asarray(engine.mb_start_ps, np.int64)[firsts]
        tpot = float(mb_lat.mean() / 1e6)
    else:
        ttft = ends[plan.lm_head_tokens > 0]
        tpot = float("nan")
    t50 = percentiles_us(ttft)[0]
    energy_j = total_pj * 1e-12
    metrics = {
        "makespan_s": seconds, "tokens": tokens,
        "throughput_tokens_per_s": tokens / seconds if seconds else float("inf"),
        "energy_j": energy_j, "energy_per_token_uj": energy_j / tokens * 1e6,
        "average_power_w": energy_j / seconds if seconds else 0.0,
        "tokens_per_s_per_w": tokens / energy_j if energy_j else float("inf"),
        "latency_p50_us": p50, "latency_p95_us": p95, "latency_p99_us": p99, "ttft_p50_us": t50,
        "tpot_mean_us": tpot,
        **exposure(tr, shape, placement.digital_experts, st.score(config["score"])),
    }
    steady = steady_state(ends, plan.mb_tokens, config["max_inflight"] if plan.mode == "prefill" else 1)
    metrics.update(steady_metrics(energy, tokens, seconds, steady))
    hw_figures = derived_figures(chip)
    metrics.update(area_metrics(hw_figures, metrics))
    util = utilisation(chip, engine, makespan_ps)
    c = engine.c
    counters = {k: float(v) for k, v in vars(c).items()}
    config = {**config, "trace": tr.meta.get("source"), "trace_format": tr.meta.get("format"),
              "scores": st.source, "scores_synthetic": st.synthetic}
    run_id = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:10]
    net = mapping.network
    node_util = {}
    if detail == "full":
        per_tile = np.asarray(engine.tile_busy_ps(), float) / max(makespan_ps, 1)
        tile_nodes = net.tile_node_id(np.arange(per_tile.size))
        sums = np.bincount(tile_nodes, weights=per_tile, minlength=net.node_count)
        counts = np.bincount(tile_nodes, minlength=net.node_count)
        for i in np.flatnonzero(counts):
            node_util[str(net.node_names[i])] = [sums[i] / counts[i]]
    kept = {"utilisation_detail": detail}
    if detail == "full":
        kept["utilisation_rows"] = util["rows"]
        kept["tile_utilisation_by_node"] = {k: float(np.mean(v)) for k, v in node_util.items()}
    elif detail == "summary":
        kept["utilisation_stats"] = utilisation_stats(util["rows"])
    from .provenance import code_fingerprint
    return {
        "run_id": run_id, "code_fingerprint": code_fingerprint(), "config": config, "metrics": metrics,
        "hw_figures": hw_figures, "model_summary": shape.summary(),
        "energy_pj": energy, "energy_by_domain_pj": domains, "counters": counters,
        "utilisation": util["summary"], **kept, "bottleneck": util["bottleneck"],
        "noc": {"topology": chip.noc.topology, "width": chip.noc.width, "height": chip.noc.height,
                "simd_node": str(net.simd_node), "dram_node": str(net.dram_node)},
        "mapping": mapping.report, "placement": placement.summary(shape),
        "trace": {"tokens": tokens, "requests": int(tr.request.max()) + 1, "format": tr.meta.get("format"),
                  "source": tr.meta.get("source"), "warmup_rows_dropped": tr.meta.get("warmup_rows_dropped", 0),
                  "warmup_runs_dropped": tr.meta.get("warmup_runs_dropped", []),
                  "rows_read": tr.meta.get("rows_read"), "fill_rule": tr.meta.get("fill_rule"),
                  "filled_layers": tr.meta.get("filled_layers", []), "synthetic": tr.meta.get("synthetic"),
                  "warnings": tr.meta.get("warnings", [])},
        "steady_state": {**steady, "basis": "whole-run figures include pipeline fill and drain; steady_* exclude them"},
        "engine": {"micro_batches": plan.n_mb, "layer_visits": int(sum(engine.layer_visits)),
                   "layers": shape.num_layers, "simpy_now_ps": makespan_ps, "bookings": engine.bookings,
                   "calendar_gaps_closed": engine.gaps_closed, "calendar_capacity": engine.calendar_capacity,
                   "stage_span_us": {k: v / 1e6 for k, v in engine.split_ps.items()},
                   "stage_span_basis": ("decode steps run one after another, so the spans partition the makespan"
                                        if plan.mode == "decode" else
                                        "per micro-batch stage spans summed; micro-batches overlap in prefill"),
                   "context_tokens_used": plan.context_source,
                   "tiles_powered": mapping.report["tiles_powered"], "tile_count": chip.analog.tile_count,
                   "power_gating": ("unused tiles power-gated (analog.power_gate_unused_tiles)"
                                    if chip.analog.power_gate_unused_tiles else "every tile leaks for the whole run")},
    }


def utilisation(chip: ChipSpec, engine: Engine, makespan_ps: int) -> dict[str, Any]:
    """Work delivered by every resource as a fraction of what it could deliver over the makespan.

    Tiles, local digital units and the SIMD cores: busy time / makespan (they are booked only while they
    compute; a digital operation waiting for its weights does not hold the SIMD). DRAM channels: bytes
    delivered x 8 / (bandwidth_gbps x makespan); NoC links: bits carried / (link bandwidth x makespan). A
    stream or message holds its channel and links at the slowest bandwidth on its way, so where that is
    less than a resource's own, its ``booked`` fraction (calendar busy time / makespan, in the row) exceeds
    the delivered one. ``bottleneck``: the kind with the highest delivered utilisation among tile (mean
    over the tiles holding a matrix), local_digital (max over units), simd, dram (mean over channels) and
    noc_link (max over links), with the DRAM bandwidths that bound a weight stream."""
    span = max(makespan_ps, 1)
    span_ns = span / 1000
    rows = []
    net = engine.net
    dram = chip.memory.dram

    def add(kind: str, names: Any, busy: np.ndarray, delivered: np.ndarray | None = None) -> None:
        for i, (name, b) in enumerate(zip(names, busy.tolist())):
            row = {"resource": name, "kind": kind, "busy_ns": b / 1000, "utilisation": b / span}
            if delivered is not None:
                row["utilisation"] = float(delivered[i])
                row["booked"] = b / span
            rows.append(row)

    add("tile", (f"tile {i}" for i in range(chip.analog.tile_count)), engine.busy_ps("tile"))
    if chip.analog.local_digital:
        add("local_digital", (f"local digital {n}" for n in net.node_names), engine.busy_ps("local_digital"))
    simd = engine.busy_ps("simd")
    add("simd", (f"simd core {c}" for c in range(chip.digital.simd.cores)), np.repeat(simd, chip.digital.simd.cores))
    ch_bytes = engine.dram_channel_bytes()
    add("dram", (f"dram ch{c}" for c in range(dram.channels)), engine.busy_ps("dram"),
        ch_bytes * 8 / (dram.bandwidth_gbps * span_ns))
    link_bw = np.asarray(net.link_bandwidth, float)
    add("noc_link", (f"link {net.link_name(i)}" for i in range(net.link_count)), engine.busy_ps("link"),
        engine.link_bits() / (link_bw * span_ns) if net.link_count else None)
    summary = {}
    by_kind: dict[str, np.ndarray] = {}
    for kind in ("tile", "local_digital", "simd", "dram", "noc_link"):
        vals = np.array([r["utilisation"] for r in rows if r["kind"] == kind])
        by_kind[kind] = vals
        if vals.size:
            summary[f"{kind}_mean"] = float(vals.mean())
            summary[f"{kind}_max"] = float(vals.max())
    return {"summary": summary, "rows": rows,
            "bottleneck": bottleneck(chip, engine, by_kind, float(ch_bytes.sum()), span)}


STAT_PERCENTILES = (50, 90, 99)


def utilisation_stats(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per resource kind: ``count``, ``idle`` (resources with zero utilisation), ``mean``, ``min``, ``p50``,
    ``p90``, ``p99`` (linear-interpolated percentiles) and ``max`` of the delivered utilisation (0..1), the
    ``summary`` that ``--utilisation summary`` keeps instead of one row per resource."""
    by_kind: dict[str, list[float]] = {}
    for r in rows:
        by_kind.setdefault(r["kind"], []).append(r["utilisation"])
    out = {}
    for kind, values in by_kind.items():
        v = np.asarray(values, float)
        out[kind] = {"count": int(v.size), "idle": int((v == 0).sum()), "mean": float(v.mean()),
                     "min": float(v.min()),
                     **{f"p{q}": float(np.percentile(v, q)) for q in STAT_PERCENTILES}, "max": float(v.max())}
    return out


def bottleneck(chip: ChipSpec, engine: Engine, by_kind: dict[str, np.ndarray], dram_bytes: float,
               span_ps: int) -> dict[str, Any]:
    """The binding resource kind (highest delivered utilisation) and the bandwidths a DRAM stream meets."""
    tiles = by_kind["tile"][np.asarray(engine.map.tiles_used, bool)] if by_kind["tile"].size else by_kind["tile"]
    score = {"tile": tiles.mean() if tiles.size else None,
             "local_digital": by_kind["local_digital"].max() if by_kind["local_digital"].size else None,
             "simd": by_kind["simd"].max() if by_kind["simd"].size else None,
             "dram": by_kind["dram"].mean() if by_kind["dram"].size else None,
             "noc_link": by_kind["noc_link"].max() if by_kind["noc_link"].size else None}
    score = {k: float(v) for k, v in score.items() if v is not None}
    binding = max(score, key=lambda k: score[k])          # first of equals in the order above
    dram = chip.memory.dram
    route = (engine.net.path_ids(engine.net.dram_id, engine.net.simd_id) if dram.attachment == "noc"
             else np.zeros(0, np.int64))
    path = float(np.asarray(engine.net.link_bandwidth)[route].min()) if route.size else float("inf")
    peak = dram.channels * dram.bandwidth_gbps
    return {"binding_resource": binding, "binding_utilisation": score[binding],
            "binding_basis": "delivered work / capacity over the makespan: tile mean over tiles holding a "
                             "matrix, dram mean over channels, local_digital, simd and noc_link max",
            "dram_peak_gbps": peak, "stream_path_gbps": path,
            "effective_stream_gbps": float(engine.q.dram_stream_gbps),
            "effective_stream_basis": "one stream: min(one channel's bandwidth, stream_path_gbps); streams share "
                                      "the DRAM route's links, so with a route at most one streams at a time",
            "dram_delivered_gbps": dram_bytes * 8 / (span_ps / 1000)}
