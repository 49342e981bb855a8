"""Closed forms against hand arithmetic written from the spec's own values."""

from dataclasses import replace
from math import ceil

import pytest

from arch import costs, load_chip, load_chip_text
from arch.derived import derived_figures
from arch.noc import build_network
from tests.conftest import UNIT_YAML, graph_yaml


@pytest.fixture
def unit():
    return load_chip_text(UNIT_YAML, "unit.yaml")


def test_pwm_mvm_latency_unit(unit):
    # 2-bit PWM: t_in = (2^(2-1) - 1) * 1 ns = 1; integration 1; 4 cols / 4 ADCs * 1 ns = 1
    assert costs.mvm_latency_ns(unit.analog, 2, 4, 4) == 1 + 1 + 1


def test_adc_sharing_multiplies_conversion_time(unit):
    a = unit.analog
    shared = a.__class__(**{**a.__dict__, "adc": a.adc.__class__(**{**a.adc.__dict__, "per_tile": 1})})
    assert costs.mvm_latency_ns(shared, 2, 4, 3) == 1 + 1 + ceil(3 / 1) * 1.0


def test_pwm_mvm_energy_unit(unit):
    # passes * (r * e_dac + c * e_adc + r * c * devices * e_cell) = 1*(4+4) + 16*1*1 pJ
    assert costs.mvm_energy_pj(unit.analog, 2, 4, 4) == pytest.approx(1 * (4 * 1 + 4 * 1) + 4 * 4 * 1 * 1.0)


def test_bit_serial_isaac():
    chip = load_chip("isaac")
    a = chip.analog
    bits = chip.precision.activation_bits
    passes = ceil(bits / a.dac.bits)
    t_conv = ceil(32 * a.tile.columns_per_weight / a.adc.per_tile) * a.adc.conversion_ns
    expected = passes * (a.dac.step_ns + a.tile.integration_ns + t_conv)
    assert costs.mvm_latency_ns(a, bits, 128, 32) == pytest.approx(expected)
    # every input pass reads every cell (issue: array energy per pass)
    e = passes * (128 * a.dac.energy_pj_per_conversion + 32 * 4 * a.adc.energy_pj_per_conversion
                  + 128 * 32 * a.tile.devices_per_weight * a.tile.array_energy_fj_per_cell / 1000)
    assert costs.mvm_energy_pj(a, bits, 128, 32) == pytest.approx(e)
    assert costs.mvm_actions(a, bits, 128, 32).cell_reads == passes * 128 * 32 * 4


def test_isaac_array_and_adc_energy_follow_the_cited_figures():
    """ISAAC16: crossbars draw 2.4 mW per 8 at a 100 ns cycle, so one 8-pass MVM over a full 128x128-cell
    crossbar spends 8 * 2.4 mW / 8 * 100 ns = 240 pJ in the array; ADCs 16 mW per 8 at 1.28 GS/s."""
    a = load_chip("isaac").analog
    no_array = replace(a, tile=replace(a.tile, array_energy_fj_per_cell=0.0))
    array_pj = costs.mvm_energy_pj(a, 8, 128, 32) - costs.mvm_energy_pj(no_array, 8, 128, 32)
    assert array_pj == pytest.approx(8 * 2.4 / 8 * 100, rel=1e-3)
    assert a.adc.energy_pj_per_conversion == pytest.approx(16 / 8 / 1.28)


def test_slots_and_reduction():
    assert costs.crossbar_slots(200, 300, 128, 128) == ceil(300 / 128) * ceil(200 / 128)
    shapes = costs.slot_shapes(200, 300, 128, 128)
    assert len(shapes) == 6
    assert sum(r * c for r, c in shapes) == 200 * 300
    assert costs.reduction_adds(200, 300, 128) == 200 * (ceil(300 / 128) - 1)


def test_tile_batch_latency():
    assert costs.tile_batch_latency_ns(100.0, 30.0, 5) == 100 + 4 * 30
    assert costs.tile_batch_latency_ns(100.0, 30.0, 0) == 0


def test_gemm_roofline_and_energy():
    # compute bound: 4 tokens * 8 * 16 MACs at 2 MACs/ns
    assert costs.gemm_latency_ns(4 * 8 * 16, 2.0, 128, 1024, 10, 1024) == 4 * 8 * 16 / 2
    # weight bound: 1000 bytes * 8 / 8 Gbit/s = 1000 ns
    assert costs.gemm_latency_ns(10, 2.0, 1000, 8, 10, 1024) == 1000
    assert costs.gemm_energy_pj(100, 0.5, 10, 2.0, 4, 1.0) == 100 * 0.5 + 10 * 2.0 + 4 * 1.0


def test_noc_and_dram():
    assert costs.noc_latency_ns(64, 3, 8, 2.0) == 3 * 2.0 + 64 * 8 / 8
    assert costs.noc_latency_ns(64, 0, 8, 2.0) == 0
    assert costs.noc_energy_pj(64, 3, 0.1) == pytest.approx(64 * 8 * 3 * 0.1)
    assert costs.dram_latency_ns(256, 100, 2048) == 100 + 256 * 8 / 2048
    assert costs.dram_energy_pj(256, 3.9) == pytest.approx(256 * 8 * 3.9)


def test_mesh_xy_routing_is_dimension_order(unit):
    net = build_network(load_chip("aimc-3d-moe").noc)
    path = net.path((0, 0), (2, 1))
    assert path == (((0, 0), (1, 0)), ((1, 0), (2, 0)), ((2, 0), (2, 1)))
    assert net.path((3, 3), (3, 3)) == ()
    assert net.diameter_hops() == 7 + 7
    assert net.bisection_bandwidth_gbps() == 8 * 512


def test_graph_topology_routes_over_custom_links(tmp_path):
    text = graph_yaml("[{a: a, b: b}, {a: b, b: c, bandwidth_gbps: 1, energy_pj_per_bit: 5}]", "[b, c]", 4)
    chip = load_chip_text(text, "g.yaml")
    net = build_network(chip.noc)
    path = net.path("a", "c")
    assert path == (("a", "b"), ("b", "c"))
    assert [net.link_bandwidth_gbps(link) for link in path] == [8, 1]
    assert net.node_of_tile(5) == "c"


@pytest.mark.parametrize("name,tops,tops_w", [("hermes-64", 63.1, 9.76)])
def test_hermes_matches_published(name, tops, tops_w):
    chip = load_chip(name)
    figs = derived_figures(chip)
    a = chip.analog
    # recompute here: 2*256*256 ops per MVM, t_mvm = (2^7-1)*step + integration + ceil(256/256)*conv
    t = (2 ** 7 - 1) * a.dac.step_ns + a.tile.integration_ns + a.adc.conversion_ns
    e = 256 * a.dac.energy_pj_per_conversion + 256 * a.adc.energy_pj_per_conversion \
        + 256 * 256 * 4 * a.tile.array_energy_fj_per_cell / 1000
    assert figs["peak_analog_tops"] == pytest.approx(64 * 2 * 256 * 256 / t / 1000)
    assert figs["analog_tops_per_w"] == pytest.approx(2 * 256 * 256 / e)
    assert abs(figs["peak_analog_tops"] / tops - 1) < 0.10
    assert abs(figs["analog_tops_per_w"] / tops_w - 1) < 0.10


def test_aimc_3d_fits_olmoe_experts():
    chip = load_chip("aimc-3d-moe")
    t = chip.analog.tile
    per_expert = 2 * costs.crossbar_slots(1024, 2048, t.rows, t.cols) + costs.crossbar_slots(2048, 1024, t.rows, t.cols)
    assert 16 * 64 * per_expert <= chip.analog.tile_count * t.tiers
    # published Buechel25 simulator defaults: ~100 ns and ~10 nJ per tier MVM
    assert costs.mvm_latency_ns(chip.analog, 8, t.rows, t.cols) == pytest.approx(100, rel=0.05)
    assert costs.mvm_energy_pj(chip.analog, 8, t.rows, t.cols) == pytest.approx(10_000, rel=0.05)


@pytest.mark.parametrize("preset", ["hermes-64", "isaac", "aimc-3d-moe"])
def test_adc_figures_at_the_presets_own_resolution_are_the_cited_ones(preset):
    adc = load_chip(preset).analog.adc
    assert adc.anchor_bits == adc.bits
    assert costs.adc_energy_pj(adc) == adc.energy_pj_per_conversion
    assert costs.adc_time_ns(adc) == adc.conversion_ns


def test_adc_bits_drive_energy_and_time_by_the_stated_law():
    """Energy max(E8 x 2^(bits - 8), thermal floor 10^((6.02 b + 1.76 - FoM)/10) / 2 J) at 4..16 bits; SAR time
    x bits/8, ramp x 2^(bits - 8); pinned: as given."""
    def adc(bits, **kw):
        return load_chip("aimc-3d-moe", {"analog": {"adc": {"bits": bits, **kw}}}).analog.adc

    e8, t8, fom = 1.5625, 0.78125, 180.0                 # aimc-3d-moe's cited SAR at its anchor, 8 bits
    assert adc(8).schreier_fom_db == fom
    for bits in (4, 6, 10, 12, 16):
        walden = e8 * 2.0 ** (bits - 8)
        thermal_pj = 0.5 * 10 ** ((6.02 * bits + 1.76 - fom) / 10) * 1e12
        assert costs.adc_energy_pj(adc(bits)) == pytest.approx(max(walden, thermal_pj))
    assert costs.adc_energy_pj(adc(6)) == pytest.approx(e8 / 4)                  # Walden region
    assert costs.adc_energy_pj(adc(16)) == pytest.approx(0.5 * 10 ** ((6.02 * 16 + 1.76 - fom) / 10) * 1e12)
    assert 2e3 < costs.adc_energy_pj(adc(16)) < 5e3                              # ~3 nJ, the survey frontier
    assert costs.adc_time_ns(adc(7)) == pytest.approx(t8 * 7 / 8)               # SAR: one cycle per bit
    ramp = adc(6, kind="ramp")
    assert costs.adc_time_ns(ramp) == pytest.approx(t8 / 4)                     # counting ADC: x 2 per bit
    pinned = adc(6, scaling="pinned")
    assert (costs.adc_energy_pj(pinned), costs.adc_time_ns(pinned)) == (e8, t8)


def test_dac_bits_law():
    """PWM: energy x bits / anchor; bit-serial multi-bit DAC: x 2^(bits - anchor)."""
    a = load_chip("aimc-3d-moe").analog
    for bits in (4, 6, 8):
        d = load_chip("aimc-3d-moe", {"analog": {"dac": {"bits": bits}}}).analog.dac
        assert costs.dac_energy_pj(d) == pytest.approx(a.dac.energy_pj_per_conversion * bits / 8)
    d = load_chip("aimc-3d-moe", {"analog": {"dac": {"bits": 4, "encoding": "bit_serial"}}}).analog.dac
    assert costs.dac_energy_pj(d) == pytest.approx(a.dac.energy_pj_per_conversion * 2.0 ** (4 - 8))


def test_hw_show_differs_between_8_and_6_bit_adcs():
    f8 = derived_figures(load_chip("aimc-3d-moe"))
    f6 = derived_figures(load_chip("aimc-3d-moe", {"analog": {"adc": {"bits": 6}}}))
    # 512 columns converted per MVM: E_mvm loses 512 * (E8 - E8 / 4); 32 conversions per ADC per pass each
    # lose 2 of 8 SAR cycles
    e8, t8 = 1.5625, 0.78125
    assert f8["mvm_energy_pj"] - f6["mvm_energy_pj"] == pytest.approx(512 * (e8 - e8 / 4))
    assert f8["mvm_latency_ns"] - f6["mvm_latency_ns"] == pytest.approx(32 * t8 * 2 / 8)


def test_sram_energy_follows_the_bank_size():
    """sqrt law: doubling the bank raises pJ/byte by sqrt(2); at the reference size the cited figure holds."""
    def sram(bank):
        return load_chip("aimc-3d-moe", {"memory": {"sram": {"bank_kib": bank}}}).memory.sram

    cited = sram(8).energy_pj_per_byte                       # Horowitz: 10 pJ / 8 bytes at 8 KB
    assert costs.sram_energy_pj_per_byte(sram(8)) == pytest.approx(cited) == pytest.approx(10 / 8)
    assert costs.sram_energy_pj_per_byte(sram(512)) / costs.sram_energy_pj_per_byte(sram(256)) == pytest.approx(2 ** 0.5)
    # Horowitz's own 1 MB point: 100 pJ per 64-bit read is 12.5 pJ/byte; the law gives 1.25 * sqrt(128) = 14.1
    assert costs.sram_energy_pj_per_byte(sram(1024)) == pytest.approx(12.5, rel=0.15)
    isaac = load_chip("isaac").memory.sram
    assert costs.sram_energy_pj_per_byte(isaac) == isaac.energy_pj_per_byte == pytest.approx(20.45 / 32, rel=0.01)


def test_activations_wider_than_a_pwm_dac_are_sliced():
    """8-bit activations on a 4-bit PWM DAC: 2 passes of 2^(4-1) - 1 = 7 steps, each converted."""
    a = load_chip("aimc-3d-moe", {"analog": {"dac": {"bits": 4}}}).analog
    assert costs.input_passes(a, 8) == 2
    g = ceil(512 / a.dac.per_tile)
    t_conv = ceil(512 / a.adc.per_tile) * a.adc.conversion_ns
    expected = 2 * (g * (7 * a.dac.step_ns + a.tile.integration_ns) + t_conv)
    assert costs.mvm_latency_ns(a, 8, 512, 512) == pytest.approx(expected)
    act = costs.mvm_actions(a, 8, 512, 512)
    assert (act.dac_conversions, act.adc_conversions) == (2 * 512, 2 * 512)
    wide = load_chip("aimc-3d-moe").analog                    # 8-bit DAC: one pass of 127 steps, as before
    assert costs.mvm_latency_ns(wide, 8, 512, 512) == pytest.approx(
        g * (127 * wide.dac.step_ns + wide.tile.integration_ns) + t_conv)
