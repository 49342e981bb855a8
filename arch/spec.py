"""Frozen, typed specification of one analog-digital system (DESIGN §2).

Every field carries its unit in its name and, in its metadata, the allowed range and a
one-line description used by error messages and ``hetmoe hw show``. The loader in
:mod:`arch.loader` builds these from YAML generically from this metadata.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field
from typing import Any


def param(doc: str, *, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
          choices: tuple[str, ...] | None = None, default: Any = MISSING, positive: bool = False,
          note: str | None = None, items: dict | None = None) -> Any:
    """A spec field with its description and allowed range (``lo``/``hi`` inclusive unless ``lo_open``).

    Every number must be finite (the loader refuses NaN and infinities whatever the range). ``positive``:
    the quantity must be > 0 (said first when a value is not), besides ``lo``. ``note``: why the range is what
    it is, shown with it in errors. ``items``: the range of each value of a mapping field (by name), as
    ``{"lo": .., "hi": .., "positive": .., "note": ..}`` (default: >= 0)."""
    meta = {"doc": doc, "lo": lo, "hi": hi, "lo_open": lo_open, "choices": choices, "positive": positive,
            "note": note, "items": items}
    if default is MISSING:
        return field(metadata=meta)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


POSITIVE = {"lo": 0.0, "lo_open": True}

# ---------------------------------------------------------------------------- what the engine's clock carries
# The engine counts time in int64 picoseconds (sim/engine/kernel.py): 2^63 ps is 106.75 days. A run may simulate
# at most SPAN_PS = 2^62 ps (53.4 days; half, so that a time plus one duration never wraps) and one operation may
# last at most OP_PS = 2^60 ps (13.3 days; so that a few durations summed stay inside the span); the engine refuses
# a run that goes past either in one line (sim.engine.simulator.SpanError). The ranges below keep every single
# time, bandwidth and clock of a hardware description far inside these limits.
SPAN_PS = 2 ** 62
OP_PS = 2 ** 60
SPAN_TEXT = ("the engine counts time in int64 picoseconds, which limits a run's simulated span to 2^62 ps, "
             "53 days")
MAX_STEP_NS = 1e9           # one step, conversion, latency or MVM: at most 1 s
MIN_STEP_NS = 1e-6          # a positive time: at least 1 fs (the engine's quantum is 1 ps; shorter rounds to 0)
TIME_NS = {"hi": MAX_STEP_NS, "note": f"ns; at most 1 s: {SPAN_TEXT}"}
POSITIVE_TIME_NS = {"lo": MIN_STEP_NS, "hi": MAX_STEP_NS, "positive": True,
                    "note": f"ns; at least 1 fs (the engine's quantum is 1 ps) and at most 1 s: {SPAN_TEXT}"}
BANDWIDTH_GBPS = {"lo": 1e-3, "hi": 1e15, "positive": True,
                  "note": f"Gbit/s; at least 1 Mbit/s, as a byte takes 8 / bandwidth ns and {SPAN_TEXT}"}
CLOCK_GHZ = {"lo": 1e-3, "hi": 1e3, "positive": True,
             "note": f"GHz; at least 1 MHz, as one cycle takes 1 / clock ns and {SPAN_TEXT}"}
RATE_FACTOR = {"lo": 1e-3, "positive": True,
               "note": f"at least 1/1000, as the time of an operation is divided by it and {SPAN_TEXT}"}


@dataclass(frozen=True)
class TileSpec:
    rows: int = param("crossbar rows (inputs) in weights", lo=1, hi=65536)
    cols: int = param("crossbar columns (outputs) in weights", lo=1, hi=65536)
    integration_ns: float = param("bit-line integration time per read pass, ns", lo=0.0, **TIME_NS)
    array_energy_fj_per_cell: float = param("array energy per device per MVM pass, fJ", lo=0.0)
    tiers: int = param("3D-stacked weight tiers per tile; one tier computes at a time", lo=1, hi=1024, default=1)
    devices_per_weight: int = param("memory devices storing one weight", lo=1, hi=64, default=1)
    columns_per_weight: int = param("bit-sliced physical columns per weight, each converted separately",
                                    lo=1, hi=64, default=1)
    initiation_interval_ns: float | None = param(
        "minimum gap between two MVMs on one tile, ns (default: one MVM latency, no overlap)",
        **POSITIVE_TIME_NS, default=None)
    stacking: str | None = param(
        "how tiers are built, for area (arch/area.py): planar (tiers 1: array beside its periphery); "
        "monolithic (array layers deposited over the CMOS, periphery under the array: footprint = silicon = "
        "max(one tier's array, periphery), cost by layer count); bonded (each tier a die with its array and row "
        "drivers, bonded over a base die with converters and periphery). Default: planar for 1 tier, "
        "monolithic above", choices=("planar", "monolithic", "bonded"), default=None)


@dataclass(frozen=True)
class DacSpec:
    bits: int = param("DAC resolution, bits", lo=1, hi=16)
    encoding: str = param("input encoding", choices=("pwm", "bit_serial"))
    step_ns: float = param("PWM LSB duration or one bit-serial cycle, ns", **POSITIVE_TIME_NS)
    energy_pj_per_conversion: float = param("energy per DAC conversion, pJ", lo=0.0)
    per_tile: int = param("DACs per tile; rows are driven in ceil(rows/per_tile) groups", lo=1, hi=65536)
    anchor_bits: int | None = param("resolution at which energy_pj_per_conversion (and area.dac_um2) are given "
                                    "(default: bits). Away from it: pwm x bits / anchor (comparator and counter "
                                    "width); bit_serial multi-bit DACs x 2^(bits - anchor) (unit elements)",
                                    lo=1, hi=16, default=None)


@dataclass(frozen=True)
class AdcSpec:
    bits: int = param("ADC resolution, bits", lo=1, hi=16)
    per_tile: int = param("ADCs per tile; columns share ADCs when fewer than cols", lo=1, hi=65536)
    conversion_ns: float = param("time of one conversion at anchor_bits, ns", **POSITIVE_TIME_NS)
    energy_pj_per_conversion: float = param("energy per ADC conversion at anchor_bits, pJ", lo=0.0)
    anchor_bits: int | None = param("resolution at which conversion_ns and energy_pj_per_conversion are given "
                                    "(default: bits, i.e. the figures are used as given)", lo=2, hi=16,
                                    default=None)
    kind: str = param("conversion scheme, for the time law: sar (one cycle per bit: time x bits / anchor) or "
                      "ramp (counting, CCO, single-slope: time x 2^(bits - anchor))",
                      choices=("sar", "ramp"), default="sar")
    scaling: str = param("survey: energy max(anchor x 2^(bits - anchor), thermal floor at schreier_fom_db) "
                         "(Walden figure of merit, bounded below by the thermal-noise limit, Murmann's ADC "
                         "Performance Survey), time by kind; pinned: the given figures at any bits (bits then "
                         "moves accuracy only)", choices=("survey", "pinned"), default="survey")
    schreier_fom_db: float = param("Schreier figure of merit of the best converters, dB: the thermal floor of "
                                   "the energy per conversion is 10^((6.02 bits + 1.76 - FoM) / 10) / 2 J",
                                   lo=100.0, hi=200.0, default=180.0)


@dataclass(frozen=True)
class LocalDigitalSpec:
    """Digital unit next to each NoC node's tiles for activations and partial-sum adds."""

    ops_per_cycle: int = param("vector operations per cycle per node", lo=1)
    clock_ghz: float = param("clock, GHz", **CLOCK_GHZ)
    energy_pj_per_op: float = param("energy per vector operation at the digital domain's cited node, pJ (scaled "
                                    "as every digital energy, arch.costs.digital_energy_scale)", lo=0.0)
    static_power_mw: float = param("static power of one unit (one per NoC node hosting tiles), mW", lo=0.0,
                                   default=0.0)


@dataclass(frozen=True)
class ProgrammingNoiseSpec:
    """Weight programming noise, conductance drift and drift compensation (aihwkit's noise models)."""

    model: str = param("programming-noise model: none; relative (Gaussian, sigma_relative x max|W|); "
                       "pcm (aihwkit PCMLikeNoiseModel, Nandakumar et al. ICECS 2019); hermes (aihwkit "
                       "HermesNoiseModel, Le Gallo et al. Nat. Electron. 2023)",
                       choices=("none", "relative", "pcm", "hermes"), default="none")
    sigma_relative: float = param("model relative: std of the additive Gaussian on each weight, as a fraction "
                                  "of max|W| over the scope of analog.noise.weight_scaling", lo=0.0, hi=10.0,
                                  default=0.0)
    g_max_us: float | None = param("pcm/hermes: conductance that max|W| maps to, uS (default: 25 for pcm; "
                                   "20.7 for hermes with 2 devices, 10.35 with 1)", lo=0.0, lo_open=True,
                                   default=None)
    num_devices: int = param("hermes: devices per weight polarity (1 or 2; 2 = multi-device programming)",
                             lo=1, hi=2, default=2)
    t_inference_s: float = param("pcm/hermes: time from the end of programming to inference, s; drift "
                                 "acts over it and 1/f read noise over t_0 + it, as aihwkit's "
                                 "drift_analog_weights(t_inference)", lo=0.0, default=0.0)
    drift_compensation: str = param("global: one output scale per slot, the mean |readout| of the "
                                    "programmed weights over that after drift (aihwkit "
                                    "GlobalDriftCompensation); none: uncompensated",
                                    choices=("global", "none"), default="global")
    prog_noise_scale: float = param("pcm/hermes: factor on the programming-noise std", lo=0.0, default=1.0)
    read_noise_scale: float = param("pcm/hermes: factor on the accumulated 1/f read-noise std", lo=0.0,
                                    default=1.0)
    drift_scale: float = param("pcm/hermes: factor on the drift exponent nu", lo=0.0, default=1.0)


@dataclass(frozen=True)
class NoiseSpec:
    """Analog non-idealities for the functional (accuracy) side, in IBM aihwkit's vocabulary.

    Units: inside a crossbar slot weights are normalised to max|W| = 1 (over the slot or the whole
    matrix, ``weight_scaling``) and inputs to the DAC range; ``out_bound`` and ``out_noise`` are in
    those normalised output units, exactly as aihwkit's ``out_bound``/``out_noise``. DAC and ADC
    resolutions come from ``analog.dac.bits`` and ``analog.adc.bits``: a b-bit converter over
    [-bound, bound] has step 2 * bound / (2^b - 2) (aihwkit ``inp_res``/``out_res`` = 1 / (2^b - 2)).
    """

    noise_management: str = param("input range of the DAC: abs_max scales each input slice by its own "
                                  "max |x| (aihwkit NoiseManagementType.ABS_MAX); none uses the fixed "
                                  "range [-inp_bound, inp_bound] in activation units",
                                  choices=("abs_max", "none"), default="abs_max")
    inp_bound: float = param("DAC range (abs_max: 1 = the slice's max |x|), activation units", lo=0.0,
                             lo_open=True, default=1.0)
    inp_noise: float = param("std of Gaussian noise on each DAC output, in units of inp_bound (aihwkit "
                             "inp_noise)", lo=0.0, default=0.0)
    out_bound: float = param("ADC range (fixed): |y| saturates here, normalised output units (aihwkit "
                             "out_bound)", lo=0.0, lo_open=True, default=12.0)
    out_range: str = param("ADC range rule: fixed (out_bound) or calibrated (per input vector, the max "
                           "|y| of the noise-free slot output)", choices=("fixed", "calibrated"),
                           default="fixed")
    out_noise: float = param("std of additive Gaussian noise on each slot output before the ADC, "
                             "normalised output units (aihwkit out_noise)", lo=0.0, default=0.0)
    out_noise_relative: float = param("std of Gaussian noise on each slot output before the ADC as a fraction "
                                      "of that input vector's max |y| over the slot's noise-free outputs "
                                      "(the 'x % of the output range' convention, e.g. 0.04); adds in "
                                      "variance to out_noise; 0 = off", lo=0.0, default=0.0)
    w_noise: float = param("read noise: std of a fresh Gaussian on each normalised weight at every MVM "
                           "(aihwkit w_noise, ADDITIVE_CONSTANT)", lo=0.0, default=0.0)
    bound_management: str = param("iterative: a vector whose output saturates is re-run with its input "
                                  "halved, up to a reduction of max_bm_res / input step (aihwkit "
                                  "BoundManagementType.ITERATIVE); none: saturate",
                                  choices=("iterative", "none"), default="iterative")
    max_bm_res: float = param("iterative bound management stops once the input step times the reduction "
                              "exceeds this (aihwkit max_bm_res)", lo=0.0, lo_open=True, hi=1.0, default=0.25)
    weight_scaling: str = param("what max|W| is taken over for normalisation and relative noise: slot "
                                "(each crossbar slot, as aihwkit maps each tile) or matrix",
                                choices=("slot", "matrix"), default="slot")
    programming: ProgrammingNoiseSpec = param("weight programming noise and drift",
                                              default=ProgrammingNoiseSpec())


@dataclass(frozen=True)
class AnalogSpec:
    tile: TileSpec = param("one crossbar tile")
    dac: DacSpec = param("input DACs")
    adc: AdcSpec = param("output ADCs")
    tile_count: int = param("analog tiles in the system (0: a digital-only system)", lo=0, hi=10_000_000)
    static_power_mw_per_tile: float = param("static power of one tile with its periphery, mW", lo=0.0)
    local_digital: LocalDigitalSpec | None = param(
        "per-node digital unit for activations and partial sums (absent: the SIMD core does them)", default=None)
    noise: NoiseSpec = param("analog non-idealities for the accuracy side (absent: DAC/ADC quantisation "
                             "only)", default=NoiseSpec())
    slot_order: str = param("how crossbar slots fill the tiles: spread (every tile's tier 0 before any tile's tier 1: "
                            "matrices of one layer on different tiles, run in parallel, but every tile holds a "
                            "matrix) or pack (a tile's tiers fill before the next tile: fewest tiles hold matrices, "
                            "so power_gate_unused_tiles gates the rest, while slots sharing a tile run one tier at "
                            "a time)", choices=("spread", "pack"), default="spread")
    power_gate_unused_tiles: bool = param("tiles that hold no matrix of the run are power-gated and draw no "
                                          "static power (false: every tile leaks for the whole run)", default=True)


@dataclass(frozen=True)
class SimdSpec:
    cores: int = param("SIMD cores; a digital operation is spread over all of them", lo=1, hi=65536)
    macs_per_cycle: int = param("multiply-accumulates per cycle per core", lo=1)
    clock_ghz: float = param("clock, GHz", **CLOCK_GHZ)
    energy_pj_per_mac: dict = param("energy per MAC by precision name (int8, fp16, ...), pJ", items={"lo": 0.0})
    vector_ops_per_cycle: int = param("element-wise operations per cycle per core", lo=1)
    energy_pj_per_vector_op: float = param("energy per element-wise operation, pJ", lo=0.0)
    static_power_mw_per_core: float = param("static power of one SIMD core, mW (all cores: x cores)", lo=0.0)
    mac_efficiency: float = param("achieved fraction of the peak MAC rate on GEMMs (tiling, occupancy, "
                                  "scheduling); every digital MAC runs at this fraction of peak",
                                  **{**RATE_FACTOR, "hi": 1.0}, default=1.0)
    mac_rate_scale: dict = param("MAC rate by precision name relative to macs_per_cycle (e.g. int4: 2); "
                                 "a precision not listed runs at macs_per_cycle",
                                 items={**RATE_FACTOR, "hi": 1e3}, default={})


@dataclass(frozen=True)
class DigitalSpec:
    simd: SimdSpec = param("digital SIMD cores")
    energy_scale: float = param(
        "extra factor on every digital, SRAM and local-digital energy, on top of the node scaling below "
        "(1 = none)", lo=0.0, lo_open=True, default=1.0)
    energy_reference_nm: float | None = param(
        "process node at which the digital energies (MAC, vector op, SRAM, local digital op) are cited, nm; "
        "with process_nm they are scaled by (process_nm / this) x (vdd_v / energy_reference_vdd_v)^2 "
        "(dynamic energy C V^2, capacitance ~ feature size). Absent: the energies are taken as at process_nm",
        lo=1.0, hi=1000.0, default=None)
    energy_reference_vdd_v: float | None = param("supply voltage of the cited energies, V", lo=0.0, lo_open=True,
                                                 hi=5.0, default=None)
    process_nm: float | None = param("process node of this digital domain, nm", lo=1.0, hi=1000.0, default=None)
    vdd_v: float | None = param("supply voltage of this digital domain, V", lo=0.0, lo_open=True, hi=5.0,
                                default=None)


@dataclass(frozen=True)
class SramSpec:
    capacity_mib: float = param("on-chip SRAM for digital weights, MiB", lo=0.0)
    bandwidth_gbps: float = param("SRAM bandwidth, Gbit/s", **BANDWIDTH_GBPS)
    energy_pj_per_byte: float = param("SRAM access energy at energy_reference_bank_kib, pJ per byte", lo=0.0)
    static_power_mw: float = param("SRAM static power independent of size (periphery, control), mW", lo=0.0,
                                   default=0.0)
    leakage_mw_per_mib: float = param("SRAM leakage per MiB of capacity and staging buffer, mW; static power = "
                                      "static_power_mw + this x (capacity_mib + staging_mib), so growing the "
                                      "SRAM costs standby power too", lo=0.0, hi=1e6, default=0.0)
    bank_kib: float | None = param("size of the bank (macro) one access reads, KiB (default: the reference size, "
                                   "i.e. energy_pj_per_byte as given)", lo=0.0, lo_open=True, default=None)
    energy_reference_bank_kib: float | None = param(
        "bank size at which energy_pj_per_byte is cited, KiB; access energy scales as sqrt(bank_kib / this) "
        "(Horowitz ISSCC 2014: 64-bit reads of 10, 20 and 100 pJ at 8 KB, 32 KB and 1 MB)",
        lo=0.0, lo_open=True, default=None)
    prefetch: bool = param("stream a digital matrix's weights from DRAM while earlier operations compute, into "
                           "the staging buffer (false: each stream starts with its own operation)", default=True)
    staging_mib: float = param("weight staging buffer for prefetch, MiB: two halves, one feeding the SIMD cores "
                               "while the next streamed operation's weights fill the other; an operation whose "
                               "weights exceed one half is not prefetched", lo=0.0, default=16.0)


@dataclass(frozen=True)
class DramSpec:
    bandwidth_gbps: float = param("DRAM bandwidth per channel, Gbit/s", **BANDWIDTH_GBPS)
    energy_pj_per_bit: float = param("DRAM access energy, pJ per bit", lo=0.0)
    latency_ns: float = param("access latency, ns", lo=0.0, **TIME_NS)
    static_power_mw_per_channel: float = param("DRAM background (standby and refresh) power per channel, mW",
                                               lo=0.0)
    interface_energy_pj_per_bit: float = param(
        "energy per bit moved between the DRAM interface and the compute beyond the DRAM device (PHY, memory "
        "controller, on-chip crossbar or L2), pJ; charged on every DRAM byte", lo=0.0, default=0.0)
    channels: int = param("independent channels; one access uses one channel", lo=1, hi=1024, default=1)
    attachment: str = param("noc: DRAM streams enter the network at noc.dram_node and cross it to the SIMD "
                            "node (time latency + bytes / min(DRAM, path bandwidth) + hops x router latency, "
                            "links booked, link energy charged); direct: a dedicated port into the SIMD core",
                            choices=("noc", "direct"), default="noc")
    capacity_gib: float | None = param("DRAM capacity, GiB: holds the digital weights that are not SRAM-resident "
                                       "and the KV cache of serving runs (KV capacity = what the weights leave); "
                                       "absent: unbounded (serving runs say so)", lo=0.0, lo_open=True, default=None)


@dataclass(frozen=True)
class MemorySpec:
    sram: SramSpec = param("on-chip SRAM")
    dram: DramSpec = param("off-chip DRAM")


@dataclass(frozen=True)
class EdgeSpec:
    a: str = param("node name at one end")
    b: str = param("node name at the other end")
    bandwidth_gbps: float | None = param("this link's bandwidth, Gbit/s (default: noc.link_bandwidth_gbps)",
                                         **BANDWIDTH_GBPS, default=None)
    energy_pj_per_bit: float | None = param(
        "this link's energy per bit per hop, pJ (default: noc.energy_pj_per_bit_per_hop)", lo=0.0, default=None)


@dataclass(frozen=True)
class NocSpec:
    topology: str = param("network shape", choices=("mesh", "graph"))
    link_bandwidth_gbps: float = param("bandwidth of one link, one direction, Gbit/s", **BANDWIDTH_GBPS)
    router_latency_ns: float = param("latency per hop (router + link), ns", lo=0.0, **TIME_NS)
    energy_pj_per_bit_per_hop: float = param("energy per bit per hop (link), pJ", lo=0.0)
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
    energy_pj_per_bit_per_router: float = param(
        "energy per bit per router crossed, pJ; a message over h hops crosses h + 1 routers (default 0: "
        "energy_pj_per_bit_per_hop then carries the routers too)", lo=0.0, default=0.0)
    static_power_mw_per_router: float = param("static power of one router (one per node), mW", lo=0.0,
                                              default=0.0)


@dataclass(frozen=True)
class PrecisionSpec:
    activation_bits: int = param("activation bits on both domains (DAC input, traffic, SRAM)", lo=1, hi=32)
    digital_weight_bits: int = param("weight bits of digital matrices (SRAM/DRAM bytes)", lo=1, hi=32)
    digital_mac: str = param("precision name selecting digital.simd.energy_pj_per_mac")
    partial_sum_bits: int = param("bits of an analog partial sum sent for reduction", lo=1, hi=64, default=16)


@dataclass(frozen=True, kw_only=True)
class AreaSpec:
    """Silicon area per component (arch/area.py sums them); the process node the figures are for.

    Footprint is what the package sees: 3D-stacked crossbar tiers share one footprint. Total silicon
    counts every tier (what the wafers cost)."""

    process_nm: float = param("process node the unit areas below are for, nm (documentation; no scaling "
                              "is applied)", lo=1.0, hi=1000.0)
    crossbar_um2_per_device: float | None = param(
        "crossbar array area per memory device, per tier, um^2 (a tile's tier holds rows x cols x "
        "devices_per_weight devices; required when the system has analog tiles)", lo=0.0, default=None)
    dac_um2: float | None = param("area of one DAC (analog.dac.per_tile per tile), um^2 (required with analog "
                                  "tiles)", lo=0.0, default=None)
    adc_um2: float | None = param("area of one ADC at analog.adc.anchor_bits, um^2, required with analog tiles; "
                                  "a fixed part (adc_fixed_fraction: comparator, logic) plus a part that grows "
                                  "x 2^(bits - anchor) for sar (capacitor array) or x bits / anchor for ramp "
                                  "(counter)", lo=0.0, default=None)
    adc_fixed_fraction: float = param("share of adc_um2 that does not grow with bits (comparator, logic, "
                                      "clocking): the area floor of the converter", lo=0.0, hi=1.0, default=0.25)
    adc_reference_conversion_ns: float | None = param(
        "conversion time of the design adc_um2 is cited for, at anchor_bits, ns: a converter asked to be faster "
        "than the cited design at the same bits (its time law applied to this) needs ceil(reference / time) "
        "interleaved copies; a slower one idles, which hw show states (default: the area holds at any rate)",
        **POSITIVE_TIME_NS, default=None)
    tile_periphery_um2: float = param("per-tile circuits besides array and converters (buffers, control, "
                                      "row/column drivers, per-core digital), um^2", lo=0.0, default=0.0)
    local_digital_um2_per_op: float = param("area of analog.local_digital per vector operation per cycle, um^2 "
                                            "(one unit per NoC node that hosts tiles)", lo=0.0, default=0.0)
    simd_um2_per_mac: float = param("SIMD core area per MAC per cycle, um^2", lo=0.0)
    simd_mm2_per_core: float = param("per-core SIMD area besides its MACs (vector unit, register files, "
                                     "control), mm^2", lo=0.0, default=0.0)
    sram_mm2_per_mib: float = param("SRAM macro area per MiB (capacity and staging buffer), mm^2 (macro "
                                    "density with periphery, not bit-cell density)", lo=0.0)
    router_um2_per_gbps: float = param("NoC router area per Gbit/s of noc.link_bandwidth_gbps, per node, um^2 "
                                       "(buffers and crossbar grow with port width)", lo=0.0, default=0.0)
    router_mm2_per_node: float = param("NoC router area per node independent of link bandwidth, mm^2 (a cited "
                                       "router used at its own port width)", lo=0.0, default=0.0)
    dram_interface_mm2_per_channel: float = param("DRAM PHY and controller per memory.dram channel, mm^2",
                                                  lo=0.0, default=0.0)
    other_mm2: float = param("everything else on the die (I/O pads, clocking, host interface), mm^2",
                             lo=0.0, default=0.0)
    reticle_limit_mm2: float = param(
        "largest die one lithography exposure prints, mm^2: the scanner field of 26 mm x 33 mm = 858 mm^2 (ASML "
        "NXT and NXE scanners, the industry's standard full field). A footprint above it is not one chip: hw "
        "show, hw fit, run, compare and the report warn and state the dies' worth of silicon it is",
        lo=0.0, lo_open=True, default=858.0)


NO_ANALOG = AnalogSpec(
    tile=TileSpec(rows=1, cols=1, integration_ns=0.0, array_energy_fj_per_cell=0.0),
    dac=DacSpec(bits=8, encoding="pwm", step_ns=1.0, energy_pj_per_conversion=0.0, per_tile=1),
    adc=AdcSpec(bits=8, per_tile=1, conversion_ns=1.0, energy_pj_per_conversion=0.0),
    tile_count=0, static_power_mw_per_tile=0.0)


@dataclass(frozen=True, kw_only=True)
class ChipSpec:
    analog: AnalogSpec = param("analog in-memory tiles (absent: a digital-only system, no tiles)",
                               default=NO_ANALOG)
    digital: DigitalSpec = param("digital SIMD domain")
    memory: MemorySpec = param("SRAM and DRAM")
    noc: NocSpec = param("network on chip")
    precision: PrecisionSpec = param("number formats")
    area: AreaSpec | None = param("silicon area per component (absent: area figures are not reported)",
                                  default=None)
    name: str = param("system name", default="")
    description: str = param("free text", default="")
    source: str = param("where the system comes from (file path or preset name)", default="")
