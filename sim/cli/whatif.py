"""``hetmoe whatif``: how placements move with one parameter at a time, and break-even points."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from arch import load_chip
from arch.errors import HetmoeError
from arch.safeio import write_json
from workloads.traces.format import save_npz

from .common import (FMT, RESUME_NOTE, add_common_run_args, baseline_point, memory_limit, parse_overrides,
                     run_kwargs)

METRIC = "tokens_per_s_per_w"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "whatif", formatter_class=FMT, help="vary hardware keys or run options; find break-even points",
        description="Run all-analog, all-digital and maxnn at --fraction (and --baseline) with each --vary "
                    "parameter set to each of its values in turn, the others at their defaults; report how "
                    "tokens/s/W and energy per token move and the ratios maxnn/all-analog, maxnn/all-digital and "
                    "maxnn/baseline, with a tornado chart. --break-even bisects one key for the smallest value at "
                    "which maxnn reaches --reach percent of all-analog's tokens/s/W (or the baseline's, with "
                    "--beat-baseline). KEY is a hardware YAML key path (memory.sram.capacity_mib, "
                    "memory.dram.bandwidth_gbps, ...) or batch / context_tokens. Results are cached in --out.")
    add_common_run_args(p, default_tokens=1024)
    p.add_argument("--fraction", type=float, default=0.125, help="maxnn digital share of routed experts (0..1)")
    p.add_argument("--vary", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a parameter and its values (repeatable), e.g. memory.sram.capacity_mib=32,128,512,2048; "
                        "without --vary, the default knobs of sim/whatif.py DEFAULT_VARY (SRAM "
                        "size, DRAM bandwidth, batch, and the digital MAC, ADC conversion and DRAM bit energies at "
                        "x0.25-x4 of the chip's own)")
    p.add_argument("--baseline", metavar="NAME|FILE", help="a digital-only system run all-digital for comparison")
    p.add_argument("--break-even", metavar="KEY=LO:HI",
                   help="bisect KEY over [LO, HI] (geometric when HI/LO >= 8) for the smallest value reaching the target")
    p.add_argument("--reach", type=float, default=50.0, metavar="PERCENT",
                   help="break-even target: maxnn's tokens/s/W as a percentage of all-analog's at the same value")
    p.add_argument("--beat-baseline", action="store_true",
                   help="break-even target: maxnn's tokens/s/W at least the --baseline's instead")
    p.add_argument("--tol", type=float, default=0.02, help="relative width of the final break-even bracket (dimensionless, 0..1)")
    p.add_argument("--jobs", type=int, default=2, help="local worker processes")
    p.add_argument("--out", default="reports/whatif", metavar="DIR", help="output folder")
    p.set_defaults(handler=run_whatif, interrupt_note=RESUME_NOTE)


def _placements(kw: dict[str, Any], fraction: float) -> dict[str, dict[str, Any]]:
    return {"all-analog": {**kw, "policy": "all-analog", "fraction": 0.0},
            "all-digital": {**kw, "policy": "all-digital", "fraction": 1.0},
            f"maxnn {100 * fraction:g}%": {**kw, "policy": "maxnn", "fraction": fraction}}


def run_whatif(args: argparse.Namespace) -> int:
    from ..outlock import lock_folder

    with lock_folder(args.out) as lock:       # one command at a time writes this folder (sim.outlock)
        return _run_whatif(args, lock)


def _run_whatif(args: argparse.Namespace, lock) -> int:
    from ..api import resolve_inputs
    from ..inputs_key import InputsCache
    from ..report.whatif import write_whatif
    from ..result import load_result
    from ..sweep import check_written, point_id, reuse_line, run_points
    from ..whatif import bisect, default_vary, is_integer_key, parse_range, parse_vary, with_value

    if args.beat_baseline and not args.baseline:
        raise HetmoeError("--beat-baseline needs --baseline NAME|FILE")
    if not 0 < args.reach:
        raise HetmoeError(f"--reach {args.reach}: allowed > 0 (percent)")
    if not 0 < args.tol < 1:
        raise HetmoeError(f"--tol {args.tol}: allowed in (0, 1)")
    out = Path(args.out)
    kw = run_kwargs(args)
    chip, model, trace, _ = resolve_inputs(kw["hw"], kw["model"], kw["trace"], seed=args.seed, fill=args.fill,
                                           checkpoint=args.checkpoint, hw_overrides=kw["hw_overrides"],
                                           memory=memory_limit(args), processes=max(1, args.jobs))
    # read by every point; each result keeps the key of the trace content it came from (sim.inputs_key)
    trace_file = out / "trace.npz"
    save_npz(trace, trace_file)
    kw.update(trace=str(trace_file), fill=None)
    try:
        varies = [parse_vary(v) for v in args.vary] if args.vary else default_vary(chip)
        be = parse_range(args.break_even) if args.break_even else None
    except ValueError as exc:
        raise HetmoeError(str(exc)) from None
    for key, values in varies + ([(be[0], [be[1], be[2]])] if be else []):
        for v in values:
            _check_key(kw, key, v)
    base = _placements(kw, args.fraction)
    baseline = baseline_point(kw, args.baseline) if args.baseline else None
    quiet = args.quiet
    seen: dict[str, dict[str, Any]] = {}
    cache = InputsCache()                  # the trace and chips are hashed once for every evaluation

    def evaluate(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
        statuses = run_points(points, out, jobs=args.jobs, quiet=quiet, inputs_cache=cache)
        for s in statuses:
            seen.setdefault(s["id"], s)
        bad = [s for s in statuses if not s["ok"]]
        if bad:
            raise HetmoeError(f"{len(bad)} what-if run(s) failed; first: {bad[0]['error']} "
                              f"(see {out}/runs/{bad[0]['id']}/error.txt)")
        found = [p for p in points if (out / "runs" / point_id(p) / "result.json").is_file()]
        check_written(statuses, [{"folder": point_id(p)} for p in found], out, lock)
        return [load_result(out / "runs" / point_id(p)) for p in points]

    grid: list[tuple[str, Any, str, dict[str, Any]]] = [("default", None, name, p) for name, p in base.items()]
    if baseline:
        grid.append(("default", None, "baseline", baseline))
    for key, values in varies:
        for v in values:
            grid += [(key, v, name, with_value(p, key, v)) for name, p in base.items()]
            if baseline:
                grid.append((key, v, "baseline", with_value(baseline, key, v) if key in ("batch", "context_tokens")
                             else baseline))
    results = evaluate([g[3] for g in grid])
    rows = [{"param": k, "value": v, "placement": name, "hw": r["config"]["hw"], **_row(r)}
            for (k, v, name, _), r in zip(grid, results)]
    maxnn = f"maxnn {100 * args.fraction:g}%"
    breakeven = None
    if be:
        key, lo, hi = be
        target_name = "baseline" if args.beat_baseline else "all-analog"
        reach = 1.0 if args.beat_baseline else args.reach / 100

        def f(v: float) -> float:
            pts = [with_value(base[maxnn], key, v)]
            pts.append(baseline if args.beat_baseline and key not in ("batch", "context_tokens") else
                       with_value(baseline if args.beat_baseline else base["all-analog"], key, v))
            m, t = evaluate(pts)
            return m["metrics"][METRIC] / (reach * t["metrics"][METRIC]) - 1

        found = bisect(f, lo, hi, key=key, integer=is_integer_key(chip, key), rel_tol=args.tol)
        what = (f"{maxnn} reaches {'the baseline' if args.beat_baseline else f'{args.reach:g} % of all-analog'}'s "
                f"tokens/s/W")
        breakeven = {"key": key, "lo": lo, "hi": hi, "target": target_name, "reach": reach,
                     "reached": found.reached, "value": found.value, "below": found.below,
                     "evaluations": found.evaluations, "sentence": found.sentence(what)}
        if found.reached:
            at = evaluate([with_value(base[maxnn], key, found.value)])[0]
            breakeven["at_value"] = {"placement": maxnn, **_row(at)}
            breakeven["default"] = {"placement": maxnn, **_row(results[list(base).index(maxnn)])}
    data = {"fraction": args.fraction, "maxnn": maxnn, "metric": METRIC, "hw": chip.name, "model": model.name,
            "baseline": args.baseline, "varied": {k: v for k, v in varies}, "rows": rows, "break_even": breakeven}
    write_json(out / "whatif.json", data, why={}, indent=2, default=str)
    report = write_whatif(data, out)
    for line in _summary(data):
        print(line)
    said = reuse_line(seen.values(), out)
    if said:
        print(said)
    print(f"wrote {report}, whatif.json, whatif.csv and tornado.png")
    return 0


def _row(r: dict[str, Any]) -> dict[str, Any]:
    m = r["metrics"]
    return {"tokens_per_s_per_w": m["tokens_per_s_per_w"], "energy_per_token_uj": m["energy_per_token_uj"],
            "throughput_tokens_per_s": m["throughput_tokens_per_s"],
            "chip_footprint_mm2": m.get("chip_footprint_mm2", float("nan")),
            "tokens_per_s_per_mm2": m.get("tokens_per_s_per_mm2", float("nan")),
            **({"bottleneck": r["bottleneck"]} if r.get("bottleneck") else {})}


def _check_key(kw: dict[str, Any], key: str, value: Any) -> None:
    """Fail before any run on a key the hardware YAML does not have or a value out of its range."""
    from ..whatif import RUN_KEYS

    if key in RUN_KEYS:
        if not (isinstance(value, (int, float)) and value >= (1 if key == "batch" else 0)):
            raise HetmoeError(f"{key}={value}: allowed {'>= 1' if key == 'batch' else '>= 0'}")
        return
    over = parse_overrides([f"{key}={value}"])
    merged = _merge(kw.get("hw_overrides") or {}, over)
    load_chip(kw["hw"], merged)


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _summary(data: dict[str, Any]) -> list[str]:
    from ..report.whatif import sentences

    return sentences(data)
