"""Figures and the short report of ``hetmoe system run``, drawn from ``result.json`` only (never the engine).

- ``per_chip_load.png``: per chip, busy time as a share of the makespan (bars, coloured by role) and the
  routed-expert tokens it computed (line, right axis), for the first run of the file;
- ``all_to_all_share.png``: per run (expert layout / policy), the share of the makespan spent in all-to-all
  communication (total and exposed) and the share of the energy spent on the links.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from arch.safeio import atomic_path, read_json

ROLE_COLOUR = {"analog": "#d62728", "digital": "#1f77b4"}


def run_label(run: dict[str, Any]) -> str:
    c = run.get("config", {})
    pol = c.get("policy", "?")
    frac = c.get("fraction")
    pol = pol if pol in ("all-analog", "all-digital") or frac is None else f"{pol} {100 * frac:g}%"
    return f"{c.get('layout', '?')}\n{pol}"


def _pyplot():
    """matplotlib's pyplot on the Agg backend, imported only when a figure is drawn (a one-chip run draws none)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=200, bbox_inches="tight")
    plt.close(fig)


def plot_per_chip_load(run: dict[str, Any], path: str | Path) -> Path:
    plt = _pyplot()
    pc = run["per_chip"]
    util = np.asarray(pc["utilisation"], float) * 100
    tok = np.asarray(pc["expert_tokens"], float) + np.asarray(pc["attention_tokens"], float)
    roles = pc["role"]
    n = util.size
    x = np.arange(n)
    fig, ax = plt.subplots(figsize=(max(6.5, min(16, 0.12 * n + 4)), 3.6))
    colours = [ROLE_COLOUR.get(r, "#7f7f7f") for r in roles]
    ax.bar(x, util, width=0.85, color=colours, linewidth=0)
    ax.set_xlabel("chip index")
    ax.set_xlim(-0.8, n - 0.2)
    positive = util[util > 0]
    if positive.size and positive.max() / positive.min() > 30:      # analog and digital chips differ by decades
        ax.set_yscale("log")
        ax.set_ylim(positive.min() / 2, 100 * 1.6)
        ax.set_ylabel("busy time / makespan (%, log)")
    else:
        ax.set_ylim(0, max(5.0, util.max() * 1.15))
        ax.set_ylabel("busy time / makespan (%)")
    ax.grid(axis="y", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    ax2 = ax.twinx()
    ax2.plot(x, tok / 1e3, color="#333333", linewidth=1.0, marker="." if n <= 40 else None, markersize=4)
    ax2.set_ylabel("tokens computed (thousands)\nexpert + attention", fontsize=9)
    ax2.set_ylim(0, max(1e-9, tok.max() / 1e3 * 1.15))
    for spine in ("top",):
        ax.spines[spine].set_visible(False)
        ax2.spines[spine].set_visible(False)
    handles = [plt.Rectangle((0, 0), 1, 1, color=ROLE_COLOUR[r]) for r in ("analog", "digital") if r in roles]
    labels = [f"{r} chips" for r in ("analog", "digital") if r in roles]
    handles.append(plt.Line2D([], [], color="#333333", linewidth=1.0))
    labels.append("tokens computed")
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8, frameon=False, ncol=3)
    m = run["metrics"]
    c = run.get("config", {})
    ax.set_title(f"Per-chip load: {c.get('model', '')} on {run['system']['name']} ({n} chips), layout "
                 f"{c.get('layout', '')}, busiest {m['busiest_chip']} at {100 * m['busiest_chip_utilisation']:.1f}%",
                 fontsize=9.5)
    _save(fig, Path(path))
    return Path(path)


def plot_all_to_all_share(runs: list[dict[str, Any]], path: str | Path) -> Path:
    plt = _pyplot()
    labels = [run_label(r) for r in runs]
    time_share = np.array([r["metrics"]["all_to_all_time_share"] for r in runs]) * 100
    exposed = np.array([r["metrics"]["all_to_all_exposed_time_share"] for r in runs]) * 100
    energy = np.array([r["metrics"]["all_to_all_energy_share"] for r in runs]) * 100
    x = np.arange(len(runs))
    w = 0.26
    fig, ax = plt.subplots(figsize=(max(5.5, 1.6 * len(runs) + 2.5), 3.6))
    bars = [(time_share, "time in all-to-all (busy)", "#6baed6", -w),
            (exposed, "time in all-to-all (exposed)", "#08519c", 0.0),
            (energy, "energy on the links", "#fd8d3c", w)]
    for vals, name, colour, dx in bars:
        b = ax.bar(x + dx, vals, width=w, color=colour, label=name)
        ax.bar_label(b, labels=[f"{v:.1f}" for v in vals], fontsize=7, padding=1)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("share of makespan or energy (%)")
    ax.set_ylim(0, max(5.0, float(np.max([time_share, exposed, energy])) * 1.2))
    ax.grid(axis="y", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    s = runs[0]["system"]
    ax.set_title(f"All-to-all on {s['name']}: {s['topology']} at {s['link_bandwidth_gbps']:g} Gbit/s per link, "
                 f"overlap {s['overlap']}", fontsize=9.5)
    _save(fig, Path(path))
    return Path(path)


def write_report(result_path: str | Path, out_dir: str | Path) -> list[Path]:
    """Read ``result.json`` and write the two figures and ``report.md`` beside it."""
    data = read_json(Path(result_path), "system result")
    runs = [r for r in data["runs"] if r.get("kind") == "hetmoe-system-result"]
    out = Path(out_dir)
    written = []
    lines = [f"# System run: {data['runs'][0].get('config', {}).get('model', '')} on "
             f"{data['runs'][0].get('system', {}).get('name', '')}", ""]
    if not runs:
        lines += ["A one-chip system: today's single-chip engine ran (no inter-chip traffic); see result.json."]
    else:
        s = runs[0]["system"]
        lines += [f"{s['chips']} chips ({', '.join(f'{v} x {k}' for k, v in s['counts'].items())}), {s['topology']} "
                  f"interconnect, {s['link_bandwidth_gbps']:g} Gbit/s per link, dispatch {s['dispatch_bits']} bit, "
                  f"combine {s['combine_bits']} bit, overlap {s['overlap']}, attention {s['attention']}.", "",
                  "Model: layer-synchronous closed forms (sim/system/simulate.py); not modelled: "
                  + "; ".join(runs[0]["engine"]["not_modelled"]) + ".", "",
                  "| layout / policy | tokens/s | uJ/token | tokens/s/W | a2a bytes/token (dispatch, combine) | "
                  "a2a time share (busy, exposed) | a2a energy share | busiest chip | busiest link |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in runs:
            m = r["metrics"]
            lines.append(
                f"| {run_label(r).replace(chr(10), ' / ')} | {m['throughput_tokens_per_s']:,.0f} | "
                f"{m['energy_per_token_uj']:,.1f} | {m['tokens_per_s_per_w']:,.3g} | "
                f"{m['all_to_all_dispatch_bytes_per_token']:,.0f}, {m['all_to_all_combine_bytes_per_token']:,.0f} | "
                f"{100 * m['all_to_all_time_share']:.1f}%, {100 * m['all_to_all_exposed_time_share']:.1f}% | "
                f"{100 * m['all_to_all_energy_share']:.2f}% | {m['busiest_chip']} "
                f"({100 * m['busiest_chip_utilisation']:.0f}%) | {m['busiest_link']} "
                f"({100 * m['busiest_link_utilisation']:.0f}%) |")
        written.append(plot_per_chip_load(runs[0], out / "per_chip_load.png"))
        written.append(plot_all_to_all_share(runs, out / "all_to_all_share.png"))
        lines += ["", "![per-chip load](per_chip_load.png)", "", "![all-to-all share](all_to_all_share.png)"]
    from arch.safeio import write_text
    write_text(out / "report.md", "\n".join(lines) + "\n")
    written.append(out / "report.md")
    return written
