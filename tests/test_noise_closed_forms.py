"""The analog noise model (arch/noise.py) against closed forms and IBM aihwkit's published device models.

Every expected value is computed here, from the spec's definitions or from aihwkit's source, never from
the program's output:

- read noise (``w_noise``), input noise (``inp_noise``) and output noise (``out_noise``) of one crossbar
  slot: the variance of the output error is a closed form in ||x||, ||w_i|| and the converter steps;
  statistical checks use fixed seeds and tolerances of ``Z`` standard errors of the estimator;
- the device models ``pcm`` (aihwkit ``PCMLikeNoiseModel``) and ``hermes`` (aihwkit ``HermesNoiseModel``,
  1 and 2 devices): programming-noise polynomial, drift-exponent mean and spread, accumulated 1/f read
  noise, t0, t_read and g_max, transcribed below from aihwkit's source
  (github.com/IBM/aihwkit, ``src/aihwkit/inference/noise/pcm.py`` and ``hermes.py`` at commit
  4545f11b5214c5e3c6b9d293053bbf8baf74e110);
- the drift law ``g(t) = g_prog * ((t_inference + t0) / t0)^-nu`` through :func:`arch.noise.program`,
  with a zero ``normal`` so that no draw enters (no reference data needed).
"""

from __future__ import annotations

from dataclasses import replace
from math import log, pi, sqrt

import numpy as np
import pytest

from arch.noise import converter_step, device_model, program, slot_mvm
from arch.spec import NoiseSpec, ProgrammingNoiseSpec

Z = 6.0          # tolerance in standard errors: a false failure has probability ~2e-9 (and seeds are fixed)
QUIET = NoiseSpec(out_noise=0.0, out_bound=64.0, bound_management="none")


def normal_from(seed: int):
    rng = np.random.default_rng(seed)
    return lambda shape: rng.standard_normal(shape)


def zeros(shape):
    return np.zeros(shape)


def gaussian_var_tolerance(expected_var: float, n: int) -> float:
    """Z standard errors of the sample variance of n Gaussian draws: sigma^2 * sqrt(2 / (n - 1))."""
    return Z * expected_var * sqrt(2.0 / (n - 1))


def empirical_var_tolerance(err: np.ndarray) -> float:
    """Z standard errors of the sample variance of any i.i.d. sample: std((e - mean)^2) / sqrt(n)."""
    d2 = (err - err.mean()) ** 2
    return Z * d2.std(ddof=1) / sqrt(err.size)


def dac(x_row: np.ndarray, bits: int, bound: float = 1.0) -> np.ndarray:
    """The DAC of the spec by hand: divide by max|x| (abs_max), round to 2 * bound / (2^b - 2), clip."""
    step = 2.0 * bound / (2 ** bits - 2)
    return np.clip(np.rint(x_row / np.abs(x_row).max() / step) * step, -bound, bound)


# ----------------------------------------------------------------------------- one slot's MVM

ROWS, COLS, DAC_BITS, ADC_BITS = 16, 8, 8, 14


def _slot_case(seed: int = 11, scale: float = 2.5):
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-1.0, 1.0, ROWS)
    x0 = scale * x0 / np.abs(x0).max()                 # max|x| = scale, so the abs_max range is `scale`
    w = rng.uniform(-1.0, 1.0, (COLS, ROWS)) * np.linspace(0.2, 1.0, COLS)[:, None]   # rows of unequal norm
    w /= np.abs(w).max()
    return x0, w


def _errors(noise: NoiseSpec, n: int, seed: int, scale: float = 2.5):
    x0, w = _slot_case(scale=scale)
    x = np.tile(x0, (n, 1))
    y = slot_mvm(x, w, noise, DAC_BITS, ADC_BITS, normal_from(seed))
    xq = dac(x0, DAC_BITS)
    clean = scale * (xq @ w.T)                        # noise-free output in the units of x
    return y - clean, xq, w


def _adc_rounding_var() -> float:
    """Sheppard: rounding a density much wider than the step adds step^2 / 12 (in normalised units)."""
    return converter_step(ADC_BITS, QUIET.out_bound) ** 2 / 12.0


def test_read_noise_variance_is_w_noise_squared_times_norm_of_x_squared():
    """aihwkit w_noise (additive constant on each normalised weight, fresh per MVM): the output error of
    every column is w_noise * sum_j xq_j N_ij ~ N(0, w_noise^2 ||xq||^2), scaled back by max|x| = 2.5."""
    w_noise, n, scale = 0.07, 4000, 2.5
    err, xq, _ = _errors(replace(QUIET, w_noise=w_noise), n, seed=1, scale=scale)
    norm2 = float(xq @ xq)
    assert abs(norm2 - sqrt(norm2)) > 1.0             # ||x|| and ||x||^2 are far apart for this input
    expected = scale ** 2 * (w_noise ** 2 * norm2 + _adc_rounding_var())
    assert err.var() == pytest.approx(expected, abs=gaussian_var_tolerance(expected, err.size))
    assert abs(err.mean()) <= Z * sqrt(expected / err.size)


def test_read_noise_scales_with_the_norm_not_its_square():
    """Doubling every input keeps xq (abs_max) but doubles the output scale: the error std doubles; and an
    input of k ones has ||xq|| = sqrt(k), so the error std is w_noise * sqrt(k) (not w_noise * k)."""
    w_noise, n, k = 0.05, 4000, 16
    w = np.full((COLS, ROWS), 0.0)
    w[:, 0] = 1.0
    x = np.ones((n, ROWS))
    y = slot_mvm(x, w, replace(QUIET, w_noise=w_noise), DAC_BITS, ADC_BITS, normal_from(2))
    err = y - 1.0
    expected = w_noise ** 2 * k + _adc_rounding_var()
    assert err.var() == pytest.approx(expected, abs=gaussian_var_tolerance(expected, err.size))
    y2 = slot_mvm(2 * x, w, replace(QUIET, w_noise=w_noise), DAC_BITS, ADC_BITS, normal_from(2))
    assert np.allclose(y2, 2 * y, rtol=0, atol=1e-12)      # same draws, twice the range


def test_input_noise_variance_per_column_is_inp_noise_squared_times_row_norm():
    """aihwkit inp_noise on every DAC output (inp_bound 1): column i's error is inp_noise * sum_j w_ij N_j,
    variance inp_noise^2 ||w_i||^2, scaled back by max|x|^2; each column has its own ||w_i||."""
    inp_noise, n, scale = 0.04, 20000, 2.5
    err, _, w = _errors(replace(QUIET, inp_noise=inp_noise), n, seed=3, scale=scale)
    for i in range(COLS):
        expected = scale ** 2 * (inp_noise ** 2 * float(w[i] @ w[i]) + _adc_rounding_var())
        assert err[:, i].var() == pytest.approx(expected, abs=gaussian_var_tolerance(expected, n)), i
        assert abs(err[:, i].mean()) <= Z * sqrt(expected / n), i


def test_input_read_and_output_noise_add_in_variance():
    """All three at once: var_i = max|x|^2 (inp^2 ||w_i||^2 + w_noise^2 (||xq||^2 + rows inp^2) + out^2
    + step^2 / 12); the read-noise norm is taken of the noisy DAC output, hence the rows * inp^2 term."""
    inp_noise, w_noise, out_noise, n, scale = 0.05, 0.06, 0.08, 20000, 2.5
    noise = replace(QUIET, inp_noise=inp_noise, w_noise=w_noise, out_noise=out_noise)
    err, xq, w = _errors(noise, n, seed=4, scale=scale)
    for i in range(COLS):
        expected = scale ** 2 * (inp_noise ** 2 * float(w[i] @ w[i])
                                 + w_noise ** 2 * (float(xq @ xq) + ROWS * inp_noise ** 2)
                                 + out_noise ** 2 + _adc_rounding_var())
        assert err[:, i].var() == pytest.approx(expected, abs=empirical_var_tolerance(err[:, i])), i


@pytest.mark.parametrize("kind", ["w_noise", "out_noise"])
def test_read_and_output_noise_are_independent_across_columns(kind):
    """Fresh draws per weight (read noise) and per output (output noise): the errors of two columns are
    uncorrelated; the sample correlation of n independent pairs has standard error 1 / sqrt(n)."""
    n = 4000
    err, _, _ = _errors(replace(QUIET, **{kind: 0.1}), n, seed=6)
    corr = np.corrcoef(err, rowvar=False)
    off = corr[~np.eye(COLS, dtype=bool)]
    assert np.abs(off).max() <= Z / sqrt(n)


def test_output_noise_variance_is_out_noise_squared():
    out_noise, n, scale = 0.1, 4000, 2.5
    err, _, _ = _errors(replace(QUIET, out_noise=out_noise), n, seed=5, scale=scale)
    expected = scale ** 2 * (out_noise ** 2 + _adc_rounding_var())
    assert err.var() == pytest.approx(expected, abs=gaussian_var_tolerance(expected, err.size))


# ----------------------------------------------------------------------------- aihwkit device models
# Transcribed from aihwkit (commit 4545f11b, src/aihwkit/inference/noise/pcm.py and hermes.py).

AIHWKIT = {
    # name: (prog_coeff, prog_coeff_g_max_reference [uS], default g_max [uS], t_0 [s], t_read [s])
    "pcm": ((0.26348, 1.9650, -1.1731), 25.0, 25.0, 20.0, 250.0e-9),
    "hermes1": ((0.15781817, 2.32443916, -2.16310839, 0.68841818), 10.35, 10.35, 200.0, 512.0e-9),
    "hermes2": ((0.16603222, 4.71806468, -8.48101252, 4.68961419), 20.7, 20.7, 300.0, 512.0e-9),
}
ZERO_CLIP = 1e-7


def spec_of(name: str, **kw) -> ProgrammingNoiseSpec:
    if name == "pcm":
        return ProgrammingNoiseSpec(model="pcm", **kw)
    return ProgrammingNoiseSpec(model="hermes", num_devices=int(name[-1]), **kw)


def ref_sigma_prog(name: str, g: np.ndarray, g_max: float) -> np.ndarray:
    """aihwkit apply_programming_noise_to_conductance: sum_i c_i (g / g_max)^i x g_max / reference."""
    coeff, reference = AIHWKIT[name][0], AIHWKIT[name][1]
    rel = g / g_max
    return sum(c * rel ** i for i, c in enumerate(coeff)) * g_max / reference


def ref_nu_mean_std(name: str, g: np.ndarray, g_max: float) -> tuple[np.ndarray, np.ndarray]:
    """aihwkit generate_drift_coefficients: mean and std of the drift exponent nu."""
    r = np.clip(np.abs(g / g_max), ZERO_CLIP, None)
    if name == "pcm":
        return (np.clip(-0.0155 * np.log(r) + 0.0244, 0.049, 0.1),
                np.clip(-0.0125 * np.log(r) - 0.0059, 0.008, 0.045))
    mu = np.where(r < 0.0945, np.clip(-0.0387 * np.log(r) - 0.0182, 0.0720, 0.13),
                  -0.0436 * r ** 2 - 0.0126 * r + 0.0736)
    if name == "hermes1":
        sig = np.where(r < 0.3039, np.clip(-0.0120 * np.log(r) - 0.0023, 0.0124, 0.04),
                       -0.0165 * r ** 2 + 0.0116 * r + 0.0104)
    else:
        sig = np.where(r < 0.3055, np.clip(-0.0117 * np.log(r) - 0.0057, 0.0091, 0.04),
                       -0.0118 * r ** 2 + 0.0093 * r + 0.0073)
    return mu, sig


def ref_q_s(name: str, g: np.ndarray, g_max: float) -> np.ndarray:
    """aihwkit apply_drift_noise_to_conductance: the 1/f read-noise coefficient Q_s."""
    r = np.abs(g) / g_max
    with np.errstate(divide="ignore"):
        logr = np.log(r)                               # -inf at g = 0, clamped as in torch
    if name == "pcm":
        return np.clip(0.0088 / np.clip(r ** 0.65, 1e-3, None), None, 0.2)
    if name == "hermes1":
        return np.where(r < 0.1591, np.clip(-0.0078 * logr + 0.0038, 0.0179, 0.04),
                        0.0664 * r ** 3 - 0.1352 * r ** 2 + 0.0768 * r + 0.0088)
    return np.where(r < 0.16, np.clip(-0.0117 * logr - 0.0069, 0.015, 0.04),
                    0.0069 * r ** 3 - 0.0280 * r ** 2 + 0.0211 * r + 0.0123)


MODELS = ["pcm", "hermes1", "hermes2"]
# relative conductances over every branch and clip region of every fit, and the branch cuts themselves
REL = np.unique(np.concatenate([np.logspace(-9, 0, 901), np.linspace(0.0, 1.0, 1001),
                                [0.0945, 0.1591, 0.16, 0.3039, 0.3055]]))


@pytest.mark.parametrize("name", MODELS)
def test_device_constants_are_aihwkits(name):
    _, reference, g_max, t0, t_read = AIHWKIT[name]
    dev = device_model(spec_of(name))
    assert dev.g_max_us == g_max and dev.prog_coeff_g_max_reference_us == reference
    assert dev.t0_s == t0 and dev.t_read_s == t_read
    assert device_model(spec_of(name, g_max_us=7.5)).g_max_us == 7.5


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("g_max", [None, 7.5])
def test_programming_noise_polynomial_is_aihwkits(name, g_max):
    """sigma_prog(g) over the whole conductance range, default g_max and another (the fit is rescaled by
    g_max / the g_max it was fitted at)."""
    dev = device_model(spec_of(name, g_max_us=g_max))
    gm = g_max or AIHWKIT[name][2]
    g = REL * gm
    np.testing.assert_allclose(dev.sigma_prog_us(g), ref_sigma_prog(name, g, gm), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", MODELS)
def test_drift_exponent_mean_and_spread_are_aihwkits(name):
    """nu = |mu(g) + sigma_nu(g) z|: with z = 0 it is the mean fit, with fixed draws both fits."""
    dev = device_model(spec_of(name))
    g = REL * dev.g_max_us
    mu, sig = ref_nu_mean_std(name, g, dev.g_max_us)
    np.testing.assert_allclose(dev.drift_nu(g, zeros), np.abs(mu), rtol=1e-12, atol=1e-15)
    z = np.random.default_rng(7).standard_normal(g.shape)
    np.testing.assert_allclose(dev.drift_nu(g, lambda shape: z), np.abs(mu + sig * z), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dev.drift_nu(g, np.ones), np.abs(mu + sig), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", MODELS)
def test_read_noise_coefficient_is_aihwkits(name):
    dev = device_model(spec_of(name))
    g = REL * dev.g_max_us
    np.testing.assert_allclose(dev.q_s(g), ref_q_s(name, g, dev.g_max_us), rtol=1e-12, atol=1e-15)


def test_a_few_aihwkit_values_by_hand():
    """Spot values worked on paper (no transcription involved)."""
    pcm, h1, h2 = (device_model(spec_of(n)) for n in MODELS)
    half = np.array([0.5])
    assert pcm.sigma_prog_us(half * 25.0)[0] == pytest.approx(0.26348 + 1.9650 / 2 - 1.1731 / 4, rel=1e-12)
    assert h2.sigma_prog_us(half * 20.7)[0] == pytest.approx(
        0.16603222 + 4.71806468 / 2 - 8.48101252 / 4 + 4.68961419 / 8, rel=1e-12)
    assert h1.sigma_prog_us(np.array([10.35]))[0] == pytest.approx(
        0.15781817 + 2.32443916 - 2.16310839 + 0.68841818, rel=1e-12)
    # hermes mean nu at g = g_max: -0.0436 - 0.0126 + 0.0736 = 0.0174
    assert h2.drift_nu(np.array([20.7]), zeros)[0] == pytest.approx(0.0174, rel=1e-12)
    # pcm mean nu at g / g_max = 0.05: -0.0155 ln 0.05 + 0.0244
    assert pcm.drift_nu(np.array([1.25]), zeros)[0] == pytest.approx(-0.0155 * log(0.05) + 0.0244, rel=1e-12)
    # hermes1 Q_s at g = g_max: 0.0664 - 0.1352 + 0.0768 + 0.0088
    assert h1.q_s(np.array([10.35]))[0] == pytest.approx(0.0664 - 0.1352 + 0.0768 + 0.0088, rel=1e-12)
    assert pcm.q_s(np.array([12.5]))[0] == pytest.approx(0.0088 / 0.5 ** 0.65, rel=1e-12)


# ----------------------------------------------------------------------------- program(): drift law

W_GRID = np.concatenate([np.linspace(-1.0, 1.0, 41), [0.003, -0.01, 0.05, 0.2, -0.09, 0.31]])


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("t_inference,drift_scale", [(3600.0, 1.0), (86400.0 * 365, 1.0), (1000.0, 0.5)])
def test_drift_law_without_draws(name, t_inference, drift_scale):
    """With every draw zero there is no programming or read noise and nu = drift_scale x mu(|g|): each weight
    becomes w * ((t_inference + t0) / t0)^-(drift_scale mu(|w| g_max)) (the other device of the pair is
    at 0 and stays there)."""
    _, _, g_max, t0, _ = AIHWKIT[name]
    prog = spec_of(name, t_inference_s=t_inference, drift_scale=drift_scale, drift_compensation="none")
    out, alpha = program(W_GRID, NoiseSpec(programming=prog), 0.01, zeros)
    mu, _ = ref_nu_mean_std(name, np.abs(W_GRID) * g_max, g_max)
    expected = W_GRID * ((t_inference + t0) / t0) ** (-drift_scale * mu)
    assert alpha == 1.0
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-15)
    # a day of drift on a pcm weight of 0.5 (mu clipped at 0.049): 0.5 * (86420 / 20)^-0.049 by hand
    if name == "pcm" and t_inference == 3600.0:
        one, _ = program(np.array([0.5]), NoiseSpec(programming=replace(prog, t_inference_s=86400.0)), 0.01, zeros)
        assert one[0] == pytest.approx(0.5 * (86420.0 / 20.0) ** -0.049, rel=1e-12)


@pytest.mark.parametrize("name", MODELS)
def test_no_drift_at_time_zero(name):
    prog = spec_of(name, t_inference_s=0.0, drift_compensation="none")
    out, _ = program(W_GRID, NoiseSpec(programming=prog), 0.01, zeros)
    np.testing.assert_allclose(out, W_GRID, rtol=1e-12, atol=1e-15)


def test_global_drift_compensation_by_hand():
    """alpha = mean |Q(programmed)| / mean |Q(drifted)| over the slot, Q the fixed-range ADC (9 bits over
    +-12, noise-free read-out here)."""
    t_inf, t0, g_max = 86400.0, 20.0, 25.0
    w = np.array([[0.9, -0.4], [0.05, -1.0]])
    out_step = converter_step(9, 12.0)
    prog = ProgrammingNoiseSpec(model="pcm", t_inference_s=t_inf)
    drifted, alpha = program(w, NoiseSpec(programming=prog), out_step, zeros)
    mu, _ = ref_nu_mean_std("pcm", np.abs(w) * g_max, g_max)
    final = w * ((t_inf + t0) / t0) ** -mu
    np.testing.assert_allclose(drifted, final, rtol=1e-12)

    def q(v):
        return np.clip(np.rint(v / out_step) * out_step, -12.0, 12.0)
    assert alpha == pytest.approx(np.abs(q(w)).mean() / np.abs(q(final)).mean(), rel=1e-12)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("z", [1.0, -1.0])
@pytest.mark.parametrize("scales", [(1.0, 1.0, 1.0), (0.5, 2.0, 0.7)])
def test_programming_drift_and_read_noise_compose_as_aihwkit(name, z, scales):
    """Every draw fixed at z = +1 or -1 makes program() deterministic; each device of the pair goes
    through aihwkit's chain (conductance converter, then apply_programming_noise, generate_drift_coefficients,
    apply_drift_noise_to_conductance), written out here:
    g_p = max(0, g + s_prog sigma_prog(g) z); nu = s_drift |mu(g) + sigma_nu(g) z|;
    g_d = g_p ((t_inf + t0) / t0)^-nu; g_f = max(0, g_d + |g_d| s_read Q_s(g_p) sqrt(ln((t + t_read) / (2 t_read))) z);
    w_out = (g_f+ - g_f-) / g_max with g+ = max(w, 0) g_max and g- = max(-w, 0) g_max."""
    prog_s, read_s, drift_s = scales
    _, _, g_max, t0, t_read = AIHWKIT[name]
    t_inf = 7200.0
    prog = spec_of(name, t_inference_s=t_inf, prog_noise_scale=prog_s, read_noise_scale=read_s,
                   drift_scale=drift_s, drift_compensation="none")
    out, _ = program(W_GRID, NoiseSpec(programming=prog), 0.01, lambda shape: np.full(shape, z))
    t = t_inf + t0

    def device(g):
        gp = np.clip(g + prog_s * ref_sigma_prog(name, g, g_max) * z, 0.0, None)
        mu, sig = ref_nu_mean_std(name, g, g_max)
        gd = gp * (t / t0) ** (-drift_s * np.abs(mu + sig * z))
        read = ref_q_s(name, gp, g_max) * sqrt(log((t + t_read) / (2 * t_read)))
        return np.clip(gd + np.abs(gd) * read_s * read * z, 0.0, None)
    expected = (device(np.clip(W_GRID, 0, 1) * g_max) - device(np.clip(-W_GRID, 0, 1) * g_max)) / g_max
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-15)


# ----------------------------------------------------------------------------- program(): noise statistics

@pytest.mark.parametrize("name", MODELS)
def test_programming_noise_mean_and_variance(name):
    """w = 0.6 everywhere, no drift, no read noise: g+ = 0.6 g_max + sigma(0.6 g_max) N (clipping at 0 is
    > 10 sigma away), g- = max(0, sigma(0) N): mean (0.6 g_max - sigma0 / sqrt(2 pi)) / g_max, variance
    (sigma1^2 + sigma0^2 (1/2 - 1/(2 pi))) / g_max^2."""
    _, _, g_max, _, _ = AIHWKIT[name]
    prog = spec_of(name, read_noise_scale=0.0, drift_scale=0.0, drift_compensation="none")
    out, _ = program(np.full((400, 400), 0.6), NoiseSpec(programming=prog), 0.01, normal_from(9))
    s1 = float(ref_sigma_prog(name, np.array([0.6 * g_max]), g_max)[0])
    s0 = float(ref_sigma_prog(name, np.array([0.0]), g_max)[0])
    mean = (0.6 * g_max - s0 / sqrt(2 * pi)) / g_max
    var = (s1 ** 2 + s0 ** 2 * (0.5 - 1 / (2 * pi))) / g_max ** 2
    assert out.mean() == pytest.approx(mean, abs=Z * sqrt(var / out.size))
    assert out.var() == pytest.approx(var, abs=empirical_var_tolerance(out.ravel()))


@pytest.mark.parametrize("name", MODELS)
def test_accumulated_read_noise_variance(name):
    """w = 0.5, no programming noise, drift_scale 0 (nu = 0): g+ = 0.5 g_max (1 + sig N) with
    sig = Q_s(0.5 g_max) sqrt(ln((t + t_read) / (2 t_read))), t = t_inference + t0; g- = 0 stays 0."""
    _, _, g_max, t0, t_read = AIHWKIT[name]
    t_inf, n = 86400.0, 200
    prog = spec_of(name, prog_noise_scale=0.0, drift_scale=0.0, t_inference_s=t_inf, drift_compensation="none")
    out, _ = program(np.full((n, n), 0.5), NoiseSpec(programming=prog), 0.01, normal_from(10))
    t = t_inf + t0
    sig = float(ref_q_s(name, np.array([0.5 * g_max]), g_max)[0]) * sqrt(log((t + t_read) / (2 * t_read)))
    var = 0.25 * sig ** 2
    assert out.mean() == pytest.approx(0.5, abs=Z * sqrt(var / out.size))
    assert out.var() == pytest.approx(var, abs=gaussian_var_tolerance(var, out.size))
