"""Silicon area of a system (DESIGN §6): counted components x a cited unit area. Pure functions, mm^2.

Two totals: **footprint** (what the package sees; the crossbar tiers of a 3D-stacked tile share one
footprint, their periphery sits in the base layer) and **silicon** (what the wafers cost; every tier
counts). Every other component is planar, so its footprint and silicon are equal:

- crossbar arrays: ``tile_count x rows x cols x devices_per_weight x crossbar_um2_per_device`` per tier;
  footprint one tier, silicon ``x tiers``;
- DACs: ``tile_count x dac.per_tile x dac_um2``;
- ADCs: ``tile_count x adc.per_tile x adc_um2 x 2^(bits - anchor_bits) x copies``, ``copies =
  ceil(adc_reference_conversion_ns / conversion time)`` when the converter must be faster than the cited
  design (interleaving), else 1;
- tile periphery: ``tile_count x tile_periphery_um2``;
- local digital units: ``nodes hosting tiles x ops_per_cycle x local_digital_um2_per_op``;
- SIMD cores: ``cores x (macs_per_cycle x simd_um2_per_mac + simd_mm2_per_core)``;
- SRAM: ``(capacity_mib + staging_mib) x sram_mm2_per_mib``;
- NoC routers: ``nodes x link_bandwidth_gbps x router_um2_per_gbps``;
- DRAM interface: ``channels x dram_interface_mm2_per_channel``; other: ``other_mm2``.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil

from . import costs
from .spec import AdcSpec, AreaSpec, ChipSpec

UM2_PER_MM2 = 1e6


@dataclass(frozen=True)
class Part:
    """One component's area, mm^2."""

    name: str
    count: int | float          # how many instances (tiles, converters, MiB, routers, ...)
    footprint_mm2: float
    silicon_mm2: float


def adc_area_um2(adc: AdcSpec, area: AreaSpec) -> float:
    """Area of one ADC at ``adc.bits``, um^2: ``adc_um2 x 2^(bits - anchor)`` (``anchor_bits`` defaults to
    ``bits``), times ``ceil(reference / conversion time)`` interleaved copies when the conversion time
    (:func:`arch.costs.adc_time_ns`) is shorter than ``adc_reference_conversion_ns``."""
    anchor = adc.anchor_bits or adc.bits
    um2 = (area.adc_um2 or 0.0) * 2.0 ** (adc.bits - anchor)
    ref = area.adc_reference_conversion_ns
    if ref is not None:
        um2 *= max(1, ceil(ref / costs.adc_time_ns(adc) - 1e-9))
    return um2


def tile_parts(chip: ChipSpec) -> dict[str, float]:
    """One tile's parts, um^2: ``array_per_tier``, ``dac``, ``adc``, ``periphery``."""
    a, ar = chip.analog, chip.area
    t = a.tile
    return {"array_per_tier": t.rows * t.cols * t.devices_per_weight * (ar.crossbar_um2_per_device or 0.0),
            "dac": a.dac.per_tile * (ar.dac_um2 or 0.0),
            "adc": a.adc.per_tile * adc_area_um2(a.adc, ar),
            "periphery": ar.tile_periphery_um2}


def tile_area_mm2(chip: ChipSpec) -> tuple[float, float]:
    """(footprint, silicon) of one tile, mm^2: periphery + one tier of array, and + every tier."""
    p = tile_parts(chip)
    base = p["dac"] + p["adc"] + p["periphery"]
    tiers = chip.analog.tile.tiers
    return (base + p["array_per_tier"]) / UM2_PER_MM2, (base + tiers * p["array_per_tier"]) / UM2_PER_MM2


def tile_nodes(chip: ChipSpec) -> int:
    """NoC nodes that host tiles (tiles fill nodes in order, ``tiles_per_node`` each)."""
    noc = chip.noc
    slots = noc.width * noc.height if noc.topology == "mesh" else len(noc.tile_nodes or ())
    return min(slots, ceil(chip.analog.tile_count / noc.tiles_per_node))


def noc_nodes(chip: ChipSpec) -> int:
    noc = chip.noc
    return noc.width * noc.height if noc.topology == "mesh" else len(noc.nodes or ())


def parts(chip: ChipSpec) -> list[Part]:
    """Every component's area (module docstring); empty when the system has no ``area`` section."""
    ar = chip.area
    if ar is None:
        return []
    a, simd, mem = chip.analog, chip.digital.simd, chip.memory
    n = a.tile_count
    tp = tile_parts(chip)
    tiers = a.tile.tiers
    out = [Part("crossbar arrays", n * tiers, n * tp["array_per_tier"] / UM2_PER_MM2,
                n * tiers * tp["array_per_tier"] / UM2_PER_MM2)]

    def planar(name: str, count: float, mm2: float) -> None:
        out.append(Part(name, count, mm2, mm2))

    planar("DACs", n * a.dac.per_tile, n * tp["dac"] / UM2_PER_MM2)
    planar("ADCs", n * a.adc.per_tile, n * tp["adc"] / UM2_PER_MM2)
    planar("tile periphery", n, n * tp["periphery"] / UM2_PER_MM2)
    if a.local_digital is not None:
        k = tile_nodes(chip)
        planar("local digital units", k, k * a.local_digital.ops_per_cycle * ar.local_digital_um2_per_op
               / UM2_PER_MM2)
    planar("SIMD cores", simd.cores, simd.cores * (simd.macs_per_cycle * ar.simd_um2_per_mac / UM2_PER_MM2
                                                   + ar.simd_mm2_per_core))
    mib = mem.sram.capacity_mib + mem.sram.staging_mib
    planar("SRAM", mib, mib * ar.sram_mm2_per_mib)
    nodes = noc_nodes(chip)
    planar("NoC routers", nodes, nodes * chip.noc.link_bandwidth_gbps * ar.router_um2_per_gbps / UM2_PER_MM2)
    planar("DRAM interface", mem.dram.channels, mem.dram.channels * ar.dram_interface_mm2_per_channel)
    planar("other", 1, ar.other_mm2)
    return out


ANALOG_PARTS = ("crossbar arrays", "DACs", "ADCs", "tile periphery")


def chip_area(chip: ChipSpec) -> dict:
    """Footprint and silicon totals with the breakdown, and the densities ``hw show`` prints:
    peak analog TOPS per mm^2 of tile footprint, peak digital TOPS per mm^2 of SIMD cores.
    ``{"modelled": False}`` when the system has no ``area`` section."""
    ps = parts(chip)
    if not ps:
        return {"modelled": False}
    by = {p.name: p for p in ps}
    analog_fp = sum(by[k].footprint_mm2 for k in ANALOG_PARTS)
    return {
        "modelled": True,
        "process_nm": chip.area.process_nm,
        "footprint_mm2": sum(p.footprint_mm2 for p in ps),
        "silicon_mm2": sum(p.silicon_mm2 for p in ps),
        "tile_footprint_mm2": tile_area_mm2(chip)[0],
        "tile_silicon_mm2": tile_area_mm2(chip)[1],
        "analog_footprint_mm2": analog_fp,
        "breakdown": {p.name: {"count": p.count, "footprint_mm2": p.footprint_mm2, "silicon_mm2": p.silicon_mm2}
                      for p in ps},
    }

