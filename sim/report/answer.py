"""The plain-words answer that opens ``report.md``: three to five sentences computed from the runs.

Which placements are on the throughput–energy Pareto front (among designs within the area budget), what
maxnn at the default fraction costs against all-analog and all-digital on the same chip (and against the
baseline system when one was run), and which energy term dominates maxnn's and all-digital's energy.
"""

from __future__ import annotations

from typing import Any

from ..result import fmt_number
from .plots import feasible_front, label

DEFAULT_FRACTION = 0.125

# (domain, component) -> words, and the counter that states its volume per token (bytes, or None)
TERMS = {
    ("memory", "dram"): ("DRAM weight and KV streaming", "dram_bytes"),
    ("memory", "sram"): ("SRAM reads", "sram_bytes"),
    ("memory", "sram_static"): ("SRAM leakage", None),
    ("memory", "dram_static"): ("DRAM standby power", None),
    ("digital", "mac"): ("digital MACs", None),
    ("digital", "vector"): ("digital vector operations", None),
    ("digital", "static"): ("digital static power", None),
    ("analog", "adc"): ("ADC conversions", None),
    ("analog", "dac"): ("DAC conversions", None),
    ("analog", "array"): ("crossbar array reads", None),
    ("analog", "local_digital"): ("local digital units", None),
    ("analog", "static"): ("tile static power", None),
    ("noc", "links"): ("NoC links", None),
    ("noc", "routers"): ("NoC routers", None),
}


def dominant_term(run: dict[str, Any]) -> tuple[str, float, str]:
    """(words, share of the run's energy, volume per token or "") of its largest energy component."""
    flat = {(d, c): v for d, comps in run["energy_pj"].items() for c, v in comps.items()}
    total = sum(flat.values())
    key = max(flat, key=flat.get)
    words, counter = TERMS.get(key, (f"{key[0]} {key[1]}", None))
    volume = ""
    if counter and run.get("counters", {}).get(counter):
        per_tok = run["counters"][counter] / run["metrics"]["tokens"]
        volume = f": {_bytes(per_tok)} per token"
    return words, (flat[key] / total if total else 0.0), volume


def _bytes(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.3g} B"


def _ratio(a: float, b: float, of: str = "") -> str:
    """``a / b`` as "12.5 % of X" below 1, "3.2× X" from 1 (``of`` = "X", may be empty)."""
    r = a / b if b else float("inf")
    text = f"{100 * r:.3g} % of" if r < 1 else f"{r:.3g}×"
    return f"{text} {of}".rstrip() if of else (text.removesuffix(" of"))


def cost_answer(runs: list[dict[str, Any]], fraction: float = DEFAULT_FRACTION) -> list[str]:
    """Three to five sentences; ``runs`` as written by compare (any order)."""
    pts = [(r["metrics"]["energy_per_token_uj"], r["metrics"]["throughput_tokens_per_s"]) for r in runs]
    front = [label(runs[i]) for i in feasible_front(runs, pts)]
    out = [f"On the throughput–energy Pareto front: {', '.join(front)}." if front else
           "No placement is within the area budget, so none is on a Pareto front."]
    main = [r for r in runs if r.get("role") != "baseline"]
    chip = main[0]["config"]["hw"] if main else None
    same = {r["placement"]["policy"] if r["placement"]["policy"] != "maxnn" else
            f"maxnn {r['placement'].get('fraction')}": r for r in main if r["config"]["hw"] == chip
            and r["placement"].get("score", "gate_rows") in ("gate_rows", None)}
    m = same.get(f"maxnn {fraction}")
    name = f"maxnn {100 * fraction:g} %"
    if m is not None:
        mm = m["metrics"]
        parts = []
        for ref in ("all-analog", "all-digital"):
            if ref in same:
                tpw = same[ref]["metrics"]["tokens_per_s_per_w"]
                parts.append(f"{_ratio(mm['tokens_per_s_per_w'], tpw, ref + chr(39) + 's')} ({fmt_number(tpw)})")
        out.append(f"On {chip}, {name} reaches {fmt_number(mm['tokens_per_s_per_w'])} tokens/s/W"
                   + (": " + " and ".join(parts) if parts else "") + ".")
        for b in (r for r in runs if r.get("role") == "baseline"):
            bm = b["metrics"]
            per_mm2 = ""
            if mm.get("tokens_per_s_per_mm2", float("nan")) == mm.get("tokens_per_s_per_mm2") and \
                    bm.get("tokens_per_s_per_mm2", float("nan")) == bm.get("tokens_per_s_per_mm2"):
                per_mm2 = (f", and {_ratio(mm['tokens_per_s_per_mm2'], bm['tokens_per_s_per_mm2'], 'its')} tokens/s/mm² "
                           f"({fmt_number(mm['tokens_per_s_per_mm2'])} vs {fmt_number(bm['tokens_per_s_per_mm2'])})")
            out.append(f"Against the baseline {b['config']['hw']} (all-digital, "
                       f"{fmt_number(bm['tokens_per_s_per_w'])} tokens/s/W), {name} on {chip} gives "
                       f"{_ratio(mm['tokens_per_s_per_w'], bm['tokens_per_s_per_w'], 'its')} tokens/s/W and "
                       f"{_ratio(mm['throughput_tokens_per_s'], bm['throughput_tokens_per_s'], 'its')} tokens/s"
                       f"{per_mm2}.")
    for key, who in ((f"maxnn {fraction}", name), ("all-digital", "all-digital")):
        r = same.get(key)
        if r is not None:
            words, share, volume = dominant_term(r)
            out.append(f"{100 * share:.0f} % of {who}'s energy is {words}{volume}.")
    return out
