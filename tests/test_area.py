"""Silicon area (arch/area.py): closed forms recomputed here from the spec, budgets, densities, errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from arch import SpecError, area, costs, load_chip, load_chip_text
from arch.derived import derived_figures
from sim.report import budget, tradeoff
from sim.report.plots import feasible_front
from tests.conftest import UNIT_YAML
from workloads.traces.synthetic import SyntheticSpec

AREA_YAML = UNIT_YAML + """\
area:
  process_nm: 14
  crossbar_um2_per_device: 2.0
  dac_um2: 3.0
  adc_um2: 40.0
  adc_reference_conversion_ns: 2.5
  tile_periphery_um2: 100.0
  simd_um2_per_mac: 500.0
  simd_mm2_per_core: 0.5
  sram_mm2_per_mib: 0.8
  router_um2_per_gbps: 10.0
  dram_interface_mm2_per_channel: 7.0
  other_mm2: 1.5
"""


def test_tile_area_is_the_sum_of_its_parts():
    """aimc-3d-moe's tiles are monolithic: the periphery sits under the array, footprint = silicon =
    max(one tier's array, DACs + ADCs + periphery)."""
    chip = load_chip("aimc-3d-moe")
    a, ar = chip.analog, chip.area
    t = a.tile
    assert area.stacking(chip) == "monolithic"
    array = t.rows * t.cols * t.devices_per_weight * ar.crossbar_um2_per_device
    assert ar.adc_reference_conversion_ns == a.adc.conversion_ns and a.adc.bits == a.adc.anchor_bits  # one copy, anchor law 1
    periphery = a.dac.per_tile * ar.dac_um2 + a.adc.per_tile * ar.adc_um2 + ar.tile_periphery_um2
    fp, si = area.tile_area_mm2(chip)
    assert fp == pytest.approx(max(array, periphery) / 1e6, rel=1e-12)
    assert si == pytest.approx(fp, rel=1e-12)
    big = load_chip("aimc-3d-moe", {"area": {"crossbar_um2_per_device": 10.0}})   # an array wider than the periphery
    big_array = t.rows * t.cols * t.devices_per_weight * 10.0
    assert area.tile_area_mm2(big)[0] == pytest.approx(big_array / 1e6, rel=1e-12)
    assert area.chip_area(big)["breakdown"]["crossbar arrays"]["footprint_mm2"] == pytest.approx(
        a.tile_count * (big_array - periphery) / 1e6, rel=1e-12)


def test_planar_and_bonded_stacking_by_hand():
    """planar: array beside periphery; bonded: tiers x (array + DACs) silicon over a base die, footprint
    max(array + DACs, ADCs + periphery)."""
    flat = load_chip_text(AREA_YAML.replace("    tiers: 2\n", "    tiers: 1\n"))
    A, D, C, P = 16 * 2.0, 4 * 3.0, 4 * 40.0 * 3, 100.0       # ADC 1 ns vs reference 2.5 ns -> 3 copies
    assert area.stacking(flat) == "planar"
    assert area.tile_area_mm2(flat) == pytest.approx(((A + D + C + P) / 1e6,) * 2, rel=1e-12)
    bonded = load_chip_text(AREA_YAML.replace("    tiers: 2\n", "    tiers: 3\n    stacking: bonded\n"))
    fp, si = area.tile_area_mm2(bonded)
    assert fp == pytest.approx(max(A + D, C + P) / 1e6, rel=1e-12)
    assert si == pytest.approx((3 * (A + D) + C + P) / 1e6, rel=1e-12)
    with pytest.raises(SpecError, match="stacking"):
        load_chip_text(AREA_YAML.replace("    tiers: 2\n", "    tiers: 3\n    stacking: planar\n"))


def test_unit_chip_totals_by_hand():
    chip = load_chip_text(AREA_YAML)
    # 8 tiles of 4x4 x 1 device x 2 um2, 2 tiers, monolithic by default: periphery under the array;
    # 4 DACs, 4 ADCs per tile; ADC 1 ns vs reference 2.5 ns -> 3 copies
    array = 16 * 2.0
    base = 4 * 3.0 + 4 * 40.0 * 3 + 100.0
    tiles = 8 * max(array, base)
    simd = 1 * (1 * 500.0 / 1e6 + 0.5)
    sram = (1 + 16) * 0.8                     # capacity 1 MiB + default staging 16 MiB
    routers = 4 * 8 * 10.0 / 1e6             # 2x2 mesh, 8 Gbit/s links
    fp = tiles / 1e6 + simd + sram + routers + 7.0 + 1.5
    got = area.chip_area(chip)
    assert got["footprint_mm2"] == pytest.approx(fp, rel=1e-12)
    assert got["silicon_mm2"] == pytest.approx(fp, rel=1e-12)
    assert got["array_layers"] == 2


def test_doubling_sram_adds_exactly_its_area_and_leakage():
    base = load_chip("aimc-3d-moe")
    big = load_chip("aimc-3d-moe", {"memory": {"sram": {"capacity_mib": 64}}})
    added = 64 - base.memory.sram.capacity_mib
    d = area.chip_area(big)["footprint_mm2"] - area.chip_area(base)["footprint_mm2"]
    assert d == pytest.approx(added * base.area.sram_mm2_per_mib, rel=1e-9)
    leak = costs.sram_static_power_mw(big) - costs.sram_static_power_mw(base)
    assert leak == pytest.approx(added * base.memory.sram.leakage_mw_per_mib, rel=1e-12)
    # absolute values from the preset: 1 mW/MiB over (32 MiB + 16 MiB staging), 0.82 mm^2/MiB likewise
    assert costs.sram_static_power_mw(base) == pytest.approx(1.0 * (32 + 16), rel=1e-12)
    assert costs.sram_static_power_mw(big) == pytest.approx(1.0 * (64 + 16), rel=1e-12)
    assert area.chip_area(base)["breakdown"]["SRAM"]["footprint_mm2"] == pytest.approx(0.82 * 48, rel=1e-12)


def test_a_tier_adds_silicon_only_when_bonded():
    one = load_chip("aimc-3d-moe", {"analog": {"tile": {"stacking": "bonded"}}})
    more = load_chip("aimc-3d-moe", {"analog": {"tile": {"tiers": one.analog.tile.tiers + 1, "stacking": "bonded"}}})
    t = one.analog.tile
    n = one.analog.tile_count
    tier_mm2 = n * (t.rows * t.cols * t.devices_per_weight * one.area.crossbar_um2_per_device
                    + one.analog.dac.per_tile * one.area.dac_um2) / 1e6
    assert area.chip_area(more)["silicon_mm2"] - area.chip_area(one)["silicon_mm2"] == pytest.approx(tier_mm2)
    assert area.chip_area(more)["footprint_mm2"] == pytest.approx(area.chip_area(one)["footprint_mm2"])
    mono = load_chip("aimc-3d-moe")
    mono_more = load_chip("aimc-3d-moe", {"analog": {"tile": {"tiers": mono.analog.tile.tiers + 1}}})
    assert area.chip_area(mono_more)["silicon_mm2"] == area.chip_area(mono)["silicon_mm2"]   # a deposited layer
    assert area.chip_area(mono_more)["array_layers"] == mono.analog.tile.tiers + 1


def test_adc_area_follows_bits_and_rate():
    """SAR: fixed share f plus (1 - f) x 2^(bits - anchor); ramp: (1 - f) x bits / anchor; copies only when
    faster than the cited design at the same bits."""
    chip = load_chip("aimc-3d-moe")
    f, a0 = chip.area.adc_fixed_fraction, chip.area.adc_um2
    for bits in (4, 6, 8, 10, 12):
        sar = load_chip("aimc-3d-moe", {"analog": {"adc": {"bits": bits}}})
        # SAR time law x bits/8 on both the converter and the cited design: never a copy
        assert area.adc_area_um2(sar.analog.adc, sar.area) == pytest.approx(a0 * (f + (1 - f) * 2.0 ** (bits - 8)))
        ramp = load_chip("aimc-3d-moe", {"analog": {"adc": {"bits": bits, "kind": "ramp"}}})
        assert area.adc_area_um2(ramp.analog.adc, ramp.area) == pytest.approx(a0 * (f + (1 - f) * bits / 8))
    four = load_chip("aimc-3d-moe", {"analog": {"adc": {"bits": 4}}})
    assert area.adc_area_um2(four.analog.adc, four.area) >= f * a0          # the comparator-and-logic floor
    fast = load_chip("aimc-3d-moe", {"analog": {"adc": {"conversion_ns": 0.2}}})
    assert area.adc_area_um2(fast.analog.adc, fast.area) == pytest.approx(a0 * math.ceil(0.78125 / 0.2))


def test_below_the_anchor_fewer_bits_convert_faster_without_copies():
    """hermes-64's ramp ADC at 6 bits converts in 76.8 / 4 ns, which the cited CCO design also takes at 6
    bits: no interleaved copies, and the area shrinks by the counter law (was cancelled before)."""
    h8 = load_chip("hermes-64")
    h6 = load_chip("hermes-64", {"analog": {"adc": {"bits": 6}}})
    assert costs.adc_time_ns(h6.analog.adc) == pytest.approx(76.8 / 4)
    assert area.adc_copies(h6.analog.adc, h6.area) == 1
    f = h8.area.adc_fixed_fraction
    assert area.adc_area_um2(h6.analog.adc, h6.area) == pytest.approx(600.0 * (f + (1 - f) * 6 / 8))
    assert area.adc_area_um2(h6.analog.adc, h6.area) < area.adc_area_um2(h8.analog.adc, h8.area)


def test_sharing_the_cited_converter_32_to_1():
    """One converter per column at the cited rate, against one per 32 columns: ADC area / 32, and each pass
    waits 32 conversions instead of one."""
    per_col = load_chip("aimc-3d-moe", {"analog": {"adc": {"per_tile": 512}}})
    shared = load_chip("aimc-3d-moe", {"analog": {"adc": {"per_tile": 16}}})
    b1 = area.chip_area(per_col)["breakdown"]["ADCs"]["footprint_mm2"]
    b32 = area.chip_area(shared)["breakdown"]["ADCs"]["footprint_mm2"]
    assert b1 / b32 == pytest.approx(32.0)
    a = shared.analog
    t_conv = a.adc.conversion_ns
    assert costs.mvm_latency_ns(a, 8, 512, 512) - costs.mvm_latency_ns(per_col.analog, 8, 512, 512) == \
        pytest.approx(31 * t_conv)


def test_slow_converters_are_said_to_idle():
    """A converter asked for 40 ns where the cited design takes 0.78125 ns idles 1 - 0.78125/40 of the time;
    floor(40 / 0.78125) = 51 columns could share one."""
    slow = load_chip("aimc-3d-moe", {"analog": {"adc": {"per_tile": 512, "conversion_ns": 40.0}}})
    duty = area.adc_duty(slow)
    assert duty["idle"] == pytest.approx(1 - 0.78125 / 40)
    assert duty["share"] == 51 and duty["per_tile"] == math.ceil(512 / 51)
    assert area.adc_duty(load_chip("aimc-3d-moe")) is None
    out = subprocess.run([sys.executable, "-m", "sim.cli", "hw", "show", "aimc-3d-moe", "--set", "analog.adc.per_tile=512",
                          "--set", "analog.adc.conversion_ns=40"], capture_output=True, text=True)
    assert out.returncode == 0 and "idles 98%" in out.stdout and "analog.adc.per_tile=11" in out.stdout


def test_isaac_area_within_5_percent_of_published():
    """ISAAC16's chip: 85.4 mm^2 (168 tiles with the eDRAM-to-IMA bus, routers shared by 4 tiles, and the
    HyperTransport links)."""
    assert area.chip_area(load_chip("isaac"))["footprint_mm2"] == pytest.approx(85.4, rel=0.05)
    routers = area.chip_area(load_chip("isaac"))["breakdown"]["NoC routers"]["footprint_mm2"]
    assert routers == pytest.approx(168 * 0.151 / 4, rel=1e-9)


def test_hermes_core_density_within_10_percent_of_published():
    """HERMES-Core (Khaddam-Aljameh et al., JSSC 2022): 1.59 TOPS/mm^2 at 1 GHz, from the components."""
    chip = load_chip("hermes-64")
    a = chip.analog
    t_mvm = costs.mvm_latency_ns(a, chip.precision.activation_bits, a.tile.rows, a.tile.cols)
    tops = 2 * a.tile.rows * a.tile.cols / t_mvm / 1000
    assert abs(tops / area.tile_area_mm2(chip)[0] / 1.59 - 1) < 0.10
    assert abs(derived_figures(chip)["analog_tops_per_mm2"] / 1.59 - 1) < 0.10


def aimc_3d_moe_footprint_by_hand() -> float:
    """aimc-3d-moe's footprint from the preset's numbers x counts (module docstring of arch.area), mm^2:
    2,048 monolithic tiles of max(array 512 x 512 x 2 x 0.0016 um^2, DACs 512 x 100 + ADCs 16 x 525 (8 bits
    at the anchor, as fast as the cited design: one copy) + periphery 180,340 um^2); 64 nodes hosting tiles
    (2,048 / 32) x 64 ops x 303 um^2 of local digital units; 8 SIMD cores x (1,024 MACs x 303 um^2 + 0.25 mm^2);
    (32 + 16) MiB x 0.82 mm^2 of SRAM; 64 routers x 512 Gbit/s x 94 um^2 per Gbit/s; 1 DRAM channel x 10 mm^2."""
    array = 512 * 512 * 2 * 0.0016
    periphery = 512 * 100.0 + 16 * 525.0 + 180340.0
    tiles = 2048 * max(array, periphery) / 1e6
    local = 64 * 64 * 303.0 / 1e6
    simd = 8 * (1024 * 303.0 / 1e6 + 0.25)
    sram = (32 + 16) * 0.82
    routers = 64 * 512 * 94.0 / 1e6
    return tiles + local + simd + sram + routers + 1 * 10.0


AIMC_3D_MOE_FOOTPRINT_MM2 = aimc_3d_moe_footprint_by_hand()      # 549.560576 mm^2


def test_aimc_3d_moe_area_by_hand():
    assert AIMC_3D_MOE_FOOTPRINT_MM2 == pytest.approx(549.560576, rel=1e-12)
    got = area.chip_area(load_chip("aimc-3d-moe"))
    assert got["footprint_mm2"] == pytest.approx(AIMC_3D_MOE_FOOTPRINT_MM2, rel=1e-12)
    assert got["silicon_mm2"] == pytest.approx(AIMC_3D_MOE_FOOTPRINT_MM2, rel=1e-12)    # monolithic
    assert got["breakdown"]["local digital units"]["footprint_mm2"] == pytest.approx(64 * 64 * 303.0 / 1e6)


def test_result_reports_area_and_tokens_per_s_per_mm2():
    from sim.api import simulate

    r = simulate("aimc-3d-moe", "olmoe-1b-7b", SyntheticSpec(tokens=64, seed=0), "maxnn", batch=32)
    m = r.metrics
    assert m["chip_footprint_mm2"] == pytest.approx(AIMC_3D_MOE_FOOTPRINT_MM2, rel=1e-9)
    assert m["tokens_per_s_per_mm2"] == pytest.approx(m["throughput_tokens_per_s"] / m["chip_footprint_mm2"])
    assert m["tokens_per_s_per_w_per_mm2"] == pytest.approx(m["tokens_per_s_per_w"] / m["chip_footprint_mm2"])
    assert set(r.data["hw_figures"]["area_breakdown_mm2"]) >= {"crossbar arrays", "ADCs", "SRAM"}


def _run(label_policy: str, fraction: float, footprint: float, tpw: float, loss: float = 0.0) -> dict:
    return {"placement": {"policy": label_policy, "fraction": fraction},
            "metrics": {"chip_footprint_mm2": footprint, "energy_per_token_uj": 1e6 / tpw,
                        "throughput_tokens_per_s": tpw, "tokens_per_s_per_w": tpw},
            "accuracy": {"placement": {"mean": {"rel_perplexity_increase": loss, "delta_bits_per_token": 0,
                                                "kl_nats": 0, "top1_agreement": 1, "routes_changed": 0},
                                       "std": {"rel_perplexity_increase": 0, "delta_bits_per_token": 0,
                                               "kl_nats": 0}}}}


def test_over_budget_is_infeasible_and_never_best():
    big = _run("maxnn", 0.125, 500.0, 1000.0)        # most efficient, but over budget
    small = _run("maxnn", 0.25, 200.0, 400.0)
    runs = [big, small]
    budget.annotate(runs, 300.0)
    assert not big["area_budget"]["feasible"] and small["area_budget"]["feasible"]
    pts = [(r["metrics"]["energy_per_token_uj"], r["metrics"]["throughput_tokens_per_s"]) for r in runs]
    assert feasible_front(runs, pts) == [1]
    rows = tradeoff.join(runs, {"placements": []})
    assert tradeoff.front(rows) == [1]
    acc = {"max_loss_rel_perplexity": 0.01, "eval": {"predicted_tokens": 10, "source": "x"},
           "clean": {"perplexity": 2.0}, "noise_seeds": 1}
    text = " ".join(tradeoff.answer(rows, acc))
    assert "**maxnn 25%**" in text and "**maxnn 12.5%**" not in text
    assert "1 of 2 runs within it" in budget.summary(runs)


def test_a_budget_no_design_meets_says_so_in_one_line():
    runs = [_run("maxnn", 0.125, 500.0, 1.0), _run("all-analog", 0.0, 450.0, 2.0)]
    budget.annotate(runs, 100.0)
    line = budget.summary(runs)
    assert "\n" not in line and "No design meets the area budget of 100.0 mm^2" in line and "450.0" in line


@pytest.mark.parametrize("value, fragment", [
    ("-1.0", "outside the allowed range"),
    (".nan", "NaN is not allowed"),
    ("600 um2", "is not a number"),
])
def test_bad_area_values_name_file_line_and_key(tmp_path, value, fragment):
    path = tmp_path / "chip.yaml"
    path.write_text(AREA_YAML.replace("adc_um2: 40.0", f"adc_um2: {value}"))
    line = AREA_YAML.replace("adc_um2: 40.0", "@@").splitlines().index(
        next(s for s in AREA_YAML.replace("adc_um2: 40.0", "@@").splitlines() if "@@" in s)) + 1
    with pytest.raises(SpecError, match=fragment) as info:
        load_chip(path)
    assert f"{path}:{line}: area.adc_um2" in str(info.value)


def test_area_key_without_unit_is_refused(tmp_path):
    path = tmp_path / "chip.yaml"
    path.write_text(AREA_YAML.replace("adc_um2: 40.0", "adc_area: 40.0"))
    with pytest.raises(SpecError, match="unknown key; recognised keys here: .*adc_um2"):
        load_chip(path)


def test_hw_show_prints_the_area_breakdown_for_every_preset():
    from arch.loader import list_presets

    for name in list_presets():
        out = subprocess.run([sys.executable, "-m", "sim.cli", "hw", "show", name], capture_output=True, text=True,
                             check=True).stdout
        assert "footprint_mm2" in out and "area breakdown" in out and "ADCs" in out, name
        data = json.loads(subprocess.run([sys.executable, "-m", "sim.cli", "hw", "show", name, "--json"],
                                         capture_output=True, text=True, check=True).stdout)
        if name == "aimc-3d-moe":
            assert data["footprint_mm2"] == pytest.approx(AIMC_3D_MOE_FOOTPRINT_MM2, rel=1e-9)
            assert data["area_breakdown_mm2"]["SRAM"]["footprint_mm2"] == pytest.approx(48 * 0.82, rel=1e-9)


def test_every_assumed_preset_number_says_why():
    """Issue 'credible baselines' item 6: an assumed number carries a one-line rationale, not a bare 'assumed'."""
    from arch.loader import PRESET_DIR

    for path in PRESET_DIR.glob("*.yaml"):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            assert not line.rstrip().endswith("# assumed"), f"{path.name}:{i} says 'assumed' without a reason"
