"""``hetmoe compare``, ``hetmoe plot`` and ``hetmoe sweep``."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from arch import load_chip
from arch.errors import HetmoeError
from workloads.checkpoints.stats import VARIANTS
from workloads.traces.format import save_npz

from .common import (FMT, RESUME_NOTE, add_budget_arg, add_common_run_args, add_memory_arg, add_serving_args,
                     baseline_point, check_budget, memory_limit, run_kwargs, run_serving)
from .hw import warn_reticle

SWEEP_FRACTIONS = (0.0, 0.125, 0.25, 0.5, 0.75, 1.0)
BASELINE_FRACTIONS = (0.125, 0.25, 0.5)
SCORE_FRACTIONS = (0.125, 0.25)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", formatter_class=FMT, help="compare placements and write a report with plots",
        description="Run all-analog, all-digital, maxnn at 12.5% and 25%, a maxnn digital-fraction sweep "
                    f"({', '.join(f'{f:g}' for f in SWEEP_FRACTIONS)}), the random and frequency baselines and the "
                    f"maxnn-lowest control at {', '.join(f'{f:g}' for f in BASELINE_FRACTIONS)}; write "
                    "OUT/report.md, plots (PNG), results.json and summary.csv. With no options: OLMoE-1B-7B, a "
                    "seeded synthetic trace and the aimc-3d-moe preset.")
    add_common_run_args(p, default_tokens=4096, multi_hw=True)
    p.add_argument("--baseline", default="a100-gpu", metavar="NAME|FILE|none",
                   help="also run all-digital on this digital-only system (a100-gpu, edge-npu or a YAML) and show "
                        "it as its own row and point; a system with analog tiles is refused; none: no baseline")
    p.add_argument("--out", default="reports/compare", metavar="DIR", help="output folder")
    p.add_argument("--jobs", type=int, default=2, help="local worker processes")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="run on a Dask distributed cluster")
    p.add_argument("--all-scores", action="store_true",
                   help="also run maxnn at 12.5%% and 25%% under every other MaxNNScore variant "
                        "(labelled maxnn[VARIANT])")
    p.add_argument("--trace-events", metavar="FILE",
                   help="also write a Chrome trace-event JSON of the maxnn 12.5%% run (keep --tokens small)")
    add_budget_arg(p)
    g = p.add_argument_group("serving under load (see hetmoe serve --help for every option)")
    g.add_argument("--slo-ttft-ms", type=float, metavar="MS",
                   help="serve instead of a closed batch: find the highest request rate of all-analog, maxnn at "
                        "12.5%%, all-digital and the baseline whose p99 time to first token is within this (ms), with "
                        "hetmoe serve's defaults (200 Poisson requests, 256 prompt and 64 output tokens, 512-token "
                        "iterations), and report tokens/s/W there")
    g.add_argument("--slo-tpot-ms", type=float, metavar="MS", help="the same for p99 time per output token (ms)")
    g.add_argument("--max-rates", type=int, default=8, metavar="N", help="rates tried per design in the SLO search (count)")
    a = p.add_argument_group("accuracy (needs --checkpoint; see hetmoe accuracy --help)")
    a.add_argument("--eval", metavar="FILE",
                   help="evaluation token ids (.npy/.npz/JSONL, or text with --tokenizer): measure every "
                        "placement's accuracy with the noise model of --hw and put it beside its cost")
    a.add_argument("--tokenizer", metavar="bytes|FILE", help="tokenise a text --eval file")
    a.add_argument("--seq-len", type=int, metavar="N", help="tokens per evaluation sequence (default: the file's)")
    a.add_argument("--max-sequences", type=int, metavar="N", help="evaluate N sequences spread evenly over the file (rows floor(i x S / N))")
    a.add_argument("--noise-seeds", type=int, default=3, metavar="N", help="noise seeds per placement (count)")
    a.add_argument("--max-loss", type=float, default=1.0, metavar="PERCENT",
                   help="accuracy budget for the report's answer: relative perplexity increase (%%)")
    a.add_argument("--device", choices=("numpy", "cpu", "cuda"), default="numpy",
                   help="array backend of the forward pass")
    a.add_argument("--noisy-routing", action="store_true",
                   help="price each placement on the routes it took under noise (noise seed 0, the evaluation "
                        "tokens) instead of --trace; placements are still decided on --trace")
    p.set_defaults(handler=run_compare, interrupt_note=RESUME_NOTE)

    pl = sub.add_parser("plot", formatter_class=FMT, help="redraw plots and report from a results folder",
                        description="Redraw every plot and report.md from OUT/runs/*/result.json alone.")
    pl.add_argument("results", metavar="RESULTS_DIR", help="a folder written by compare or sweep")
    add_budget_arg(pl, "(default: the budget the folder was written with)")
    pl.set_defaults(handler=run_plot, interrupt_note="the runs in {results} are untouched; plots and report.md are "
                                                    "each replaced whole or not at all; run the command again")

    sw = sub.add_parser(
        "sweep", formatter_class=FMT, help="run a grid from a YAML spec",
        description="Run policies x fractions x hw_overrides x traces x modes from SPEC.yaml. Keys: hw, model, "
                    "trace or traces (files or 'synthetic'), tokens, policies, fractions, hw_overrides (list of "
                    "{KEY.PATH: value}), modes (prefill, decode), seed, batch, score, scope, checkpoint (a folder: "
                    "real MaxNNScores), context_tokens, fill, eval (evaluation token ids: measure each point's "
                    "accuracy with its chip's noise model; needs checkpoint), noise_seeds (noise seeds per "
                    "accuracy point, count, default 3), area_budget_mm2 (mm^2; marks designs over it in the "
                    "tables and plots). Every output names each point by its placement and every swept value "
                    "(summary.csv: a column per hw_overrides key and for the mode; plots: one panel per mode or "
                    "trace, a colour per swept hardware design, lines only across digital fractions). Finished "
                    "points are skipped when re-run into the same folder; a failed point is reported and the "
                    "others go on. Writes OUT/report.md, summary.csv, results.json and the plots.")
    sw.add_argument("spec", metavar="SPEC.yaml")
    sw.add_argument("--out", default="reports/sweep", metavar="DIR", help="output folder")
    sw.add_argument("--jobs", type=int, default=2, help="local worker processes")
    sw.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="run on a Dask distributed cluster")
    sw.add_argument("--quiet", action="store_true", help="no progress bar")
    add_memory_arg(sw)
    sw.set_defaults(handler=run_sweep, interrupt_note=RESUME_NOTE)


def compare_points(base: dict, all_scores: bool = False) -> list[dict]:
    points = [{**base, "policy": "all-analog", "fraction": 0.0}, {**base, "policy": "all-digital", "fraction": 1.0}]
    points += [{**base, "policy": "maxnn", "fraction": f} for f in SWEEP_FRACTIONS]
    for policy in ("frequency", "random", "maxnn-lowest"):
        points += [{**base, "policy": policy, "fraction": f} for f in BASELINE_FRACTIONS]
    if all_scores:
        points += [{**base, "policy": "maxnn", "fraction": f, "score": v} for v in VARIANTS
                   if v != base.get("score") for f in SCORE_FRACTIONS]
    return points


def run_compare(args: argparse.Namespace) -> int:
    if args.slo_ttft_ms is not None or args.slo_tpot_ms is not None:
        return _serve_compare(args)
    from ..api import resolve_inputs
    from ..report.figures import draw_all
    from ..report.markdown import write_report
    from ..sweep import collect, run_points, status_lines, write_tables

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chips = args.hw or ["aimc-3d-moe"]
    args.hw = chips[0]
    kw = run_kwargs(args)
    # resolve once (validates everything before any worker starts) and share the trace as a file
    if args.eval and not args.checkpoint:
        raise HetmoeError("--eval needs --checkpoint DIR (the model whose accuracy is measured)")
    if args.eval and len(chips) > 1:
        raise HetmoeError("--eval measures accuracy with one chip's noise model: give one --hw with --eval")
    chip, model, trace, stats = resolve_inputs(kw["hw"], kw["model"], kw["trace"], seed=args.seed, fill=args.fill,
                                               checkpoint=args.checkpoint, hw_overrides=kw["hw_overrides"],
                                               memory=memory_limit(args), processes=max(1, args.jobs))
    warn_reticle(chip)
    for other in chips[1:]:
        warn_reticle(load_chip(other, kw["hw_overrides"]))     # validate every chip before any run starts
    trace_file = out / "trace.npz"
    save_npz(trace, trace_file)
    kw["trace"] = str(trace_file)
    kw["fill"] = None
    points = []
    for name in chips:
        extra = {"show_hw": True} if len(chips) > 1 else {}
        points += [{**p, **extra} for p in compare_points({**kw, "hw": name}, args.all_scores)]
    if args.baseline and args.baseline.lower() != "none":
        points.append(baseline_point(kw, args.baseline))
        warn_reticle(load_chip(args.baseline))
    points, excluded = _fitting(points, kw, model, trace, stats)
    for line in excluded:
        print(line, file=sys.stderr)
    if args.noisy_routing and not args.eval:
        raise HetmoeError("--noisy-routing needs --checkpoint and --eval (the routes come from the noisy forward pass)")
    if args.eval:
        routes = _measure_accuracy(args, chip, trace, stats, points, out)
        if args.noisy_routing:
            for p in points:
                p["placement_trace"] = str(trace_file)
                p["trace"] = str(out / routes[_label(p)])
    statuses = run_points(points, out, jobs=args.jobs, scheduler=args.scheduler, quiet=args.quiet)
    runs = [r for r in collect(out) if r["folder"] in {s["id"] for s in statuses if s["ok"]}]
    if not runs:
        raise HetmoeError("every run failed:\n" + "\n".join(status_lines(statuses)))
    _apply_budget(out, runs, args.area_budget_mm2, keep_saved=False)
    write_tables(out, runs)
    draw_all(runs, out)
    command = "hetmoe " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "hetmoe compare"
    report = write_report(runs, out, command=command, failures=excluded + status_lines(statuses))
    if args.trace_events:
        from ..api import simulate
        simulate(policy="maxnn", fraction=0.125, trace_events=args.trace_events, **kw)
    for line in status_lines(statuses):
        print(line, file=sys.stderr)
    _print_table(runs)
    print(f"wrote {report} with plots, results.json and summary.csv")
    return 0 if all(s["ok"] for s in statuses) else 1


def _fitting(points: list[dict], kw: dict, model, trace, stats) -> tuple[list[dict], list[str]]:
    """The points whose analog matrices fit their chip's crossbar slots, and a line for each that does not,
    checked before any noisy pass or cost run (the check the mapping makes, :func:`sim.mapping.slot_capacity`)."""
    from ..mapping import slot_capacity
    from ..placement import PlacementContext, place

    chips: dict[str, object] = {}
    kept, lines = [], []
    for p in points:
        if p.get("role") == "baseline" or p["policy"] == "all-digital":
            kept.append(p)
            continue
        chip = chips.setdefault(p["hw"], load_chip(p["hw"], kw["hw_overrides"]))
        placement = place(p["policy"], PlacementContext(model, trace, stats, p["fraction"], p.get("score") or
                                                        kw["score"], kw["scope"], kw["seed"], None))
        needed, _, available = slot_capacity(chip, model, placement)
        if needed <= available:
            kept.append(p)
        else:
            lines.append(f"{p['hw']}: {_label(p)} excluded before any run: its analog matrices need {needed:,} "
                         f"crossbar slots, the chip has {available:,} (no cost run, no accuracy measured)")
    return kept, lines


def _measure_accuracy(args: argparse.Namespace, chip, trace, stats, points: list[dict], out: Path) -> dict:
    """The accuracy of every compared placement, written to OUT/accuracy.json before the cost runs."""
    from workloads.evaldata import load_eval

    from ..functional.architecture import read_architecture
    from ..functional.evaluate import PlacementRequest, evaluate, write_accuracy

    if args.noise_seeds < 1:
        raise HetmoeError(f"--noise-seeds {args.noise_seeds}: allowed >= 1")
    if not 0 <= args.max_loss:
        raise HetmoeError(f"--max-loss {args.max_loss}: allowed >= 0 (percent)")
    arch = read_architecture(args.checkpoint)
    data = load_eval(args.eval, arch.shape.vocab_size, tokenizer=args.tokenizer, seq_len=args.seq_len,
                     max_sequences=args.max_sequences)
    wanted = list({PlacementRequest(p["policy"], p["fraction"], p.get("score")): None for p in points
                   if p.get("role") != "baseline"})     # the baseline runs all-digital: no analog noise to measure
    result = evaluate(arch, args.checkpoint, data, chip, wanted, stats, trace, noise_seeds=args.noise_seeds,
                      seed=args.seed, score=args.score, scope=args.scope, device=args.device,
                      progress=not args.quiet, routes_dir=out / "routes")
    result["max_loss_rel_perplexity"] = args.max_loss / 100
    result["noisy_routing"] = bool(args.noisy_routing)
    write_accuracy(result, out)
    return result["routes_files"]


def _label(point: dict) -> str:
    from ..functional.evaluate import PlacementRequest

    return PlacementRequest(point["policy"], point["fraction"], point.get("score")).label


def _apply_budget(out: Path, runs: list[dict], budget: float | None, keep_saved: bool) -> None:
    """Validate, save and apply an area budget to the runs (``keep_saved``: fall back to the folder's own)."""
    from ..report import budget as area_budget

    value = check_budget(budget)
    if value is None and keep_saved:
        value = area_budget.load(out)
    else:
        area_budget.save(out, value)
    area_budget.annotate(runs, value)


def _print_table(runs: list[dict]) -> None:
    """The console table: one row per run, a column per swept axis (mode, each swept hw override, ...)."""
    from ..report import axes
    from ..report import budget as area_budget
    from ..report.markdown import _sort_key
    from ..report.plots import placement_label

    axes.annotate(runs)
    design, workload = axes.swept(runs)
    names = axes.short_names([k for k in design if k != "hw"])
    cols = workload + [k for k in design if k != "hw"]

    def name(r: dict) -> str:
        p = r["placement"]
        text = placement_label(p["policy"], p.get("fraction", 0.0), p.get("score"))
        return f"{r['config']['hw']}: {text}" if r.get("show_hw") or "hw" in design else text

    def cell(r: dict, k: str) -> str:
        if r.get("role") == "baseline":
            return "-"
        v = axes.value(r, k)
        text = f"{v:g}" if isinstance(v, float) else str(v)
        return text if k in workload or k in axes.flat(r["config"].get("hw_overrides")) else f"{text} {axes.PRESET}"

    heads = [names.get(k, k) for k in cols]
    widths = [max([len(h)] + [len(cell(r, k)) for r in runs]) for h, k in zip(heads, cols)]
    w = max([20] + [len(name(r)) for r in runs])
    print(f"{'placement':<{w}} " + "".join(f"{h:<{cw}} " for h, cw in zip(heads, widths))
          + f"{'tokens/s':>12} {'uJ/token':>10} {'tokens/s/W':>11} {'exposure':>9} {'mm^2':>8} {'tokens/s/mm^2':>14}")
    for r in sorted(runs, key=_sort_key):
        m = r["metrics"]
        over = "" if area_budget.feasible(r) else "  over area budget"
        print(f"{name(r):<{w}} " + "".join(f"{cell(r, k):<{cw}} " for k, cw in zip(cols, widths))
              + f"{m['throughput_tokens_per_s']:>12,.0f} {_sig(m['energy_per_token_uj']):>10} "
              f"{_sig(m['tokens_per_s_per_w']):>11} {100 * m['analog_exposure_macs']:>8.1f}% "
              f"{_sig(m.get('chip_footprint_mm2', float('nan'))):>8} "
              f"{_sig(m.get('tokens_per_s_per_mm2', float('nan'))):>14}{over}")
    line = area_budget.summary(runs)
    if line:
        print(line)


def _sig(x: float) -> str:
    """A table cell: thousands separators from 100 up, four significant digits below (0.00053, not 0.0)."""
    if x != x:
        return "n/a"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.4g}"


def run_plot(args: argparse.Namespace) -> int:
    from ..report.figures import draw_all
    from ..report.markdown import write_report
    from ..sweep import collect

    runs = collect(args.results)
    if not runs:
        raise HetmoeError(f"{args.results}: no runs/*/result.json found")
    _apply_budget(Path(args.results), runs, args.area_budget_mm2, keep_saved=True)
    for path in draw_all(runs, args.results):
        print(f"wrote {path}")
    print(f"wrote {write_report(runs, args.results)}")
    return 0


def _check_sweep_memory(points: list[dict], limit, jobs: int) -> None:
    """Refuse a sweep whose largest synthetic points, ``jobs`` at a time, would not fit in memory."""
    from workloads.shapes import load_model

    from ..resources import check_run

    sizes = {(p["model"], p["trace"]["tokens"]) for p in points if isinstance(p["trace"], dict)}
    for model_name, tokens in sizes:
        shape = load_model(model_name)
        check_run(limit, tokens, shape.num_layers, shape.top_k, shape.name, min(max(1, jobs), len(points)))


def run_sweep(args: argparse.Namespace) -> int:
    from ..report.figures import draw_all
    from ..sweep import (
        collect,
        load_sweep_spec,
        run_points,
        status_lines,
        sweep_options,
        write_tables,
    )

    points = load_sweep_spec(args.spec)
    options = sweep_options(args.spec)
    _check_sweep_memory(points, memory_limit(args), args.jobs)
    statuses = run_points(points, args.out, jobs=args.jobs, scheduler=args.scheduler, quiet=args.quiet)
    done = {s["id"] for s in statuses if s["ok"]}
    runs = [r for r in collect(args.out) if r["folder"] in done]
    skipped = sum(1 for s in statuses if s.get("skipped"))
    _apply_budget(Path(args.out), runs, options.get("area_budget_mm2"), keep_saved=False)
    if runs:
        from ..report.markdown import write_report

        write_tables(args.out, runs)
        draw_all(runs, args.out)
        command = "hetmoe " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "hetmoe sweep"
        write_report(runs, args.out, command=command, failures=status_lines(statuses))
        _print_table(runs)
    for line in status_lines(statuses):
        print(line, file=sys.stderr)
    print(f"{len(statuses)} points: {len(done) - skipped} run, {skipped} already done, "
          f"{len(statuses) - len(done)} failed; wrote {args.out}/report.md, summary.csv and plots")
    return 0 if len(done) == len(statuses) else 1


def _serve_compare(args: argparse.Namespace) -> int:
    """``compare --slo-*``: hetmoe serve's defaults with compare's chips, model, trace, seed and baseline."""
    if args.eval:
        raise HetmoeError("--eval with an SLO: run hetmoe compare --eval for accuracy and hetmoe serve for the SLO")
    defaults = argparse.ArgumentParser(add_help=False)
    add_serving_args(defaults)
    sargs = defaults.parse_args([])
    for key in ("set", "trace", "fill", "score", "scope", "checkpoint", "seed", "quiet", "jobs", "scheduler", "out",
                "slo_ttft_ms", "slo_tpot_ms", "max_rates", "baseline"):
        setattr(sargs, key, getattr(args, key))
    sargs.model = args.model or "olmoe-1b-7b"
    sargs.fraction = 0.125
    return run_serving(sargs, args.hw or ["aimc-3d-moe"], ["all-analog", "maxnn", "all-digital"], [0.125])
