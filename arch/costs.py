"""Closed-form component costs (DESIGN §2). Pure functions; times in ns, energies in pJ.

Bandwidths are Gbit/s everywhere, so ``bytes * 8 / bandwidth_gbps`` is a time in ns.
These are the formulas the engine schedules with and the tests check against hand arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil, sqrt

from .spec import AdcSpec, AnalogSpec, ChipSpec, DacSpec, SimdSpec, SramSpec

# ----------------------------------------------------------------------------- analog crossbar

def input_passes(analog: AnalogSpec, activation_bits: int) -> int:
    """Read passes per input vector: ``ceil(activation_bits / dac.bits)`` slices, each converted on its own
    and shifted-and-added digitally (bit-serial inputs: 1-bit slices; PWM: one pass when the DAC is at
    least as wide as the activations)."""
    return ceil(activation_bits / analog.dac.bits)


def adc_thermal_floor_pj(bits: int, schreier_fom_db: float) -> float:
    """Least energy per conversion a ``bits``-bit Nyquist converter at Schreier figure of merit ``FoM`` can
    have, pJ: ``FoM = SNDR + 10 log10(f_s / 2 / P)`` with the ideal ``SNDR = 6.02 b + 1.76`` dB gives
    ``E = P / f_s = 10^((SNDR - FoM) / 10) / 2`` J (Murmann, ADC Performance Survey: the frontier is
    thermal-noise limited, x 4 per bit, above ~10 bits)."""
    return 0.5 * 10.0 ** ((6.02 * bits + 1.76 - schreier_fom_db) / 10.0) * 1e12


def adc_energy_pj(adc: AdcSpec) -> float:
    """Energy of one conversion at ``adc.bits``, pJ. ``survey``: ``max(E_anchor x 2^(bits - anchor),
    thermal floor at schreier_fom_db)`` (Walden's figure of merit from the cited design, never below the
    thermal limit, :func:`adc_thermal_floor_pj`); ``pinned``, or at the anchor: as given."""
    anchor = adc.anchor_bits or adc.bits
    if adc.scaling == "pinned" or anchor == adc.bits:
        return adc.energy_pj_per_conversion
    return max(adc.energy_pj_per_conversion * 2.0 ** (adc.bits - anchor),
               adc_thermal_floor_pj(adc.bits, adc.schreier_fom_db))


def adc_time_law(adc: AdcSpec, bits: int) -> float:
    """Conversion time at ``bits`` relative to ``anchor_bits``: SAR ``bits / anchor`` (one cycle per bit),
    ramp ``2^(bits - anchor)`` (one count per level); 1 when pinned."""
    anchor = adc.anchor_bits or adc.bits
    if adc.scaling == "pinned" or anchor == bits:
        return 1.0
    return bits / anchor if adc.kind == "sar" else 2.0 ** (bits - anchor)


def dac_energy_pj(dac: DacSpec) -> float:
    """Energy of one DAC conversion at ``dac.bits``, pJ: the cited figure at ``anchor_bits`` times
    ``bits / anchor`` (pwm: comparator and counter width) or ``2^(bits - anchor)`` (bit_serial multi-bit
    DACs: unit elements)."""
    return dac.energy_pj_per_conversion * dac_law(dac)


def dac_law(dac: DacSpec) -> float:
    """Relative DAC energy and area at ``bits`` against ``anchor_bits`` (:func:`dac_energy_pj`)."""
    anchor = dac.anchor_bits or dac.bits
    if anchor == dac.bits:
        return 1.0
    return dac.bits / anchor if dac.encoding == "pwm" else 2.0 ** (dac.bits - anchor)


def adc_time_ns(adc: AdcSpec) -> float:
    """Time of one conversion at ``adc.bits``, ns: ``conversion_ns x`` :func:`adc_time_law`."""
    return adc.conversion_ns * adc_time_law(adc, adc.bits)


def conversion_ns(analog: AnalogSpec, cols_used: int) -> float:
    """ADC time per pass: ceil(physical columns / ADCs per tile) * one conversion (:func:`adc_time_ns`)."""
    physical = cols_used * analog.tile.columns_per_weight
    return ceil(physical / analog.adc.per_tile) * adc_time_ns(analog.adc)


def mvm_latency_ns(analog: AnalogSpec, activation_bits: int, rows_used: int, cols_used: int) -> float:
    """Latency of one input vector through one crossbar using ``rows_used`` x ``cols_used`` weights, ns.

    PWM: ``passes * (g * (t_in + integration_ns) + t_conv)`` with ``t_in = (2^(b-1) - 1) * step_ns``
    (signed magnitude) and ``b = min(activation bits, dac.bits)`` bits per slice. Bit-serial:
    ``passes * (g * (step_ns + integration_ns) + t_conv)``. ``passes = ceil(activation bits /
    dac.bits)``; ``g = ceil(rows_used / dac.per_tile)`` row groups (1 when every row has its own DAC).
    The digital shift-and-add of the slices is not timed (it overlaps the next pass).
    """
    t, dac = analog.tile, analog.dac
    groups = ceil(rows_used / dac.per_tile)
    t_conv = conversion_ns(analog, cols_used)
    passes = input_passes(analog, activation_bits)
    if dac.encoding == "pwm":
        t_in = (2 ** (min(activation_bits, dac.bits) - 1) - 1) * dac.step_ns
        return passes * (groups * (t_in + t.integration_ns) + t_conv)
    return passes * (groups * (dac.step_ns + t.integration_ns) + t_conv)


@dataclass(frozen=True)
class MvmActions:
    """Actions of one input vector through one crossbar (counts, not energies)."""

    dac_conversions: int
    adc_conversions: int
    cell_reads: int


def mvm_actions(analog: AnalogSpec, activation_bits: int, rows_used: int, cols_used: int) -> MvmActions:
    """``passes * rows`` DAC and ``passes * cols * columns_per_weight`` ADC conversions;
    ``passes * rows * cols * devices_per_weight`` device reads (every input pass reads every cell)."""
    passes = input_passes(analog, activation_bits)
    t = analog.tile
    return MvmActions(passes * rows_used, passes * cols_used * t.columns_per_weight,
                      passes * rows_used * cols_used * t.devices_per_weight)


def mvm_energy_pj(analog: AnalogSpec, activation_bits: int, rows_used: int, cols_used: int) -> float:
    """``passes * (r * e_dac + c * e_adc + r * c * devices_per_weight * e_cell)``, pJ."""
    act = mvm_actions(analog, activation_bits, rows_used, cols_used)
    return (act.dac_conversions * dac_energy_pj(analog.dac)
            + act.adc_conversions * adc_energy_pj(analog.adc)
            + act.cell_reads * analog.tile.array_energy_fj_per_cell * 1e-3)


def initiation_interval_ns(analog: AnalogSpec, activation_bits: int, rows_used: int, cols_used: int) -> float:
    """Gap between consecutive MVMs on one tile, ns (default: one MVM latency)."""
    ii = analog.tile.initiation_interval_ns
    return mvm_latency_ns(analog, activation_bits, rows_used, cols_used) if ii is None else ii


def tile_batch_latency_ns(t_mvm_ns: float, ii_ns: float, n_vectors: int) -> float:
    """``n`` vectors on one tile: ``t_mvm + (n - 1) * II``, ns (0 for no vectors)."""
    return 0.0 if n_vectors <= 0 else t_mvm_ns + (n_vectors - 1) * ii_ns


def crossbar_blocks(out_features: int, in_features: int, rows: int, cols: int) -> tuple[int, int]:
    """``(ceil(in/rows), ceil(out/cols))``: row blocks and column blocks of ``W[out, in]``."""
    return ceil(in_features / rows), ceil(out_features / cols)


def crossbar_slots(out_features: int, in_features: int, rows: int, cols: int) -> int:
    """Crossbar slots (tile x tier) needed by ``W[out, in]``."""
    rb, cb = crossbar_blocks(out_features, in_features, rows, cols)
    return rb * cb


def slot_shapes(out_features: int, in_features: int, rows: int, cols: int) -> list[tuple[int, int]]:
    """``(rows_used, cols_used)`` of every slot, row block major."""
    rb, cb = crossbar_blocks(out_features, in_features, rows, cols)
    shapes = []
    for i in range(rb):
        r = min(rows, in_features - i * rows)
        for j in range(cb):
            shapes.append((r, min(cols, out_features - j * cols)))
    return shapes


def reduction_adds(out_features: int, in_features: int, rows: int) -> int:
    """Digital partial-sum additions per token: ``out * (ceil(in/rows) - 1)``."""
    return out_features * (ceil(in_features / rows) - 1)


# ----------------------------------------------------------------------------- digital

def simd_peak_macs_per_ns(simd: SimdSpec, precision: str | None = None) -> float:
    """Peak MAC rate of all cores at ``precision`` (``mac_rate_scale``, default 1), MACs per ns."""
    scale = simd.mac_rate_scale.get(precision, 1.0) if precision else 1.0
    return simd.cores * simd.macs_per_cycle * simd.clock_ghz * scale


def simd_macs_per_ns(simd: SimdSpec, precision: str | None = None) -> float:
    """Achieved MAC rate on GEMMs: peak x ``mac_efficiency``, MACs per ns (what the engine schedules with)."""
    return simd_peak_macs_per_ns(simd, precision) * simd.mac_efficiency


def simd_vector_ops_per_ns(simd: SimdSpec) -> float:
    """Aggregate element-wise operation rate of all cores, per ns."""
    return simd.cores * simd.vector_ops_per_cycle * simd.clock_ghz


def transfer_ns(n_bytes: float, bandwidth_gbps: float) -> float:
    """Serialisation time of ``n_bytes`` at ``bandwidth_gbps``: ``bytes * 8 / bw``, ns."""
    return n_bytes * 8.0 / bandwidth_gbps


def gemm_latency_ns(macs: float, macs_per_ns: float, weight_bytes: float, source_gbps: float,
                    act_bytes: float, sram_gbps: float) -> float:
    """Roofline: ``max(macs / rate, weight_bytes / source_bw, act_bytes / sram_bw)``, ns."""
    return max(macs / macs_per_ns, transfer_ns(weight_bytes, source_gbps), transfer_ns(act_bytes, sram_gbps))


def gemm_energy_pj(macs: float, e_mac_pj: float, weight_bytes: float, e_source_pj_per_byte: float,
                   act_bytes: float, e_sram_pj_per_byte: float) -> float:
    """``macs * e_mac + weight_bytes * e_source + act_bytes * e_sram``, pJ."""
    return macs * e_mac_pj + weight_bytes * e_source_pj_per_byte + act_bytes * e_sram_pj_per_byte


def node_energy_scale(from_nm: float, from_vdd_v: float, to_nm: float, to_vdd_v: float) -> float:
    """Dynamic energy moved from one node to another: ``(to_nm / from_nm) x (to_vdd / from_vdd)^2``
    (``E = C V^2`` with switched capacitance proportional to feature size)."""
    return (to_nm / from_nm) * (to_vdd_v / from_vdd_v) ** 2


def digital_energy_scale(chip: ChipSpec) -> float:
    """Factor on every cited digital energy (MAC, vector op, SRAM access, local digital op):
    ``energy_scale x`` :func:`node_energy_scale` from ``energy_reference_nm``/``_vdd_v`` to the domain's
    ``process_nm``/``vdd_v`` (1 when no reference node is given)."""
    d = chip.digital
    if d.energy_reference_nm is None:
        return d.energy_scale
    return d.energy_scale * node_energy_scale(d.energy_reference_nm, d.energy_reference_vdd_v, d.process_nm, d.vdd_v)


def e_mac_pj(chip: ChipSpec) -> float:
    """Energy of one digital MAC at the declared precision, at the domain's node, pJ."""
    return chip.digital.simd.energy_pj_per_mac[chip.precision.digital_mac] * digital_energy_scale(chip)


def e_vector_op_pj(chip: ChipSpec) -> float:
    return chip.digital.simd.energy_pj_per_vector_op * digital_energy_scale(chip)


def e_local_digital_op_pj(chip: ChipSpec) -> float:
    ld = chip.analog.local_digital
    return ld.energy_pj_per_op * digital_energy_scale(chip) if ld else 0.0


def sram_energy_pj_per_byte(sram: SramSpec) -> float:
    """Access energy of a ``bank_kib`` bank: the cited figure times ``sqrt(bank_kib / reference)``
    (wire-dominated arrays; Horowitz ISSCC 2014's 64-bit reads: 10 pJ at 8 KB, 20 pJ at 32 KB, 100 pJ
    at 1 MB, i.e. x2 per x4 in size), pJ per byte."""
    ref = sram.energy_reference_bank_kib
    if sram.bank_kib is None or ref is None:
        return sram.energy_pj_per_byte
    return sram.energy_pj_per_byte * sqrt(sram.bank_kib / ref)


def e_sram_pj_per_byte(chip: ChipSpec) -> float:
    return sram_energy_pj_per_byte(chip.memory.sram) * digital_energy_scale(chip)


# ----------------------------------------------------------------------------- NoC and DRAM

def noc_latency_ns(n_bytes: float, hops: int, bottleneck_gbps: float, router_latency_ns: float) -> float:
    """``h * router_latency_ns + bytes / bandwidth``; 0 when source and destination coincide."""
    return 0.0 if hops == 0 else hops * router_latency_ns + transfer_ns(n_bytes, bottleneck_gbps)


def noc_energy_pj(n_bytes: float, hops: int, e_pj_per_bit_per_hop: float) -> float:
    """``bytes * 8 * h * e``, pJ."""
    return n_bytes * 8.0 * hops * e_pj_per_bit_per_hop


def dram_latency_ns(n_bytes: float, latency_ns: float, bandwidth_gbps: float) -> float:
    """``latency_ns + bytes / bandwidth``, ns."""
    return latency_ns + transfer_ns(n_bytes, bandwidth_gbps)


def dram_energy_pj(n_bytes: float, e_pj_per_bit: float) -> float:
    """``bytes * 8 * e``, pJ."""
    return n_bytes * 8.0 * e_pj_per_bit


def simd_static_power_mw(chip: ChipSpec) -> float:
    """``cores x static_power_mw_per_core``, mW."""
    return chip.digital.simd.cores * chip.digital.simd.static_power_mw_per_core


def dram_static_power_mw(chip: ChipSpec) -> float:
    """``channels x static_power_mw_per_channel``, mW."""
    return chip.memory.dram.channels * chip.memory.dram.static_power_mw_per_channel


def local_digital_static_power_mw(chip: ChipSpec, units: int) -> float:
    """``units x local_digital.static_power_mw``, mW (one unit per NoC node hosting tiles)."""
    ld = chip.analog.local_digital
    return units * ld.static_power_mw if ld else 0.0


def router_static_power_mw(chip: ChipSpec, routers: int) -> float:
    """``routers x noc.static_power_mw_per_router``, mW."""
    return routers * chip.noc.static_power_mw_per_router


def sram_static_power_mw(chip: ChipSpec) -> float:
    """SRAM static power, mW: ``static_power_mw + leakage_mw_per_mib x (capacity_mib + staging_mib)``
    (leakage follows the SRAM's size, as its area does in :mod:`arch.area`)."""
    s = chip.memory.sram
    return s.static_power_mw + s.leakage_mw_per_mib * (s.capacity_mib + s.staging_mib)
