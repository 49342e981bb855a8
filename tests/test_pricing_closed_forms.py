"""Pricing (sim/metrics.py), static powers (arch/costs.py) and local-digital area (arch/area.py) by hand.

The unit chip of tests/conftest.py is given non-zero static powers on every domain, an ``energy_scale``
and a node scaling, SRAM banks away from the reference size, several DRAM channels with an interface
energy, router energies, and local digital units on 3 of its 4 NoC nodes. Every expected energy is
written here from the figures in that YAML (the numbers below, not the program's cost functions); what a
run contributes is only its action counters and its makespan (timing, not pricing).
"""

from __future__ import annotations

from math import ceil, sqrt
from types import SimpleNamespace

import pytest

from arch import area, costs, load_chip_text
from sim.api import simulate
from sim.metrics import STATIC, price, steady_metrics
from tests.conftest import UNIT_YAML
from tests.test_engine import TINY
from workloads.shapes import from_hf_config
from workloads.traces.synthetic import SyntheticSpec, synthesize


def _sub(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} is not once in the unit YAML"
    return text.replace(old, new)


# --- the figures of the priced chip (the YAML below is built from these) ---
TILES, TILES_PER_NODE, MESH = 5, 2, (2, 2)
TILE_MW, LD_OPS, LD_PJ, LD_MW = 0.7, 3, 0.5, 0.9
ADC_PJ, DAC_PJ, CELL_FJ = 1.5, 0.25, 300.0
CORES, CORE_MW, MAC_PJ, VEC_PJ = 2, 1.1, 0.8, 0.6
ENERGY_SCALE, REF_NM, REF_V, NM, V = 1.7, 28.0, 0.9, 14.0, 0.8
SRAM_MIB, STAGING_MIB, SRAM_MW, LEAK_MW_PER_MIB, SRAM_PJ, BANK_KIB, REF_BANK_KIB = 1.0, 3.0, 0.3, 0.25, 1.0, 32.0, 8.0
DRAM_PJ_BIT, DRAM_IF_PJ_BIT, CHANNELS, CHANNEL_MW = 0.125, 0.05, 3, 2.3
LINK_PJ, ROUTER_PJ, ROUTER_MW = 0.125, 0.0625, 0.4
LD_UM2_PER_OP = 250.0

PRICED_YAML = UNIT_YAML
for _old, _new in [
    ("  tile_count: 8\n", f"  tile_count: {TILES}\n  power_gate_unused_tiles: false\n"),
    ("  static_power_mw_per_tile: 0.0\n",
     f"  static_power_mw_per_tile: {TILE_MW}\n  local_digital: {{ops_per_cycle: {LD_OPS}, clock_ghz: 1.0, "
     f"energy_pj_per_op: {LD_PJ}, static_power_mw: {LD_MW}}}\n"),
    ("    tiers: 2\n", "    tiers: 4\n"),
    ("    array_energy_fj_per_cell: 1000.0\n", f"    array_energy_fj_per_cell: {CELL_FJ}\n"),
    ("energy_pj_per_conversion: 1.0, per_tile: 4}\n  adc",
     f"energy_pj_per_conversion: {DAC_PJ}, per_tile: 4}}\n  adc"),
    ("conversion_ns: 1.0, energy_pj_per_conversion: 1.0}", f"conversion_ns: 1.0, energy_pj_per_conversion: {ADC_PJ}}}"),
    ("digital:\n  simd:\n    cores: 1\n",
     f"digital:\n  energy_scale: {ENERGY_SCALE}\n  energy_reference_nm: {REF_NM}\n  energy_reference_vdd_v: {REF_V}\n"
     f"  process_nm: {NM}\n  vdd_v: {V}\n  simd:\n    cores: {CORES}\n"),
    ("energy_pj_per_mac: {int8: 1.0}", f"energy_pj_per_mac: {{int8: {MAC_PJ}}}"),
    ("energy_pj_per_vector_op: 1.0", f"energy_pj_per_vector_op: {VEC_PJ}"),
    ("static_power_mw_per_core: 0.0", f"static_power_mw_per_core: {CORE_MW}"),
    ("sram: {capacity_mib: 1, bandwidth_gbps: 8, energy_pj_per_byte: 1.0}",
     f"sram: {{capacity_mib: {SRAM_MIB}, bandwidth_gbps: 8, energy_pj_per_byte: {SRAM_PJ}, "
     f"static_power_mw: {SRAM_MW}, leakage_mw_per_mib: {LEAK_MW_PER_MIB}, staging_mib: {STAGING_MIB}, "
     f"bank_kib: {BANK_KIB}, energy_reference_bank_kib: {REF_BANK_KIB}}}"),
    ("energy_pj_per_bit: 0.125, latency_ns: 1.0, static_power_mw_per_channel: 0.0}",
     f"energy_pj_per_bit: {DRAM_PJ_BIT}, latency_ns: 1.0, static_power_mw_per_channel: {CHANNEL_MW}, "
     f"channels: {CHANNELS}, interface_energy_pj_per_bit: {DRAM_IF_PJ_BIT}}}"),
    ("  energy_pj_per_bit_per_hop: 0.125\n",
     f"  energy_pj_per_bit_per_hop: {LINK_PJ}\n  energy_pj_per_bit_per_router: {ROUTER_PJ}\n"
     f"  static_power_mw_per_router: {ROUTER_MW}\n"),
]:
    PRICED_YAML = _sub(PRICED_YAML, _old, _new)

AREA_SECTION = f"""\
area:
  process_nm: 14
  crossbar_um2_per_device: 2.0
  dac_um2: 3.0
  adc_um2: 40.0
  tile_periphery_um2: 100.0
  local_digital_um2_per_op: {LD_UM2_PER_OP}
  simd_um2_per_mac: 500.0
  sram_mm2_per_mib: 0.8
"""

# --- unit figures by hand ---
S = ENERGY_SCALE * (NM / REF_NM) * (V / REF_V) ** 2        # every cited digital energy is multiplied by this
E_SRAM = SRAM_PJ * sqrt(BANK_KIB / REF_BANK_KIB) * S      # pJ per byte
HOST_NODES = min(MESH[0] * MESH[1], ceil(TILES / TILES_PER_NODE))   # nodes hosting tiles: 3 of 4
ROUTERS = MESH[0] * MESH[1]
SRAM_STATIC_MW = SRAM_MW + LEAK_MW_PER_MIB * (SRAM_MIB + STAGING_MIB)
STATIC_MW = {   # (domain, component) -> static power, mW (mW x ns = pJ)
    ("analog", "static"): TILES * TILE_MW,
    ("analog", "local_digital_static"): HOST_NODES * LD_MW,
    ("digital", "static"): CORES * CORE_MW,
    ("memory", "sram_static"): SRAM_STATIC_MW,
    ("memory", "dram_static"): CHANNELS * CHANNEL_MW,
    ("noc", "router_static"): ROUTERS * ROUTER_MW,
}
TOTAL_STATIC_MW = sum(STATIC_MW.values())


def expected_energy(c, makespan_ns: float) -> dict[str, dict[str, float]]:
    """Every component in pJ from the counters ``c`` and the figures above."""
    dynamic = {
        ("analog", "adc"): c.adc_conversions * ADC_PJ,
        ("analog", "dac"): c.dac_conversions * DAC_PJ,
        ("analog", "array"): c.array_cell_reads * CELL_FJ * 1e-3,
        ("analog", "local_digital"): c.local_digital_ops * LD_PJ * S,
        ("digital", "mac"): c.simd_macs * MAC_PJ * S,
        ("digital", "vector"): c.simd_vector_ops * VEC_PJ * S,
        ("memory", "sram"): c.sram_bytes * E_SRAM,
        ("memory", "dram"): c.dram_bytes * 8 * DRAM_PJ_BIT,
        ("memory", "dram_interface"): c.dram_bytes * 8 * DRAM_IF_PJ_BIT,
        ("noc", "links"): c.noc_energy_pj,
        ("noc", "routers"): c.noc_router_bits * ROUTER_PJ,
    }
    out: dict[str, dict[str, float]] = {}
    for (dom, comp), v in dynamic.items():
        out.setdefault(dom, {})[comp] = v
    for (dom, comp), p in STATIC_MW.items():
        out[dom][comp] = p * makespan_ns
    return out


def assert_energy_matches(got: dict, want: dict) -> None:
    assert {d: set(v) for d, v in got.items()} == {d: set(v) for d, v in want.items()}
    for dom, comps in want.items():
        for comp, v in comps.items():
            assert got[dom][comp] == pytest.approx(v, rel=1e-12, abs=1e-9), (dom, comp)


@pytest.fixture(scope="module")
def priced_chip():
    return load_chip_text(PRICED_YAML, "priced.yaml")


def test_unit_figures_on_the_priced_chip(priced_chip):
    """The per-action and static figures, each from the YAML by hand."""
    chip = priced_chip
    assert S == pytest.approx(1.7 * 0.5 * (0.8 / 0.9) ** 2, rel=1e-15) and HOST_NODES == 3
    assert costs.digital_energy_scale(chip) == pytest.approx(S, rel=1e-12)
    assert costs.e_sram_pj_per_byte(chip) == pytest.approx(2.0 * S, rel=1e-12)     # sqrt(32 / 8) = 2
    assert costs.e_mac_pj(chip) == pytest.approx(MAC_PJ * S, rel=1e-12)
    assert costs.e_local_digital_op_pj(chip) == pytest.approx(LD_PJ * S, rel=1e-12)
    assert costs.simd_static_power_mw(chip) == pytest.approx(2 * 1.1, rel=1e-12)
    assert costs.dram_static_power_mw(chip) == pytest.approx(3 * 2.3, rel=1e-12)
    assert costs.router_static_power_mw(chip, 4) == pytest.approx(4 * 0.4, rel=1e-12)
    assert costs.local_digital_static_power_mw(chip, 3) == pytest.approx(3 * 0.9, rel=1e-12)
    assert area.tile_nodes(chip) == 3 and area.noc_nodes(chip) == 4


def test_sram_static_power_counts_capacity_and_staging(priced_chip):
    """static + leakage x (capacity + staging) = 0.3 + 0.25 x (1 + 3) = 1.3 mW; staging alone adds 0.75 mW."""
    assert costs.sram_static_power_mw(priced_chip) == pytest.approx(1.3, rel=1e-12)
    no_staging = load_chip_text(PRICED_YAML.replace(f"staging_mib: {STAGING_MIB}", "staging_mib: 0"))
    assert costs.sram_static_power_mw(no_staging) == pytest.approx(0.55, rel=1e-12)
    big = load_chip_text(PRICED_YAML.replace(f"capacity_mib: {SRAM_MIB},", "capacity_mib: 9,"))
    assert costs.sram_static_power_mw(big) == pytest.approx(0.3 + 0.25 * 12, rel=1e-12)


def test_local_digital_unit_area_counts_the_nodes_hosting_tiles():
    """3 nodes host the 5 tiles (2 per node) -> 3 units x 3 ops/cycle x 250 um^2 = 2250 um^2; with 8 tiles
    all 4 nodes do. The unit area also adds exactly that to the footprint and the silicon."""
    chip = load_chip_text(PRICED_YAML + AREA_SECTION)
    part = area.chip_area(chip)["breakdown"]["local digital units"]
    assert part["count"] == 3
    assert part["footprint_mm2"] == pytest.approx(3 * 3 * 250.0 / 1e6, rel=1e-12)
    assert part["silicon_mm2"] == pytest.approx(3 * 3 * 250.0 / 1e6, rel=1e-12)
    eight = load_chip_text(PRICED_YAML.replace(f"tile_count: {TILES}\n", "tile_count: 8\n") + AREA_SECTION)
    assert area.chip_area(eight)["breakdown"]["local digital units"]["footprint_mm2"] == pytest.approx(
        4 * 3 * 250.0 / 1e6, rel=1e-12)
    none = load_chip_text(PRICED_YAML + AREA_SECTION.replace(f"local_digital_um2_per_op: {LD_UM2_PER_OP}",
                                                             "local_digital_um2_per_op: 0"))
    for key in ("footprint_mm2", "silicon_mm2"):
        assert area.chip_area(chip)[key] - area.chip_area(none)[key] == pytest.approx(2250e-6, rel=1e-9)


def test_local_digital_unit_area_on_aimc_3d_moe():
    """The preset's own figures: min(mesh nodes, ceil(tiles / tiles per node)) units x ops x um^2 per op."""
    from arch import load_chip

    chip = load_chip("aimc-3d-moe")
    a, noc = chip.analog, chip.noc
    if a.local_digital is None or chip.area is None or noc.topology != "mesh":
        pytest.skip("aimc-3d-moe has no local digital units on a mesh with an area model")
    k = min(noc.width * noc.height, ceil(a.tile_count / noc.tiles_per_node))
    assert k > 1
    part = area.chip_area(chip)["breakdown"]["local digital units"]
    assert part["count"] == k
    assert part["footprint_mm2"] == pytest.approx(
        k * a.local_digital.ops_per_cycle * chip.area.local_digital_um2_per_op / 1e6, rel=1e-12)


FAKE = dict(adc_conversions=1000.0, dac_conversions=700.0, array_cell_reads=16000.0, simd_macs=5000.0,
            simd_vector_ops=3000.0, local_digital_ops=400.0, sram_bytes=2048.0, dram_bytes=512.0,
            noc_bit_hops=9600.0, noc_energy_pj=1200.0, noc_router_bits=14400.0)


@pytest.mark.parametrize("makespan_ns", [12345.0, 0.25])
def test_price_of_hand_made_counters(priced_chip, makespan_ns):
    """price() of a counters object made here: every component, domain totals and the grand total (a
    makespan above and below 1 ns, so P x t and P / t cannot agree)."""
    c = SimpleNamespace(**FAKE)
    got = price(priced_chip, c, makespan_ns)
    want = expected_energy(c, makespan_ns)
    assert_energy_matches(got, want)
    # a few worked by hand, independently of expected_energy
    assert got["memory"]["dram_static"] == pytest.approx(6.9 * makespan_ns, rel=1e-12)
    assert got["memory"]["sram_static"] == pytest.approx(1.3 * makespan_ns, rel=1e-12)
    assert got["memory"]["dram"] == pytest.approx(512 * 8 * 0.125, rel=1e-12)
    total = sum(v for d in got.values() for v in d.values())
    dynamic = (1000 * 1.5 + 700 * 0.25 + 16000 * 0.3 + (400 * 0.5 + 5000 * 0.8 + 3000 * 0.6 + 2048 * 2.0) * S
               + 512 * 8 * (0.125 + 0.05) + 1200 + 14400 * 0.0625)
    static_mw = 5 * 0.7 + 3 * 0.9 + 2 * 1.1 + 1.3 + 3 * 2.3 + 4 * 0.4
    assert total == pytest.approx(dynamic + static_mw * makespan_ns, rel=1e-12)


def test_price_of_powered_tiles_only(priced_chip):
    got = price(priced_chip, SimpleNamespace(**FAKE), 100.0, powered_tiles=2)
    assert got["analog"]["static"] == pytest.approx(2 * 0.7 * 100.0, rel=1e-12)


def test_steady_metrics_of_a_hand_made_window():
    """Dynamic 3000 pJ and static 1000 pJ over 2 us for 10 tokens; steady throughput 4e6 tokens/s:
    static power 1e-9 J / 2e-6 s = 5e-4 W; energy per token = 3000 pJ / 10 + 5e-4 W / 4e6 tokens/s
    = 300 pJ + 125 pJ = 425 pJ = 4.25e-4 uJ; tokens/s/W = 1 / 425e-12 J."""
    energy = {"analog": {"adc": 1000.0, "static": 400.0, "local_digital_static": 100.0},
              "digital": {"mac": 1500.0, "static": 200.0},
              "memory": {"sram": 500.0, "sram_static": 100.0, "dram_static": 100.0},
              "noc": {"links": 0.0, "router_static": 100.0}}
    assert set(STATIC) >= {"static", "sram_static", "dram_static", "local_digital_static", "router_static"}
    steady = {"reached": True, "throughput_tokens_per_s": 4e6}
    m = steady_metrics(energy, 10, 2e-6, steady)
    assert m["steady_throughput_tokens_per_s"] == 4e6
    assert m["steady_energy_per_token_uj"] == pytest.approx(425e-12 * 1e6, rel=1e-12)
    assert m["steady_tokens_per_s_per_w"] == pytest.approx(1 / 425e-12, rel=1e-12)
    nan = steady_metrics(energy, 10, 2e-6, {"reached": False})
    assert all(v != v for v in nan.values())


@pytest.fixture(scope="module")
def priced_run(priced_chip):
    model = from_hf_config(TINY, name="tiny")
    trace = synthesize(SyntheticSpec(tokens=256, requests=4, seed=0), model)
    return simulate(priced_chip, model, trace, "maxnn", fraction=0.5, batch=16, max_inflight=4)


def test_every_energy_component_of_a_run(priced_run):
    """A maxnn run of the tiny model: the energy of each component from the run's counters and makespan."""
    d = priced_run.data
    c = SimpleNamespace(**d["counters"])
    for key in FAKE:                                   # every action priced here actually happened
        assert getattr(c, key) > 0, key
    assert c.noc_energy_pj == pytest.approx(c.noc_bit_hops * LINK_PJ, rel=1e-12)   # uniform mesh links
    makespan_ns = d["metrics"]["makespan_s"] * 1e9
    assert makespan_ns > 1.0 and d["mapping"]["tiles_powered"] == TILES       # no power gating asked
    want = expected_energy(c, makespan_ns)
    assert_energy_matches(d["energy_pj"], want)
    for dom, comps in want.items():
        assert d["energy_by_domain_pj"][dom] == pytest.approx(sum(comps.values()), rel=1e-12)


def test_run_metrics_from_the_energy_by_hand(priced_run):
    d, m = priced_run.data, priced_run.metrics
    c = SimpleNamespace(**d["counters"])
    makespan_ns = d["metrics"]["makespan_s"] * 1e9
    seconds = makespan_ns * 1e-9
    tokens = 256
    want = expected_energy(c, makespan_ns)
    total_j = sum(v for comps in want.values() for v in comps.values()) * 1e-12
    static_j = TOTAL_STATIC_MW * 1e-3 * seconds
    assert m["tokens"] == tokens
    assert m["energy_j"] == pytest.approx(total_j, rel=1e-12)
    assert m["energy_per_token_uj"] == pytest.approx(total_j / tokens * 1e6, rel=1e-12)
    assert m["average_power_w"] == pytest.approx(total_j / seconds, rel=1e-12)
    assert m["tokens_per_s_per_w"] == pytest.approx(tokens / total_j, rel=1e-12)
    # average power = dynamic energy / time + the static powers' sum (mW -> W)
    assert m["average_power_w"] == pytest.approx((total_j - static_j) / seconds + TOTAL_STATIC_MW * 1e-3, rel=1e-12)
    # steady state: the window's throughput is timing; static power is paid over 1 / throughput per token
    assert d["steady_state"]["reached"]
    tput = m["steady_throughput_tokens_per_s"]
    e_tok = (total_j - static_j) / tokens + TOTAL_STATIC_MW * 1e-3 / tput
    assert m["steady_energy_per_token_uj"] == pytest.approx(e_tok * 1e6, rel=1e-12)
    assert m["steady_tokens_per_s_per_w"] == pytest.approx(1 / e_tok, rel=1e-12)


@pytest.mark.parametrize("policy", ["all-digital", "maxnn"])
def test_power_gating_prices_only_the_tiles_the_mapping_powers(policy):
    """With gating on (the default), tile static energy = tiles the mapping reports powered x 0.7 mW x
    makespan (none when every matrix is digital); the local digital units still leak on all 3 host nodes."""
    chip = load_chip_text(PRICED_YAML.replace("  power_gate_unused_tiles: false\n", ""))
    model = from_hf_config(TINY, name="tiny")
    trace = synthesize(SyntheticSpec(tokens=16, requests=1, seed=0), model)
    d = simulate(chip, model, trace, policy, fraction=0.5, batch=16).data
    makespan_ns = d["metrics"]["makespan_s"] * 1e9
    powered = d["mapping"]["tiles_powered"]
    assert (powered == 0) if policy == "all-digital" else (0 < powered <= TILES)
    assert d["energy_pj"]["analog"]["static"] == pytest.approx(powered * 0.7 * makespan_ns, rel=1e-12, abs=1e-12)
    assert d["energy_pj"]["analog"]["local_digital_static"] == pytest.approx(3 * 0.9 * makespan_ns, rel=1e-12)
