"""``analog.noise.out_noise_relative``: output noise as a fraction of each input vector's output range.

The convention (device literature: "noise of 4 % of max|y|"): on every slot output, a Gaussian of std
``out_noise_relative * max_i |y_i|``, the max taken over that slot's noise-free outputs for the same
input vector, independent of (so adding in variance to) the absolute ``out_noise``. Expected values
are computed here from that definition; statistical checks use fixed seeds and tolerances of ``Z``
standard errors of the sample variance of Gaussian draws, ``sigma^2 sqrt(2 / (n - 1))``.
"""

from __future__ import annotations

from dataclasses import replace
from math import sqrt

import numpy as np
import pytest

from arch import SpecError, load_chip
from arch.noise import NormalStream, block_mvm, converter_step, output_noise_std, slot_mvm
from arch.spec import NoiseSpec

Z = 6.0
ADC_BITS, DAC_BITS = 16, 16
QUIET = NoiseSpec(out_noise=0.0, out_bound=64.0, bound_management="none")


def gaussian_var_tolerance(var: float, n: int) -> float:
    return Z * var * sqrt(2.0 / (n - 1))


def rounding_var(bound: float = QUIET.out_bound) -> float:
    return converter_step(ADC_BITS, bound) ** 2 / 12.0


def dac(x_row: np.ndarray) -> np.ndarray:
    step = converter_step(DAC_BITS, 1.0)
    return np.clip(np.rint(x_row / np.abs(x_row).max() / step) * step, -1.0, 1.0)


def case(seed: int = 3, rows: int = 24, cols: int = 10):
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-1.0, 1.0, rows)
    w = rng.uniform(-1.0, 1.0, (cols, rows))
    w /= np.abs(w).max()
    return x0, w


def errors(noise: NoiseSpec, x0: np.ndarray, w: np.ndarray, n: int, seed: int, scale: float = 1.0):
    x = np.tile(scale * x0 / np.abs(x0).max(), (n, 1))
    y = slot_mvm(x, w, noise, DAC_BITS, ADC_BITS, NormalStream([seed]))
    clean = dac(x[0]) @ w.T                       # normalised noise-free slot outputs
    return y - scale * clean, clean


def test_relative_noise_variance_is_rel_squared_times_max_output_squared():
    rel, n, scale = 0.04, 20000, 2.5
    x0, w = case()
    err, clean = errors(replace(QUIET, out_noise_relative=rel), x0, w, n, seed=1, scale=scale)
    peak = np.abs(clean).max()
    assert 0.5 < peak < 10.0                      # a range far from the step, far from the bound
    expected = scale ** 2 * ((rel * peak) ** 2 + rounding_var())
    # every column has the same std (one max per vector and slot), however large its own output
    for i in range(w.shape[0]):
        assert err[:, i].var() == pytest.approx(expected, abs=gaussian_var_tolerance(expected, n)), i
        assert abs(err[:, i].mean()) <= Z * sqrt(expected / n), i
    pooled = err.var()
    assert pooled == pytest.approx(expected, abs=gaussian_var_tolerance(expected, err.size))


def test_relative_and_absolute_output_noise_add_in_variance():
    rel, out, n = 0.05, 0.08, 20000
    x0, w = case(seed=4)
    err, clean = errors(replace(QUIET, out_noise=out, out_noise_relative=rel), x0, w, n, seed=2)
    expected = (rel * np.abs(clean).max()) ** 2 + out ** 2 + rounding_var()
    assert err.var() == pytest.approx(expected, abs=gaussian_var_tolerance(expected, err.size))


def test_the_range_is_each_vectors_own():
    """Two input vectors whose noise-free ranges differ by 8x: their error stds differ by 8x."""
    rel, n = 0.04, 20000
    w = np.zeros((4, 8))
    w[:, 0] = [1.0, -0.5, 0.25, 0.125]
    big = np.zeros(8)
    big[0] = 1.0                                  # max|y| = 1
    small = np.zeros(8)
    small[0], small[1] = 0.125, 1.0               # abs_max makes x = (1/8, 1): max|y| = 1/8
    x = np.concatenate([np.tile(big, (n, 1)), np.tile(small, (n, 1))])
    y = slot_mvm(x, w, replace(QUIET, out_noise_relative=rel), DAC_BITS, ADC_BITS, NormalStream([5]))
    for rows, peak in ((slice(0, n), 1.0), (slice(n, 2 * n), 0.125)):
        clean = dac(x[rows.start]) @ w.T
        assert np.abs(clean).max() == pytest.approx(peak, rel=1e-4)
        err = y[rows] - clean
        expected = (rel * peak) ** 2 + rounding_var()
        assert err.var() == pytest.approx(expected, abs=gaussian_var_tolerance(expected, err.size))


def test_each_slot_uses_its_own_range():
    """One row block of two slots side by side (column blocks of 4): slot 1's outputs are 1/4 of
    slot 0's, and so is its noise std."""
    rel, n = 0.05, 20000
    x0, w0 = case(seed=6, cols=4)
    w = np.concatenate([w0, 0.25 * w0])
    x = np.tile(x0 / np.abs(x0).max(), (n, 1))
    y = block_mvm(x, w, replace(QUIET, out_noise_relative=rel), DAC_BITS, ADC_BITS, NormalStream([7]), width=4)
    clean = dac(x[0]) @ w.T
    for cols, peak in ((slice(0, 4), np.abs(clean[:4]).max()), (slice(4, 8), np.abs(clean[4:]).max())):
        err = y[:, cols] - clean[cols]
        expected = (rel * peak) ** 2 + rounding_var()
        assert err.var() == pytest.approx(expected, abs=gaussian_var_tolerance(expected, err.size))
    assert np.abs(clean[4:]).max() == pytest.approx(0.25 * np.abs(clean[:4]).max(), rel=1e-3)


def test_output_noise_std_closed_form():
    noise = NoiseSpec(out_noise=0.06, w_noise=0.02, out_noise_relative=0.04)
    norm2 = np.array([[4.0]])
    peak = np.array([[3.0]])
    assert output_noise_std(noise, norm2, peak)[0, 0] == pytest.approx(
        sqrt(0.06 ** 2 + 0.02 ** 2 * 4.0 + (0.04 * 3.0) ** 2))
    assert output_noise_std(NoiseSpec(out_noise_relative=0.04), None, peak)[0, 0] == pytest.approx(0.12)
    assert output_noise_std(NoiseSpec(), None, None) == 0.0


def test_off_by_default_and_zero_changes_nothing():
    assert NoiseSpec().out_noise_relative == 0.0
    x0, w = case()
    x = np.tile(x0, (50, 1))
    noise = replace(QUIET, out_noise=0.06)
    a = slot_mvm(x, w, noise, 8, 9, NormalStream([1]))
    b = slot_mvm(x, w, replace(noise, out_noise_relative=0.0), 8, 9, NormalStream([1]))
    assert np.array_equal(a, b)


def test_it_is_a_hardware_yaml_key():
    chip = load_chip("aimc-3d-moe", {"analog": {"noise": {"out_noise_relative": 0.04}}})
    assert chip.analog.noise.out_noise_relative == 0.04
    with pytest.raises(SpecError, match="out_noise_relative"):
        load_chip("aimc-3d-moe", {"analog": {"noise": {"out_noise_relative": -0.1}}})
