"""Accuracy beside cost: the joined table, its Pareto front, the plain-words answer and the plot.

Reads ``accuracy.json`` (written by ``hetmoe compare --checkpoint --eval`` or ``hetmoe accuracy``) and
the cost runs' result dictionaries, joined by placement label (``maxnn 12.5%``, ``all-analog``).
Accuracy loss is the relative perplexity increase over the clean model, exp(Δ cross-entropy) − 1,
mean and sample std over noise seeds; efficiency is tokens/s/W (tokens per joule).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from arch.safeio import read_json, write_text

from . import axes, seeds
from ..result import fmt_number
from .plots import _finish, _style, family, family_label, feasible, label, log_ticks, pareto, run_style, style

ACCURACY_FILE = "accuracy.json"
DEFAULT_MAX_LOSS = 0.01          # 1 % relative perplexity increase


def load_accuracy(out_dir: str | Path, runs: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """``accuracy.json`` of a compare folder, or the accuracy that sweep points carry in their results."""
    path = Path(out_dir) / ACCURACY_FILE
    if path.is_file():
        return read_json(path, "accuracy results", allow_nan=True)
    carried = [r for r in runs or [] if "accuracy" in r]
    if not carried:
        return None
    return {**carried[0]["accuracy"]["meta"], "placements": [], "per_run": True}


def join(runs: list[dict[str, Any]], accuracy: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per placement measured on both sides, in the cost runs' order."""
    acc = {p["label"]: p for p in accuracy["placements"]}
    designs = axes.designs(runs)
    rows = []
    for r in runs:
        a = r["accuracy"]["placement"] if "accuracy" in r else acc.get(label(r))
        if a is None:
            continue
        m = r["metrics"]
        rows.append({"label": label(r), "policy": r["placement"]["policy"],
                     "fraction": r["placement"].get("fraction", 0.0),
                     "tokens_per_s": m["throughput_tokens_per_s"], "energy_per_token_uj": m["energy_per_token_uj"],
                     "tokens_per_s_per_w": m["tokens_per_s_per_w"],
                     "loss": a["mean"]["rel_perplexity_increase"], "loss_std": a["std"]["rel_perplexity_increase"],
                     "delta_bits": a["mean"]["delta_bits_per_token"], "delta_bits_std": a["std"]["delta_bits_per_token"],
                     "kl": a["mean"]["kl_nats"], "kl_std": a["std"]["kl_nats"],
                     "top1": a["mean"]["top1_agreement"], "routes_changed": a["mean"]["routes_changed"],
                     "loss_per_seed": (a.get("per_seed") or {}).get("rel_perplexity_increase"),
                     "feasible": feasible(r), "family": family_label(r), "panel": axes.workload_text(r),
                     "style": run_style(r, designs)})
    return rows


def front(rows: list[dict[str, Any]]) -> list[int]:
    """Indices of rows within the area budget that no other such row of the same workload panel (mode, ...)
    beats on both loss (lower) and tokens/s/W (higher)."""
    out = []
    for panel in dict.fromkeys(r.get("panel", "") for r in rows):
        ok = [i for i, r in enumerate(rows) if r.get("feasible", True) and r.get("panel", "") == panel]
        out += [ok[j] for j in pareto([(rows[i]["loss"], rows[i]["tokens_per_s_per_w"]) for i in ok])]
    return out


def answer(rows: list[dict[str, Any]], accuracy: dict[str, Any]) -> list[str]:
    """Three to five plain sentences computed from the joined table."""
    budget = accuracy.get("max_loss_rel_perplexity", DEFAULT_MAX_LOSS)
    by = {r["label"]: r for r in rows}
    ev = accuracy["eval"]
    n = accuracy["noise_seeds"]
    out = [f"Accuracy budget: perplexity at most {100 * budget:g} % above the clean model's "
           f"({accuracy['clean']['perplexity']:.4g}), measured on {ev['predicted_tokens']:,} tokens of "
           f"`{Path(ev['source']).name}`{_selection(ev)} with {n} noise seeds; a placement is within it when the "
           "one-sided 95 % upper confidence bound of its perplexity increase (mean + t·s/√n over the seeds) is"
           + (" — with one seed there is no error bar, so it is judged on the mean alone (use --noise-seeds 2 or "
              "more for a bound)." if n < 2 else ".")]
    for r in rows:
        r["loss_ucb"] = seeds.upper_bound(r["loss"], r["loss_std"], n) if n > 1 else r["loss"]
    ok = [r for r in rows if r["loss_ucb"] <= budget and r.get("feasible", True)]
    if ok:
        best = max(ok, key=lambda r: r["tokens_per_s_per_w"])
        s = (f"The most efficient placement within it is **{best['label']}**: "
             f"{fmt_number(best['tokens_per_s_per_w'])} tokens/s/W at {100 * best['loss']:+.3g} % "
             f"(± {100 * best['loss_std']:.2g}; upper bound {100 * best['loss_ucb']:+.3g} %) perplexity")
        ratios = [f"{best['tokens_per_s_per_w'] / by[ref]['tokens_per_s_per_w']:.3g}× {ref}'s efficiency"
                  for ref in ("all-analog", "all-digital") if ref in by and ref != best["label"]]
        out.append(s + (", " + " and ".join(ratios) if ratios else "") + ".")
        near = [r for r in rows if r["loss"] <= budget < r["loss_ucb"] and r.get("feasible", True)
                and r["tokens_per_s_per_w"] > best["tokens_per_s_per_w"]]
        if near:
            sep = "; " if any(", " in r["label"] for r in near) else ", "
            out.append("Within the budget on its mean but not on its upper bound, so not chosen: "
                       + sep.join(f"{r['label']} ({100 * r['loss']:+.3g} %, bound {100 * r['loss_ucb']:+.3g} %)"
                                  for r in near) + ".")
    else:
        least = min(rows, key=lambda r: r["loss"])
        out.append(f"No measured placement stays within it; the least damaging is **{least['label']}** at "
                   f"{100 * least['loss']:+.3g} % perplexity.")
    if "all-analog" in by:
        a = by["all-analog"]
        out.append(f"All-analog costs {100 * a['loss']:+.3g} % (± {100 * a['loss_std']:.2g}) perplexity at "
                   f"{fmt_number(a['tokens_per_s_per_w'])} tokens/s/W.")
    pf = [rows[i]["label"] for i in front(rows)]
    out.append(f"On the accuracy–efficiency Pareto front: {axes.join_labels(pf)}.")
    for f in (0.125, 0.25):
        trio = [by.get(f"{p} {100 * f:g}%") for p in ("maxnn", "random", "maxnn-lowest")]
        if all(trio):
            out.append(f"At {100 * f:g} % digital experts, perplexity rises {100 * trio[0]['loss']:+.3g} % "
                       f"(± {100 * trio[0]['loss_std']:.2g}) under maxnn, {100 * trio[1]['loss']:+.3g} % under "
                       f"random and {100 * trio[2]['loss']:+.3g} % under maxnn-lowest.")
            break
    out += [x for f in (0.125, 0.25) for x in [separation(by, f"maxnn {100 * f:g}%", f"random {100 * f:g}%")] if x]
    return out


def separation(by: dict[str, dict[str, Any]], a: str, b: str) -> str | None:
    """One sentence on the paired difference of two placements' perplexity increase over common seeds
    (:func:`sim.report.seeds.paired`): its sign and standard error when separable at 95 %, else "not
    separable" with the seed count that would separate a difference of this size."""
    ra, rb = by.get(a), by.get(b)
    if not ra or not rb or not ra.get("loss_per_seed") or not rb.get("loss_per_seed"):
        return None
    p = seeds.paired(ra["loss_per_seed"], rb["loss_per_seed"])
    if p["n"] < 2:
        return None
    diff = (f"{a} − {b}: {100 * p['mean']:+.3g} % perplexity (SE {100 * p['se']:.2g}, paired over {p['n']} "
            f"common seeds, t = {p['t']:.2g})")
    if p["separable"]:
        word = "less" if p["mean"] < 0 else "more"
        return f"{diff}: {a} damages {word} than {b}, separable at 95 %."
    need = p["seeds_needed"]
    return (f"{diff}: not separable from {b} at this seed count"
            + (f"; about {need} seeds would separate a difference this size." if need else "."))


def _selection(ev: dict[str, Any]) -> str:
    sel = ev.get("selection")
    return f" ({sel})" if sel and sel != "all sequences" else ""


def table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown table lines, Pareto-front rows starred."""
    star = set(front(rows))
    lines = ["| placement | tokens/s | energy/token (µJ) | tokens/s/W | perplexity increase (%) | Δ bits/token | "
             "KL (nats) | top-1 agreement | routes changed (%) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for i, r in enumerate(rows):
        lines.append(
            f"| {r['label']}{' ★' if i in star else ''} | {fmt_number(r['tokens_per_s'])} | "
            f"{fmt_number(r['energy_per_token_uj'])} | {fmt_number(r['tokens_per_s_per_w'])} | "
            f"{100 * r['loss']:+.3f} ± {100 * r['loss_std']:.3f} | {r['delta_bits']:+.4f} ± {r['delta_bits_std']:.4f} | "
            f"{r['kl']:.4f} ± {r['kl_std']:.4f} | {r['top1']:.4f} | {100 * r['routes_changed']:.2f} |")
    return lines


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    cols = [("label", "label"), ("policy", "policy"), ("fraction", "fraction"), ("tokens_per_s", "tokens_per_s"),
            ("energy_per_token_uj", "energy_per_token_uj"), ("tokens_per_s_per_w", "tokens_per_s_per_w"),
            ("loss", "rel_perplexity_increase_mean"), ("loss_std", "rel_perplexity_increase_std"),
            ("delta_bits", "delta_bits_per_token_mean"), ("delta_bits_std", "delta_bits_per_token_std"),
            ("kl", "kl_nats_mean"), ("kl_std", "kl_nats_std"), ("top1", "top1_agreement_mean"),
            ("routes_changed", "routes_changed_share_mean")]
    lines = [",".join(c for _, c in cols)]
    lines += [",".join(str(r[k]) if isinstance(r[k], str) else f"{r[k]:.8g}" for k, _ in cols) for r in rows]
    write_text(path, "\n".join(lines) + "\n")


def plot_accuracy_efficiency(rows: list[dict[str, Any]], accuracy: dict[str, Any], subtitle: str,
                             path: Path | None, caveat: str = ""):
    """Perplexity increase against tokens/s/W; each policy a line over its fractions; front marked."""
    from .plots import _grid

    panels_of = list(dict.fromkeys(r.get("panel", "") for r in rows))
    fig, panels = _grid(len(panels_of), (7.8, 5.2), (6.2, 4.6))
    wide = len(panels_of) > 1 or any(", " in r.get("family", "") for r in rows)
    handles: dict[str, Any] = {}
    budget = 100 * accuracy.get("max_loss_rel_perplexity", DEFAULT_MAX_LOSS)
    star = set(front(rows))
    for ax, panel in zip(panels, panels_of):
        mine = [r for r in rows if r.get("panel", "") == panel]
        fam: dict[str, list[dict[str, Any]]] = {}
        for r in mine:
            fam.setdefault(r.get("family") or family(r["label"]), []).append(r)
        for name, rs in fam.items():
            rs = sorted(rs, key=lambda r: r["fraction"])
            color, marker, ls = rs[0].get("style") or style(name)
            bars = ax.errorbar([r["tokens_per_s_per_w"] for r in rs], [100 * r["loss"] for r in rs],
                               yerr=[100 * r["loss_std"] for r in rs], marker=marker, color=color, ms=6, lw=1,
                               capsize=2.5, linestyle=ls if len(rs) > 1 else "none", label=name, alpha=0.9)
            handles.setdefault(name, bars)
            if rs[0]["policy"] == "maxnn":
                for r in rs:
                    ax.annotate(f"{100 * r['fraction']:g}%", (r["tokens_per_s_per_w"], 100 * r["loss"]),
                                textcoords="offset points", xytext=(6, 4), fontsize=7, color=color)
        idx = sorted((i for i in star if rows[i].get("panel", "") == panel),
                     key=lambda i: rows[i]["tokens_per_s_per_w"])
        fx = [rows[i]["tokens_per_s_per_w"] for i in idx]
        fy = [100 * rows[i]["loss"] for i in idx]
        # the boundary of what the front dominates (less efficient and more loss: up and to the left)
        (line,) = ax.plot(fx, fy, color="k", lw=2.5, alpha=0.25, zorder=0, drawstyle="steps-pre",
                          label="Pareto front")
        handles.setdefault("Pareto front", line)
        ax.scatter(fx, fy, s=150, facecolors="none", edgecolors="k", linewidths=1.0, zorder=3)
        ax.axhline(budget, color="#555555", lw=0.8, ls="--")
        ax.annotate(f"budget {budget:g} %", (1, budget), xycoords=("axes fraction", "data"), xytext=(-4, 3),
                    textcoords="offset points", ha="right", fontsize=7, color="#555555")
        ax.set_xscale("log")
        ax.autoscale_view()
        log_ticks(ax, "x")
        ax.set_xlabel("tokens/s/W (tokens per joule)")
        ax.set_ylabel("perplexity increase over clean (%)\nmean ± std over noise seeds")
        if len(panels_of) > 1:
            ax.set_title(panel, fontsize=10)
        _style(ax)
    title = f"Accuracy lost vs efficiency\n{subtitle}"
    if len(panels_of) > 1:
        fig.suptitle(title + "; one panel per workload, each with its own Pareto front", fontsize=10)
    else:
        panels[0].set_title(title, fontsize=10)
    if not wide:
        panels[0].legend(fontsize=8, frameon=False, loc="best")
    noise = accuracy["noise"]["programming"]["model"]
    fig.tight_layout(rect=(0, 0.035, 1, 1))
    if wide:
        fig.legend(list(handles.values()), list(handles), fontsize=8, frameon=False, loc="upper left",
                   bbox_to_anchor=(1.0, 0.92), title="placement (lines join digital fractions only)",
                   title_fontsize=8, alignment="left")
    fig.text(0.01, 0.005, f"noise: {noise} programming, out_noise {accuracy['noise']['out_noise']:g}, "
             f"DAC {accuracy['converters']['input_bits']} b, ADC {accuracy['converters']['adc_bits']} b; "
             f"eval {Path(accuracy['eval']['source']).name}" + (f"\n{caveat}" if caveat else ""),
             fontsize=6, color="#666666")
    return _finish(fig, path, **({"bbox_inches": "tight"} if wide else {}))
