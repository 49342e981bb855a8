"""Frozen, typed specification of one analog-digital system (DESIGN §2).

Every field carries its unit in its name and, in its metadata, the allowed range and a
one-line description used by error messages and ``hetmoe hw show``. The loader in
:mod:`arch.loader` builds these from YAML generically from this metadata.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field
from typing import Any


def param(doc: str, *, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
          choices: tuple[str, ...] | None = None, default: Any = MISSING) -> Any:
    """A spec field with its description and allowed range (``lo``/``hi`` inclusive unless ``lo_open``)."""
    meta = {"doc": doc, "lo": lo, "hi": hi, "lo_open": lo_open, "choices": choices}
    if default is MISSING:
        return field(metadata=meta)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


POSITIVE = {"lo": 0.0, "lo_open": True}


@dataclass(frozen=True)
class TileSpec:
    rows: int = param("crossbar rows (inputs) in weights", lo=1, hi=65536)
    cols: int = param("crossbar columns (outputs) in weights", lo=1, hi=65536)
    integration_ns: float = param("bit-line integration time per read pass, ns", lo=0.0)
    array_energy_fj_per_cell: float = param("array energy per device per MVM pass, fJ", lo=0.0)
    tiers: int = param("3D-stacked weight tiers per tile; one tier computes at a time", lo=1, hi=1024, default=1)
    devices_per_weight: int = param("memory devices storing one weight", lo=1, hi=64, default=1)
    columns_per_weight: int = param("bit-sliced physical columns per weight, each converted separately",
                                    lo=1, hi=64, default=1)
    initiation_interval_ns: float | None = param(
        "minimum gap between two MVMs on one tile, ns (default: one MVM latency, no overlap)",
        lo=0.0, lo_open=True, default=None)


@dataclass(frozen=True)
class DacSpec:
    bits: int = param("DAC resolution, bits", lo=1, hi=16)
    encoding: str = param("input encoding", choices=("pwm", "bit_serial"))
    step_ns: float = param("PWM LSB duration or one bit-serial cycle, ns", **POSITIVE)
    energy_pj_per_conversion: float = param("energy per DAC conversion, pJ", lo=0.0)
    per_tile: int = param("DACs per tile; rows are driven in ceil(rows/per_tile) groups", lo=1, hi=65536)


@dataclass(frozen=True)
class AdcSpec:
    bits: int = param("ADC resolution, bits", lo=1, hi=16)
    per_tile: int = param("ADCs per tile; columns share ADCs when fewer than cols", lo=1, hi=65536)
    conversion_ns: float = param("time of one conversion, ns", **POSITIVE)
    energy_pj_per_conversion: float = param("energy per ADC conversion, pJ", lo=0.0)


@dataclass(frozen=True)
class LocalDigitalSpec:
    """Digital unit next to each NoC node's tiles for activations and partial-sum adds."""

    ops_per_cycle: int = param("vector operations per cycle per node", lo=1)
    clock_ghz: float = param("clock, GHz", **POSITIVE)
    energy_pj_per_op: float = param("energy per vector operation, pJ", lo=0.0)


@dataclass(frozen=True)
class AnalogSpec:
    tile: TileSpec = param("one crossbar tile")
    dac: DacSpec = param("input DACs")
    adc: AdcSpec = param("output ADCs")
    tile_count: int = param("analog tiles in the system", lo=1, hi=10_000_000)
    static_power_mw_per_tile: float = param("static power of one tile with its periphery, mW", lo=0.0)
    local_digital: LocalDigitalSpec | None = param(
        "per-node digital unit for activations and partial sums (absent: the SIMD core does them)", default=None)


@dataclass(frozen=True)
class SimdSpec:
    cores: int = param("SIMD cores; a digital operation is spread over all of them", lo=1, hi=65536)
    macs_per_cycle: int = param("multiply-accumulates per cycle per core", lo=1)
    clock_ghz: float = param("clock, GHz", **POSITIVE)
    energy_pj_per_mac: dict = param("energy per MAC by precision name (int8, fp16, ...), pJ")
    vector_ops_per_cycle: int = param("element-wise operations per cycle per core", lo=1)
    energy_pj_per_vector_op: float = param("energy per element-wise operation, pJ", lo=0.0)
    static_power_mw: float = param("static power of all SIMD cores together, mW", lo=0.0)


@dataclass(frozen=True)
class DigitalSpec:
    simd: SimdSpec = param("digital SIMD cores")
    energy_scale: float = param(
        "technology scaling applied to every digital and SRAM energy (1 = the cited node as-is)",
        lo=0.0, lo_open=True, default=1.0)


@dataclass(frozen=True)
class SramSpec:
    capacity_mib: float = param("on-chip SRAM for digital weights, MiB", lo=0.0)
    bandwidth_gbps: float = param("SRAM bandwidth, Gbit/s", **POSITIVE)
    energy_pj_per_byte: float = param("SRAM access energy, pJ per byte", lo=0.0)
    static_power_mw: float = param("SRAM static (leakage) power, mW", lo=0.0, default=0.0)


@dataclass(frozen=True)
class DramSpec:
    bandwidth_gbps: float = param("DRAM bandwidth per channel, Gbit/s", **POSITIVE)
    energy_pj_per_bit: float = param("DRAM access energy, pJ per bit", lo=0.0)
    latency_ns: float = param("access latency, ns", lo=0.0)
    static_power_mw: float = param("DRAM static power, mW", lo=0.0)
    channels: int = param("independent channels; one access uses one channel", lo=1, hi=1024, default=1)


@dataclass(frozen=True)
class MemorySpec:
    sram: SramSpec = param("on-chip SRAM")
    dram: DramSpec = param("off-chip DRAM")


@dataclass(frozen=True)
class EdgeSpec:
    a: str = param("node name at one end")
    b: str = param("node name at the other end")
    bandwidth_gbps: float | None = param("this link's bandwidth, Gbit/s (default: noc.link_bandwidth_gbps)",
                                         lo=0.0, lo_open=True, default=None)
    energy_pj_per_bit: float | None = param(
        "this link's energy per bit per hop, pJ (default: noc.energy_pj_per_bit_per_hop)", lo=0.0, default=None)


@dataclass(frozen=True)
class NocSpec:
    topology: str = param("network shape", choices=("mesh", "graph"))
    link_bandwidth_gbps: float = param("bandwidth of one link, one direction, Gbit/s", **POSITIVE)
    router_latency_ns: float = param("latency per hop (router + link), ns", lo=0.0)
    energy_pj_per_bit_per_hop: float = param("energy per bit per hop, pJ", lo=0.0)
    tiles_per_node: int = param("analog tiles attached to one NoC node", lo=1)
    width: int | None = param("mesh columns (topology: mesh)", lo=1, hi=4096, default=None)
    height: int | None = param("mesh rows (topology: mesh)", lo=1, hi=4096, default=None)
    simd_node: list | str | None = param("node of the SIMD cores: [x, y] on a mesh, a name on a graph",
                                         default=None)
    dram_node: list | str | None = param("node of the DRAM controller: [x, y] or a name", default=None)
    nodes: list | None = param("node names (topology: graph)", default=None)
    edges: list[EdgeSpec] | None = param("links (topology: graph), each {a, b[, bandwidth_gbps, ...]}",
                                         default=None)
    tile_nodes: list | None = param("nodes that host tiles, in fill order (graph; mesh: all, row-major)",
                                    default=None)


@dataclass(frozen=True)
class PrecisionSpec:
    activation_bits: int = param("activation bits on both domains (DAC input, traffic, SRAM)", lo=1, hi=32)
    digital_weight_bits: int = param("weight bits of digital matrices (SRAM/DRAM bytes)", lo=1, hi=32)
    digital_mac: str = param("precision name selecting digital.simd.energy_pj_per_mac")
    partial_sum_bits: int = param("bits of an analog partial sum sent for reduction", lo=1, hi=64, default=16)


@dataclass(frozen=True)
class ChipSpec:
    analog: AnalogSpec = param("analog in-memory tiles")
    digital: DigitalSpec = param("digital SIMD domain")
    memory: MemorySpec = param("SRAM and DRAM")
    noc: NocSpec = param("network on chip")
    precision: PrecisionSpec = param("number formats")
    name: str = param("system name", default="")
    description: str = param("free text", default="")
    source: str = param("where the system comes from (file path or preset name)", default="")
