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
from ..result import fmt_number, restore_nulls
from .plots import _finish, _fraction_notes, _style, family, family_label, feasible, label, log_ticks, pareto, run_style, style

ACCURACY_FILE = "accuracy.json"
DEFAULT_MAX_LOSS = 0.01          # 1 % relative perplexity increase


def load_accuracy(out_dir: str | Path, runs: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """``accuracy.json`` of a compare folder, or the accuracy that sweep points carry in their results."""
    path = Path(out_dir) / ACCURACY_FILE
    if path.is_file():
        return restore_nulls(read_json(path, "accuracy results", allow_nan=True))   # null figures: NaN again
    carried = [r for r in runs or [] if "accuracy" in r]
    if not carried:
        return None
    return {**carried[0]["accuracy"]["meta"], "placements": [], "per_run": True}


def axis(accuracy: dict[str, Any]) -> dict[str, Any]:
    """The accuracy axis: the lm-eval task accuracy drop when ``accuracy`` holds task results (``compare
    --tasks``), else the relative perplexity increase. ``rows``: per placement label, the loss (a fraction: 0.01
    is 1 % perplexity, or 1 accuracy point), its sample std over the noise seeds and its per-seed values.

    The task loss of one seed is the mean over tasks of (clean − noisy) of each task's accuracy (``acc``, else
    ``acc_norm``; tasks with neither, e.g. rolling log-likelihood, stay in ``accuracy.json`` off the axis):
    accuracy points lost against the exact-weight model."""
    t = accuracy.get("tasks") or {}
    primary: dict[str, str] = {}
    for task, metric in t.get("metrics", []):
        if metric == "acc" or (metric == "acc_norm" and task not in primary):
            primary[task] = metric
    if not primary or (accuracy.get("placements") and accuracy.get("accuracy_axis") == "perplexity"):
        return {"kind": "perplexity", "unit": " %", "what": "perplexity", "name": "perplexity",
                "rows": {p["label"]: (p["mean"]["rel_perplexity_increase"], p["std"]["rel_perplexity_increase"],
                                      (p.get("per_seed") or {}).get("rel_perplexity_increase"))
                         for p in accuracy.get("placements", [])}}
    rows = {}
    for r in t["placements"]:
        per = [sum(t["clean"][k][m] - r["per_seed"][k][m][s] for k, m in primary.items()) / len(primary)
               for s in range(len(t["noise_seeds"]))]
        mean = sum(per) / len(per)
        std = (sum((x - mean) ** 2 for x in per) / (len(per) - 1)) ** 0.5 if len(per) > 1 else 0.0
        rows[r["label"]] = (mean, std, per)
    names = ", ".join(f"{k} {m}" for k, m in primary.items())
    return {"kind": "tasks", "unit": " points", "what": "task accuracy drop", "name": f"lm-eval accuracy ({names})",
            "primary": primary, "clean": sum(t["clean"][k][m] for k, m in primary.items()) / len(primary),
            "rows": rows}


def join(runs: list[dict[str, Any]], accuracy: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per placement measured on both sides, in the cost runs' order. ``loss`` is on :func:`axis`;
    the perplexity columns are there when an ``--eval`` file was measured (else None)."""
    acc = {p["label"]: p for p in accuracy.get("placements", [])}
    ax = axis(accuracy)
    designs = axes.designs(runs)
    rows = []
    for r in runs:
        a = r["accuracy"]["placement"] if "accuracy" in r else acc.get(label(r))
        on_axis = ax["rows"].get(label(r)) if "accuracy" not in r else \
            (a["mean"]["rel_perplexity_increase"], a["std"]["rel_perplexity_increase"],
             (a.get("per_seed") or {}).get("rel_perplexity_increase"))
        if on_axis is None:
            continue
        m = r["metrics"]

        def pp(stat: str, key: str) -> float | None:
            return a[stat][key] if a else None

        rows.append({"label": label(r), "policy": r["placement"]["policy"],
                     "fraction": r["placement"].get("fraction", 0.0),
                     "tokens_per_s": m["throughput_tokens_per_s"], "energy_per_token_uj": m["energy_per_token_uj"],
                     "tokens_per_s_per_w": m["tokens_per_s_per_w"],
                     "loss": on_axis[0], "loss_std": on_axis[1], "loss_per_seed": on_axis[2],
                     "delta_bits": pp("mean", "delta_bits_per_token"), "delta_bits_std": pp("std", "delta_bits_per_token"),
                     "kl": pp("mean", "kl_nats"), "kl_std": pp("std", "kl_nats"),
                     "top1": pp("mean", "top1_agreement"), "routes_changed": pp("mean", "routes_changed"),
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


def budget_of(accuracy: dict[str, Any]) -> float:
    """The accuracy budget on :func:`axis` (a fraction: perplexity increase, or accuracy points / 100)."""
    if axis(accuracy)["kind"] == "tasks":
        return accuracy.get("max_loss_task_points", 100 * DEFAULT_MAX_LOSS) / 100
    return accuracy.get("max_loss_rel_perplexity", DEFAULT_MAX_LOSS)


def answer(rows: list[dict[str, Any]], accuracy: dict[str, Any]) -> list[str]:
    """Three to five plain sentences computed from the joined table."""
    budget = budget_of(accuracy)
    ax = axis(accuracy)
    u, what = ax["unit"], ax["what"]
    by = {r["label"]: r for r in rows}
    n = accuracy["noise_seeds"]
    if ax["kind"] == "tasks":
        t = accuracy["tasks"]
        lim = "" if t.get("limit") is None else f", --limit {t['limit']:g} examples per task"
        head = (f"Accuracy budget: lm-eval task accuracy at most {100 * budget:g} points below the clean model's "
                f"({100 * ax['clean']:.4g} %, mean of {', '.join(f'{k} {m}' for k, m in ax['primary'].items())}; "
                f"lm-eval {t['lm_eval_version']}{lim}) with {n} noise seeds; a placement is within it when the "
                "one-sided 95 % upper confidence bound of its accuracy drop (mean + t·s/√n over the seeds) is")
    else:
        ev = accuracy["eval"]
        head = (f"Accuracy budget: perplexity at most {100 * budget:g} % above the clean model's "
                f"({accuracy['clean']['perplexity']:.4g}), measured on {ev['predicted_tokens']:,} tokens of "
                f"`{Path(ev['source']).name}`{_selection(ev)} with {n} noise seeds; a placement is within it when the "
                "one-sided 95 % upper confidence bound of its perplexity increase (mean + t·s/√n over the seeds) is")
    out = [head + (" — with one seed there is no error bar, so it is judged on the mean alone (use --noise-seeds 2 or "
                   "more for a bound)." if n < 2 else ".")]
    for r in rows:
        r["loss_ucb"] = seeds.upper_bound(r["loss"], r["loss_std"], n) if n > 1 else r["loss"]
    ok = [r for r in rows if r["loss_ucb"] <= budget and r.get("feasible", True)]
    if ok:
        best = max(ok, key=lambda r: r["tokens_per_s_per_w"])
        s = (f"The most efficient placement within it is **{best['label']}**: "
             f"{fmt_number(best['tokens_per_s_per_w'])} tokens/s/W at {100 * best['loss']:+.3g}{u} "
             f"(± {100 * best['loss_std']:.2g}; upper bound {100 * best['loss_ucb']:+.3g}{u}) {what}")
        ratios = [f"{best['tokens_per_s_per_w'] / by[ref]['tokens_per_s_per_w']:.3g}× {ref}'s efficiency"
                  for ref in ("all-analog", "all-digital") if ref in by and ref != best["label"]]
        out.append(s + (", " + " and ".join(ratios) if ratios else "") + ".")
        near = [r for r in rows if r["loss"] <= budget < r["loss_ucb"] and r.get("feasible", True)
                and r["tokens_per_s_per_w"] > best["tokens_per_s_per_w"]]
        if near:
            sep = "; " if any(", " in r["label"] for r in near) else ", "
            out.append("Within the budget on its mean but not on its upper bound, so not chosen: "
                       + sep.join(f"{r['label']} ({100 * r['loss']:+.3g}{u}, bound {100 * r['loss_ucb']:+.3g}{u})"
                                  for r in near) + ".")
    else:
        least = min(rows, key=lambda r: r["loss"])
        out.append(f"No measured placement stays within it; the least damaging is **{least['label']}** at "
                   f"{100 * least['loss']:+.3g}{u} {what}.")
    if "all-analog" in by:
        a = by["all-analog"]
        out.append(f"All-analog costs {100 * a['loss']:+.3g}{u} (± {100 * a['loss_std']:.2g}) {what} at "
                   f"{fmt_number(a['tokens_per_s_per_w'])} tokens/s/W.")
    pf = [rows[i]["label"] for i in front(rows)]
    out.append(f"On the accuracy–efficiency Pareto front: {axes.join_labels(pf)}.")
    for f in (0.125, 0.25):
        trio = [by.get(f"{p} {100 * f:g}%") for p in ("maxnn", "random", "maxnn-lowest")]
        if all(trio):
            verb = "accuracy drops" if ax["kind"] == "tasks" else "perplexity rises"
            out.append(f"At {100 * f:g} % digital experts, {verb} {100 * trio[0]['loss']:+.3g}{u} "
                       f"(± {100 * trio[0]['loss_std']:.2g}) under maxnn, {100 * trio[1]['loss']:+.3g}{u} under "
                       f"random and {100 * trio[2]['loss']:+.3g}{u} under maxnn-lowest.")
            break
    out += [x for f in (0.125, 0.25)
            for x in [separation(by, f"maxnn {100 * f:g}%", f"random {100 * f:g}%", ax)] if x]
    return out


def separation(by: dict[str, dict[str, Any]], a: str, b: str, ax: dict[str, Any] | None = None) -> str | None:
    """One sentence on the paired difference of two placements' loss on the accuracy axis ``ax`` (perplexity
    increase by default) over common seeds (:func:`sim.report.seeds.paired`): its sign and standard error when
    separable at 95 %, else "not separable" with the seed count that would separate a difference of this size."""
    ra, rb = by.get(a), by.get(b)
    if not ra or not rb or not ra.get("loss_per_seed") or not rb.get("loss_per_seed"):
        return None
    p = seeds.paired(ra["loss_per_seed"], rb["loss_per_seed"])
    if p["n"] < 2:
        return None
    u, name = (ax["unit"], ax["what"]) if ax else (" %", "perplexity")
    diff = (f"{a} − {b}: {100 * p['mean']:+.3g}{u} {name} (SE {100 * p['se']:.2g}, paired over {p['n']} "
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


def _pm(v: float | None, e: float | None, fmt: str, scale: float = 1.0) -> str:
    return "n/a" if v is None else f"{scale * v:{fmt}} ± {scale * (e or 0.0):{fmt[1:] if fmt[0] == '+' else fmt}}"


def table(rows: list[dict[str, Any]], accuracy: dict[str, Any] | None = None) -> list[str]:
    """Markdown table lines, Pareto-front rows starred; the accuracy axis (:func:`axis`) first."""
    star = set(front(rows))
    ax = axis(accuracy) if accuracy else {"kind": "perplexity"}
    first = "task accuracy drop (points)" if ax["kind"] == "tasks" else "perplexity increase (%)"
    extra = ax["kind"] == "tasks" and any(r["kl"] is not None for r in rows)
    lines = [f"| placement | tokens/s | energy/token (µJ) | tokens/s/W | {first} | "
             + ("perplexity increase (%) | " if extra else "")
             + "Δ bits/token | KL (nats) | top-1 agreement | routes changed (%) |",
             "|---|---:|---:|---:|---:|" + ("---:|" if extra else "") + "---:|---:|---:|---:|"]
    ppl = {p["label"]: p for p in (accuracy or {}).get("placements", [])} if extra else {}
    for i, r in enumerate(rows):
        p = ppl.get(r["label"])
        mid = (f"{_pm(p['mean']['rel_perplexity_increase'], p['std']['rel_perplexity_increase'], '+.3f', 100)} | "
               if p else "n/a | ") if extra else ""
        top1 = "n/a" if r["top1"] is None else f"{r['top1']:.4f}"
        moved = "n/a" if r["routes_changed"] is None else f"{100 * r['routes_changed']:.2f}"
        lines.append(
            f"| {r['label']}{' ★' if i in star else ''} | {fmt_number(r['tokens_per_s'])} | "
            f"{fmt_number(r['energy_per_token_uj'])} | {fmt_number(r['tokens_per_s_per_w'])} | "
            f"{_pm(r['loss'], r['loss_std'], '+.3f', 100)} | {mid}{_pm(r['delta_bits'], r['delta_bits_std'], '+.4f')} | "
            f"{_pm(r['kl'], r['kl_std'], '.4f')} | {top1} | {moved} |")
    return lines


def write_csv(rows: list[dict[str, Any]], path: Path, accuracy: dict[str, Any] | None = None) -> None:
    """``tradeoff.csv``: the joined table; the accuracy-axis columns are named by their kind (task accuracy drop
    as a fraction of 1, or relative perplexity increase); empty cells where a measure was not taken."""
    tasks = bool(accuracy) and axis(accuracy)["kind"] == "tasks"
    loss = "task_accuracy_drop" if tasks else "rel_perplexity_increase"
    cols = [("label", "label"), ("policy", "policy"), ("fraction", "fraction"), ("tokens_per_s", "tokens_per_s"),
            ("energy_per_token_uj", "energy_per_token_uj"), ("tokens_per_s_per_w", "tokens_per_s_per_w"),
            ("loss", f"{loss}_mean"), ("loss_std", f"{loss}_std"),
            ("delta_bits", "delta_bits_per_token_mean"), ("delta_bits_std", "delta_bits_per_token_std"),
            ("kl", "kl_nats_mean"), ("kl_std", "kl_nats_std"), ("top1", "top1_agreement_mean"),
            ("routes_changed", "routes_changed_share_mean")]

    def cell(v: Any) -> str:
        return "" if v is None else (v if isinstance(v, str) else f"{v:.8g}")

    lines = [",".join(c for _, c in cols)]
    lines += [",".join(cell(r[k]) for k, _ in cols) for r in rows]
    write_text(path, "\n".join(lines) + "\n")


def plot_accuracy_efficiency(rows: list[dict[str, Any]], accuracy: dict[str, Any], subtitle: str,
                             path: Path | None, caveat: str = ""):
    """Perplexity increase against tokens/s/W; each policy a line over its fractions; front marked."""
    from .plots import _grid

    panels_of = list(dict.fromkeys(r.get("panel", "") for r in rows))
    fig, panels = _grid(len(panels_of), (7.8, 5.2), (6.2, 4.6))
    wide = len(panels_of) > 1 or any(", " in r.get("family", "") for r in rows)
    handles: dict[str, Any] = {}
    budget = 100 * budget_of(accuracy)
    ax_kind = axis(accuracy)
    unit = ax_kind["unit"].strip()
    star = set(front(rows))
    for ax, panel in zip(panels, panels_of):
        mine = [r for r in rows if r.get("panel", "") == panel]
        notes: list[tuple[float, float, str, str]] = []
        fam: dict[str, list[dict[str, Any]]] = {}
        for r in mine:
            fam.setdefault(r.get("family") or family(r["label"]), []).append(r)
        for name, rs in fam.items():
            rs = sorted(rs, key=lambda r: r["fraction"])
            color, marker, ls = rs[0].get("style") or style(name)
            extra = ({"mfc": "none", "mew": 1.8, "ms": 11, "zorder": 4} if rs[0]["policy"] == "all-digital" else
                     {"ms": 6, "zorder": 3})        # all-digital drawn hollow and larger: visible over maxnn 100 %
            bars = ax.errorbar([r["tokens_per_s_per_w"] for r in rs], [100 * r["loss"] for r in rs],
                               yerr=[100 * r["loss_std"] for r in rs], marker=marker, color=color, lw=1,
                               capsize=2.5, linestyle=ls if len(rs) > 1 else "none", label=name, alpha=0.9, **extra)
            handles.setdefault(name, bars)
            if rs[0]["policy"] == "maxnn":
                notes += [(r["tokens_per_s_per_w"], 100 * r["loss"], f"{100 * r['fraction']:g}%", color) for r in rs]
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
        ax.annotate(f"budget {budget:g} {unit}", (1, budget), xycoords=("axes fraction", "data"), xytext=(-4, 3),
                    textcoords="offset points", ha="right", fontsize=7, color="#555555")
        ax.set_xscale("log")
        ax.autoscale_view()
        log_ticks(ax, "x")
        _fraction_notes(ax, notes)
        ax.set_xlabel("tokens/s/W (tokens per joule)")
        ax.set_ylabel(("task accuracy drop from clean (points)" if ax_kind["kind"] == "tasks" else
                       "perplexity increase over clean (%)") + "\nmean ± std over noise seeds")
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
             f"DAC {accuracy['converters']['input_bits']} b, ADC {accuracy['converters']['adc_bits']} b"
             + (f"; eval {Path(accuracy['eval']['source']).name}" if accuracy.get("eval") else "")
             + (f"; {ax_kind['name']}" if ax_kind["kind"] == "tasks" else "") + (f"\n{caveat}" if caveat else ""),
             fontsize=6, color="#666666")
    return _finish(fig, path, **({"bbox_inches": "tight"} if wide else {}))
