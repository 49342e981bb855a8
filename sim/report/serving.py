"""The serving report and its plots, drawn from ``serving.json`` alone (never imports the engine).

- ``latency_vs_rate.png``: p99 TTFT and p99 TPOT against the offered request rate, one line per design,
  the SLO drawn, each design's operating point (highest rate under the SLO) marked, unstable rates hollow;
- ``efficiency_at_slo.png``: tokens/s/W of each design at its own operating point;
- ``serving_timeline.png``: batch size (tokens per iteration) and queue length over time in one run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from arch.safeio import atomic_path, read_text, write_text

from .plots import FAMILY_STYLE

NA = "–"


CHIP_COLOURS = ("#17becf", "#bcbd22", "#e377c2", "#8c564b")


def _style(d: dict[str, Any], i: int) -> tuple[str, str, str]:
    """Placements of the first chip in their family colour; other chips (baselines) in a colour per chip."""
    colour, marker = FAMILY_STYLE.get(d["policy"] or "", ("#7f7f7f", "X"))
    if i > 0:
        colour = CHIP_COLOURS[(i - 1) % len(CHIP_COLOURS)]
    return colour, marker, "-" if i == 0 else "--"


def name(d: dict[str, Any]) -> str:
    return f"{d['hw']}: {d['label']}"


def _f(x: Any, fmt: str = ",.1f") -> str:
    return NA if x is None else format(x, fmt)


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, bbox_inches="tight", format="png")
    plt.close(fig)


def latency_plot(study: dict[str, Any], path: Path) -> None:
    slo = study["slo"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    hws = list(dict.fromkeys(d["hw"] for d in study["designs"]))
    for d in study["designs"]:
        colour, marker, dash = _style(d, hws.index(d["hw"]))
        pts = sorted(d["points"], key=lambda p: p["metrics"]["offered_rate_per_s"] or 0)
        rate = np.array([p["metrics"]["offered_rate_per_s"] or np.nan for p in pts], float)
        stable = np.array([bool(p["metrics"]["stable"]) for p in pts])
        for ax, key in zip(axes, ("ttft_p99_ms", "tpot_p99_ms")):
            y = np.array([p["metrics"][key] if p["metrics"][key] is not None else np.nan for p in pts], float)
            ax.plot(rate[stable], y[stable], dash, color=colour, marker=marker, ms=5, label=name(d))
            ax.plot(rate[~stable], y[~stable], linestyle="none", marker=marker, ms=5, mfc="none", color=colour)
            best = d.get("best")
            if best is not None and study["mode"] == "slo-search":
                ax.plot(best["metrics"]["offered_rate_per_s"], best["metrics"][key], marker="*", ms=15, color=colour,
                        mec="black", zorder=5)
    for ax, key, title in zip(axes, ("ttft_p99_ms", "tpot_p99_ms"), ("p99 time to first token", "p99 time per output token")):
        bound = slo.get(key)
        if bound:
            ax.axhline(bound, color="black", lw=1, ls=":", label=f"SLO {bound:g} ms")
        ax.set_yscale("log")
        ax.set_xlabel("offered load (requests/s)")
        ax.set_ylabel(f"{title} (ms)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=min(len(labels), 5), bbox_to_anchor=(0.5, -0.08))
    fig.suptitle("Latency under load (hollow: unstable, the queue grows; star: highest rate within the SLO)",
                 fontsize=10)
    _save(fig, path)


def efficiency_plot(study: dict[str, Any], path: Path) -> None:
    rows = [(name(d), d["best"]["metrics"], d) for d in study["designs"] if d.get("best") is not None]
    fig, ax = plt.subplots(figsize=(8, 0.55 * max(len(rows), 2) + 1.2))
    if not rows:
        ax.text(0.5, 0.5, "no design meets the SLO at any rate tried", ha="center", va="center")
        ax.axis("off")
        _save(fig, path)
        return
    y = np.arange(len(rows))
    vals = [m["tokens_per_s_per_w"] or 0 for _, m, _ in rows]
    hws = list(dict.fromkeys(d["hw"] for d in study["designs"]))
    colours = [_style(d, hws.index(d["hw"]))[0] for _, _, d in rows]
    ax.barh(y, vals, color=colours)
    for yi, (_, m, _) in zip(y, rows):
        ax.text((m["tokens_per_s_per_w"] or 0) * 1.02, yi,
                f"{m['offered_rate_per_s']:.3g} req/s, {m['throughput_tokens_per_s']:,.0f} tok/s", va="center",
                fontsize=8)
    ax.set_yticks(y, [r[0] for r in rows], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(min(v for v in vals if v > 0) / 2, max(vals) * 8)
    ax.set_xlabel("tokens/s/W (tokens per joule) at the operating point, log scale")
    ttft, tpot = study["slo"].get("ttft_p99_ms"), study["slo"].get("tpot_p99_ms")
    title = "Each design at its highest rate within the SLO" if study["mode"] == "slo-search" else "At the load given"
    if ttft or tpot:
        title += f" (p99 TTFT ≤ {ttft or NA} ms, p99 TPOT ≤ {tpot or NA} ms)"
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="x", which="both", alpha=0.3)
    _save(fig, path)


def timeline_plot(study: dict[str, Any], path: Path) -> str | None:
    pick = next((d for d in study["designs"] if d.get("best") and d["best"].get("iteration_log")
                 and d["policy"] == "maxnn"), None) or next(
        (d for d in study["designs"] if d.get("best") and d["best"].get("iteration_log")), None)
    if pick is None:
        return None
    log = np.array(pick["best"]["iteration_log"]["rows"], float).reshape(-1, 8)
    t = log[:, 1] * 1e-9
    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.plot(t, log[:, 2], lw=0.6, color="#2ca02c", label="tokens in the iteration")
    ax.set_xlabel("simulated time (ms)")
    ax.set_ylabel("tokens per iteration")
    ax2 = ax.twinx()
    ax2.plot(t, log[:, 5], lw=1.0, color="#d62728", label="requests waiting")
    ax2.plot(t, log[:, 6], lw=1.0, color="#1f77b4", label="requests running")
    ax2.set_ylabel("requests")
    w = pick["best"]["window"]
    for edge in (w["t_a_ps"], w["t_b_ps"]):
        ax.axvline(edge * 1e-9, color="black", ls=":", lw=1)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="upper right")
    rate = pick["best"]["metrics"]["offered_rate_per_s"]
    ax.set_title(f"{name(pick)} at {rate:.3g} requests/s: batch and queue over time (dotted: measured window)",
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    _save(fig, path)
    return name(pick)


def table(study: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["design", "depth", "rate (req/s)", "tokens/s", "output tok/s", "tokens/s/W", "tokens/s/mm²",
            "p99 TTFT (ms)", "p99 TPOT (ms)", "batch (tokens / seqs)", "busiest resource", "limited by"]
    rows = []
    for d in study["designs"]:
        b = d.get("best")
        if b is None:
            rows.append([name(d), str(d["max_inflight"]), "none meets the SLO"] + [NA] * 8 + [d.get("limited_by") or NA])
            continue
        m = b["metrics"]
        rows.append([name(d), str(d["max_inflight"]), _f(m["offered_rate_per_s"], ",.3g"),
                     _f(m["throughput_tokens_per_s"], ",.0f"), _f(m["output_tokens_per_s"], ",.0f"),
                     _f(m["tokens_per_s_per_w"], ",.1f"), _f(m.get("tokens_per_s_per_mm2"), ",.1f"),
                     _f(m["ttft_p99_ms"], ",.1f") if m["stable"] else "unstable",
                     _f(m["tpot_p99_ms"], ",.2f") if m["stable"] else "unstable",
                     f"{_f(m['mean_batch_tokens'], '.0f')} / {_f(m['mean_batch_seqs'], '.1f')}",
                     f"{m['binding_resource']} {m['binding_utilisation']:.0%}", d.get("limited_by") or NA])
    return head, rows


def _md(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def answer(study: dict[str, Any]) -> list[str]:
    """Plain sentences computed from the table."""
    if study["mode"] != "slo-search":
        return ["Fixed load: each design ran at the rates given; no rate search (give --slo-ttft-ms / --slo-tpot-ms)."]
    slo = study["slo"]
    out = [f"Under p99 TTFT ≤ {slo['ttft_p99_ms'] or NA} ms and p99 TPOT ≤ {slo['tpot_p99_ms'] or NA} ms, each "
           "design at the highest request rate it sustains:"]
    met = [d for d in study["designs"] if d.get("best")]
    for d in study["designs"]:
        b = d.get("best")
        if b is None:
            out.append(f"- **{name(d)}** meets the SLO at no rate tried (lowest rate fails on "
                       f"{d.get('limited_by') or 'the SLO'}).")
            continue
        m = b["metrics"]
        out.append(f"- **{name(d)}**: {m['offered_rate_per_s']:.3g} requests/s ({m['throughput_tokens_per_s']:,.0f} "
                   f"tokens/s, {m['tokens_per_s_per_w']:,.1f} tokens/s/W) with {m['mean_batch_tokens']:.0f} tokens "
                   f"and {m['mean_batch_seqs']:.1f} requests per iteration on average at pipeline depth "
                   f"{d['max_inflight']}; its busiest resource is the {m['binding_resource']} "
                   f"({m['binding_utilisation']:.0%} busy) and a higher rate fails on "
                   f"{ {'ttft': 'TTFT', 'tpot': 'TPOT', 'unstable': 'stability (the queue grows)'}.get(d.get('limited_by'), 'nothing tried') }.")
    by = {d["label"]: d for d in met if d["hw"] == (met[0]["hw"] if met else None)}
    mx = next((d for k, d in by.items() if k.startswith("maxnn")), None)
    for other in ("all-analog", "all-digital"):
        if mx and other in by:
            r = mx["best"]["metrics"]["tokens_per_s_per_w"] / by[other]["best"]["metrics"]["tokens_per_s_per_w"]
            q = mx["best"]["metrics"]["offered_rate_per_s"] / by[other]["best"]["metrics"]["offered_rate_per_s"]
            ratio = lambda x: f"{x:.1%} of" if x < 2 else f"{x:.1f}×"
            out.append(f"- {mx['label']} against {other}: {ratio(r)} its tokens/s/W and {ratio(q)} its rate at the SLO.")
    gpu = [d for d in met if d["hw"] != (met[0]["hw"] if met else None)]
    if mx and gpu:
        g = gpu[0]
        r = mx["best"]["metrics"]["tokens_per_s_per_w"] / g["best"]["metrics"]["tokens_per_s_per_w"]
        out.append(f"- {mx['label']} against {name(g)}: {r:.2f}× its tokens/s/W at each one's own operating point.")
    return out


def write_serving_report(out_dir: str | Path) -> dict[str, Any]:
    out = Path(out_dir)
    study = json.loads(read_text(out / "serving.json", "serving study", max_bytes=1 << 30))
    latency_plot(study, out / "latency_vs_rate.png")
    efficiency_plot(study, out / "efficiency_at_slo.png")
    who = timeline_plot(study, out / "serving_timeline.png")
    head, rows = table(study)
    st = study["stream"]
    sch = study["scheduler"] or {}
    w = study.get("window") or {}
    first = next((p for d in study["designs"] for p in d["points"]), {})
    kv = first.get("kv_cache", {})
    lines = ["# Serving under load", "", f"`{study['command']}`", "", "## Answer", "", *answer(study), "",
             "## Operating points", "",
             ("Each design at its highest request rate whose p99 TTFT and p99 TPOT meet the SLO (the rate is "
              "searched; a rate passes only when the queue is stable). " if study["mode"] == "slo-search" else
              "Each design at the load given (the last rate run). ")
             + "Tokens/s counts prompt and decode tokens run through the model in the measured window; "
               "tokens/s/W = those tokens per joule of window energy (dynamic + static power × window).", "",
             _md(head, rows), "",
             "![latency against rate](latency_vs_rate.png)", "", "![tokens/s/W at the SLO](efficiency_at_slo.png)", ""]
    if who:
        lines += [f"![batch and queue over time](serving_timeline.png)", "",
                  f"The timeline is {who} at its operating point.", ""]
    lines += ["## Workload and scheduler", "",
              f"- Requests: {st['requests']:,}, arrivals {st.get('arrival')}, prompt tokens {st.get('prompt_tokens')} "
              f"(mean {st['prompt_tokens_mean']:.0f}), output tokens {st.get('output_tokens')} (mean "
              f"{st['output_tokens_mean']:.0f}); seed {st.get('seed', NA)}.",
              f"- Routes: {(study.get('routes') or {}).get('rule', NA)}.",
              f"- Scheduler (vLLM's names): max_num_batched_tokens {sch.get('max_num_batched_tokens')}, max_num_seqs "
              f"{sch.get('max_num_seqs')}, block_size {sch.get('block_size')}; running decodes first, then chunked "
              "prefill of running and then waiting requests (first come, first served); KV blocks allocated at "
              "scheduling, recompute preemption of the last-admitted request; pipeline depth per design in the table.",
              f"- KV cache of the first design: {_f(kv.get('capacity_tokens'), ',.0f')} tokens ({kv.get('rule', NA)}).",
              f"- Measured window: {w.get('basis', NA)}. Latencies are from each request's arrival: TTFT to its "
              "first token, TPOT the mean gap between its later tokens, queueing delay to its first scheduling.",
              "- Stability: a run is unstable when the requests in the system grow by more than 10 % of the "
              "window's arrivals between its ends; its latencies measure the run's length, not the system.", ""]
    for n in study.get("notes") or []:
        lines.append(f"- Note: {n}")
    lines += ["## Every rate tried", ""]
    ph = ["design", "depth", "rate (req/s)", "stable", "p99 TTFT (ms)", "p99 TPOT (ms)", "p99 queue (ms)",
          "tokens/s", "tokens/s/W", "SLO attainment"]
    prow = []
    for d in study["designs"]:
        for alt in [d] + d.get("alternatives", []):
            for p in alt["points"]:
                m = p["metrics"]
                prow.append([name(d), str(p["config"]["scheduler"]["max_inflight"]), _f(m["offered_rate_per_s"], ".3g"),
                             "yes" if m["stable"] else "no", _f(m["ttft_p99_ms"]), _f(m["tpot_p99_ms"], ".2f"),
                             _f(m["queue_p99_ms"]), _f(m["throughput_tokens_per_s"], ",.0f"),
                             _f(m["tokens_per_s_per_w"], ",.1f"), _f(m["slo_attainment"], ".0%")])
    lines += [_md(ph, prow), ""]
    write_text(out / "report.md", "\n".join(lines))
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)]
    text = "\n".join("  ".join(str(c).ljust(wd) for c, wd in zip(r, widths)).rstrip()
                     for r in [head, ["-" * wd for wd in widths]] + rows)
    return {"table": text}
