"""Closed-form tests that kill the mutants benchmarks/mutation.py found surviving (issue #32, part 4)."""

from __future__ import annotations

import pytest

from math import log, sqrt
from types import SimpleNamespace

import numpy as np

from arch import area, costs, load_chip, load_chip_text
from sim import metrics
from tests.test_area import AREA_YAML


def test_bonded_tile_with_the_array_wider_than_the_base_die():
    """bonded, array + DACs larger than ADCs + periphery: footprint A + D, silicon tiers x (A + D) + C + P.
    Unit chip: 4 x 4 x 1 device x 100 um^2 = A = 1,600; D = 4 x 3 = 12; C = 4 x 40 x 3 copies = 480; P = 100."""
    chip = load_chip_text(AREA_YAML.replace("    tiers: 2\n", "    tiers: 3\n    stacking: bonded\n")
                          .replace("crossbar_um2_per_device: 2.0", "crossbar_um2_per_device: 100.0"))
    A, D, C, P = 16 * 100.0, 4 * 3.0, 4 * 40.0 * 3, 100.0
    fp, si = area.tile_area_mm2(chip)
    assert fp == pytest.approx((A + D) / 1e6, rel=1e-12)
    assert si == pytest.approx((3 * (A + D) + C + P) / 1e6, rel=1e-12)
    b = area.chip_area(chip)["breakdown"]
    assert b["crossbar arrays"]["footprint_mm2"] == pytest.approx(8 * (A + D - C - P) / 1e6, rel=1e-12)
    assert b["crossbar arrays"]["silicon_mm2"] == pytest.approx(8 * 3 * A / 1e6, rel=1e-12)
    assert b["DACs"]["count"] == 8 * 4 * 3                     # 8 tiles x 4 DACs x 3 tier dies


def test_part_counts_of_the_unit_chip():
    """Counts: 8 tiles x 2 tiers of arrays, 8 x 4 DACs (monolithic: on the base only), 8 x 4 ADCs, 8
    peripheries, 1 SIMD core, 1 + 16 MiB of SRAM, 4 routers, one 'other'."""
    b = area.chip_area(load_chip_text(AREA_YAML))["breakdown"]
    counts = {k: v["count"] for k, v in b.items()}
    assert counts["crossbar arrays"] == 16 and counts["DACs"] == 32 and counts["ADCs"] == 32
    assert counts["tile periphery"] == 8 and counts["SIMD cores"] == 1 and counts["SRAM"] == 17
    assert counts["NoC routers"] == 4 and counts["other"] == 1


def test_a_converter_slower_than_the_design_but_under_twice_it_idles():
    """1.5 x the cited 0.78125 ns: idle 1 - 1/1.5 = 1/3; one column per converter (floor 1.5 = 1)."""
    slow = load_chip("aimc-3d-moe", {"analog": {"adc": {"conversion_ns": 0.78125 * 1.5}}})
    duty = area.adc_duty(slow)
    assert duty is not None and duty["idle"] == pytest.approx(1 / 3)
    assert duty["share"] == 1 and duty["per_tile"] == 16


def test_peak_mac_rate_scales_with_the_precision():
    """aimc-3d-moe SIMD: 8 cores x 1,024 MACs x 1 GHz = 8,192 MAC/ns at int8, x 2 at int4, x 0.5 at fp16."""
    simd = load_chip("aimc-3d-moe").digital.simd
    assert costs.simd_peak_macs_per_ns(simd) == pytest.approx(8 * 1024 * 1.0, rel=1e-12)
    for mac, scale in (("int8", 1.0), ("int4", 2.0), ("fp16", 0.5)):
        assert costs.simd_peak_macs_per_ns(simd, mac) == pytest.approx(8 * 1024 * 1.0 * scale, rel=1e-12), mac


def test_percentiles_are_in_microseconds():
    """1..100 us in ps: the 50th, 95th and 99th percentiles (linear interpolation) are 50.5, 95.05, 99.01 us."""
    ps = np.arange(1, 101, dtype=np.float64) * 1e6
    assert metrics.percentiles_us(ps) == pytest.approx((50.5, 95.05, 99.01), rel=1e-12)


def test_exposure_by_hand():
    """Two MoE layers, two experts, top-1: layer 0 routes 3 tokens to e0 and 1 to e1, layer 1 (with one
    unobserved slot) 2 to e1. Expert 1 of layer 0 is digital. Raw exposure (3 + 2) / 6; gate-weighted with
    weights 0.5 each except one 1.0; score-weighted with scores [2, 1] per layer."""
    experts = np.array([[[0], [1]], [[0], [-1]], [[0], [1]], [[1], [-1]]], np.int16)
    weights = np.array([[[0.5], [0.5]], [[0.5], [0.5]], [[1.0], [0.5]], [[0.5], [0.5]]], np.float32)
    trace = SimpleNamespace(experts=experts, weights=weights)
    model = SimpleNamespace(moe_layers=[0, 1])
    digital = np.array([[False, True], [False, False]])
    scores = np.array([[2.0, 1.0], [2.0, 1.0]])
    got = metrics.exposure(trace, model, digital, scores)
    assert got["analog_exposure_macs"] == pytest.approx(5 / 6)
    assert got["analog_exposure_gate_weighted"] == pytest.approx((0.5 + 0.5 + 1.0 + 0.5 + 0.5) / 3.5)
    # scores: layer 0: e0 3 x 2 analog, e1 1 x 1 digital; layer 1: e1 2 x 1 analog
    assert got["analog_exposure_score_weighted"] == pytest.approx((6 + 2) / (6 + 1 + 2))
    none = metrics.exposure(SimpleNamespace(experts=np.full((2, 2, 1), -1, np.int16), weights=weights[:2]),
                            model, digital, scores)
    assert none == {"analog_exposure_macs": 0.0, "analog_exposure_gate_weighted": 0.0,
                    "analog_exposure_score_weighted": 0.0}


def test_steady_state_window_by_hand():
    """10 micro-batches of 2 tokens ending at 1..10 us, 1 in flight (or 0, which counts as 1): the window runs
    from the 1st to the 9th completion (8 us) and holds the 2nd..9th, 16 tokens: 2e6 tokens/s."""
    ends = np.arange(1, 11, dtype=np.int64) * 10 ** 6
    for in_flight in (0, 1):
        got = metrics.steady_state(ends, np.full(10, 2), in_flight)
        assert got["reached"] and got["tokens"] == 16 and got["needed_micro_batches"] == 4
        assert got["window_s"] == pytest.approx([1e-6, 9e-6]) and got["throughput_tokens_per_s"] == pytest.approx(2e6)
    short = metrics.steady_state(ends[:5], np.full(5, 2), 2)        # lo 1, hi 2: one completion inside
    assert short == {"reached": False, "needed_micro_batches": 6}


def test_percentiles_of_nothing_are_three_nans():
    got = metrics.percentiles_us(np.array([], dtype=np.int64))
    assert len(got) == 3 and all(np.isnan(v) for v in got)


def test_exposure_with_small_scores():
    """Scores below 1 weigh as well: one token, one analog expert, score 0.25 -> score-weighted exposure 1."""
    trace = SimpleNamespace(experts=np.zeros((1, 1, 1), np.int16), weights=np.full((1, 1, 1), 0.5, np.float32))
    got = metrics.exposure(trace, SimpleNamespace(moe_layers=[0]), np.array([[False]]), np.array([[0.25]]))
    assert got == {"analog_exposure_macs": 1.0, "analog_exposure_gate_weighted": 1.0,
                   "analog_exposure_score_weighted": 1.0}


def test_exposure_leaves_unscored_experts_out_of_the_score_weighting():
    """A NaN score (an expert MaxNNScore did not score) weighs 0: layer 0 routes 2 tokens to analog e0 (score
    NaN) and 1 to digital e1 (score 1): score-weighted exposure 0 / (0 + 1) = 0; raw 2 / 3."""
    trace = SimpleNamespace(experts=np.array([[[0]], [[0]], [[1]]], np.int16),
                            weights=np.full((3, 1, 1), 0.5, np.float32))
    got = metrics.exposure(trace, SimpleNamespace(moe_layers=[0]), np.array([[False, True]]),
                           np.array([[np.nan, 1.0]]))
    assert got["analog_exposure_macs"] == pytest.approx(2 / 3)
    assert got["analog_exposure_gate_weighted"] == pytest.approx(2 / 3)
    assert got["analog_exposure_score_weighted"] == 0.0


# ----------------------------------------------------------------------------- arch/noise.py: the compiled path

@pytest.mark.parametrize("name", ["pcm", "hermes1", "hermes2"])
@pytest.mark.parametrize("scales", [(1.0, 1.0, 1.0), (0.5, 2.0, 0.7)])
def test_compiled_programming_chain_is_aihwkits(name, scales):
    """program() on a float32 matrix with a NormalStream runs the compiled per-weight kernel. Its draws are
    those of ``NormalStream(seed)((rows, cols, 6))`` (z0 programming of g+, z1 its drift exponent, z2, z3 the
    same for g-, z4, z5 the read noise of g+ and g-), so each weight is a closed form of the spec
    (aihwkit's chain, written out here as in tests/test_noise_closed_forms.py):
    g+ = clip(w, 0, 1) g_max, g- = clip(-w, 0, 1) g_max (|w| > 1 clips at g_max);
    g_p = max(0, g + s_prog sigma_prog(g) z); nu = s_drift |mu(g) + sigma_nu(g) z'|;
    g_d = g_p ((t_inf + t0) / t0)^-nu; g_f = max(0, g_d (1 + s_read Q_s(g_p) sqrt(ln((t + t_read) / (2 t_read))) z''));
    w_out = (g_f+ - g_f-) / g_max, t = t_inf + t0."""
    from arch.noise import NormalStream, program
    from arch.spec import NoiseSpec
    from tests.test_noise_closed_forms import AIHWKIT, W_GRID, ref_nu_mean_std, ref_q_s, ref_sigma_prog, spec_of

    prog_s, read_s, drift_s = scales
    _, _, g_max, t0, t_read = AIHWKIT[name]
    t_inf = 7200.0
    w = np.concatenate([W_GRID, [1.5, -1.5]]).astype(np.float32).reshape(7, 7)
    prog = spec_of(name, t_inference_s=t_inf, prog_noise_scale=prog_s, read_noise_scale=read_s,
                   drift_scale=drift_s, drift_compensation="none")
    out, alpha = program(w, NoiseSpec(programming=prog), 0.01, NormalStream(42))
    z = NormalStream(42)((7, 7, 6)).astype(np.float64)
    t = t_inf + t0
    read_factor = sqrt(log((t + t_read) / (2 * t_read)))

    def device(g, z_prog, z_nu, z_read):
        gp = np.clip(g + prog_s * ref_sigma_prog(name, g, g_max) * z_prog, 0.0, None)
        mu, sig = ref_nu_mean_std(name, g, g_max)
        gd = gp * (t / t0) ** (-drift_s * np.abs(mu + sig * z_nu))
        return np.clip(gd * (1.0 + read_s * ref_q_s(name, gp, g_max) * read_factor * z_read), 0.0, None)

    w64 = w.astype(np.float64)
    expected = (device(np.clip(w64, 0, 1) * g_max, z[..., 0], z[..., 1], z[..., 4])
                - device(np.clip(-w64, 0, 1) * g_max, z[..., 2], z[..., 3], z[..., 5])) / g_max
    assert out.dtype == np.float32 and alpha == 1.0
    np.testing.assert_allclose(out, expected, rtol=2e-6, atol=1e-7)


# ----------------------------------------------------------------------------- sim/engine/kernel.py: NoC messages

@pytest.mark.parametrize("nbytes,dst,expected_ps", [
    (1.0, (1, 0), 2667 + 1000),       # 8 bits / 3 Gbit/s = 2,666.67 ps, rounded to the nearest ps; 1 router
    (1.0, (1, 1), 2667 + 2000),       # 2 hops: the links are held together from one start; 2 router latencies
    (2.0, (1, 0), 5333 + 1000),       # 5,333.33 ps rounds down
    (0.1, (0, 1), 267 + 1000)])       # 266.67 ps rounds up
def test_noc_message_time_rounds_to_the_nearest_picosecond(nbytes, dst, expected_ps):
    """Unit chip with 3 Gbit/s links (1 ns routers): a message of b bytes over h hops arrives
    round(b x 8 / 3 Gbit/s in ps) + h x 1,000 ps after it is ready (the kernel's xfer docstring)."""
    from sim.api import build_run
    from tests.conftest import UNIT_YAML
    from tests.test_engine import TINY
    from workloads.shapes import from_hf_config
    from workloads.traces.synthetic import SyntheticSpec, synthesize

    model = from_hf_config(TINY)
    chip = load_chip_text(UNIT_YAML.replace("link_bandwidth_gbps: 8", "link_bandwidth_gbps: 3"))
    e = build_run(chip, model, synthesize(SyntheticSpec(tokens=4, requests=1, seed=0), model), "all-digital",
                  batch=4).engine
    assert round(nbytes * 8 * 1000 / 3) + 1000 * (abs(dst[0]) + abs(dst[1])) == expected_ps
    assert e.xfer(0, (0, 0), dst, nbytes) == expected_ps


@pytest.mark.parametrize("n", [1, 4])
def test_sram_resident_weights_stream_at_the_sram_bandwidth(n):
    """Unit chip at 64 MACs/ns, every weight SRAM-resident (1 MiB): a digital GEMM of the tiny lm_head
    (4 x 4, 16 int8 bytes) on n vectors takes max(MACs / rate, weight bytes x 8 / 8 Gbit/s, activations x 8 /
    8 Gbit/s) = max(16 n / 64, 16, 8 n x 2 bits / 8) ns: the weight read, 16 ns."""
    from sim.api import build_run
    from tests.conftest import UNIT_YAML
    from tests.test_engine import TINY
    from workloads.shapes import from_hf_config
    from workloads.traces.synthetic import SyntheticSpec, synthesize

    model = from_hf_config(TINY)
    chip = load_chip_text(UNIT_YAML.replace("macs_per_cycle: 1\n", "macs_per_cycle: 64\n"))
    e = build_run(chip, model, synthesize(SyntheticSpec(tokens=4, requests=1, seed=0), model), "all-digital",
                  batch=4).engine
    mi = next(i for i, m in enumerate(e.matrices) if m.module == "lm_head")
    params = 4 * 4
    ns = max(n * params / 64, params * 8 / 8, n * (4 + 4) * (2 / 8) * 8 / 8)
    assert ns == 16.0
    assert e.gemm(0, mi, n) == round(ns * 1000)
    assert e.c.dram_bytes == 0                                         # resident: nothing streamed


@pytest.mark.parametrize("n", [1, 2])
def test_chained_analog_input_crosses_the_noc_with_its_bytes(n):
    """Unit chip (no local digital units, 2 x 2 mesh, 2 tiles per node), all-analog, n tokens to expert 0: its
    down_proj sits on tile 7 = node (1, 1) (slots in model order: q k v o router gate up down -> tiles 0..7).
    Its input (the SwiGLU output, 4 values x 2 bits = 1 byte per token) leaves the SIMD node (0, 0) over the
    X-then-Y path (0,0)->(1,0)->(1,1), both links held n x 8 bits / 8 Gbit/s = n x 1,000 ps; the tile starts
    2 router latencies (2 x 1,000 ps) after; its partial sums (4 outputs x 8 bits per token) return over
    two links in n x 4,000 ps."""
    from sim.api import build_run
    from tests.conftest import UNIT_YAML
    from tests.test_engine import TINY, tiny_trace
    from workloads.checkpoints.stats import synthetic_stats
    from workloads.shapes import from_hf_config

    model = from_hf_config(TINY)
    run = build_run(load_chip_text(UNIT_YAML), model, tiny_trace(model, [0] * n), "all-analog", batch=n,
                    timeline=True, stats=synthetic_stats(model, 0))
    run.engine.run()
    recs = run.engine.timeline.records
    act = [r for r in recs if r[3] == "L0.E0.down_proj activation"]
    assert sorted(r[0] for r in act) == ["link (0, 0)->(1, 0)", "link (1, 0)->(1, 1)"]
    assert all(r[2] - r[1] == n * 4 * 2 * 1000 // 8 for r in act)
    assert act[0][1] == act[1][1]                                       # held from one start
    tile = next(r for r in recs if r[3] == "L0.E0.down_proj")
    assert tile[0] == "tile 7" and tile[1] == act[0][2] + 2 * 1000
    partials = [r for r in recs if r[3] == "L0.E0.down_proj partials"]
    assert len(partials) == 2 and all(r[2] - r[1] == n * 4 * 8 * 1000 // 8 for r in partials)
