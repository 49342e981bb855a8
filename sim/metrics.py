"""Price counters into energy and assemble the run's metrics (DESIGN §6).

Energy = sum(count x unit energy) + sum(static power x makespan); mW x ns = pJ. Metric names carry
their units; see ``METRICS`` for the formula of each.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from arch import area, costs
from arch.spec import ChipSpec

METRICS = {
    "makespan_s": "end of the last operation",
    "tokens": "tokens simulated",
    "throughput_tokens_per_s": "tokens / makespan_s",
    "energy_j": "dynamic (counts x unit energies) + static (power x makespan)",
    "energy_per_token_uj": "energy_j / tokens x 1e6",
    "average_power_w": "energy_j / makespan_s",
    "tokens_per_s_per_w": "throughput / average power = tokens per joule",
    "latency_p50_us": "per-token latency, median (prefill: micro-batch completion since t=0; decode: step time)",
    "latency_p95_us": "per-token latency, 95th percentile",
    "latency_p99_us": "per-token latency, 99th percentile",
    "ttft_p50_us": "time to first token per request/sequence, median (prefill: last chunk's lm_head done; "
                   "decode: first step done since the sequence was admitted)",
    "tpot_mean_us": "decode: mean step time (time per output token); prefill: n/a",
    "steady_throughput_tokens_per_s": "tokens finished between the k-th and the (n - k)-th micro-batch completion "
                                      "/ that window (k = micro-batches in flight; fill and drain excluded)",
    "steady_energy_per_token_uj": "dynamic energy per token + static power / steady throughput",
    "steady_tokens_per_s_per_w": "1 / steady energy per token",
    "chip_footprint_mm2": "the chip's silicon footprint (arch/area.py; 3D tiers stacked on one footprint); NaN when "
                          "the hardware description has no area section",
    "chip_silicon_mm2": "the chip's total silicon, every 3D tier counted",
    "tokens_per_s_per_mm2": "throughput / chip_footprint_mm2",
    "steady_tokens_per_s_per_mm2": "steady throughput / chip_footprint_mm2",
    "tokens_per_s_per_w_per_mm2": "tokens/s/W / chip_footprint_mm2",
    "analog_exposure_macs": "share of routed-expert MACs that ran on analog tiles",
    "analog_exposure_gate_weighted": "same, each selection weighted by its gate weight",
    "analog_exposure_score_weighted": "same, each selection weighted by its expert's MaxNNScore",
}


STATIC = ("static", "sram_static", "dram_static", "local_digital_static", "router_static")


def steady_state(ends_ps: np.ndarray, tokens: np.ndarray, in_flight: int) -> dict[str, Any]:
    """The window where the pipeline is full: from the ``in_flight``-th to the ``(n - in_flight)``-th
    micro-batch completion (in completion order); throughput = tokens finished inside it / its length.
    ``reached`` is False when fewer than 2 completions fall inside (too short a run), and then
    ``needed_micro_batches`` says how many would do."""
    order = np.argsort(ends_ps, kind="stable")
    e, tok = np.asarray(ends_ps, np.int64)[order], np.asarray(tokens)[order]
    n, k = len(e), max(1, in_flight)
    lo, hi = k - 1, n - k - 1
    needed = 2 * k + 2
    if hi - lo < 2 or e[hi] <= e[lo]:
        return {"reached": False, "needed_micro_batches": needed}
    window_ps = int(e[hi] - e[lo])
    done = int(tok[lo + 1: hi + 1].sum())
    return {"reached": True, "window_s": [float(e[lo]) * 1e-12, float(e[hi]) * 1e-12], "tokens": done,
            "throughput_tokens_per_s": done / (window_ps * 1e-12), "needed_micro_batches": needed}


def steady_metrics(energy: dict[str, dict[str, float]], tokens: int, seconds: float,
                   steady: dict[str, Any]) -> dict[str, float]:
    """Steady-state tokens/s, energy per token and tokens/s/W: dynamic energy per token does not depend on
    timing; static power is paid over 1 / steady throughput per token."""
    if not steady["reached"]:
        return {"steady_throughput_tokens_per_s": float("nan"), "steady_energy_per_token_uj": float("nan"),
                "steady_tokens_per_s_per_w": float("nan")}
    static_pj = sum(v for d in energy.values() for k, v in d.items() if k in STATIC)
    dynamic_pj = sum(v for d in energy.values() for v in d.values()) - static_pj
    static_w = static_pj * 1e-12 / seconds if seconds else 0.0
    tput = steady["throughput_tokens_per_s"]
    e_tok_j = dynamic_pj * 1e-12 / tokens + static_w / tput
    return {"steady_throughput_tokens_per_s": tput, "steady_energy_per_token_uj": e_tok_j * 1e6,
            "steady_tokens_per_s_per_w": 1.0 / e_tok_j}


def null_reasons(data: dict[str, Any]) -> dict[str, str]:
    """Why a figure of a run's result can be undefined (NaN) or infinite, by dotted path (``metrics.tpot_mean_us``):
    the result's JSON writes such a value as ``null`` and this reason beside it, under ``null_why``
    (:func:`arch.safeio.dumps_json`). Only the reasons that apply to this run are given."""
    why: dict[str, str] = {}
    steady = data.get("steady_state") or {}
    if steady and not steady.get("reached", True):
        done = (data.get("engine") or {}).get("micro_batches")
        text = (f"run too short for a steady-state window: {done if done is not None else 'too few'} micro-batches, "
                f"at least {steady.get('needed_micro_batches')} needed (2 x micro-batches in flight + 2; see "
                "steady_state)")
        for key in ("steady_throughput_tokens_per_s", "steady_energy_per_token_uj", "steady_tokens_per_s_per_w",
                    "steady_tokens_per_s_per_mm2"):
            why[f"metrics.{key}"] = text
    if (data.get("config") or {}).get("mode") == "prefill":
        why["metrics.tpot_mean_us"] = "prefill has no time per output token (decode runs only)"
    hw = data.get("hw_figures") or {}
    if not hw.get("area_modelled", True):
        for key in ("chip_footprint_mm2", "chip_silicon_mm2", "tokens_per_s_per_mm2", "tokens_per_s_per_w_per_mm2"):
            why[f"metrics.{key}"] = "the hardware description has no area section"
        why.setdefault("metrics.steady_tokens_per_s_per_mm2", "the hardware description has no area section")
    for key in ("latency_p50_us", "latency_p95_us", "latency_p99_us", "ttft_p50_us"):
        why[f"metrics.{key}"] = "no token completed in the run"
    why["metrics.throughput_tokens_per_s"] = "the run took no simulated time"
    why["metrics.tokens_per_s_per_w"] = "the run used no energy (every energy of the hardware is 0)"
    why["bottleneck.stream_path_gbps"] = ("the DRAM is attached directly to the SIMD core (memory.dram.attachment: "
                                          "direct): no NoC path limits a weight stream")
    why["hw_figures.analog_tops_per_w"] = ("the system has no analog tiles" if not hw.get("tile_count", 1) else
                                           "a full-tile MVM costs no energy (every analog energy is 0)")
    why["hw_figures.digital_tops_per_w"] = "a digital MAC costs no energy (digital.simd.energy_pj_per_mac is 0)"
    return why


def area_metrics(hw_figures: dict[str, Any], metrics: dict[str, float]) -> dict[str, float]:
    """Chip area (from ``arch.derived``) and throughput per mm^2 of footprint; NaN without an area model."""
    nan = float("nan")
    fp = hw_figures.get("footprint_mm2", nan) if hw_figures.get("area_modelled") else nan
    si = hw_figures.get("silicon_mm2", nan) if hw_figures.get("area_modelled") else nan
    per = (lambda x: x / fp) if fp == fp and fp > 0 else (lambda x: nan)
    return {"chip_footprint_mm2": fp, "chip_silicon_mm2": si,
            "tokens_per_s_per_mm2": per(metrics["throughput_tokens_per_s"]),
            "steady_tokens_per_s_per_mm2": per(metrics.get("steady_throughput_tokens_per_s", nan)),
            "tokens_per_s_per_w_per_mm2": per(metrics["tokens_per_s_per_w"])}


def price(chip: ChipSpec, c: Any, makespan_ns: float, powered_tiles: int | None = None) -> dict[str, dict[str, float]]:
    """Energy in pJ by domain and component. ``powered_tiles``: tiles drawing static power (default: all;
    the mapping reports how many hold a matrix when ``analog.power_gate_unused_tiles`` is on)."""
    a, mem = chip.analog, chip.memory
    analog = {
        "adc": c.adc_conversions * costs.adc_energy_pj(a.adc),
        "dac": c.dac_conversions * costs.dac_energy_pj(a.dac),
        "array": c.array_cell_reads * a.tile.array_energy_fj_per_cell * 1e-3,
        "local_digital": c.local_digital_ops * costs.e_local_digital_op_pj(chip),
        "static": (a.tile_count if powered_tiles is None else powered_tiles) * a.static_power_mw_per_tile
                  * makespan_ns,
    }
    if a.local_digital is not None and a.tile_count:
        analog["local_digital_static"] = costs.local_digital_static_power_mw(chip, area.tile_nodes(chip)) * makespan_ns
    memory = {
        "sram": c.sram_bytes * costs.e_sram_pj_per_byte(chip),
        "dram": costs.dram_energy_pj(c.dram_bytes, mem.dram.energy_pj_per_bit),
        "sram_static": costs.sram_static_power_mw(chip) * makespan_ns,
        "dram_static": costs.dram_static_power_mw(chip) * makespan_ns,
    }
    if mem.dram.interface_energy_pj_per_bit:
        memory["dram_interface"] = costs.dram_energy_pj(c.dram_bytes, mem.dram.interface_energy_pj_per_bit)
    noc = {"links": c.noc_energy_pj, "routers": c.noc_router_bits * chip.noc.energy_pj_per_bit_per_router}
    if chip.noc.static_power_mw_per_router:
        noc["router_static"] = costs.router_static_power_mw(chip, area.noc_nodes(chip)) * makespan_ns
    return {
        "analog": analog,
        "digital": {
            "mac": c.simd_macs * costs.e_mac_pj(chip),
            "vector": c.simd_vector_ops * costs.e_vector_op_pj(chip),
            "static": costs.simd_static_power_mw(chip) * makespan_ns,
        },
        "memory": memory,
        "noc": noc,
    }


def percentiles_us(values_ps: np.ndarray) -> tuple[float, float, float]:
    if values_ps.size == 0:
        return (float("nan"),) * 3
    p = np.percentile(values_ps, [50, 95, 99]) / 1e6
    return float(p[0]), float(p[1]), float(p[2])


def exposure(trace: Any, model: Any, digital_experts: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Analog share of routed-expert selections: raw (= MACs, all experts of a model are equal size),
    gate-weighted and MaxNNScore-weighted. Counted per (layer, expert) with ``bincount``, one layer at a
    time, so no [tokens, layers, k] copy is made; unobserved slots (-1) are left out."""
    E = digital_experts.shape[1]
    n = w = s = 0.0
    n_analog = w_analog = s_analog = 0.0
    for layer in model.moe_layers:
        ex = trace.experts[:, layer, :].ravel()
        seen = ex >= 0
        ids = ex[seen].astype(np.intp)
        count = np.bincount(ids, minlength=E).astype(np.float64)
        weight = np.bincount(ids, weights=trace.weights[:, layer, :].ravel()[seen], minlength=E)
        score = count * np.nan_to_num(scores[layer], nan=0.0)
        analog = ~digital_experts[layer]
        n, w, s = n + count.sum(), w + weight.sum(), s + score.sum()
        n_analog += count[analog].sum()
        w_analog += weight[analog].sum()
        s_analog += score[analog].sum()
    return {"analog_exposure_macs": float(n_analog / n) if n > 0 else 0.0,
            "analog_exposure_gate_weighted": float(w_analog / w) if w > 0 else 0.0,
            "analog_exposure_score_weighted": float(s_analog / s) if s > 0 else 0.0}
