"""``report.md`` from result files only: assumptions first, then tables with units, then plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from arch.safeio import write_text

from ..result import fmt_number as _fmt
from . import axes, tradeoff
from . import budget as area_budget
from .answer import binding_line, cost_answer, operating_point_line, ridge_line, rests_on
from .figures import ACCURACY_PLOT
from .plots import PLOTS, feasible, feasible_front, label
from .whatif import load_whatif


def _sort_key(r: dict[str, Any]) -> tuple:
    order = {"all-analog": 0, "maxnn": 1, "frequency": 2, "random": 3, "maxnn-lowest": 4, "all-digital": 5}
    p = r["placement"]
    variant = p.get("score") if p["policy"] in ("maxnn", "maxnn-lowest") and p.get("score") != "gate_rows" else ""
    chip = (r.get("role") == "baseline", r["config"]["hw"] if r.get("show_hw") else "")
    return (*chip, axes.sort_value(r), order.get(p["policy"], 9), variant or "", p.get("fraction", 0.0))


def write_report(runs: list[dict[str, Any]], out_dir: str | Path, *, command: str = "",
                 failures: list[str] | None = None) -> Path:
    out = Path(out_dir)
    runs = sorted(axes.annotate(runs), key=_sort_key)
    first = runs[0]
    c, model = first["config"], first["model_summary"]
    pts = [(r["metrics"]["energy_per_token_uj"], r["metrics"]["throughput_tokens_per_s"]) for r in runs]
    front = {id(runs[i]) for i in feasible_front(runs, pts)}
    accuracy = tradeoff.load_accuracy(out, runs)
    rows = tradeoff.join(runs, accuracy) if accuracy else []
    chips = list(dict.fromkeys(r["config"]["hw"] for r in runs))
    lines = [f"# hetmoe comparison: {c['model']} on {', '.join(chips)}", ""]
    if command:
        lines += [f"Produced by `{command}`.", ""]
    lines += ["## Answer", "", " ".join(cost_answer(runs)), ""]
    if failures:
        lines += [f"**Not in the table**: {len(failures)} placement{'s' if len(failures) > 1 else ''} excluded or "
                  "failed (listed under Failed points), so the answer above is among the rest only.", ""]
    whatif = load_whatif(out, runs)
    lines += [x for line in (ridge_line(runs), binding_line(runs), operating_point_line(runs, whatif)) if line
              for x in (line, "")]
    if rows:
        lines += tradeoff.answer(rows, accuracy) + [""]
    else:
        lines += ["**Accuracy was not measured**: the table below prices each placement but says nothing about "
                  "the accuracy it keeps. Give `--checkpoint DIR --eval FILE` to measure it with the noise "
                  "model of the same hardware description.", ""]
    rests = rests_on(runs, whatif)
    if rests:
        whatif_note = ([] if whatif else
                       ["No what-if run of this chip and model is in this folder: `hetmoe whatif --out "
                        f"{out}/whatif` (its default knobs) and then `hetmoe plot {out}` add the knobs that swing "
                        "the ratio most."])
        lines += ["## What the answer rests on", "", " ".join(rests + whatif_note), ""]
    lines += ["## Assumptions", "", *_chip_lines(runs),
              f"- **Model**: `{c['model']}`: {model['layers']} layers ({model['moe_layers']} MoE), hidden "
              f"{model['hidden_size']}, {model['experts']} routed experts of width {model['expert_width']}, "
              f"top-{model['top_k']}."
              + (f" Routing keys not modelled: {'; '.join(model['unmodelled_routing'])}."
                 if model.get("unmodelled_routing") else ""),
              *_trace_lines(runs),
              *_correction_lines(runs),
              _utilisation_line(runs),
              f"- **MaxNNScore**: variant `{c['score']}`, ranking scope `{c['scope']}`, from "
              f"{'**synthetic stand-in scores** (no checkpoint given)' if c['scores_synthetic'] else c['scores']}.",
              *_run_lines(runs),
              *(_accuracy_assumptions(accuracy) if rows else []),
              "- Budget policies (`maxnn`, `frequency`, `random`, `maxnn-lowest`) put the given fraction of each "
              "MoE layer's routed experts plus attention, router, shared experts, dense FFNs and lm_head on the "
              "digital SIMD core; `all-analog` puts every weight-static matrix on tiles.",
              ""]
    short = [label(r) for r in runs if not r.get("steady_state", {}).get("reached", True)]
    if short:
        need = max(r["steady_state"]["needed_micro_batches"] for r in runs if "steady_state" in r)
        lines += [f"**Too short for steady state**: {axes.join_labels(short)} never fill the pipeline; run at least "
                  f"{need} micro-batches ({need} x --batch tokens) for steady-state figures.", ""]
    budget_line = area_budget.summary(runs)
    if budget_line:
        lines += [f"**{budget_line}**", ""]
    if failures:
        lines += ["## Failed points", ""] + [f"- {f}" for f in failures] + [""]
    if rows:
        lines += ["## Accuracy and cost", ""] + tradeoff.table(rows, accuracy) + [
            "", f"★ on the accuracy–efficiency Pareto front (lower {tradeoff.axis(accuracy)['what']}, higher "
            "tokens/s/W). "
            "Also in `tradeoff.csv`; per seed in `accuracy.json`.", "",
            f"![Accuracy lost vs efficiency]({ACCURACY_PLOT})", ""]
    lines += ["## Placements", "",
              "Whole-run figures include pipeline fill and drain; the steady-state columns count only the window "
              "where the pipeline is full (see `steady_state` in each result.json for the window).", "",
              "| placement | digital experts (%) | tokens/s | energy/token (µJ) | tokens/s/W | steady tokens/s | "
              "steady tokens/s/W | power (W) | p50 latency (µs) | p99 latency (µs) | analog exposure: MACs / "
              "gate-weighted / score-weighted (%) | chip area (mm²) | tokens/s/mm² |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        m = r["metrics"]
        star = " ★" if id(r) in front else ""
        star += "" if feasible(r) else " (over area budget)"
        lines.append(
            f"| {label(r)}{star} | {100 * r['placement']['digital_expert_share']:.1f} | "
            f"{_fmt(m['throughput_tokens_per_s'])} | {_fmt(m['energy_per_token_uj'])} | "
            f"{_fmt(m['tokens_per_s_per_w'])} | {_fmt(m.get('steady_throughput_tokens_per_s', float('nan')))} | "
            f"{_fmt(m.get('steady_tokens_per_s_per_w', float('nan')))} | "
            f"{_fmt(m['average_power_w'])} | {_fmt(m['latency_p50_us'])} | "
            f"{_fmt(m['latency_p99_us'])} | {100 * m['analog_exposure_macs']:.1f} / "
            f"{100 * m['analog_exposure_gate_weighted']:.1f} / {100 * m['analog_exposure_score_weighted']:.1f} | "
            f"{_fmt(m.get('chip_footprint_mm2', float('nan')))} | {_fmt(m.get('tokens_per_s_per_mm2', float('nan')))} |")
    lines += ["", "★ on the throughput–energy Pareto front (among designs within the area budget, when one is "
              "given). Chip area is the footprint; tokens/s/mm² = tokens/s / footprint.", "",
              *_area_section(runs),
              "## Energy per token by domain (µJ)", "",
              "| placement | analog | digital | memory | NoC | total |", "|---|---:|---:|---:|---:|---:|"]
    for r in runs:
        tok = r["metrics"]["tokens"]
        d = {k: v * 1e-6 / tok for k, v in r["energy_by_domain_pj"].items()}
        lines.append(f"| {label(r)} | {_fmt(d['analog'])} | {_fmt(d['digital'])} | {_fmt(d['memory'])} | "
                     f"{_fmt(d['noc'])} | {_fmt(sum(d.values()))} |")
    lines += ["", "## Mapping and utilisation", "",
              "| placement | tiles used | crossbar slots used | SRAM-resident matrices (MiB) | DRAM-streamed matrices | "
              "tile util. mean/max (%) | SIMD util. (%) | DRAM util. (%) | NoC link util. max (%) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        mp, u = r["mapping"], r["utilisation"]
        lines.append(f"| {label(r)} | {mp['tiles_used']:,} | {mp['crossbar_slots_used']:,} | "
                     f"{mp['sram_resident_matrices']} ({mp['sram_resident_bytes'] / 2**20:.1f}) | "
                     f"{mp['dram_streamed_matrices']} | {100 * u.get('tile_mean', 0):.2f} / "
                     f"{100 * u.get('tile_max', 0):.2f} | {100 * u.get('simd_mean', 0):.1f} | "
                     f"{100 * u.get('dram_mean', 0):.1f} | {100 * u.get('noc_link_max', 0):.1f} |")
    lines += ["", "## Plots", ""]
    titles = {"throughput_vs_energy.png": "Throughput vs energy per token (Pareto front circled)",
              "area_efficiency.png": "Throughput per mm² vs energy per token",
              "energy_breakdown.png": "Energy breakdown per placement",
              "exposure_vs_efficiency.png": "Analog exposure vs tokens/s/W",
              "tile_utilisation.png": "Tile utilisation on the NoC"}
    for name in PLOTS:
        lines += [f"### {titles[name]}", "", f"![{titles[name]}]({name})", ""]
    lines += ["## Formulas", "",
              "- tokens/s = tokens / makespan; energy = Σ action counts × unit energies + Σ static power × makespan; "
              "tokens/s/W = tokens per joule; analog exposure = share of routed-expert MACs on analog tiles.",
              "- Closed forms: `arch/costs.py`; engine semantics: `sim/engine/simulator.py` and the README. "
              "Per-run files: `runs/*/result.json`; all runs: `results.json`, `summary.csv`.",
              ""]
    path = out / "report.md"
    write_text(path, "\n".join(lines))
    return path


def _trace_lines(runs: list[dict[str, Any]]) -> list[str]:
    """One line per distinct trace of the runs (a sweep over traces or token counts has several)."""
    seen: dict[str, dict[str, Any]] = {}
    # compare --noisy-routing prices each placement on its own routes (said under the accuracy assumptions)
    for r in [r for r in runs if not r["config"].get("placement_trace")] or runs[:1]:
        seen.setdefault(repr(sorted((r.get("trace") or {}).items(), key=str)), r["trace"])
    out = []
    for tr in seen.values():
        out.append(f"- **Trace**: {tr['tokens']:,} tokens in {tr['requests']} requests, format `{tr['format']}`, "
                   f"source `{tr['source']}`"
                   + (f"; synthetic parameters {tr['synthetic']}" if tr.get("synthetic") else "")
                   + (f"; warm-up rows dropped: {tr['warmup_rows_dropped']}" if tr.get("warmup_rows_dropped") else "")
                   + (f"; layers filled: {tr['filled_layers']}" if tr.get("filled_layers") else "") + "."
                   + "".join(f" **{w}**." for w in tr.get("warnings") or []))
    return out


def _correction_lines(runs: list[dict[str, Any]]) -> list[str]:
    """The quiet corrections of the runs said out loud (:func:`sim.result.trace_corrections` per distinct trace,
    :func:`sim.result.gap_correction` over all runs), as assumptions lines."""
    from ..result import gap_correction, trace_corrections

    lines: dict[str, None] = {}
    for r in [r for r in runs if not r["config"].get("placement_trace")] or runs[:1]:
        for text in trace_corrections(r):
            lines.setdefault(f"- **Trace correction**: {text[0].upper()}{text[1:]}.")
    closed = [int((r.get("engine") or {}).get("calendar_gaps_closed") or 0) for r in runs]
    bookings = [int((r.get("engine") or {}).get("bookings") or 0) for r in runs]
    if any(closed):
        worst = max(range(len(runs)), key=lambda i: closed[i] / max(1, bookings[i]))
        text = gap_correction(sum(closed), sum(bookings), runs=(sum(1 for c in closed if c), len(runs)),
                              worst=(closed[worst], bookings[worst]))
        lines.setdefault(f"- **Engine correction**: {text[0].upper()}{text[1:]}.")
    return list(lines)


def _utilisation_line(runs: list[dict[str, Any]]) -> str:
    """What per-resource utilisation the runs kept (``--utilisation``)."""
    kept: dict[str, int] = {}
    for r in runs:
        d = r.get("utilisation_detail", "full")
        kept[d] = kept.get(d, 0) + 1
    words = {"full": "one row per resource in each run's utilisation.csv, per-node tile means in result.json",
             "summary": "statistics per resource kind only (count, idle, mean, min, p50, p90, p99, max) in "
                        "utilisation.csv and result.json (utilisation_stats); no per-tile rows, so no tile heat map",
             "none": "no per-resource utilisation (only the per-kind means, maxima and the bottleneck); no tile "
                     "heat map"}
    parts = [words[d] + (f" ({n} of {len(runs)} runs)" if len(kept) > 1 else "") for d, n in kept.items()]
    return ("- **Per-resource utilisation** (`--utilisation`, default summary above 10,000 resources, full below): "
            + "; ".join(parts) + ".")


def _run_lines(runs: list[dict[str, Any]]) -> list[str]:
    """One line per distinct run shape (mode, batch, in flight, context, seed), naming the runs it covers
    when there are several."""
    shapes: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        c = r["config"]
        text = (f"mode `{c['mode']}`, "
                + (f"micro-batch {c['batch']} tokens, {c['max_inflight']} micro-batches in flight"
                   if c["mode"] == "prefill" else f"{c['batch']} sequences, context {c['context_tokens']} tokens")
                + f", seed {c['seed']}")
        shapes.setdefault(text, []).append(r)
    if len(shapes) == 1:
        return [f"- **Run**: {next(iter(shapes))}."]
    return [f"- **Run** ({_which(rs)}): {text}." for text, rs in shapes.items()]


def _which(runs: list[dict[str, Any]]) -> str:
    """The runs a line covers, by the swept values they share (``decode``), else their count."""
    common = set.intersection(*(set((r.get("swept") or {}).items()) for r in runs))
    words = [v for k, v in (runs[0].get("swept") or {}).items() if (k, v) in common]
    return ", ".join(words) + " runs" if words else f"{len(runs)} runs"


def _chip_lines(runs: list[dict[str, Any]]) -> list[str]:
    """One assumptions line per chip in the runs, each from that chip's own figures."""
    seen: dict[str, dict[str, Any]] = {}
    # compare --noisy-routing prices each placement on its own routes (said under the accuracy assumptions)
    for r in [r for r in runs if not r["config"].get("placement_trace")] or runs[:1]:
        seen.setdefault(f"{r['config']['hw']}|{r['config'].get('hw_overrides')}", r)
    return [_chip_line(r) for r in seen.values()]


def _chip_line(r: dict[str, Any]) -> str:
    c, hw = r["config"], r["hw_figures"]
    role = " (baseline)" if r.get("role") == "baseline" else ""
    if not hw["tile_count"]:
        analog = "no analog tiles (digital only)"
    else:
        analog = (f"{hw['tile_count']:,} tiles of {hw['tile_rows']}x{hw['tile_cols']} weights x {hw['tiers']} tiers "
                  f"({hw['analog_capacity_weights']:,} weights); one MVM {hw['mvm_latency_ns']:.4g} ns and "
                  f"{hw['mvm_energy_pj']:,.4g} pJ; peak analog {hw['peak_analog_tops']:,.4g} TOPS at "
                  f"{hw['analog_tops_per_w']:.4g} TOPS/W")
    area = (f"; footprint {hw['footprint_mm2']:,.1f} mm²" if hw.get("area_modelled") else "; area not modelled")
    reticle = hw.get("reticle_warning")       # arch.area.reticle_warning's text, written with the run
    return (f"- **Chip{role}**: `{c['hw']}` (source: {c['hw_source']}); {analog}; peak digital "
            f"{hw['peak_digital_tops']:.4g} TOPS; SRAM {hw['sram_capacity_mib']:g} MiB; DRAM "
            f"{hw['dram_bandwidth_gbps']:,.0f} Gbit/s; NoC {hw['noc_nodes']} nodes, bisection "
            f"{hw['noc_bisection_bandwidth_gbps']:,.0f} Gbit/s; static power {hw['static_power_mw'] / 1e3:,.3g} W"
            f"{area}." + (f" Overrides: `{c['hw_overrides']}`." if c.get("hw_overrides") else "")
            + (" **Tile static power is 0 in this description**: idle tiles cost nothing, so energies "
               "exclude tile leakage." if hw["tile_count"] and hw.get("tile_static_power_mw", 1.0) == 0 else "")
            + (f" **Not one chip**: {reticle}." if reticle else ""))


def _area_section(runs: list[dict[str, Any]]) -> list[str]:
    """The silicon area of each chip in the runs (footprint, silicon, breakdown by component)."""
    chips: dict[str, dict[str, Any]] = {}
    for r in runs:
        hw = r["hw_figures"]
        key = f"{hw['name']} {r['config'].get('hw_overrides') or ''}".strip()
        chips.setdefault(key, hw)
    lines = ["## Silicon area", ""]
    if not any(hw.get("area_modelled") for hw in chips.values()):
        return lines + ["Not modelled: the hardware description has no `area:` section (see `hetmoe hw show "
                        "aimc-3d-moe` for one with cited unit areas).", ""]
    for key, hw in chips.items():
        if not hw.get("area_modelled"):
            lines += [f"- `{key}`: no area model.", ""]
            continue
        fp = hw["footprint_mm2"]
        node = f" at {hw['area_process_nm']:g} nm" if hw.get("area_process_nm") else ""
        peaks = [f"{hw[k]:.3g} {what}" for k, what in
                 (("analog_tops_per_mm2", "analog TOPS/mm² over the tiles"),
                  ("digital_tops_per_mm2", "digital TOPS/mm² over the SIMD cores")) if hw.get(k) is not None]
        lines += [f"`{key}`{node}: footprint **{fp:,.1f} mm²**, total silicon "
                  f"{hw['silicon_mm2']:,.1f} mm² (3D tiers counted)" + (f"; peak {', '.join(peaks)}" if peaks else "")
                  + ". Unit areas and their sources: the `area:` section of the hardware YAML; formulas: "
                  "`arch/area.py`.", "",
                  "| component | count | footprint (mm²) | share (%) | silicon (mm²) |", "|---|---:|---:|---:|---:|"]
        for name, p in hw["area_breakdown_mm2"].items():
            lines.append(f"| {name} | {_fmt(p['count'])} | {_fmt(p['footprint_mm2'])} | "
                         f"{100 * p['footprint_mm2'] / fp if fp else 0:.1f} | {_fmt(p['silicon_mm2'])} |")
        lines.append("")
    return lines


def _accuracy_assumptions(acc: dict[str, Any]) -> list[str]:
    n, p, cv = acc["noise"], acc["noise"]["programming"], acc["converters"]
    prog = {"none": "none", "relative": f"relative Gaussian, σ = {p['sigma_relative']:g} × max|W| of the "
            f"{n['weight_scaling']}",
            "pcm": "aihwkit PCMLikeNoiseModel (Nandakumar et al., ICECS 2019)",
            "hermes": f"aihwkit HermesNoiseModel, {p['num_devices']} devices (Le Gallo et al., Nat. Electron. 2023)"
            }[p["model"]]
    drift = (f", drift to t = {p['t_inference_s']:g} s with {p['drift_compensation']} drift compensation"
             if p["model"] in ("pcm", "hermes") else "")
    return [f"- **Noise model** (`analog.noise` of `{acc['hw']}`, aihwkit semantics, per {cv['tile_rows']}x"
            f"{cv['tile_cols']} crossbar slot): inputs {n['noise_management']}-scaled and quantised to "
            f"{cv['input_bits']} bits, outputs to {cv['adc_bits']} bits over ±{n['out_bound']:g} "
            f"({n['out_range']} range, {n['bound_management']} bound management), output noise "
            f"{n['out_noise']:g}, read noise {n['w_noise']:g}; programming noise: {prog}{drift}.",
            *_measured_on(acc)] + (
        ["- **Noisy routing**: each placement's cost is priced on the routes it took under noise (noise seed 0, "
         "the evaluation tokens, `routes/*.npz`), not on the trace above; placements are decided on that trace."]
        if acc.get("noisy_routing") else [])


def _measured_on(acc: dict[str, Any]) -> list[str]:
    """What the accuracy was measured on: the --eval ids (perplexity) and the lm-eval tasks, each where given."""
    bits = 'as stored' if acc['digital_weight_bits'] >= 16 else str(acc['digital_weight_bits']) + '-bit'
    out = []
    ev = acc.get("eval")
    if ev:
        out.append(f"- **Accuracy measured** on checkpoint `{acc['checkpoint']}` ({acc['family']}), {ev['sequences']} "
                   f"sequences of {ev['length']} ids from `{ev['source']}` ({ev['predicted_tokens']:,} predicted "
                   f"tokens), {acc['noise_seeds']} noise seeds with common random numbers; digital weights {bits}; "
                   f"clean perplexity {acc['clean']['perplexity']:.5g}.")
    t = acc.get("tasks")
    if t:
        ax = tradeoff.axis(acc)
        clean = "; ".join(f"{k} {m} " + (f"{100 * t['clean'][k][m]:.2f} %" if m.startswith("acc")
                                         else f"{t['clean'][k][m]:.5g}") for k, m in t["metrics"])
        lim = "all examples" if t.get("limit") is None else f"--limit {t['limit']:g} examples per task"
        out.append(f"- **Benchmark tasks** (lm-eval {t['lm_eval_version']}, {lim}, "
                   f"{'the task default' if t.get('num_fewshot') is None else t['num_fewshot']} few-shot, tokenizer "
                   f"{t['tokenizer']}) on checkpoint `{acc['checkpoint']}`, {len(t['noise_seeds'])} noise seeds with "
                   f"common random numbers; digital weights {bits}; clean (exact weights): {clean}. "
                   + (f"The accuracy axis is the drop of {ax['name']} from clean, in points."
                      if ax["kind"] == "tasks" else "The accuracy axis is perplexity; task metrics are in "
                                                     "`accuracy.json`."))
    return out
