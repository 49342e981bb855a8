"""Figures derived from a spec for ``hetmoe hw show`` (pure; formulas in the docstrings)."""

from __future__ import annotations

from typing import Any

from . import area, costs
from .noc import build_network
from .spec import ChipSpec


def _per(ops: float, energy_pj: float) -> float:
    """ops per pJ (= TOPS/W); infinite when the given energies are zero (a free operation is allowed)."""
    return ops / energy_pj if energy_pj > 0 else float("inf")


def derived_figures(chip: ChipSpec) -> dict[str, Any]:
    """Peak analog and digital rates, capacities and NoC figures.

    - one full-tile MVM: ``2 * rows * cols`` ops (a MAC is 2 ops) in ``max(t_mvm, II)`` ns;
    - ``peak_analog_tops = tile_count * 2*rows*cols / max(t_mvm, II) / 1000`` (ops/ns -> TOPS);
    - ``analog_tops_per_w = 2*rows*cols / (E_mvm + static_mw_per_tile * max(t_mvm, II))``
      (ops/pJ = TOPS/W; mW * ns = pJ);
    - ``peak_digital_tops = 2 * cores * macs_per_cycle * clock_ghz / 1000``.
    """
    a, bits = chip.analog, chip.precision.activation_bits
    r, c = a.tile.rows, a.tile.cols
    t_mvm = costs.mvm_latency_ns(a, bits, r, c)
    period = max(t_mvm, costs.initiation_interval_ns(a, bits, r, c))
    e_mvm = costs.mvm_energy_pj(a, bits, r, c)
    ops = 2 * r * c
    net = build_network(chip.noc)
    simd = chip.digital.simd
    peak_analog = a.tile_count * ops / period / 1000.0
    peak_digital = 2 * costs.simd_peak_macs_per_ns(simd, chip.precision.digital_mac) / 1000.0
    return {
        "name": chip.name,
        "source": chip.source,
        "tile_count": a.tile_count,
        "tile_rows": r,
        "tile_cols": c,
        "tiers": a.tile.tiers,
        "crossbar_slots": a.tile_count * a.tile.tiers,
        "analog_capacity_weights": a.tile_count * a.tile.tiers * r * c,
        "input_passes": costs.input_passes(a, bits),
        "adc_bits": a.adc.bits,
        "adc_energy_pj_per_conversion": costs.adc_energy_pj(a.adc),
        "adc_conversion_ns": costs.adc_time_ns(a.adc),
        "adc_scaling": ("pinned: the given figures at any bits (bits moves accuracy only)"
                        if a.adc.scaling == "pinned" and (a.adc.anchor_bits or a.adc.bits) != a.adc.bits else
                        f"{a.adc.scaling} law from {a.adc.anchor_bits or a.adc.bits} bits ({a.adc.kind})"),
        "mvm_latency_ns": t_mvm,
        "mvm_energy_pj": e_mvm,
        "peak_analog_tops": peak_analog,
        "analog_tops_per_w": (_per(ops, e_mvm + a.static_power_mw_per_tile * period) if a.tile_count
                              else float("nan")),
        "peak_digital_tops": peak_digital,
        "digital_tops_per_w": _per(2.0, costs.e_mac_pj(chip)),
        "sram_capacity_mib": chip.memory.sram.capacity_mib,
        "sram_energy_pj_per_byte": costs.sram_energy_pj_per_byte(chip.memory.sram),
        "sram_bandwidth_gbps": chip.memory.sram.bandwidth_gbps,
        "dram_bandwidth_gbps": chip.memory.dram.bandwidth_gbps * chip.memory.dram.channels,
        "noc_nodes": net.node_count,
        "noc_diameter_hops": net.diameter_hops(),
        "noc_bisection_bandwidth_gbps": net.bisection_bandwidth_gbps(),
        "tile_static_power_mw": a.static_power_mw_per_tile,
        "static_power_mw": (a.tile_count * a.static_power_mw_per_tile + costs.simd_static_power_mw(chip)
                            + costs.sram_static_power_mw(chip) + costs.dram_static_power_mw(chip)
                            + (costs.local_digital_static_power_mw(chip, area.tile_nodes(chip))
                               if a.tile_count else 0.0)
                            + costs.router_static_power_mw(chip, area.noc_nodes(chip))),
        "sram_static_power_mw": costs.sram_static_power_mw(chip),
        "simd_static_power_mw": costs.simd_static_power_mw(chip),
        "dram_static_power_mw": costs.dram_static_power_mw(chip),
        "digital_energy_scale": costs.digital_energy_scale(chip),
        "digital_mac_energy_pj": costs.e_mac_pj(chip),
        "digital_mac": chip.precision.digital_mac,
        "digital_process_nm": chip.digital.process_nm,
        "digital_energy_reference_nm": chip.digital.energy_reference_nm,
        "digital_weight_bits": chip.precision.digital_weight_bits,
        "digital_mac_efficiency": simd.mac_efficiency,
        "dac_energy_pj_per_conversion": costs.dac_energy_pj(a.dac),
        **area_figures(chip, peak_analog, peak_digital),
    }


def area_figures(chip: ChipSpec, peak_analog_tops: float, peak_digital_tops: float) -> dict[str, Any]:
    """Footprint and silicon (mm^2), the breakdown, and peak TOPS per mm^2: analog over the tiles' footprint
    (arrays of one tier, converters, periphery), digital over the SIMD cores' area (:mod:`arch.area`);
    ``reticles`` = footprint / ``area.reticle_limit_mm2`` and ``reticle_warning`` (None when one reticle holds
    the footprint), the text of :func:`arch.area.reticle_warning`."""
    ar = area.chip_area(chip)
    if not ar["modelled"]:
        return {"area_modelled": False}
    simd_mm2 = ar["breakdown"]["SIMD cores"]["footprint_mm2"]
    duty = area.adc_duty(chip)
    return {
        "area_modelled": True,
        "area_stacking": ar["stacking"],
        "adc_duty": duty,
        "area_process_nm": ar["process_nm"],
        "footprint_mm2": ar["footprint_mm2"],
        "silicon_mm2": ar["silicon_mm2"],
        "reticle_limit_mm2": ar["reticle_limit_mm2"],
        "reticles": ar["reticles"],
        "reticle_warning": ar["reticle_warning"],
        "tile_footprint_mm2": ar["tile_footprint_mm2"],
        "tile_silicon_mm2": ar["tile_silicon_mm2"],
        "analog_tops_per_mm2": _div(peak_analog_tops, ar["analog_footprint_mm2"]) if chip.analog.tile_count else None,
        "digital_tops_per_mm2": _div(peak_digital_tops, simd_mm2) if simd_mm2 > 0 else None,
        "area_breakdown_mm2": ar["breakdown"],
    }


def _div(a: float, b: float) -> float:
    """a / b; NaN (not applicable) when there is no area to divide by (e.g. a digital-only die not split by part)."""
    return a / b if b > 0 else float("nan")


UNITS = {
    "mvm_latency_ns": "ns", "mvm_energy_pj": "pJ", "adc_energy_pj_per_conversion": "pJ", "adc_conversion_ns": "ns", "peak_analog_tops": "TOPS", "analog_tops_per_w": "TOPS/W",
    "peak_digital_tops": "TOPS", "digital_tops_per_w": "TOPS/W (MACs only)", "sram_capacity_mib": "MiB", "sram_energy_pj_per_byte": "pJ/byte",
    "sram_bandwidth_gbps": "Gbit/s", "dram_bandwidth_gbps": "Gbit/s", "noc_bisection_bandwidth_gbps": "Gbit/s",
    "noc_diameter_hops": "hops", "static_power_mw": "mW", "tile_static_power_mw": "mW", "analog_capacity_weights": "weights",
    "sram_static_power_mw": "mW", "simd_static_power_mw": "mW", "dram_static_power_mw": "mW",
    "digital_mac_energy_pj": "pJ (at the digital node)", "dac_energy_pj_per_conversion": "pJ",
    "digital_process_nm": "nm", "digital_energy_reference_nm": "nm (where the digital energies are cited)",
    "digital_weight_bits": "bits", "area_process_nm": "nm", "footprint_mm2": "mm^2 (what the package sees)",
    "silicon_mm2": "mm^2 (every 3D tier counted)",
    "reticle_limit_mm2": "mm^2 (largest die one lithography exposure prints)",
    "reticles": "(footprint / reticle_limit_mm2; above 1: not one chip)", "tile_footprint_mm2": "mm^2", "tile_silicon_mm2": "mm^2",
    "analog_tops_per_mm2": "TOPS/mm^2 (peak, over the tiles' footprint)",
    "digital_tops_per_mm2": "TOPS/mm^2 (peak, over the SIMD cores)",
}
