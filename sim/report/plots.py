"""Trade-off plots drawn from result files only (never imports the engine).

- ``throughput_vs_energy.png``: tokens/s against energy per token, Pareto front marked;
- ``energy_breakdown.png``: each placement's energy per token split by domain and component;
- ``exposure_vs_efficiency.png``: analog exposure against tokens/s/W;
- ``tile_utilisation.png``: mean tile utilisation per NoC node on the mesh layout.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import patheffects

from arch.safeio import atomic_path

from . import axes

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
POLICY_ORDER = {"all-analog": 0, "maxnn": 1, "frequency": 2, "random": 3, "maxnn-lowest": 4, "explicit": 5,
                "all-digital": 6}


def placement_label(policy: str, fraction: float, score: str | None = None) -> str:
    """``all-analog``, ``maxnn 12.5%``; a score-based policy under a non-default MaxNNScore variant
    carries it: ``maxnn[up_rows] 12.5%``. The accuracy side labels its placements the same way."""
    if policy in ("all-analog", "all-digital", "explicit"):
        return policy
    tag = f"[{score}]" if score and score != DEFAULT_SCORE and policy in ("maxnn", "maxnn-lowest") else ""
    return f"{policy}{tag} {100 * fraction:g}%"


def label(run: dict[str, Any], workload: bool = True) -> str:
    """The placement label, prefixed with the chip (``a100-gpu: all-digital``) when runs of several chips or a
    baseline share a folder, and followed by the run's value of every swept axis of its folder
    (``maxnn 12.5%, sram.capacity_mib=512, decode``) once :func:`sim.report.axes.annotate` has named them
    (``workload`` False: without the mode and other workload values, for text that names them already)."""
    p = run["placement"]
    text = placement_label(p["policy"], p.get("fraction", 0.0), p.get("score"))
    swept = run.get("swept") or {}
    if run.get("show_hw") or "hw" in swept:
        text = f"{run['config']['hw']}: {text}"
    extra = [v for k, v in swept.items() if k != "hw" and (workload or k not in axes.WORKLOAD)]
    return ", ".join([text, *extra])


def family_label(run: dict[str, Any], with_workload: bool = False) -> str:
    """A run's line: its label without the fraction (and without the workload values its panel names):
    ``maxnn``, ``maxnn[up_rows]``, ``a100-gpu: all-digital``, ``frequency, sram.capacity_mib=512``."""
    p = run["placement"]
    text = family(placement_label(p["policy"], p.get("fraction", 0.0), p.get("score")))
    swept = run.get("swept") or {}
    if run.get("show_hw") or "hw" in swept:
        text = f"{run['config']['hw']}: {text}"
    extra = [v for k, v in swept.items() if k != "hw" and (with_workload or k not in axes.WORKLOAD)]
    return ", ".join([text, *extra])


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


def _policy_family(run: dict[str, Any]) -> str:
    p = run["placement"]
    return family(placement_label(p["policy"], p.get("fraction", 0.0), p.get("score")))


def design_colours(n: int) -> list[str]:
    """``n`` colours for the designs of a folder, in design order: a light-to-dark ramp (viridis, its pale
    yellow end left out), so a swept number reads as an ordered scale and never as one of the policies'."""
    if n <= 1:
        return ["#440154"]
    cmap = matplotlib.colormaps["viridis"]
    return [matplotlib.colors.to_hex(cmap(0.82 * i / (n - 1))) for i in range(n)]


def run_style(run: dict[str, Any], designs: list[tuple]) -> tuple[str, str, str]:
    """(colour, marker, line style) of a run's line. One design in the folder: :func:`style` of its family
    (colour per policy). Several (chips, swept hw overrides): colour per design (:func:`design_colours`),
    marker per policy, dashed for a score variant; a baseline keeps its chip's colour, dotted."""
    fam = _policy_family(run)
    if run.get("role") == "baseline" or len(designs) < 2:
        return style(f"{run['config']['hw']}: {fam}" if run.get("show_hw") else fam)
    key = axes.design_key(run)
    colour = design_colours(len(designs))[designs.index(key)] if key in designs else "k"
    _, marker, ls = style(fam)
    return colour, marker, "--" if ls == "--" else "-"


def log_ticks(ax, which: str = "both") -> None:
    """Legible ticks on a log axis: across three decades or more, the decades only; below that, two to six
    plain numbers from 1-2-5 (1-1.5-2-2.5-3-4-5-6-8 within a decade) × 10^k, e.g. "2,500". Minor ticks are
    never labelled (they overlapped when the range spans less than a decade)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    for name in ("x", "y") if which == "both" else (which,):
        axis = getattr(ax, f"{name}axis")
        if axis.get_scale() != "log":
            continue
        lo, hi = sorted(getattr(ax, f"get_{name}lim")())
        if lo <= 0:
            continue
        axis.set_minor_formatter(NullFormatter())
        powers = range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
        if sum(lo <= 10.0 ** k <= hi for k in powers) >= 3:
            continue
        mantissas = (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8) if hi / lo < 10 else (1, 2, 5)
        ticks = [m * 10.0 ** k for k in powers for m in mantissas if lo <= m * 10.0 ** k <= hi]
        for digits in (2, 3, 4):                         # a narrow range: a finer grid of round numbers
            if len(ticks) >= 2:
                break
            ticks = [m * 10.0 ** (k - digits + 1) for k in powers for m in range(10 ** (digits - 1), 10 ** digits)
                     if lo <= m * 10.0 ** (k - digits + 1) <= hi]
        while len(ticks) > 6:
            ticks = ticks[::2]
        axis.set_major_locator(FixedLocator(ticks))
        axis.set_major_formatter(FuncFormatter(_tick_text))


def _tick_text(v: float, _pos=None) -> str:
    if 1000 <= abs(v) < 1e9:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def _families(runs):
    fam: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        fam.setdefault(family_label(r), []).append(r)
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
    chips = ", ".join(dict.fromkeys(r["config"]["hw"] for r in runs if r.get("role") != "baseline")) or c["hw"]
    out.append(f"preset figures partly assumed (see {chips}'s YAML comments)")
    return "caveats: " + "; ".join(out)


def _foot(fig, runs) -> None:
    fig.text(0.005, 0.003, caveats(runs), fontsize=6, color="#666666", ha="left", va="bottom")


def _front_overlay(ax, pts: list[tuple[float, float]], idx: list[int], label: str | None = "Pareto front") -> None:
    """The Pareto front: circled points, joined by a staircase (sorted by x) when there are several: the
    boundary of what the front dominates, never a straight segment across empty space."""
    fx, fy = zip(*sorted(pts[i] for i in idx))
    text = label if len(idx) > 1 or label is None else "Pareto front (one point)"
    if len(idx) > 1:
        ax.plot(fx, fy, color="k", lw=2.5, alpha=0.25, zorder=0, drawstyle="steps-post", label=text)
        text = None
    ax.scatter(fx, fy, s=160, facecolors="none", edgecolors="k", linewidths=1.0, zorder=5, label=text)


def _one(values: list[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def _subtitle(runs) -> str:
    """Model, chips, mode and tokens of the runs; a mode or token count that differs between runs is left to
    the panels and labels (a mixed prefill/decode folder is never titled "prefill")."""
    models = _one([str(r["config"]["model"]) for r in runs])
    chips = _one([r["config"]["hw"] for r in runs])
    modes = _one([r["config"]["mode"] for r in runs])
    tokens = _one([r["metrics"]["tokens"] for r in runs])
    parts = [f"{', '.join(models)} on {', '.join(chips)}"]
    if len(modes) == 1:
        parts.append(modes[0])
    if len(tokens) == 1:
        parts.append(f"{tokens[0]:,} tokens")
    return ", ".join(parts)


def feasible(run: dict[str, Any]) -> bool:
    """False when the run is over the folder's area budget (``sim.budget`` marks it)."""
    return run.get("area_budget", {}).get("feasible", True)


def feasible_front(runs: list[dict[str, Any]], pts: list[tuple[float, float]]) -> list[int]:
    """Pareto front among the runs within the area budget (indices into ``runs``), one front per workload
    panel (:func:`sim.report.axes.facets`: a prefill run never dominates a decode one)."""
    out = []
    for group in axes.facets(runs):
        ok = [i for i in group if feasible(runs[i])]
        out += [ok[j] for j in pareto([pts[i] for i in ok])] if ok else []
    return sorted(out, key=lambda i: pts[i][0])


def _grid(n: int, single: tuple[float, float], each: tuple[float, float]):
    """A figure of ``n`` panels, two a row (``single``: the size of a lone panel's figure)."""
    ncols = 1 if n == 1 else 2
    nrows = -(-n // ncols)
    size = single if n == 1 else (each[0] * ncols, each[1] * nrows)
    fig, grid = plt.subplots(nrows, ncols, figsize=size, dpi=150, squeeze=False)
    for ax in grid.flat[n:]:
        ax.axis("off")
    return fig, list(grid.flat[:n])


def _xy_plot(runs: list[dict[str, Any]], xget, yget, *, xlabel: str, ylabel: str, title: str, path: Path | None,
             xlog: bool = True, budget: bool = True):
    """y against x, one panel per swept workload (mode, trace, ...), one line per placement family and
    design joined along the digital fraction only, colour per policy (or per design when the design is
    swept), maxnn fractions annotated, the Pareto front (lower x, higher y) of each panel circled and drawn
    as a staircase, designs over the area budget crossed."""
    runs = axes.annotate(list(runs))
    designs = axes.designs(runs)
    groups = axes.facets(runs)
    wide = len(groups) > 1 or len(designs) > 1
    fig, panels = _grid(len(groups), (7.5, 5.2), (6.2, 4.6))
    handles: dict[str, Any] = {}
    rank: dict[str, tuple] = {}
    budget_mm2 = None
    for ax, idx in zip(panels, groups):
        rs = [runs[i] for i in idx]
        pts = [(xget(r), yget(r)) for r in rs]
        notes: list[tuple[float, float, str, str]] = []
        for fam, members in _families(rs).items():
            colour, marker, ls = run_style(members[0], designs)
            xs, ys = [xget(r) for r in members], [yget(r) for r in members]
            policy = members[0]["placement"]["policy"]
            extra = ({"mfc": "none", "mew": 1.8, "ms": 11, "zorder": 4} if policy == "all-digital" else
                     {"ms": 7, "zorder": 3})        # all-digital drawn hollow and larger: visible over maxnn 100 %
            (line,) = ax.plot(xs, ys, marker=marker, color=colour, linestyle=ls if len(members) > 1 else "none",
                              lw=1, label=fam, alpha=0.9, **extra)
            handles.setdefault(fam, line)
            rank.setdefault(fam, (members[0].get("role") == "baseline", POLICY_ORDER.get(policy, 9),
                                  _policy_family(members[0]), designs.index(axes.design_key(members[0]))
                                  if axes.design_key(members[0]) in designs else -1))
            if policy == "maxnn":
                notes += [(x, y, f"{100 * r['placement']['fraction']:g}%", colour) for r, x, y in zip(members, xs, ys)]
        over = [p for r, p in zip(rs, pts) if not feasible(r)]
        if budget and over:
            budget_mm2 = next(r["area_budget"]["budget_mm2"] for r in rs if not feasible(r))
            cross = ax.scatter(*zip(*over), s=70, color="#333333", linewidths=1.3, zorder=6, marker="x",
                               label=f"over area budget ({budget_mm2:,.0f} mm²): infeasible")
            handles.setdefault(cross.get_label(), cross)
        front = feasible_front(rs, pts) if budget else pareto(pts)
        if front:
            _front_overlay(ax, pts, front)
            for artist in ax.lines[-1:] + ax.collections[-1:]:
                if artist.get_label().startswith("Pareto"):
                    handles.setdefault("Pareto front", artist)
        if xlog:
            ax.set_xscale("log")
        ax.set_yscale("log")
        ax.autoscale_view()
        log_ticks(ax)
        _fraction_notes(ax, notes)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if len(groups) > 1:
            ax.set_title(axes.workload_text(rs[0]), fontsize=10)
        _style(ax)
    if len(groups) == 1:
        panels[0].set_title(f"{title}\n{_subtitle(runs)}", fontsize=10)
    else:
        fig.suptitle(f"{title}\n{_subtitle(runs)}; one panel per {_panel_words(runs)}, each with its own "
                     "Pareto front", fontsize=10)
    if not wide:
        panels[0].legend(fontsize=8, frameon=False, loc="best")
        fig.tight_layout(rect=(0, 0.02, 1, 1))
        _foot(fig, runs)
        return _finish(fig, path)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    names = sorted(handles, key=lambda n: rank.get(n, (True, 99, "", 0)))
    fig.legend([handles[n] for n in names], names, fontsize=8, frameon=False, loc="upper left",
               bbox_to_anchor=(1.0, 0.92), title=_legend_title(runs), title_fontsize=8, alignment="left")
    _foot(fig, runs)
    return _finish(fig, path, bbox_inches="tight")


def _fraction_notes(ax, notes: list[tuple[float, float, str, str]]) -> None:
    """Fraction labels beside maxnn points, leaving out any that would overprint one already placed (lines
    of several designs often nearly coincide)."""
    placed: list[tuple[float, float]] = []
    for x, y, text, colour in notes:
        px, py = ax.transData.transform((x, y))
        if any(abs(px - qx) < 30 and abs(py - qy) < 11 for qx, qy in placed):
            continue
        placed.append((px, py))
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=7, color=colour)


def _panel_words(runs: list[dict[str, Any]]) -> str:
    _, workload = axes.swept(runs)
    return " × ".join(k.replace("_", " ") for k in workload)


def _legend_title(runs: list[dict[str, Any]]) -> str:
    design, _ = axes.swept(runs)
    names = axes.short_names([k for k in design if k != "hw"])
    what = ["chip" if k == "hw" else names[k] for k in design]
    return "placement" + (f", {', '.join(what)}" if what else "") + "\n(lines join digital fractions only)"


def plot_throughput_energy(runs: list[dict[str, Any]], path: Path | None = None):
    return _xy_plot(runs, lambda r: r["metrics"]["energy_per_token_uj"],
                    lambda r: r["metrics"]["throughput_tokens_per_s"], xlabel="energy per token (µJ)",
                    ylabel="throughput (tokens/s)", title="Throughput vs energy per token", path=path)


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
    return _xy_plot(runs, lambda r: r["metrics"]["energy_per_token_uj"], lambda r: r["metrics"]["tokens_per_s_per_mm2"],
                    xlabel="energy per token (µJ)", ylabel="throughput per chip area (tokens/s/mm²)",
                    title=f"Throughput per mm² vs energy per token ({area})", path=path)


def _log_or_linear(ax, values: list[float]) -> None:
    """A log x axis when the values span a decade or more (major ticks labelled only, so they never
    overlap); a linear one from 0 below that."""
    from matplotlib.ticker import NullFormatter

    lo, hi = min(values), max(values)
    if lo > 0 and hi / lo >= 10:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        ax.set_xlim(0, hi * 1.25 if hi > 0 else 1)
        ax.locator_params(axis="x", nbins=4)


def plot_energy_breakdown(runs: list[dict[str, Any]], path: Path | None = None):
    """Each placement's energy per token split into domain categories (static hatched), and its total; runs
    grouped by workload panel (mode, ...) and sorted by energy within each."""
    runs = axes.annotate(list(runs))
    groups = axes.facets(runs)
    runs = [r for idx in groups for r in sorted((runs[i] for i in idx),
                                                key=lambda r: r["metrics"]["energy_per_token_uj"])]
    labels = [label(r) for r in runs]
    width = 10 + max(0.0, 0.06 * (max(map(len, labels)) - 24))
    height = 0.42 * len(runs) + 2.9
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(width, height), dpi=150, sharey=True,
                                  gridspec_kw={"width_ratios": [3, 1.3]})
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
    start = 0
    for idx in groups[:-1]:                      # a rule between workload groups
        start += len(idx)
        for a_ in (ax, ax2):
            a_.axhline(start - 0.5, color="#333333", lw=0.8)
    totals = [r["metrics"]["energy_per_token_uj"] for r in runs]
    ax2.barh(y, totals, color="#555555")
    _log_or_linear(ax2, totals)
    ax2.set_xlabel("energy per token (µJ)")
    for yi, t in zip(y, totals):
        ax2.text(t, yi, f" {t:,.0f}" if t >= 100 else f" {t:.3g}", va="center", fontsize=7)
    fig.suptitle(f"Energy breakdown per placement — {_subtitle(runs)}", fontsize=10)
    for a_ in (ax, ax2):
        for side in ("top", "right"):
            a_.spines[side].set_visible(False)
    handles, names = ax.get_legend_handles_labels()
    # the legend sits in 0.55 inch kept under the axes' labels, the caveats under it: nothing overlaps
    fig.tight_layout(rect=(0, 0.75 / height, 1, 1))
    fig.legend(handles, names, fontsize=7, frameon=False, ncol=5, loc="lower center",
               bbox_to_anchor=(0.5, 0.14 / height))
    _foot(fig, runs)
    return _finish(fig, path, bbox_inches="tight")


def plot_exposure_efficiency(runs: list[dict[str, Any]], path: Path | None = None):
    return _xy_plot(runs, lambda r: 100 * r["metrics"]["analog_exposure_macs"],
                    lambda r: r["metrics"]["tokens_per_s_per_w"],
                    xlabel="analog exposure: routed-expert MACs on analog tiles (%)",
                    ylabel="tokens/s/W (tokens per joule)", title="Analog exposure vs efficiency", path=path,
                    xlog=False, budget=False)     # lower exposure and higher tokens/s/W are better


MAX_HEAT_PANELS = 4


def _heat_choice(rs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """all-analog, then maxnn at 12.5 % and 25 % (each design), at most :data:`MAX_HEAT_PANELS`; else the
    first run with tiles."""
    tiles = [r for r in rs if r.get("role") != "baseline" and r.get("tile_utilisation_by_node")]
    chosen = [r for r in tiles if r["placement"]["policy"] == "all-analog"][:1] + \
             [r for r in tiles if r["placement"]["policy"] == "maxnn" and r["placement"].get("fraction") in (0.125, 0.25)]
    designs = axes.designs(rs)
    chosen.sort(key=lambda r: (r["placement"]["policy"] != "all-analog",
                               designs.index(axes.design_key(r)) if axes.design_key(r) in designs else 0,
                               r["placement"].get("fraction", 0.0)))
    return (chosen or tiles[:1])[:MAX_HEAT_PANELS]


def _node(text: str) -> tuple[int, int]:
    x, y = (int(v) for v in str(text).strip("()").split(","))
    return x, y


def plot_tile_heatmap(runs: list[dict[str, Any]], path: Path | None = None):
    """Mean tile utilisation per NoC node: one row per workload panel (mode, ...) with its own colour scale
    (decode and prefill differ by orders of magnitude), one column per chosen run; white: no tiles there."""
    from matplotlib.ticker import MaxNLocator

    runs = axes.annotate(list(runs))
    rows = [c for c in (_heat_choice([runs[i] for i in idx]) for idx in axes.facets(runs)) if c]
    unkept = sorted({r.get("utilisation_detail") for r in runs if r.get("role") != "baseline"
                     and r.get("utilisation_detail") in ("summary", "none")})
    if not rows or any(r["noc"]["topology"] != "mesh" for row in rows for r in row):
        fig, ax = plt.subplots(figsize=(6, 3), dpi=150)
        if not rows and unkept:
            text = ("per-tile utilisation was not kept (--utilisation " + " / ".join(unkept) + "):\nno tile heat "
                    "map; rerun with --utilisation full to draw it")
        else:
            text = ("tile heat map is drawn for mesh NoCs with analog tiles only" if rows else
                    "no run in this folder has analog tiles: no tile heat map")
        ax.text(0.5, 0.5, text, ha="center", va="center")
        ax.axis("off")
        return _finish(fig, path)
    ncols = max(map(len, rows))
    fig, grid = plt.subplots(len(rows), ncols, figsize=(4.0 * ncols + 1.2, 3.9 * len(rows) + 0.5), dpi=150,
                             squeeze=False, layout="constrained")
    meshes = set()
    for row, axs in zip(rows, grid):
        grids = []
        for r in row:
            W, H = r["noc"]["width"], r["noc"]["height"]
            meshes.add((W, H))
            g = np.full((H, W), np.nan)
            for node, u in r["tile_utilisation_by_node"].items():
                x, y = _node(node)
                g[y, x] = 100 * u
            grids.append(g)
        vmax = max(float(np.nanmax(g)) if np.isfinite(g).any() else 0.0 for g in grids)
        positive = [float(np.min(g[g > 0])) for g in grids if (g > 0).any()]
        log = bool(positive) and vmax / min(positive) > 10       # all-analog beside maxnn spans decades
        if log:
            lo = min(positive)
            norm = matplotlib.colors.LogNorm(vmin=lo, vmax=vmax)                 # one scale per row
            grids = [np.where(np.isfinite(g) & (g < lo), lo, g) for g in grids]  # idle tiles: the darkest colour
        else:
            norm = matplotlib.colors.Normalize(vmin=0, vmax=vmax or 1.0)
        for ax, r, g in zip(axs, row, grids):
            im = ax.imshow(g, cmap="magma", norm=norm, origin="upper", interpolation="nearest")
            ax.set_title("\n".join(textwrap.wrap(label(r), 38)), fontsize=8)
            ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
            ax.yaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
            ax.tick_params(labelsize=6)
            marks: dict[tuple[int, int], list[str]] = {}
            for name, mark in (("simd_node", "S"), ("dram_node", "D")):
                if r["noc"].get(name) is not None:
                    marks.setdefault(_node(r["noc"][name]), []).append(mark)
            for (x, y), ms in marks.items():
                ax.text(x, y, "+".join(ms), ha="center", va="center", color="cyan", fontsize=8 if len(ms) == 1 else 6,
                        fontweight="bold", path_effects=[patheffects.withStroke(linewidth=2, foreground="black")])
            if not vmax:
                ax.text(0.5, 0.5, "no tile activity", transform=ax.transAxes, ha="center", va="center",
                        color="white", fontsize=8)
        axs[0].set_ylabel("mesh y", fontsize=7)
        for ax in axs[len(row):]:
            ax.axis("off")
        cb = fig.colorbar(im, ax=list(axs[:len(row)]), shrink=0.85, format="%.3g")
        what = axes.workload_text(row[0])
        cb.set_label("mean tile utilisation (%)" + (f", {what}" if what else "") + ",\none "
                     + ("log " if log else "") + "scale for the row" + (" (idle: darkest)" if log else ""), fontsize=7)
        cb.ax.tick_params(labelsize=6)
    for ax in grid[-1]:
        ax.set_xlabel("mesh x", fontsize=7)
    mesh = " and ".join(f"{w}x{h}" for w, h in sorted(meshes))
    fig.suptitle(f"Mean tile utilisation per NoC node on the {mesh} mesh — S: SIMD core, D: DRAM controller, "
                 "S+D: both at one node; white: no analog tiles at that node", fontsize=9)
    fig.supxlabel(caveats(runs), x=0.005, ha="left", fontsize=6, color="#666666")    # room kept by the layout
    return _finish(fig, path, bbox_inches="tight")


PLOTS = {
    "throughput_vs_energy.png": plot_throughput_energy,
    "area_efficiency.png": plot_area_efficiency,
    "energy_breakdown.png": plot_energy_breakdown,
    "exposure_vs_efficiency.png": plot_exposure_efficiency,
    "tile_utilisation.png": plot_tile_heatmap,
}
