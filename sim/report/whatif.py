"""What-if report: ratio tables, a tornado chart and the sentences that open ``whatif.md``.

Reads only ``whatif.json``'s dictionary (written by ``hetmoe whatif``). A ratio is maxnn's tokens/s/W over
a reference placement's at the same parameter value (the baseline system's: at its default, unless the
parameter is a run option that applies to it too).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from arch.safeio import atomic_open, write_text

from ..result import fmt_number, restore_nulls  # noqa: E402
from .plots import log_ticks, save_figure  # noqa: E402

REFS = ("all-analog", "all-digital", "baseline")


def ratios(data: dict[str, Any]) -> dict[tuple[str, Any], dict[str, float]]:
    """(param, value) -> {reference: maxnn tokens/s/W / reference's}; ("default", None) included."""
    by: dict[tuple[str, Any], dict[str, float]] = {}
    for r in data["rows"]:
        by.setdefault((r["param"], r["value"]), {})[r["placement"]] = r["tokens_per_s_per_w"]
    out = {}
    for k, tpw in by.items():
        m = tpw.get(data["maxnn"])
        out[k] = {ref: m / tpw[ref] for ref in REFS if m is not None and tpw.get(ref)}
    return out


def spans(data: dict[str, Any], ref: str) -> list[tuple[str, float, float, Any, Any]]:
    """Per varied parameter: (param, lowest ratio, highest ratio, value at lowest, value at highest) of maxnn
    against ``ref``, widest span (max / min) first."""
    rat = ratios(data)
    out = []
    for key, values in data["varied"].items():
        pts = [(rat[(key, v)][ref], v) for v in values if ref in rat.get((key, v), {})]
        if pts:
            lo, hi = min(pts), max(pts)
            out.append((key, lo[0], hi[0], lo[1], hi[1]))
    return sorted(out, key=lambda s: s[2] / s[1] if s[1] > 0 else float("inf"), reverse=True)


def flat_knobs(data: dict[str, Any], rel: float = 1e-6) -> list[tuple[str, list[Any], str]]:
    """Varied parameters that move no placement's tokens/s/W or tokens/s: (param, values, why or ""). The why
    comes from the runs' ``bottleneck`` dicts when the rows carry them (``hetmoe whatif`` keeps each run's)."""
    out = []
    for key, values in data["varied"].items():
        rows = [r for r in data["rows"] if r["param"] == key]
        by: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            by.setdefault(r["placement"], []).append(r)
        if not rows or not all(_same(r[m] for r in rs) for rs in by.values()
                               for m in ("tokens_per_s_per_w", "throughput_tokens_per_s")):
            continue
        out.append((key, list(values), _why_flat(key, by.get(data["maxnn"], []), data["maxnn"])))
    return out


def _same(xs, rel: float = 1e-6) -> bool:
    xs = [float(x) for x in xs]
    return all(abs(x - xs[0]) <= rel * max(abs(xs[0]), 1e-300) for x in xs)


def _why_flat(key: str, rows: list[dict[str, Any]], who: str) -> str:
    bs = [r.get("bottleneck") or {} for r in rows]
    if not bs or not all(bs):
        return ""
    eff = [b.get("effective_stream_gbps") for b in bs]
    if "dram" in key and "bandwidth" in key and all(e is not None for e in eff) and _same(eff):
        path = [b.get("stream_path_gbps") for b in bs]
        peaks = [b.get("dram_peak_gbps") for b in bs]
        if all(p is not None for p in path + peaks) and all(p < q for p, q in zip(path, peaks)):
            return (f"{who}'s weight streams get {fmt_number(eff[0])} Gbit/s at every value: the NoC path "
                    f"({fmt_number(path[0])} Gbit/s), not the DRAM, limits them")
        return f"{who}'s weight streams get {fmt_number(eff[0])} Gbit/s at every value"
    res = {b.get("binding_resource") for b in bs}
    if len(res) == 1 and None not in res:
        return f"{who} is bound by {str(res.pop()).replace('_', ' ')} at every value"
    return ""


def load_whatif(out_dir: str | Path, runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """``OUT/whatif/whatif.json`` when it is of the runs' first chip and model (None otherwise), with
    ``source`` set to its report's path relative to OUT."""
    path = Path(out_dir) / "whatif" / "whatif.json"
    if not path.is_file() or not runs:
        return None
    try:
        data = restore_nulls(json.loads(path.read_text()))    # null (undefined) figures: NaN again
    except (OSError, ValueError):
        return None
    main = [r for r in runs if r.get("role") != "baseline"] or runs
    model = (main[0].get("model_summary") or {}).get("name", main[0]["config"].get("model"))
    if data.get("hw") != main[0]["config"]["hw"] or data.get("model") not in (model, main[0]["config"].get("model")):
        return None
    return {**data, "source": "whatif/whatif.md"}


def sentences(data: dict[str, Any]) -> list[str]:
    rat = ratios(data)
    d = rat.get(("default", None), {})
    mx = data["maxnn"]
    out = []
    if d:
        parts = [f"{100 * d[ref]:.3g} % of {ref}'s" if d[ref] < 1 else f"{d[ref]:.3g}× {ref}'s"
                 for ref in REFS if ref in d]
        out.append(f"At the defaults of {data['hw']}, {mx} reaches " + ", ".join(parts) + " tokens/s/W.")
    flat = flat_knobs(data)
    sp = [s for s in spans(data, "all-analog") if s[0] not in {f[0] for f in flat}]
    if sp:
        key, lo, hi, vlo, vhi = sp[0]
        out.append(f"Of the parameters varied, {key} moves {mx}/all-analog most: from {100 * lo:.3g} % (at "
                   f"{vlo}) to {100 * hi:.3g} % (at {vhi})"
                   + (f"; then {', '.join(s[0] for s in sp[1:])}." if len(sp) > 1 else "."))
    be = data.get("break_even")
    if be:
        s = be["sentence"]
        if be.get("at_value") and be.get("default"):
            a, b = be["at_value"], be["default"]
            if a["chip_footprint_mm2"] == a["chip_footprint_mm2"] and b["chip_footprint_mm2"] > 0:
                add = a["chip_footprint_mm2"] - b["chip_footprint_mm2"]
                s += (f" The chip then has a {a['chip_footprint_mm2']:,.1f} mm² footprint: {add:+,.1f} mm² "
                      f"({100 * add / b['chip_footprint_mm2']:+.1f} % of the default die).")
        out.append(s)
    for key, values, why in flat:
        out.append(f"{key} does not move the result: every placement's tokens/s/W and tokens/s are the same at "
                   + ", ".join(str(v) for v in values) + (f"; {why}." if why else "."))
    return out


def write_csv(data: dict[str, Any], path: Path) -> None:
    rat = ratios(data)
    fields = ["param", "value", "placement", "hw", "tokens_per_s_per_w", "energy_per_token_uj",
              "throughput_tokens_per_s", "chip_footprint_mm2", "tokens_per_s_per_mm2",
              *(f"maxnn_over_{ref}" for ref in REFS)]
    with atomic_open(path) as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in data["rows"]:
            extra = {f"maxnn_over_{k}": v for k, v in rat.get((r["param"], r["value"]), {}).items()}
            w.writerow({**r, **extra})


def plot_tornado(data: dict[str, Any], path: Path | None):
    """One panel per reference: a bar per varied parameter spanning maxnn's ratio over the values tried,
    the default's ratio as a vertical line, the values at the bar ends written beside them."""
    refs = [ref for ref in REFS if spans(data, ref)]
    default = ratios(data).get(("default", None), {})
    rows = max((len(spans(data, ref)) for ref in refs), default=1)
    fig, axes = plt.subplots(1, max(1, len(refs)), figsize=(4.6 * max(1, len(refs)), 1.0 + 0.55 * rows + 1.0),
                             dpi=150, squeeze=False)
    for ax, ref in zip(axes[0], refs):
        sp = list(reversed(spans(data, ref)))
        for i, (key, lo, hi, vlo, vhi) in enumerate(sp):
            ax.barh(i, hi - lo, left=lo, height=0.5, color="#2ca02c", alpha=0.8)
            ax.plot([lo, hi], [i, i], "|", color="k", ms=12, mew=1.2)
            ax.annotate(f"{vlo}", (lo, i), xytext=(-3, 0), textcoords="offset points", ha="right", va="center",
                        fontsize=7)
            ax.annotate(f"{vhi}", (hi, i), xytext=(3, 0), textcoords="offset points", ha="left", va="center",
                        fontsize=7)
        ax.set_yticks(range(len(sp)), [s[0] for s in sp], fontsize=7)
        xs = [v for s in sp for v in s[1:3]] + ([default[ref]] if ref in default else [])
        if ref in default:
            ax.axvline(default[ref], color="#d62728", lw=1, ls="--", zorder=0)
            ax.annotate(f"default {default[ref]:.3g}", (default[ref], len(sp) - 0.45), fontsize=7, ha="center",
                        va="bottom", color="#d62728")
        ax.set_xscale("log")
        ax.set_xlim(min(xs) / 1.6, max(xs) * 1.6)
        log_ticks(ax, "x")          # two to six round numbers when the range spans less than a few decades
        ax.set_xlabel(f"{data['maxnn']} tokens/s/W ÷ {ref}'s", fontsize=8)
        ax.set_ylim(-0.6, len(sp) - 0.1 + 0.5)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle(f"What moves {data['maxnn']}'s efficiency ratio — {data['model']} on {data['hw']}"
                 + (f" (baseline {data['baseline']})" if data.get("baseline") else ""), fontsize=9)
    fig.tight_layout()
    if path is None:
        return fig
    save_figure(fig, path)
    return None


def write_whatif(data: dict[str, Any], out_dir: str | Path) -> Path:
    out = Path(out_dir)
    write_csv(data, out / "whatif.csv")
    plot_tornado(data, out / "tornado.png")
    rat = ratios(data)
    lines = [f"# What if: {data['model']} on {data['hw']}", "", *sentences(data), "",
             "## Ratios of maxnn's tokens/s/W", "",
             "| parameter | value | " + " | ".join(f"÷ {ref}" for ref in REFS) + " |", "|---|---:|---:|---:|---:|"]
    for (k, v), r in rat.items():
        lines.append(f"| {k} | {'' if v is None else v} | "
                     + " | ".join(fmt_number(r[ref]) if ref in r else "" for ref in REFS) + " |")
    lines += ["", "## Every run", "", "| parameter | value | placement | tokens/s/W | energy/token (µJ) | tokens/s | "
              "chip area (mm²) | tokens/s/mm² |", "|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in data["rows"]:
        lines.append(f"| {r['param']} | {'' if r['value'] is None else r['value']} | {r['placement']} | "
                     f"{fmt_number(r['tokens_per_s_per_w'])} | {fmt_number(r['energy_per_token_uj'])} | "
                     f"{fmt_number(r['throughput_tokens_per_s'])} | {fmt_number(r['chip_footprint_mm2'])} | "
                     f"{fmt_number(r['tokens_per_s_per_mm2'])} |")
    be = data.get("break_even")
    if be:
        lines += ["", "## Break-even", "", be["sentence"], "",
                  "| " + be["key"] + " | maxnn ÷ target − 1 |", "|---:|---:|"]
        lines += [f"| {fmt_number(v)} | {y:+.4f} |" for v, y in be["evaluations"]]
    lines += ["", "![Tornado chart](tornado.png)", ""]
    path = out / "whatif.md"
    write_text(path, "\n".join(lines))
    return path
