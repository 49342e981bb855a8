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
                     add_utilisation_arg, baseline_point, check_budget, memory_limit, run_kwargs, run_serving)
from .accuracy import add_task_args, check_task_args, run_tasks
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
    p.add_argument("--jobs", type=int, default=2, help="local worker processes (count): cost runs, and with --eval the noise seeds of the accuracy pass")
    add_utilisation_arg(p)
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="run on a Dask distributed cluster")
    p.add_argument("--all-scores", action="store_true",
                   help="also run maxnn at 12.5%% and 25%% under every other MaxNNScore variant "
                        "(labelled maxnn[VARIANT])")
    p.add_argument("--trace-events", metavar="FILE",
                   help="also write a Chrome trace-event JSON of the maxnn 12.5%% run (see hetmoe run --help)")
    p.add_argument("--trace-window", metavar="N|START:END",
                   help="--trace-events: the first N micro-batches, or START to END microseconds of simulated time")
    add_budget_arg(p)
    g = p.add_argument_group("serving under load (see hetmoe serve --help for every option)")
    g.add_argument("--slo-ttft-ms", type=float, metavar="MS",
                   help="serve instead of a closed batch: find the highest request rate of all-analog, maxnn at "
                        "12.5%%, all-digital and the baseline whose p99 time to first token is within this (ms), with "
                        "hetmoe serve's defaults (200 Poisson requests, 256 prompt and 64 output tokens, 512-token "
                        "iterations), and report tokens/s/W there")
    g.add_argument("--slo-tpot-ms", type=float, metavar="MS", help="the same for p99 time per output token (ms)")
    g.add_argument("--max-rates", type=int, default=8, metavar="N", help="rates tried per design in the SLO search (count)")
    a = p.add_argument_group("accuracy (needs --checkpoint; see hetmoe accuracy --help): --eval for perplexity, "
                             "--tasks for lm-eval benchmark accuracy, or both")
    a.add_argument("--eval", metavar="FILE",
                   help="evaluation token ids (.npy/.npz/JSONL, or text with --tokenizer): measure every "
                        "placement's accuracy with the noise model of --hw and put it beside its cost")
    a.add_argument("--tokenizer", metavar="bytes|FILE", help="tokenise a text --eval file")
    a.add_argument("--seq-len", type=int, metavar="N", help="tokens per evaluation sequence (default: the file's)")
    a.add_argument("--max-sequences", type=int, metavar="N", help="evaluate N sequences spread evenly over the file (rows floor(i x S / N))")
    a.add_argument("--noise-seeds", type=int, default=3, metavar="N", help="noise seeds per placement (count)")
    add_task_args(a)
    a.add_argument("--accuracy-axis", choices=("perplexity", "tasks"),
                   help="what the report's accuracy axis, budget and Pareto front use when both --eval and --tasks "
                        "are given (default: tasks when --tasks is given, else perplexity)")
    a.add_argument("--max-loss", type=float, default=1.0, metavar="PERCENT|POINTS",
                   help="accuracy budget for the report's answer: relative perplexity increase (%%), or on the "
                        "tasks axis the drop of the mean task accuracy from the clean model (accuracy points)")
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
                    "tables and plots), utilisation (full, summary or none: the per-resource utilisation each run "
                    "keeps, as --utilisation). Every output names each point by its placement and every swept value "
                    "(summary.csv: a column per hw_overrides key and for the mode; plots: one panel per mode or "
                    "trace, a colour per swept hardware design, lines only across digital fractions). Finished "
                    "points are skipped when re-run into the same folder if their inputs (chip after overrides, "
                    "trace and checkpoint contents, options) are unchanged, and computed again otherwise; one "
                    "command at a time writes a folder; a failed point is reported and the others go on. Writes OUT/report.md, summary.csv, results.json and the plots.")
    sw.add_argument("spec", metavar="SPEC.yaml")
    sw.add_argument("--out", default="reports/sweep", metavar="DIR", help="output folder")
    sw.add_argument("--jobs", type=int, default=2, help="local worker processes")
    sw.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="run on a Dask distributed cluster")
    sw.add_argument("--quiet", action="store_true",
                    help="no progress output (a bar on a terminal, else a line every ~10 s) and no time and size "
                         "estimate")
    add_utilisation_arg(sw)
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
    from ..outlock import lock_folder

    with lock_folder(args.out) as lock:       # one command at a time writes this folder (sim.outlock)
        if args.slo_ttft_ms is not None or args.slo_tpot_ms is not None:
            return _serve_compare(args)
        return _run_compare(args, lock)


def _run_compare(args: argparse.Namespace, lock) -> int:
    from ..api import resolve_inputs
    from ..report.figures import draw_all
    from ..report.markdown import write_report
    from ..sweep import check_written, collect, reuse_line, run_points, status_lines, write_tables

    out = Path(args.out)
    chips = args.hw or ["aimc-3d-moe"]
    args.hw = chips[0]
    kw = run_kwargs(args)
    # resolve once (validates everything before any worker starts) and share the trace as a file
    measure = bool(args.eval or args.tasks is not None)
    what = "--eval" if args.eval else "--tasks"
    if measure and not args.checkpoint:
        raise HetmoeError(f"{what} needs --checkpoint DIR (the model whose accuracy is measured)")
    if measure and len(chips) > 1:
        raise HetmoeError(f"{what} measures accuracy with one chip's noise model: give one --hw with {what}")
    if args.accuracy_axis and not (args.eval and args.tasks):
        raise HetmoeError("--accuracy-axis chooses between --eval and --tasks: give both, or leave it out")
    tasks, tm = check_task_args(args) if measure else ([], None)
    if args.trace_window and not args.trace_events:
        raise HetmoeError("--trace-window needs --trace-events FILE")
    if args.trace_events:
        from ..report.timeline import Window
        Window.parse(args.trace_window)         # refused before any run
    chip, model, trace, stats = resolve_inputs(kw["hw"], kw["model"], kw["trace"], seed=args.seed, fill=args.fill,
                                               checkpoint=args.checkpoint, hw_overrides=kw["hw_overrides"],
                                               memory=memory_limit(args), processes=max(1, args.jobs))
    warn_reticle(chip)
    for other in chips[1:]:
        warn_reticle(load_chip(other, kw["hw_overrides"]))     # validate every chip before any run starts
    # the trace of this command, read by every point; the folder is locked, and each point's result keeps the
    # key of the trace content it was computed from (sim.inputs_key): one computed from another trace is redone
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
    if measure:
        routes = _measure_accuracy(args, chip, trace, stats, points, out, tasks, tm)
        if args.noisy_routing:
            for p in points:
                p["placement_trace"] = str(trace_file)
                p["trace"] = str(out / routes[_label(p)])
    if not args.quiet:
        _say_plan(points, model, trace, args.jobs)
    statuses = run_points(points, out, jobs=args.jobs, scheduler=args.scheduler, quiet=args.quiet)
    runs = [r for r in collect(out) if r["folder"] in {s["id"] for s in statuses if s["ok"]}]
    check_written(statuses, runs, out, lock)
    if not runs:
        raise HetmoeError("every run failed:\n" + "\n".join(status_lines(statuses)))
    _apply_budget(out, runs, args.area_budget_mm2, keep_saved=False)
    write_tables(out, runs)
    draw_all(runs, out)
    command = "hetmoe " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "hetmoe compare"
    report = write_report(runs, out, command=command, failures=excluded + status_lines(statuses))
    if args.trace_events:
        from ..api import simulate
        simulate(policy="maxnn", fraction=0.125, trace_events=args.trace_events, trace_window=args.trace_window, **kw)
    for line in status_lines(statuses):
        print(line, file=sys.stderr)
    _print_table(runs)
    _say_corrections(runs)
    said = reuse_line(statuses, out)
    if said:
        print(said)
    print(f"wrote {report} with plots, results.json and summary.csv")
    return 0 if all(s["ok"] for s in statuses) else 1


def _say_plan(points: list[dict], model, trace, jobs: int) -> None:
    """One line on standard error with the expected wall time and output of the points, when large
    (:func:`sim.estimate.plan_line`); ``model`` and ``trace`` (None: from each point's synthetic spec) size them."""
    from .. import estimate

    chips: dict[str, object] = {}
    runs = []
    for p in points:
        key = f"{p['hw']}|{p.get('hw_overrides')}"
        chip = chips.get(key)
        if chip is None:
            chip = chips[key] = load_chip(p["hw"], p.get("hw_overrides") or None)
        shape = model
        if shape is None:
            from workloads.shapes import load_model
            shape = load_model(p.get("model") or "olmoe-1b-7b")
        spec = p.get("trace") if isinstance(p.get("trace"), dict) else {}
        tokens = trace.tokens if trace is not None else spec.get("tokens")
        requests = (int(trace.request.max()) + 1) if trace is not None else int(spec.get("requests", 8))
        seconds = None
        if tokens:
            n_mb = estimate.micro_batches(int(tokens), int(p.get("batch") or 64), p.get("mode", "prefill"), requests)
            seconds = estimate.run_seconds(chip, shape.num_layers, n_mb)
        runs.append({"chip": chip, "detail": estimate.resolve_detail(chip, p.get("utilisation")), "seconds": seconds})
    line = estimate.plan_line(runs, jobs=jobs, collected=True)
    if line:
        print(line, file=sys.stderr)


def _say_corrections(runs: list[dict]) -> None:
    """Each quiet correction of the runs (warm-up rows dropped, layers filled, calendar gaps closed), once."""
    from ..result import gap_correction, trace_corrections

    seen: dict[str, None] = {}
    for r in runs:
        for line in trace_corrections(r):
            seen.setdefault(line)
    closed = [int((r.get("engine") or {}).get("calendar_gaps_closed") or 0) for r in runs]
    bookings = [int((r.get("engine") or {}).get("bookings") or 0) for r in runs]
    if any(closed):
        worst = max(range(len(runs)), key=lambda i: closed[i] / max(1, bookings[i]))
        seen.setdefault(gap_correction(sum(closed), sum(bookings), runs=(sum(1 for c in closed if c), len(runs)),
                                       worst=(closed[worst], bookings[worst])))
    for line in seen:
        print(f"hetmoe: note: {line}", file=sys.stderr)


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


def _measure_accuracy(args: argparse.Namespace, chip, trace, stats, points: list[dict], out: Path,
                      tasks: list[str], tm) -> dict:
    """The accuracy of every compared placement (perplexity on --eval, lm-eval --tasks, or both), written to
    OUT/accuracy.json before the cost runs; the routes files of the --eval pass (empty without --eval)."""
    from workloads.evaldata import load_eval

    from ..functional.architecture import read_architecture
    from ..functional.evaluate import PlacementRequest, accuracy_meta, evaluate, write_accuracy

    if args.noise_seeds < 1:
        raise HetmoeError(f"--noise-seeds {args.noise_seeds}: allowed >= 1")
    if not 0 <= args.max_loss:
        raise HetmoeError(f"--max-loss {args.max_loss}: allowed >= 0 (percent or accuracy points)")
    arch = read_architecture(args.checkpoint)
    wanted = list({PlacementRequest(p["policy"], p["fraction"], p.get("score")): None for p in points
                   if p.get("role") != "baseline"})     # the baseline runs all-digital: no analog noise to measure
    if args.eval:
        data = load_eval(args.eval, arch.shape.vocab_size, tokenizer=args.tokenizer, seq_len=args.seq_len,
                         max_sequences=args.max_sequences)
        result = evaluate(arch, args.checkpoint, data, chip, wanted, stats, trace, noise_seeds=args.noise_seeds,
                          seed=args.seed, score=args.score, scope=args.scope, device=args.device,
                          progress=not args.quiet, routes_dir=out / "routes", jobs=args.jobs)
    else:
        result = {**accuracy_meta(arch, args.checkpoint, chip, args.seed, args.noise_seeds, args.device,
                                  chip.precision.digital_weight_bits), "placements": [], "routes_files": {}}
    if tasks:
        result["tasks"] = run_tasks(args, tasks, tm, chip, wanted, stats, trace)
    result["accuracy_axis"] = args.accuracy_axis or ("tasks" if tasks else "perplexity")
    result["max_loss_rel_perplexity"] = args.max_loss / 100
    result["max_loss_task_points"] = args.max_loss
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
    from ..outlock import lock_folder

    if not Path(args.results).is_dir():
        raise HetmoeError(f"{args.results}: no such folder (a folder written by compare or sweep)")
    with lock_folder(args.results):           # not while a compare or sweep writes the folder
        return _run_plot(args)


def _run_plot(args: argparse.Namespace) -> int:
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
    from ..outlock import lock_folder

    points = _load_sweep(args)
    with lock_folder(args.out) as lock:       # one command at a time writes this folder (sim.outlock)
        return _run_sweep(args, points, lock)


def _load_sweep(args: argparse.Namespace) -> list[dict]:
    from ..sweep import load_sweep_spec

    points = load_sweep_spec(args.spec)
    _check_sweep_memory(points, memory_limit(args), args.jobs)
    return points


def _run_sweep(args: argparse.Namespace, points: list[dict], lock) -> int:
    from ..report.figures import draw_all
    from ..sweep import (
        check_written,
        collect,
        reuse_line,
        run_points,
        status_lines,
        sweep_options,
        write_tables,
    )

    options = sweep_options(args.spec)
    if args.utilisation:                       # the command line wins over the spec's utilisation key
        points = [{**p, "utilisation": args.utilisation} for p in points]
    if not args.quiet:
        _say_plan(points, None, None, args.jobs)
    statuses = run_points(points, args.out, jobs=args.jobs, scheduler=args.scheduler, quiet=args.quiet)
    done = {s["id"] for s in statuses if s["ok"]}
    runs = [r for r in collect(args.out) if r["folder"] in done]
    check_written(statuses, runs, args.out, lock)      # the folder deleted under the sweep: say so, exit 2
    done = {r["folder"] for r in runs}                  # count what is written, not what was reported
    skipped = sum(1 for s in statuses if s.get("skipped") and s["id"] in done)
    _apply_budget(Path(args.out), runs, options.get("area_budget_mm2"), keep_saved=False)
    if runs:
        from ..report.markdown import write_report

        write_tables(args.out, runs)
        draw_all(runs, args.out)
        command = "hetmoe " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "hetmoe sweep"
        write_report(runs, args.out, command=command, failures=status_lines(statuses))
        _print_table(runs)
        _say_corrections(runs)
    for line in status_lines(statuses):
        print(line, file=sys.stderr)
    said = reuse_line(statuses, args.out)
    if said:
        print(said)
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
