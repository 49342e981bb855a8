"""The analog noise model against closed forms computed here from its definitions."""

from __future__ import annotations

from dataclasses import replace
from math import pi, sqrt

import numpy as np
import pytest

from arch import load_chip
from arch.noise import converter_step, program, quantize, slot_grid, slot_mvm, slot_physics
from arch.spec import NoiseSpec, ProgrammingNoiseSpec
from sim.functional.backend import backend
from sim.functional.operators import analog_apply, program_matrix

QUIET = NoiseSpec(out_noise=0.0, out_bound=64.0, bound_management="none")


def normal_from(seed: int):
    rng = np.random.default_rng(seed)
    return lambda shape: rng.standard_normal(shape)


def test_converter_steps_are_aihwkits_resolutions():
    # aihwkit: inp_res = 1/(2^7 - 2) and out_res = 1/(2^9 - 2), scaled by the full range 2 * bound
    assert converter_step(7, 1.0) == pytest.approx(2 * 1.0 / 126)
    assert converter_step(9, 12.0) == pytest.approx(2 * 12.0 / 510)


@pytest.mark.parametrize("bits", [2, 4, 6, 8, 12])
def test_quantisation_error_is_bounded(bits):
    bound = 3.0
    x = np.random.default_rng(bits).uniform(-bound, bound, 10_000)
    q = quantize(x, converter_step(bits, bound), bound)
    full_range = 2 * bound
    assert np.abs(q - x).max() <= full_range / (2 ** bits - 2)
    assert np.abs(q - x).max() <= converter_step(bits, bound) / 2 + 1e-12
    assert len(np.unique(q)) <= 2 ** bits - 1


def test_slot_grid_counts_the_mappings_slots():
    rows, cols = slot_grid(1000, 1300, 512, 256)
    assert len(rows) == -(-1300 // 512) and len(cols) == -(-1000 // 256)
    assert rows[-1] == slice(1024, 1300) and cols[-1] == slice(768, 1000)


def _phys(noise: NoiseSpec, rows: int = 512, cols: int = 512, dac: int = 16, adc: int = 16):
    chip = load_chip("aimc-3d-moe", {"analog": {"tile": {"rows": rows, "cols": cols},
                                                "dac": {"bits": dac, "per_tile": rows},
                                                "adc": {"bits": adc, "per_tile": cols}},
                                     "precision": {"activation_bits": min(dac, 16)}})
    return replace(slot_physics(chip), noise=noise)


def test_relative_programming_noise_output_variance():
    """Output error variance = sigma^2 * max|W|^2 * ||x||^2 (16-bit converters, no other noise)."""
    sigma, n_out, n_in = 0.05, 256, 200
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.3, (n_out, n_in)).astype(np.float32)
    x = rng.normal(0, 1, (1, n_in)).astype(np.float32)
    phys = _phys(replace(QUIET, programming=ProgrammingNoiseSpec(model="relative", sigma_relative=sigma)))
    be = backend("numpy")
    errs = []
    for seed in range(40):
        m = program_matrix(w, phys, np.random.default_rng(seed), be)
        errs.append(analog_apply(x, m, phys, normal_from(seed), be)[0] - x[0] @ w.T)
    err = np.concatenate(errs)
    expected = sigma ** 2 * np.abs(w).max() ** 2 * float((x ** 2).sum())
    # sample variance of 40 * 256 draws: relative standard error sqrt(2 / N) ~ 1.4 %
    assert err.var() == pytest.approx(expected, rel=0.06)


def test_two_row_slots_give_two_independent_adc_noise_terms():
    """A 1024-input matrix on 512-row tiles sums two slots' output noise; on 1024-row tiles, one."""
    sigma_out, n = 0.05, 4000
    w = np.zeros((8, 1024), np.float32)
    w[:, [0, 512]] = 1.0                        # max|W| = 1 in every slot; each slot's output is 1
    x = np.ones((n, 1024), np.float32)          # max|x| = 1 in every input slice
    exact = x @ w.T
    be = backend("numpy")
    var = {}
    for rows in (512, 1024):
        phys = _phys(replace(QUIET, out_noise=sigma_out, out_bound=4.0), rows=rows, cols=8)
        m = program_matrix(w, phys, np.random.default_rng(0), be)
        assert len(m.rows) == 1024 // rows
        var[rows] = (analog_apply(x, m, phys, normal_from(rows), be) - exact).var()
    assert var[512] == pytest.approx(2 * sigma_out ** 2, rel=0.05)
    assert var[1024] == pytest.approx(sigma_out ** 2, rel=0.05)


def test_iterative_bound_management_avoids_saturation():
    """sum of 100 ones is 100 > out_bound 12: halving the input 4 times (to 1/16) fits it."""
    w = np.ones((1, 100))
    x = np.ones((3, 100))
    steps = dict(dac_bits=8, adc_bits=16, normal=normal_from(0))
    saturating = slot_mvm(x, w, replace(QUIET, out_bound=12.0, bound_management="none"), **steps)
    managed = slot_mvm(x, w, replace(QUIET, out_bound=12.0, bound_management="iterative"), **steps)
    assert np.allclose(saturating, 12.0)
    # the 8-bit DAC step is 1/127, so 1/16 is represented as round(127/16)/127 = 8/127
    assert np.allclose(managed, 100 * 8 / 127 * 16, atol=16 * converter_step(16, 12.0))


def test_calibrated_adc_range_follows_each_vector():
    w = np.eye(4)
    x = np.array([[1.0, 0.5, 0.25, 0.0], [0.01, 0.02, 0.03, 0.04]])
    y = slot_mvm(x, w, replace(QUIET, out_range="calibrated"), dac_bits=16, adc_bits=4, normal=normal_from(0))
    # range per vector = its max |y|; 4-bit step = 2 * range / 14
    for row, out in zip(x, y):
        step = 2 * np.abs(row).max() / 14
        assert np.abs(out - row).max() <= step / 2 + converter_step(16, 1.0) * np.abs(row).max()


def test_pcm_programming_noise_matches_its_polynomial():
    """w = 0.5: g+ = 12.5 uS gets sigma(12.5) = 0.26348 + 1.9650 * 0.5 - 1.1731 * 0.25 uS; g- = 0 gets
    max(0, N(0, 0.26348)), whose mean is 0.26348 / sqrt(2 pi) and variance 0.26348^2 (1/2 - 1/(2 pi))."""
    prog = ProgrammingNoiseSpec(model="pcm", read_noise_scale=0.0, drift_scale=0.0, drift_compensation="none")
    w = np.full((400, 400), 0.5)
    out, alpha = program(w, NoiseSpec(programming=prog), 0.01, normal_from(3))
    s1 = 0.26348 + 1.9650 * 0.5 - 1.1731 * 0.25
    s0 = 0.26348
    assert alpha == 1.0
    assert out.mean() == pytest.approx(0.5 - s0 / sqrt(2 * pi) / 25, abs=4e-4)
    assert out.var() == pytest.approx((s1 ** 2 + s0 ** 2 * (0.5 - 1 / (2 * pi))) / 625, rel=0.02)


def test_global_drift_compensation_restores_the_mean_readout():
    prog = ProgrammingNoiseSpec(model="pcm", prog_noise_scale=0.0, read_noise_scale=0.0, t_inference_s=86400.0)
    w = np.random.default_rng(0).uniform(-1, 1, (256, 256))
    drifted, alpha = program(w, NoiseSpec(programming=prog), 0.01, normal_from(5))
    assert alpha > 1.1                                   # a day of drift lowers conductances by > 10 %
    assert np.abs(alpha * drifted).mean() == pytest.approx(np.abs(w).mean(), rel=0.01)
    uncompensated = replace(prog, drift_compensation="none")
    _, alpha_none = program(w, NoiseSpec(programming=uncompensated), 0.01, normal_from(5))
    assert alpha_none == 1.0


def test_common_random_numbers_same_seed_same_draws():
    w = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
    phys = _phys(replace(QUIET, programming=ProgrammingNoiseSpec(model="pcm", t_inference_s=10.0)))
    be = backend("numpy")
    a = program_matrix(w, phys, np.random.default_rng([7, 1]), be)
    b = program_matrix(w, phys, np.random.default_rng([7, 1]), be)
    c = program_matrix(w, phys, np.random.default_rng([7, 2]), be)
    assert np.array_equal(a.slots[0][0][0], b.slots[0][0][0])
    assert not np.array_equal(a.slots[0][0][0], c.slots[0][0][0])


def test_noise_section_is_validated_with_file_and_key(tmp_path):
    from arch import SpecError

    f = tmp_path / "chip.yaml"
    f.write_text("extends: hermes-64\nanalog:\n  noise:\n    programming:\n      model: rram\n")
    with pytest.raises(SpecError, match=r"chip.yaml:5: analog.noise.programming.model: 'rram' is not allowed"):
        load_chip(str(f))


def test_bit_serial_inputs_use_the_activation_resolution():
    chip = load_chip("isaac")
    assert chip.analog.dac.encoding == "bit_serial" and chip.analog.dac.bits == 1
    assert slot_physics(chip).dac_bits == chip.precision.activation_bits


@pytest.mark.parametrize("bits", [8, 4])
def test_per_channel_integer_weights_stay_within_their_bound(bits):
    """Symmetric per-output-channel b-bit weights: |W - Q(W)| <= s_i / 2 with s_i = max|W[i, :]| /
    (2^(b-1) - 1), so each output's error is at most s_i / 2 * ||x||_1."""
    from arch.noise import quantize_weights_per_channel

    rng = np.random.default_rng(bits)
    w = rng.normal(size=(64, 300)) * rng.uniform(0.1, 3, (64, 1))
    x = rng.normal(size=(20, 300))
    s = np.abs(w).max(axis=1) / (2 ** (bits - 1) - 1)
    q = quantize_weights_per_channel(w, bits)
    assert (np.abs(w - q) <= s[:, None] / 2 * (1 + 1e-12)).all()
    assert len(np.unique(np.round(q / s[:, None]))) <= 2 ** bits - 1
    assert (np.abs(x @ (w - q).T) <= s[None, :] / 2 * np.abs(x).sum(axis=1, keepdims=True)).all()
