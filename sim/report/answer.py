"""The plain-words answer that opens ``report.md``: sentences computed from the runs.

Which placements are on the throughput–energy Pareto front (among designs within the area budget), what
maxnn at the default fraction costs against all-analog and all-digital on the same chip (split into the
dense-module rule, all-analog → maxnn 0 %, and the expert rule, maxnn 0 % → maxnn at the fraction, when
maxnn 0 % was run), against the baseline system when one was run, and which energy term dominates maxnn's
and all-digital's energy. Below it: the per-expert batch against the digital side's ridge point, the binding
resource of each headline run (when the runs carry a ``bottleneck`` dict), and the unit figures the
headline ratio rests on.
"""

from __future__ import annotations

import math
from typing import Any

from ..result import fmt_number
from . import axes
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

# bottleneck["binding_resource"] -> words (anything else is printed as given, underscores as spaces)
RESOURCES = {"simd": "the SIMD cores", "dram": "the DRAM", "noc": "the NoC links", "noc_link": "a NoC link",
             "link": "a NoC link", "tile": "the analog tiles", "tiles": "the analog tiles",
             "local_digital": "the local digital units", "stream": "the weight stream", "sram": "the SRAM"}

# the unit figures of "What the answer rests on": words, energy components they price
STATIC = (("analog", "static"), ("digital", "static"), ("memory", "sram_static"), ("memory", "dram_static"))
FIGURES = (("digital MAC", (("digital", "mac"),)), ("ADC", (("analog", "adc"),)),
           ("DRAM", (("memory", "dram"),)), ("static power", STATIC))


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


def _step(before: float, after: float, unit: str) -> str:
    """"costs ×4.91 in tokens/s/W (12,695 → 2,585)" (or "gains ×…" when ``after`` is larger)."""
    if before > 0 and after > 0:
        r = before / after
        verb, factor = ("costs", r) if r >= 1 else ("gains", 1 / r)
    else:
        verb, factor = "costs", float("nan")
    return f"{verb} ×{factor:.3g} in {unit} ({_num(before)} → {_num(after)})"


def _num(x: float) -> str:
    """fmt_number with thousands separators from 1,000."""
    return fmt_number(x) if abs(x) >= 1e4 or x != x else f"{x:,.4g}"


def fraction_name(fraction: float) -> str:
    return f"maxnn {100 * fraction:g} %"


def _same_chip(runs: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """The chip the answer speaks of and its runs under the default score (no baseline): the first chip's,
    or, when the folder sweeps a design or workload axis (:mod:`sim.report.axes`), the runs of the one
    design and workload that holds the most efficient point of the first panel's Pareto front, so the
    answer quotes the point it marks."""
    group = reference_group(runs)
    chip = group[0]["config"]["hw"] if group else None
    return chip, [r for r in group if r["placement"].get("score", "gate_rows") in ("gate_rows", None)]


def reference_group(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """See :func:`_same_chip` (every score)."""
    main = [r for r in runs if r.get("role") != "baseline"]
    if not main:
        return []
    if not any(k != "hw" for r in main for k in r.get("swept") or {}):
        return [r for r in main if r["config"]["hw"] == main[0]["config"]["hw"]]
    pts = [(r["metrics"]["energy_per_token_uj"], r["metrics"]["throughput_tokens_per_s"]) for r in runs]
    first = set(axes.facets(runs)[0])
    front = [i for i in feasible_front(runs, pts) if i in first and runs[i].get("role") != "baseline"]
    ref = (max((runs[i] for i in front), key=lambda r: r["metrics"]["tokens_per_s_per_w"]) if front else
           next(runs[i] for i in sorted(first) if runs[i].get("role") != "baseline"))
    key = (axes.design_key(ref), axes.workload_key(ref))
    return [r for r in main if (axes.design_key(r), axes.workload_key(r)) == key]


def _where(chip: str | None, group: list[dict[str, Any]]) -> str:
    """``aimc-3d-moe`` or, in a sweep, ``aimc-3d-moe [sram.capacity_mib=512, prefill]``."""
    swept = [v for k, v in (group[0].get("swept") or {}).items() if k != "hw"] if group else []
    return f"{chip} [{', '.join(swept)}]" if swept else str(chip)


def _find(runs: list[dict[str, Any]], policy: str, fraction: float | None = None) -> dict[str, Any] | None:
    for r in runs:
        p = r["placement"]
        if p["policy"] == policy and (fraction is None or abs(float(p.get("fraction") or 0.0) - fraction) < 1e-9):
            return r
    return None


def headline(runs: list[dict[str, Any]], fraction: float = DEFAULT_FRACTION) -> dict[str, dict[str, Any]]:
    """The runs the answer speaks of, by the name it gives them: all-analog, maxnn 0 %, maxnn at the
    fraction, all-digital (on the first chip) and each baseline (by its chip's name)."""
    _, same = _same_chip(runs)
    out = {}
    for name, run in (("all-analog", _find(same, "all-analog")), (fraction_name(0.0), _find(same, "maxnn", 0.0)),
                      (fraction_name(fraction), _find(same, "maxnn", fraction)),
                      ("all-digital", _find(same, "all-digital"))):
        if run is not None:
            out[name] = run
    for b in runs:
        if b.get("role") == "baseline":
            out[b["config"]["hw"]] = b
    return out


def _moved_modules(run: dict[str, Any]) -> list[str]:
    """The dense modules a placement puts on digital that the model has (parameters > 0)."""
    params = run.get("model_summary", {}).get("params_by_module", {})
    mods = run["placement"].get("digital_modules") or []
    return [m for m in mods if params.get(m, 1) > 0]


def _words(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def rule_split(runs: list[dict[str, Any]], fraction: float = DEFAULT_FRACTION) -> str | None:
    """The dense-module rule (all-analog → maxnn 0 %) and the expert rule (maxnn 0 % → maxnn at the fraction),
    each in tokens/s/W and tokens/s; None when one of the three runs is missing."""
    h = headline(runs, fraction)
    aa, m0, mf = h.get("all-analog"), h.get(fraction_name(0.0)), h.get(fraction_name(fraction))
    if aa is None or m0 is None or mf is None or fraction == 0.0:
        return None
    a, z, f = aa["metrics"], m0["metrics"], mf["metrics"]
    mods = _moved_modules(m0)
    dense = f"all-analog → {fraction_name(0.0)}" + (f": {_words(mods)} moved to digital" if mods else "")
    n = mf.get("model_summary", {}).get("experts")
    share = mf["placement"].get("digital_expert_share", fraction)
    experts = (f"{fraction_name(0.0)} → {fraction_name(fraction)}"
               + (f": {share * n:.3g} of {n} routed experts per MoE layer moved to digital" if n else ""))

    def both(x: dict[str, float], y: dict[str, float]) -> str:
        tpw = _step(x["tokens_per_s_per_w"], y["tokens_per_s_per_w"], "tokens/s/W")
        tps = _step(x["throughput_tokens_per_s"], y["throughput_tokens_per_s"], "tokens/s")
        if tps.split()[0] == tpw.split()[0]:
            tps = tps.split(" ", 1)[1]
        return f"{tpw} and {tps}"

    return (f"Two rules make that gap: the dense-module rule ({dense}) {both(a, z)}; "
            f"the expert rule ({experts}) {both(z, f)}.")


def cost_answer(runs: list[dict[str, Any]], fraction: float = DEFAULT_FRACTION) -> list[str]:
    """Three to six sentences; ``runs`` as written by compare (any order)."""
    pts = [(r["metrics"]["energy_per_token_uj"], r["metrics"]["throughput_tokens_per_s"]) for r in runs]
    out = [front_sentence(runs, pts)]
    chip, same = _same_chip(runs)
    m = _find(same, "maxnn", fraction)
    name = fraction_name(fraction)
    if m is not None:
        mm = m["metrics"]
        parts = []
        for ref in ("all-analog", "all-digital"):
            r = _find(same, ref)
            if r is not None:
                tpw = r["metrics"]["tokens_per_s_per_w"]
                parts.append(f"{_ratio(mm['tokens_per_s_per_w'], tpw, ref + chr(39) + 's')} ({fmt_number(tpw)})")
        out.append(f"On {_where(chip, same)}, {name} reaches {fmt_number(mm['tokens_per_s_per_w'])} tokens/s/W"
                   + (": " + " and ".join(parts) if parts else "") + ".")
        split = rule_split(runs, fraction)
        if split:
            out.append(split)
        for b in (r for r in runs if r.get("role") == "baseline"):
            bm = b["metrics"]
            per_mm2 = ""
            if mm.get("tokens_per_s_per_mm2", float("nan")) == mm.get("tokens_per_s_per_mm2") and \
                    bm.get("tokens_per_s_per_mm2", float("nan")) == bm.get("tokens_per_s_per_mm2"):
                per_mm2 = (f", and {_ratio(mm['tokens_per_s_per_mm2'], bm['tokens_per_s_per_mm2'], 'its')} tokens/s/mm² "
                           f"({fmt_number(mm['tokens_per_s_per_mm2'])} vs {fmt_number(bm['tokens_per_s_per_mm2'])})")
            out.append(f"Against the baseline {b['config']['hw']} (all-digital, "
                       f"{fmt_number(bm['tokens_per_s_per_w'])} tokens/s/W), {name} on {_where(chip, same)} gives "
                       f"{_ratio(mm['tokens_per_s_per_w'], bm['tokens_per_s_per_w'], 'its')} tokens/s/W and "
                       f"{_ratio(mm['throughput_tokens_per_s'], bm['throughput_tokens_per_s'], 'its')} tokens/s"
                       f"{per_mm2}.")
    for run, who in ((m, name), (_find(same, "all-digital"), "all-digital")):
        if run is not None:
            words, share, volume = dominant_term(run)
            out.append(f"{100 * share:.0f} % of {who}'s energy is {words}{volume}.")
    return out


def front_sentence(runs: list[dict[str, Any]], pts: list[tuple[float, float]]) -> str:
    """The throughput–energy Pareto front in words: its labels; in a folder that sweeps a design or workload
    axis, each front point with its tokens/s/W, one front per workload panel (mode, ...)."""
    idx = feasible_front(runs, pts)
    if not idx:
        return "No placement is within the area budget, so none is on a Pareto front."
    swept = any(k != "hw" for r in runs for k in r.get("swept") or {})
    if not swept:
        return f"On the throughput–energy Pareto front: {', '.join(label(runs[i]) for i in idx)}."

    groups = axes.facets(runs)

    def point(i: int) -> str:
        m = runs[i]["metrics"]
        name = label(runs[i], workload=len(groups) == 1)
        return f"{name} ({_num(m['tokens_per_s_per_w'])} tokens/s/W, {_num(m['throughput_tokens_per_s'])} tokens/s)"

    if len(groups) == 1:
        return f"On the throughput–energy Pareto front: {'; '.join(point(i) for i in idx)}."
    parts = []
    for group in groups:
        mine = [i for i in idx if i in set(group)]
        where = axes.workload_text(runs[group[0]])
        parts.append(f"{where}: " + ("; ".join(point(i) for i in mine) if mine else "none within the area budget"))
    return "On the throughput–energy Pareto front of each workload (a front per panel: " + \
        f"{_panels(runs)} never compete) — " + " — ".join(parts) + "."


def _panels(runs: list[dict[str, Any]]) -> str:
    _, workload = axes.swept(runs)
    return " and ".join(f"different {k.replace('_', ' ')}s" if k != "mode" else "prefill and decode"
                        for k in workload)


# ----------------------------------------------------------------------------- the ridge point

def _attr(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if obj is None:
            return None
        obj = obj.get(part) if isinstance(obj, dict) else getattr(obj, part, None)
    return obj


def weight_bits(run: dict[str, Any]) -> float | None:
    """Digital weight bits: the hw figures' or the run's overrides' when they state them, else from the run's
    mapping, ``8 × (SRAM-resident + DRAM-streamed bytes) / digital weights`` (the digital weights: the dense
    modules the placement puts on digital plus its share of the routed experts' parameters)."""
    hw = run.get("hw_figures") or {}
    bits = hw.get("digital_weight_bits") or _attr(run.get("config", {}).get("hw_overrides") or {},
                                                  "precision.digital_weight_bits")
    if bits:
        return float(bits)
    mp, p = run.get("mapping") or {}, run.get("placement") or {}
    params = (run.get("model_summary") or {}).get("params_by_module") or {}
    weights = (sum(params.get(m, 0) for m in p.get("digital_modules") or [] if m != "expert")
               + params.get("expert", 0) * p.get("digital_expert_share", 0.0))
    stored = mp.get("sram_resident_bytes", 0) + mp.get("dram_streamed_bytes_per_use", 0)
    if weights <= 0 or stored <= 0 or mp.get("unused_digital_matrices"):
        return None
    bits = 8 * stored / weights
    return float(round(bits)) if abs(bits - round(bits)) < 0.01 else bits


def stream_gbps(run: dict[str, Any]) -> tuple[float, bool]:
    """(weight-stream bandwidth in Gbit/s, whether it is the measured effective one): the bottleneck dict's
    ``effective_stream_gbps`` when present, else the DRAM's peak."""
    b = run.get("bottleneck") or {}
    if b.get("effective_stream_gbps"):
        return float(b["effective_stream_gbps"]), True
    return float(run["hw_figures"]["dram_bandwidth_gbps"]), False


def ridge_tokens(run: dict[str, Any]) -> dict[str, float] | None:
    """The digital side's ridge point in tokens: ``(MACs per ns) × (bytes per weight) / (weight bytes per ns
    the stream gets)``, with MACs per ns = peak_digital_tops / 2 × 1000 (× digital_mac_efficiency when the hw
    figures state it) and bytes per ns = Gbit/s / 8; and the
    per-expert batch ``micro-batch tokens × top_k / routed experts``. None without the figures."""
    hw, model, cfg = run.get("hw_figures") or {}, run.get("model_summary") or {}, run.get("config") or {}
    bits = weight_bits(run)
    if not (hw.get("peak_digital_tops") and hw.get("dram_bandwidth_gbps") and bits and model.get("experts")
            and model.get("top_k") and cfg.get("batch")):
        return None
    gbps, measured = stream_gbps(run)
    efficiency = float(hw.get("digital_mac_efficiency") or 1.0)
    macs_per_ns = hw["peak_digital_tops"] / 2 * 1000 * efficiency
    bytes_per_weight = bits / 8
    out = {"macs_per_ns": macs_per_ns, "mac_efficiency": efficiency, "bytes_per_weight": bytes_per_weight,
           "stream_gbps": gbps,
           "measured": measured, "ridge": macs_per_ns * bytes_per_weight / (gbps / 8),
           "ridge_at_peak": macs_per_ns * bytes_per_weight / (hw["dram_bandwidth_gbps"] / 8),
           "dram_peak_gbps": float(hw["dram_bandwidth_gbps"]), "batch": float(cfg["batch"]),
           "per_expert": cfg["batch"] * model["top_k"] / model["experts"],
           "top_k": model["top_k"], "experts": model["experts"]}
    return out


def _tok(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 or float(x).is_integer() else f"{x:.3g}"


def ridge_line(runs: list[dict[str, Any]], fraction: float = DEFAULT_FRACTION) -> str | None:
    """The one line that explains most results: tokens per digital expert against the ridge point."""
    h = headline(runs, fraction)
    run = h.get(fraction_name(fraction)) or h.get(fraction_name(0.0)) or h.get("all-digital")
    if run is None:
        return None
    r = ridge_tokens(run)
    if r is None:
        return None
    where = (f"the {_tok(r['stream_gbps'])} Gbit/s the weight streams get" if r["measured"] else
             f"the DRAM's {_tok(r['stream_gbps'])} Gbit/s peak, an upper bound on what the streams get")
    side = (f"its digital experts are **memory-bound**: each one's weights are streamed for {_tok(r['per_expert'])} "
            f"tokens; it would take {_tok(r['ridge'])}" if r["per_expert"] < r["ridge"] else
            f"its digital experts are **compute-bound**: each one's weights serve {_tok(r['per_expert'])} tokens per "
            f"stream, at least the {_tok(r['ridge'])} it takes")
    text = (f"**The line that explains most results**: a micro-batch of {_tok(r['batch'])} tokens sends each routed "
            f"expert {_tok(r['batch'])} × {r['top_k']} / {r['experts']} = {_tok(r['per_expert'])} tokens on average, "
            f"while a digital matrix streamed from DRAM on {run['config']['hw']} is compute-bound only above the "
            f"ridge of {_tok(r['macs_per_ns'])} MACs/ns"
            + (f" ({100 * r['mac_efficiency']:.3g} % of peak, the achieved GEMM rate)"
               if r["mac_efficiency"] < 1 else "")
            + f" × {r['bytes_per_weight']:g} byte{'' if r['bytes_per_weight'] == 1 else 's'} per weight ÷ "
            f"{r['stream_gbps'] / 8:,.4g} weight bytes/ns = {_tok(r['ridge'])} tokens (at {where}): {side}.")
    if r["measured"] and abs(r["ridge_at_peak"] - r["ridge"]) > 1e-9 * r["ridge"]:
        text += f" At the DRAM's {_tok(r['dram_peak_gbps'])} Gbit/s peak the ridge would be {_tok(r['ridge_at_peak'])}."
    text += (f" The dense modules' matrices see at most the whole micro-batch, {_tok(r['batch'])} tokens: "
             + ("also below the ridge." if r["batch"] < r["ridge"] else "above the ridge."))
    for b in (x for x in runs if x.get("role") == "baseline"):
        rb = ridge_tokens(b)
        if rb is not None:
            text += (f" The baseline {b['config']['hw']}'s ridge is {_tok(rb['ridge'])} tokens at its "
                     f"{_tok(rb['stream_gbps'])} Gbit/s" + (" (peak)" if not rb["measured"] else "")
                     + (": its experts are memory-bound too." if rb["per_expert"] < rb["ridge"] else "."))
    return text


# ----------------------------------------------------------------------------- the binding element

def _resource(name: Any) -> str:
    return RESOURCES.get(str(name), str(name).replace("_", " "))


def binding_line(runs: list[dict[str, Any]], fraction: float = DEFAULT_FRACTION) -> str | None:
    """Each headline run's binding resource and its delivered utilisation, and the weight stream's effective
    bandwidth against the DRAM's peak; None when the runs carry no ``bottleneck`` dict."""
    h = headline(runs, fraction)
    parts = []
    for name, run in h.items():
        b = run.get("bottleneck") or {}
        if b.get("binding_resource") is None:
            continue
        util = b.get("binding_utilisation")
        parts.append(f"{name}: {_resource(b['binding_resource'])}"
                     + (f" at {100 * util:.3g} %" if isinstance(util, (int, float)) else ""))
    if not parts:
        return None
    text = "**Binding resource** (delivered utilisation) of each headline run: " + "; ".join(parts) + "."
    who = next((k for k in (fraction_name(fraction), fraction_name(0.0), "all-digital")
                if k in h and (h[k].get("bottleneck") or {}).get("effective_stream_gbps")), None)
    if who is not None:
        run = h[who]
        b = run["bottleneck"]
        eff = float(b["effective_stream_gbps"])
        peak = float(b.get("dram_peak_gbps") or run["hw_figures"]["dram_bandwidth_gbps"])
        path = b.get("stream_path_gbps")
        text += f" {who}'s weight streams get {_tok(eff)} of {_tok(peak)} Gbit/s"
        if eff < peak * (1 - 1e-9):
            text += (": the NoC path, not the DRAM, limits them" if path is not None and float(path) < peak
                     else ": something short of the DRAM's peak limits them")
        else:
            text += ": the DRAM's peak limits them"
        if b.get("dram_delivered_gbps") is not None:
            text += f" (the DRAM delivered {_tok(float(b['dram_delivered_gbps']))} Gbit/s on average over the run)"
        text += "."
    return text


# ----------------------------------------------------------------------------- what the answer rests on

def _share(run: dict[str, Any], keys: tuple[tuple[str, str], ...]) -> float:
    flat = {(d, c): v for d, comps in run["energy_pj"].items() for c, v in comps.items()}
    total = sum(flat.values())
    return sum(flat.get(k, 0.0) for k in keys) / total if total else 0.0


def unit_figures(run: dict[str, Any]) -> dict[str, str]:
    """Words for each unit figure of :data:`FIGURES`, read from the hw figures (or from the run's own energies
    and counters where they do not state it: energy of a component / its action count)."""
    hw, e, n = run.get("hw_figures") or {}, run.get("energy_pj") or {}, run.get("counters") or {}
    out = {}
    mac = hw.get("digital_mac_energy_pj")
    if mac is None and e.get("digital", {}).get("mac") and n.get("simd_macs"):
        mac = e["digital"]["mac"] / n["simd_macs"]
    if mac is None and hw.get("digital_tops_per_w") and math.isfinite(hw["digital_tops_per_w"]):
        mac = 2.0 / hw["digital_tops_per_w"]
    if mac is not None:
        node = hw.get("digital_process_nm") or hw.get("area_process_nm")
        scale = hw.get("digital_energy_scale")
        extra = [x for x in (hw.get("digital_mac"), f"chip at {node:g} nm" if node else None,
                             f"the cited figure × {scale:.3g} for the node" if scale and abs(scale - 1) > 1e-9
                             else None) if x]
        out["digital MAC"] = f"{mac:.3g} pJ per digital MAC" + (f" ({', '.join(extra)})" if extra else "")
    adc = hw.get("adc_energy_pj_per_conversion")
    if adc is None and e.get("analog", {}).get("adc") and n.get("adc_conversions"):
        adc = e["analog"]["adc"] / n["adc_conversions"]
    if adc is not None and hw.get("tile_count", 1):
        out["ADC"] = f"{adc:.3g} pJ per ADC conversion" + (f" ({hw['adc_bits']}-bit)" if hw.get("adc_bits") else "")
    dram = hw.get("dram_energy_pj_per_bit")
    if dram is None and e.get("memory", {}).get("dram") and n.get("dram_bytes"):
        dram = e["memory"]["dram"] / (8 * n["dram_bytes"])
    if dram is not None:
        out["DRAM"] = f"{dram:.3g} pJ per DRAM bit"
    if hw.get("static_power_mw") is not None:
        out["static power"] = f"{hw['static_power_mw'] / 1e3:,.3g} W static power"
    return out


def rests_on(runs: list[dict[str, Any]], whatif: dict[str, Any] | None = None,
             fraction: float = DEFAULT_FRACTION) -> list[str]:
    """The "What the answer rests on" paragraph: the unit figures of :data:`FIGURES`, ordered by how far
    doubling each would move the headline ratio (maxnn at the fraction ÷ all-analog, tokens/s/W), and the
    what-if run's top three knobs by swing (and the knobs that did not move it) when one is given."""
    h = headline(runs, fraction)
    mx, aa = h.get(fraction_name(fraction)), h.get("all-analog")
    if mx is None or aa is None:
        return []
    name = fraction_name(fraction)
    ratio = mx["metrics"]["tokens_per_s_per_w"] / aa["metrics"]["tokens_per_s_per_w"]
    words = unit_figures(mx)
    rows = []
    for fig, keys in FIGURES:
        if fig not in words:
            continue
        s_mx, s_aa = _share(mx, keys), _share(aa, keys)
        doubled = ratio * (1 + s_aa) / (1 + s_mx)     # tokens/s/W = tokens / energy; the term doubles, times stay
        rows.append((abs(math.log(doubled / ratio)) if ratio > 0 and doubled > 0 else 0.0,
                     f"{words[fig]}: {100 * s_mx:.3g} % of {name}'s energy and {100 * s_aa:.3g} % of all-analog's, "
                     f"so doubling it takes the ratio to {_pct(doubled)}"))
    rows.sort(key=lambda x: -x[0])
    out = []
    if rows:
        out.append(f"The headline ratio, {name} ÷ all-analog in tokens/s/W ({_pct(ratio)} on {mx['config']['hw']}), "
                   "rests on these unit figures, the one that moves it most first (doubling a figure, with every "
                   "time unchanged, scales each run's energy by 1 + its share): "
                   + "; ".join(r[1] for r in rows) + ".")
    if whatif:
        from .whatif import flat_knobs, spans

        sp = [s for s in spans(whatif, "all-analog") if s[2] > s[1] * (1 + 1e-6)]
        if sp:
            out.append(f"In the what-if run ({whatif.get('source', 'whatif/whatif.md')}), the knobs that swing "
                       f"{whatif['maxnn']} ÷ all-analog most are "
                       + "; ".join(f"{k} ({_pct(lo)} at {vlo} to {_pct(hi)} at {vhi})"
                                   for k, lo, hi, vlo, vhi in sp[:3])
                       + ".")
        for key, values, why in flat_knobs(whatif):
            out.append(f"{key} does not move the result: every placement's tokens/s/W is the same at "
                       f"{_words([str(v) for v in values])}" + (f"; {why}" if why else "") + ".")
    return out


def operating_point_line(runs: list[dict[str, Any]], whatif: dict[str, Any] | None = None) -> str:
    """Say which one operating point the closed-batch table is for (one per mode in a mixed sweep), how far
    the what-if run's batch sizes move the headline ratio (when it varied ``batch``), and how to put each
    design at its own point under an SLO."""
    shapes = list(dict.fromkeys(_shape(r["config"]) for r in runs))
    if len(shapes) == 1:
        text = (f"**Operating point**: every design above runs the same closed batch ({shapes[0]}, all "
                "requests present at t = 0), so the ratios are for that one point, not for each design at its best")
    else:
        text = (f"**Operating points**: the designs above run {len(shapes)} closed batches ({'; '.join(shapes)}; "
                "all requests present at t = 0), and each ratio is for one of them, named beside it, not for each "
                "design at its best")
    if whatif:
        from .whatif import spans

        batch = [s for s in spans(whatif, "all-analog") if s[0] == "batch"]
        if batch:
            _, lo, hi, vlo, vhi = batch[0]
            text += (f"; in the what-if run the batch alone moves {whatif['maxnn']} ÷ all-analog from {_pct(lo)} "
                     f"(batch {vlo}) to {_pct(hi)} (batch {vhi})")
    return (text + ". For each design at its own highest request rate under a latency SLO, run `hetmoe compare "
            "--slo-ttft-ms MS --slo-tpot-ms MS` (README: Serving under load).")


def _shape(c: dict[str, Any]) -> str:
    return f"{c['mode']}, " + (f"micro-batches of {c['batch']} tokens, {c['max_inflight']} in flight"
                               if c["mode"] == "prefill" else f"{c['batch']} sequences at context "
                               f"{c['context_tokens']} tokens")


def _pct(r: float) -> str:
    return f"{100 * r:.3g} %" if r < 1 else f"{r:.3g}×"
