"""Trade-off plots drawn from result files only (never imports the engine).

- ``throughput_vs_energy.png``: tokens/s against energy per token, Pareto front marked;
- ``energy_breakdown.png``: each placement's energy per token split by domain and component;
- ``exposure_vs_efficiency.png``: analog exposure against tokens/s/W;
- ``tile_utilisation.png``: mean tile utilisation per NoC node on the mesh layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from arch.safeio import atomic_path

FAMILY_STYLE = {
    "all-analog": ("#d62728", "s"), "all-digital": ("#1f77b4", "D"), "maxnn": ("#2ca02c", "o"),
    "random": ("#9467bd", "^"), "frequency": ("#ff7f0e", "v"), "maxnn-lowest": ("#8c564b", "P"),
    "explicit": ("#7f7f7f", "X"),
}
# energy categories, grouped by domain (shades within a domain; static energy hatched)
CATEGORIES = {
    "analog: converters": ("analog", ("adc", "dac"), "#fc9272", False),
    "analog: array + local units": ("analog", ("array", "local_digital"), "#de2d26", False),
    "analog: static": ("analog", ("static", "local_digital_static"), "#a50f15", True),
    "digital: compute": ("digital", ("mac", "vector"), "#6baed6", False),
    "digital: static": ("digital", ("static",), "#08519c", True),
    "memory: SRAM": ("memory", ("sram",), "#a1d99b", False),
    "memory: DRAM": ("memory", ("dram", "dram_interface"), "#41ab5d", False),
    "memory: static": ("memory", ("sram_static", "dram_static"), "#006d2c", True),
    "NoC: links + routers": ("noc", ("links", "routers"), "#969696", False),
    "NoC: static": ("noc", ("router_static",), "#525252", True),
}


DEFAULT_SCORE = "gate_rows"


def placement_label(policy: str, fraction: float, score: str | None = None) -> str:
    """``all-analog``, ``maxnn 12.5%``; a score-based policy under a non-default MaxNNScore variant
    carries it: ``maxnn[up_rows] 12.5%``. The accuracy side labels its placements the same way."""
    if policy in ("all-analog", "all-digital", "explicit"):
        return policy
    tag = f"[{score}]" if score and score != DEFAULT_SCORE and policy in ("maxnn", "maxnn-lowest") else ""
    return f"{policy}{tag} {100 * fraction:g}%"


def label(run: dict[str, Any]) -> str:
    """The placement label, prefixed with the chip (``a100-gpu: all-digital``) when runs of several chips or a
    baseline share a folder."""
    p = run["placement"]
    text = placement_label(p["policy"], p.get("fraction", 0.0), p.get("score"))
    return f"{run['config']['hw']}: {text}" if run.get("show_hw") else text


def _style(ax) -> None:
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.1)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated (lower x = energy and higher y = throughput are better)."""
    keep = []
    for i, (x, y) in enumerate(points):
        if not any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i):
            keep.append(i)
    return sorted(keep, key=lambda i: points[i][0])


def family(label_text: str) -> str:
    """A label without its fraction: the line a placement is drawn on (``maxnn[up_rows] 25%`` -> ``maxnn[up_rows]``)."""
    return label_text.rsplit(" ", 1)[0] if label_text.endswith("%") else label_text


CHIP_COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d")


def style(fam: str) -> tuple[str, str, str]:
    """(colour, marker, line style): a policy's own; a score variant shares its policy's colour, dashed; a
    family prefixed with a chip (``chip: maxnn``) keeps its policy's marker and takes a colour per chip
    (a fixed palette indexed by the chip name's character sum, so equal names always match), dotted."""
    if ": " in fam:
        chip, rest = fam.split(": ", 1)
        _, marker, _ = style(rest)
        return CHIP_COLOURS[sum(map(ord, chip)) % len(CHIP_COLOURS)], marker, ":"
    base = fam.split("[", 1)[0]
    color, marker = FAMILY_STYLE.get(base, ("k", "o"))
    if fam == base:
        return color, marker, "-"
    variants = ("up_rows", "gate_up_rows", "down_cols", "product")
    variant = fam[len(base) + 1:-1]
    return color, "so^vD"[variants.index(variant) % 5 if variant in variants else 0], "--"


def _families(runs):
    fam: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        fam.setdefault(family(label(r)), []).append(r)
    for rs in fam.values():
        rs.sort(key=lambda r: r["placement"].get("fraction", 0.0))
    return fam


def save_figure(fig, path: str | Path, **save) -> None:
    """Save ``fig`` atomically (format from the suffix) and close it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **save)
    plt.close(fig)


def _finish(fig, path: Path | None, **save):
    """Save and close, or (``path`` None) hand the figure back, e.g. to tests that read its artists."""
    if path is None:
        return fig
    save_figure(fig, path, **save)
    return None


def caveats(runs: list[dict[str, Any]]) -> str:
    """The caveats that apply to these runs, for the foot of every figure."""
    c, tr = runs[0]["config"], runs[0]["trace"]
    out = []
    if tr.get("format") == "synthetic":
        out.append("synthetic routing trace")
    if c.get("scores_synthetic"):
        out.append("synthetic MaxNNScores (no checkpoint)")
    out.append(f"preset figures partly assumed (see {c['hw']}'s YAML comments)")
    return "caveats: " + "; ".join(out)


def _foot(fig, runs) -> None:
    fig.text(0.005, 0.003, caveats(runs), fontsize=6, color="#666666", ha="left", va="bottom")


def _front_overlay(ax, pts: list[tuple[float, float]], idx: list[int]) -> None:
    """The Pareto front: circled points joined by a line (sorted by x) when there are several."""
    fx, fy = zip(*sorted(pts[i] for i in idx))
    label = "Pareto front" if len(idx) > 1 else "Pareto front (one point)"
    if len(idx) > 1:
        ax.plot(fx, fy, color="k", lw=2.5, alpha=0.3, zorder=0, label=label)
        label = None
    ax.scatter(fx, fy, s=160, facecolors="none", edgecolors="k", linewidths=1.0, zorder=3, label=label)


def _subtitle(runs) -> str:
    c = runs[0]["config"]
    chips = ", ".join(dict.fromkeys(r["config"]["hw"] for r in runs))
    return f"{c['model']} on {chips}, {c['mode']}, {runs[0]['metrics']['tokens']:,} tokens"


def feasible(run: dict[str, Any]) -> bool:
    """False when the run is over the folder's area budget (``sim.budget`` marks it)."""
    return run.get("area_budget", {}).get("feasible", True)


def feasible_front(runs: list[dict[str, Any]], pts: list[tuple[float, float]]) -> list[int]:
    """Pareto front among the runs within the area budget (indices into ``runs``)."""
    ok = [i for i, r in enumerate(runs) if feasible(r)]
    return [ok[j] for j in pareto([pts[i] for i in ok])] if ok else []


def _metric_plot(runs: list[dict[str, Any]], ykey: str, ylabel: str, title: str, path: Path | None):
    """y metric against energy per token, one line per placement family, maxnn fractions annotated, the
    Pareto front (lower energy, higher y) among designs within the area budget circled, designs over it
    drawn hollow in grey."""
    fig, ax = plt.subplots(figsize=(7.5, 5.2), dpi=150)
    pts = [(r["metrics"]["energy_per_token_uj"], r["metrics"][ykey]) for r in runs]
    front = feasible_front(runs, pts)
    for policy, rs in _families(runs).items():
        color, marker, ls = style(policy)
        xs = [r["metrics"]["energy_per_token_uj"] for r in rs]
        ys = [r["metrics"][ykey] for r in rs]
        ax.plot(xs, ys, marker=marker, color=color, linestyle=ls if len(rs) > 1 else "none", lw=1, ms=7,
                label=policy, alpha=0.9)
        if policy == "maxnn":
            for r, x, y in zip(rs, xs, ys):
                ax.annotate(f"{100 * r['placement']['fraction']:g}%", (x, y), textcoords="offset points",
                            xytext=(6, 4), fontsize=7, color=color)
    over = [p for r, p in zip(runs, pts) if not feasible(r)]
    if over:
        budget = next(r["area_budget"]["budget_mm2"] for r in runs if not feasible(r))
        ax.scatter(*zip(*over), s=70, color="#333333", linewidths=1.3, zorder=4, marker="x",
                   label=f"over area budget ({budget:,.0f} mm²): infeasible")
    if front:
        _front_overlay(ax, pts, front)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("energy per token (µJ)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\n{_subtitle(runs)}", fontsize=10)
    _style(ax)
    ax.legend(fontsize=8, frameon=False, loc="best")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    _foot(fig, runs)
    return _finish(fig, path)


def plot_throughput_energy(runs: list[dict[str, Any]], path: Path | None = None):
    return _metric_plot(runs, "throughput_tokens_per_s", "throughput (tokens/s)",
                        "Throughput vs energy per token", path)


def plot_area_efficiency(runs: list[dict[str, Any]], path: Path | None = None):
    """tokens/s per mm² of chip footprint against energy per token (needs an area model)."""
    if not all(r["metrics"].get("chip_footprint_mm2", float("nan")) > 0 for r in runs):
        fig, ax = plt.subplots(figsize=(6, 3), dpi=150)
        ax.text(0.5, 0.5, "no area model in the hardware description:\nadd an area: section to plot tokens/s/mm²",
                ha="center", va="center")
        ax.axis("off")
        return _finish(fig, path)
    fp = sorted({round(r["metrics"]["chip_footprint_mm2"], 1) for r in runs})
    area = f"{fp[0]:,.1f} mm² footprint" if len(fp) == 1 else f"{fp[0]:,.0f}–{fp[-1]:,.0f} mm² footprints"
    return _metric_plot(runs, "tokens_per_s_per_mm2", "throughput per chip area (tokens/s/mm²)",
                        f"Throughput per mm² vs energy per token ({area})", path)


def plot_energy_breakdown(runs: list[dict[str, Any]], path: Path | None = None):
    """Each placement's energy per token split into domain categories (static hatched), and its total."""
    runs = sorted(runs, key=lambda r: r["metrics"]["energy_per_token_uj"])
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 0.42 * len(runs) + 2.2), dpi=150, sharey=True,
                                  gridspec_kw={"width_ratios": [3, 1.3]})
    labels = [label(r) for r in runs]
    y = np.arange(len(runs))
    left = np.zeros(len(runs))
    for name, (dom, comps, color, static) in CATEGORIES.items():
        share = np.array([sum(r["energy_pj"].get(dom, {}).get(c, 0.0) for c in comps)
                          / sum(sum(v.values()) for v in r["energy_pj"].values()) for r in runs])
        if not share.any():
            continue
        ax.barh(y, 100 * share, left=100 * left, color=color, label=name, edgecolor="white", linewidth=0.4,
                hatch="////" if static else None)
        left += share
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of energy (%); hatched: static (power x time)")
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.legend(fontsize=7, frameon=False, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.9 / (len(runs) + 4)))
    totals = [r["metrics"]["energy_per_token_uj"] for r in runs]
    ax2.barh(y, totals, color="#555555")
    ax2.set_xscale("log")
    ax2.set_xlabel("energy per token (µJ)")
    for yi, t in zip(y, totals):
        ax2.text(t, yi, f" {t:,.0f}" if t >= 100 else f" {t:.3g}", va="center", fontsize=7)
    ax.set_title(f"Energy breakdown per placement — {_subtitle(runs)}", fontsize=10, loc="left")
    for a_ in (ax, ax2):
        for side in ("top", "right"):
            a_.spines[side].set_visible(False)
    fig.tight_layout()
    _foot(fig, runs)
    return _finish(fig, path, bbox_inches="tight")


def plot_exposure_efficiency(runs: list[dict[str, Any]], path: Path | None = None):
    fig, ax = plt.subplots(figsize=(7.5, 5.2), dpi=150)
    pts = [(100 * r["metrics"]["analog_exposure_macs"], r["metrics"]["tokens_per_s_per_w"]) for r in runs]
    for policy, rs in _families(runs).items():
        color, marker, ls = style(policy)
        xs = [100 * r["metrics"]["analog_exposure_macs"] for r in rs]
        ys = [r["metrics"]["tokens_per_s_per_w"] for r in rs]
        ax.plot(xs, ys, marker=marker, color=color, linestyle=ls if len(rs) > 1 else "none", lw=1, ms=7,
                label=policy)
    _front_overlay(ax, pts, pareto(pts))        # lower exposure and higher tokens/s/W are better
    ax.set_yscale("log")
    ax.set_xlabel("analog exposure: routed-expert MACs on analog tiles (%)")
    ax.set_ylabel("tokens/s/W (tokens per joule)")
    ax.set_title(f"Analog exposure vs efficiency\n{_subtitle(runs)}", fontsize=10)
    _style(ax)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    _foot(fig, runs)
    return _finish(fig, path)


def plot_tile_heatmap(runs: list[dict[str, Any]], path: Path | None = None):
    chosen = [r for r in runs if r["placement"]["policy"] == "all-analog"][:1] + \
             [r for r in runs if r["placement"]["policy"] == "maxnn" and r["placement"].get("fraction") in (0.125, 0.25)]
    chosen = chosen or runs[:1]
    noc = chosen[0]["noc"]
    if noc["topology"] != "mesh":
        fig, ax = plt.subplots(figsize=(6, 3), dpi=150)
        ax.text(0.5, 0.5, "tile heat map is drawn for mesh NoCs only", ha="center", va="center")
        ax.axis("off")
        return _finish(fig, path)
    W, H = noc["width"], noc["height"]
    grids = []
    for r in chosen:
        g = np.full((H, W), np.nan)
        for node, u in r["tile_utilisation_by_node"].items():
            x, y = (int(v) for v in node.strip("()").split(","))
            g[y, x] = 100 * u
        grids.append(g)
    fig, axes = plt.subplots(1, len(chosen), figsize=(4.2 * len(chosen) + 0.8, 3.9), dpi=150, squeeze=False)
    vmax = max(float(np.nanmax(g)) if np.isfinite(g).any() else 0.0 for g in grids) or 1e-9
    norm = matplotlib.colors.Normalize(vmin=0, vmax=vmax)         # one scale for every panel
    for ax, r, g in zip(axes[0], chosen, grids):
        im = ax.imshow(g, cmap="magma", norm=norm, origin="upper")
        ax.set_title(label(r), fontsize=9)
        ax.set_xticks(range(W))
        ax.set_yticks(range(H))
        ax.tick_params(labelsize=6)
        for name, mark in (("simd_node", "S"), ("dram_node", "D")):
            x, y = (int(v) for v in r["noc"][name].strip("()").split(","))
            ax.text(x, y, mark, ha="center", va="center", color="cyan", fontsize=8, fontweight="bold")
        ax.set_xlabel("mesh x", fontsize=7)
        ax.set_ylabel("mesh y", fontsize=7)
    fig.suptitle(f"Mean tile utilisation per NoC node on the {W}x{H} mesh (S: SIMD core, D: DRAM controller)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.03, 0.92, 1))
    cb = fig.colorbar(im, ax=list(axes[0]), shrink=0.8, format="%.3g")
    cb.set_label("mean tile utilisation (%), one scale for all panels", fontsize=7)
    cb.ax.tick_params(labelsize=6)
    _foot(fig, runs)
    return _finish(fig, path, bbox_inches="tight")


PLOTS = {
    "throughput_vs_energy.png": plot_throughput_energy,
    "area_efficiency.png": plot_area_efficiency,
    "energy_breakdown.png": plot_energy_breakdown,
    "exposure_vs_efficiency.png": plot_exposure_efficiency,
    "tile_utilisation.png": plot_tile_heatmap,
}
