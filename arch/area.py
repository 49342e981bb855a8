"""Silicon area of a system (DESIGN §6): counted components x a cited unit area. Pure functions, mm^2.

Two totals: **footprint** (what the package sees) and **silicon** (what the wafers cost). How a tile's
tiers are built (``analog.tile.stacking``) decides both; per tile, with ``A`` one tier's array, ``D`` its
DACs, ``C`` its ADCs and ``P`` its periphery:

- planar (one tier): footprint = silicon = ``A + D + C + P`` (array beside its periphery);
- monolithic (array layers deposited over the CMOS, periphery under the array, as 3D NAND's
  CMOS-under-array): footprint = silicon = ``max(A, D + C + P)``; the tiers are layers on one wafer
  (``array_layers``), costed by layer count, not by area;
- bonded (each tier a die with its array and row drivers, bonded over a base die with the converters and
  periphery): footprint = ``max(A + D, C + P)``, silicon = ``tiers x (A + D) + C + P``.

In the breakdown a part beneath another counts no footprint (the array of a monolithic tile counts only
what overhangs its periphery). Unit areas:

- crossbar arrays: ``rows x cols x devices_per_weight x crossbar_um2_per_device`` per tier;
- DACs: ``dac.per_tile x dac_um2 x law`` (:func:`arch.costs.dac_law`);
- ADCs: ``adc.per_tile x`` :func:`adc_area_um2` (fixed part + a part that grows with bits, times interleaved
  copies when the converter must be faster than the cited design at the same bits);
- tile periphery: ``tile_periphery_um2``;
- local digital units: ``nodes hosting tiles x ops_per_cycle x local_digital_um2_per_op``;
- SIMD cores: ``cores x (macs_per_cycle x simd_um2_per_mac + simd_mm2_per_core)``;
- SRAM: ``(capacity_mib + staging_mib) x sram_mm2_per_mib``;
- NoC routers: ``nodes x (router_mm2_per_node + link_bandwidth_gbps x router_um2_per_gbps)``;
- DRAM interface: ``channels x dram_interface_mm2_per_channel``; other: ``other_mm2``.

One die cannot be larger than the lithography field (``area.reticle_limit_mm2``, default 26 mm x 33 mm =
858 mm^2): a footprint above it is ``footprint / limit`` dies' worth of silicon, which a system of several
chips would have to build. :func:`reticle_warning` words that once for every place a chip is shown or used.
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


def adc_bits_law(adc: AdcSpec, area: AreaSpec) -> float:
    """Area at ``adc.bits`` relative to ``anchor_bits``: ``f + (1 - f) x g`` with ``f`` the fixed share
    (comparator, logic) and ``g = 2^(bits - anchor)`` for sar (capacitor array), ``bits / anchor`` for
    ramp (counter; the time law already charges the extra levels)."""
    anchor = adc.anchor_bits or adc.bits
    f = area.adc_fixed_fraction
    g = 2.0 ** (adc.bits - anchor) if adc.kind == "sar" else adc.bits / anchor
    return f + (1.0 - f) * g


def adc_reference_ns(adc: AdcSpec, area: AreaSpec) -> float | None:
    """The cited design's conversion time at ``adc.bits``: ``adc_reference_conversion_ns`` (given at
    ``anchor_bits``) times the kind's time law (:func:`arch.costs.adc_time_law`), ns; None when not given."""
    ref = area.adc_reference_conversion_ns
    return None if ref is None else ref * costs.adc_time_law(adc, adc.bits)


def adc_copies(adc: AdcSpec, area: AreaSpec) -> int:
    """Interleaved copies a converter needs: ``ceil(reference at bits / conversion time)`` when asked to be
    faster than the cited design at the same bits, else 1."""
    ref = adc_reference_ns(adc, area)
    return 1 if ref is None else max(1, ceil(ref / costs.adc_time_ns(adc) - 1e-9))


def adc_area_um2(adc: AdcSpec, area: AreaSpec) -> float:
    """Area of one ADC at ``adc.bits``, um^2: ``adc_um2 x`` :func:`adc_bits_law` ``x`` :func:`adc_copies`."""
    return (area.adc_um2 or 0.0) * adc_bits_law(adc, area) * adc_copies(adc, area)


def adc_duty(chip: ChipSpec) -> dict | None:
    """How busy the cited converter would be: the requested conversion time against the cited design's
    at the same bits. ``idle`` = ``1 - reference / time``; ``share`` = columns one cited converter could
    serve in the requested time (``floor(time / reference)``) and ``per_tile`` the converters that would
    keep the pass time. None without a reference or when the converter is not slower than the design."""
    a = chip.analog
    if chip.area is None or a.tile_count == 0:
        return None
    ref = adc_reference_ns(a.adc, chip.area)
    t = costs.adc_time_ns(a.adc)
    if ref is None or t <= ref * (1 + 1e-9):
        return None
    share = int(t // ref)
    physical = a.tile.cols * a.tile.columns_per_weight
    return {"reference_ns": ref, "cited_ns": chip.area.adc_reference_conversion_ns, "conversion_ns": t, "idle": 1.0 - ref / t, "share": share,
            "per_tile": ceil(a.adc.per_tile / share), "physical_columns": physical}


def stacking(chip: ChipSpec) -> str:
    """``analog.tile.stacking`` with its default: planar for one tier, monolithic above."""
    t = chip.analog.tile
    return t.stacking or ("planar" if t.tiers == 1 else "monolithic")


def tile_parts(chip: ChipSpec) -> dict[str, float]:
    """One tile's parts, um^2: ``array_per_tier``, ``dac``, ``adc``, ``periphery``."""
    a, ar = chip.analog, chip.area
    t = a.tile
    return {"array_per_tier": t.rows * t.cols * t.devices_per_weight * (ar.crossbar_um2_per_device or 0.0),
            "dac": a.dac.per_tile * (ar.dac_um2 or 0.0) * costs.dac_law(a.dac),
            "adc": a.adc.per_tile * adc_area_um2(a.adc, ar),
            "periphery": ar.tile_periphery_um2}


def tile_layout(chip: ChipSpec) -> dict[str, tuple[float, float]]:
    """Per part of one tile, (footprint, silicon) in um^2 under ``stacking`` (module docstring); the
    parts sum to the tile's footprint and silicon."""
    p = tile_parts(chip)
    A, D, C, P = p["array_per_tier"], p["dac"], p["adc"], p["periphery"]
    tiers, how = chip.analog.tile.tiers, stacking(chip)
    if how == "planar":
        return {"array": (A, tiers * A), "dac": (D, D), "adc": (C, C), "periphery": (P, P)}
    if how == "monolithic":
        over = max(0.0, A - (D + C + P))
        return {"array": (over, over), "dac": (D, D), "adc": (C, C), "periphery": (P, P)}
    over = max(0.0, (A + D) - (C + P))          # bonded: tier dies (array + drivers) over the base die
    return {"array": (over, tiers * A), "dac": (0.0, tiers * D), "adc": (C, C), "periphery": (P, P)}


def tile_area_mm2(chip: ChipSpec) -> tuple[float, float]:
    """(footprint, silicon) of one tile, mm^2 (:func:`tile_layout`)."""
    lay = tile_layout(chip).values()
    return sum(f for f, _ in lay) / UM2_PER_MM2, sum(s for _, s in lay) / UM2_PER_MM2


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
    lay = tile_layout(chip)
    tiers = a.tile.tiers
    out = []

    def tile_part(name: str, count: float, key: str) -> None:
        fp, si = lay[key]
        out.append(Part(name, count, n * fp / UM2_PER_MM2, n * si / UM2_PER_MM2))

    def planar(name: str, count: float, mm2: float) -> None:
        out.append(Part(name, count, mm2, mm2))

    tile_part("crossbar arrays", n * tiers, "array")
    tile_part("DACs", n * a.dac.per_tile * (tiers if stacking(chip) == "bonded" else 1), "dac")
    tile_part("ADCs", n * a.adc.per_tile, "adc")
    tile_part("tile periphery", n, "periphery")
    if a.local_digital is not None:
        k = tile_nodes(chip)
        planar("local digital units", k, k * a.local_digital.ops_per_cycle * ar.local_digital_um2_per_op
               / UM2_PER_MM2)
    planar("SIMD cores", simd.cores, simd.cores * (simd.macs_per_cycle * ar.simd_um2_per_mac / UM2_PER_MM2
                                                   + ar.simd_mm2_per_core))
    mib = mem.sram.capacity_mib + mem.sram.staging_mib
    planar("SRAM", mib, mib * ar.sram_mm2_per_mib)
    nodes = noc_nodes(chip)
    planar("NoC routers", nodes, nodes * (ar.router_mm2_per_node
                                          + chip.noc.link_bandwidth_gbps * ar.router_um2_per_gbps / UM2_PER_MM2))
    planar("DRAM interface", mem.dram.channels, mem.dram.channels * ar.dram_interface_mm2_per_channel)
    planar("other", 1, ar.other_mm2)
    return out


ANALOG_PARTS = ("crossbar arrays", "DACs", "ADCs", "tile periphery")
RETICLE_MM2 = 858.0     # 26 mm x 33 mm scanner field (the AreaSpec default)


def reticle_warning(footprint_mm2: float, limit_mm2: float = RETICLE_MM2) -> str | None:
    """The one wording of a footprint above one reticle (None when it fits): every place that shows or uses
    a chip (hw show, hw fit, run, compare, the report, result.json) prints this text."""
    if not footprint_mm2 > limit_mm2:
        return None
    return (f"footprint {footprint_mm2:,.1f} mm^2 exceeds one reticle ({limit_mm2:,.6g} mm^2): this is "
            f"{footprint_mm2 / limit_mm2:,.1f} dies' worth of silicon; no single die can be "
            "built this large: split the design over several chips (hetmoe system fit sizes such a system)")


def chip_reticle_warning(chip: ChipSpec) -> str | None:
    """:func:`reticle_warning` for ``chip`` (None without an ``area`` section or when it fits one reticle)."""
    ar = chip_area(chip)
    return ar["reticle_warning"] if ar["modelled"] else None


def chip_area(chip: ChipSpec) -> dict:
    """Footprint and silicon totals with the breakdown, the footprint in reticles (``footprint /
    reticle_limit_mm2``) with :func:`reticle_warning`, and the analog footprint (tiles).
    ``{"modelled": False}`` when the system has no ``area`` section."""
    ps = parts(chip)
    if not ps:
        return {"modelled": False}
    by = {p.name: p for p in ps}
    analog_fp = sum(by[k].footprint_mm2 for k in ANALOG_PARTS)
    footprint = sum(p.footprint_mm2 for p in ps)
    limit = chip.area.reticle_limit_mm2
    return {
        "modelled": True,
        "process_nm": chip.area.process_nm,
        "stacking": stacking(chip),
        "array_layers": chip.analog.tile.tiers if stacking(chip) == "monolithic" else 0,
        "footprint_mm2": footprint,
        "silicon_mm2": sum(p.silicon_mm2 for p in ps),
        "reticle_limit_mm2": limit,
        "reticles": footprint / limit,
        "reticle_warning": reticle_warning(footprint, limit),
        "tile_footprint_mm2": tile_area_mm2(chip)[0],
        "tile_silicon_mm2": tile_area_mm2(chip)[1],
        "analog_footprint_mm2": analog_fp,
        "breakdown": {p.name: {"count": p.count, "footprint_mm2": p.footprint_mm2, "silicon_mm2": p.silicon_mm2}
                      for p in ps},
    }

