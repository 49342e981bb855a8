"""Analog noise model: pure functions for the accuracy side (DESIGN §8), in IBM aihwkit's vocabulary.

A weight matrix ``W[out, in]`` is cut into crossbar slots of ``analog.tile.rows`` inputs by
``analog.tile.cols`` outputs, exactly as the mapping cuts it (:func:`slot_grid`). Each slot:

1. holds its weights normalised to ``max|W| = 1`` over the slot (``weight_scaling: slot``, as aihwkit
   maps each tile) or over the whole matrix (``matrix``), after programming noise, drift and the
   drift-compensation factor ``alpha`` (:func:`program`);
2. converts its own input slice with the DAC: divided by the slice's max |x| (``abs_max``, aihwkit
   ``NoiseManagementType.ABS_MAX``) or taken in a fixed range, then rounded to the DAC step
   ``2 * inp_bound / (2^dac_bits - 2)`` and clipped to ``±inp_bound``;
3. multiplies in the analog domain, with read noise ``w_noise`` (a fresh Gaussian on every weight per
   MVM, in its exact output-referred form ``w_noise * ||x||_2 * N(0, 1)``), additive output noise
   ``out_noise`` and output noise relative to the vector's range ``out_noise_relative * max|y|``
   (:func:`output_noise_std`); the three are independent Gaussians on each output, so they are drawn
   as one Gaussian whose variance is the sum of theirs;
4. converts its partial output with the ADC: rounded to ``2 * out_bound / (2^adc_bits - 2)`` and
   clipped to ``±out_bound``; with ``bound_management: iterative`` a vector that saturates is re-run
   with its input halved (fresh noise) until it fits or the reduction passes ``max_bm_res / DAC
   step`` (aihwkit ``BoundManagementType.ITERATIVE``); with ``out_range: calibrated`` the range is
   each vector's noise-free max |y| instead;
5. is scaled back (input range × reduction × max|W| × alpha); the partial sums of a column block
   add digitally (exactly).

Step formulas follow aihwkit's ``inp_res``/``out_res = 1 / (2^b - 2)`` scaled by the full range
``2 * bound`` (``rpucuda/rpu_pulsed_meta_parameter.cpp``): aihwkit's defaults ``inp_res = 1/126``
and ``out_res = 1/510`` are ``dac.bits: 7`` and ``adc.bits: 9`` here.

Programming noise (:func:`program`) works on conductances as aihwkit's ``SinglePairConductanceConverter``
does: ``g± = clip(±w, 0, 1) * g_max``, each device programmed with Gaussian noise whose std is a
polynomial in ``g / g_max`` (clipped at 0), drifted as ``g * ((t + t0) / t0)^-nu`` with a per-device
``nu``, plus accumulated 1/f read noise ``|g| * Q_s * sqrt(ln((t + t_read) / (2 t_read)))``. The
constants are aihwkit 1.2's ``PCMLikeNoiseModel`` (Nandakumar et al., ICECS 2019) and
``HermesNoiseModel`` (Le Gallo et al., Nature Electronics 2023; Khaddam-Aljameh et al., JSSC 2022).

Every array function takes and returns arrays of one namespace (numpy, or torch through
``array_api_compat``); random draws come from a caller-supplied ``normal(shape)`` so that the same
numpy stream can feed every backend (common random numbers).

Speed (the accuracy side's hot path): the draws come from :class:`NormalStream` (xoshiro256++ and a
256-layer ziggurat compiled with numba, about 4x numpy's ``standard_normal`` here); the slots of one row
block share one DAC conversion and one matrix product (:func:`block_mvm`, the column blocks side by
side), and on numpy arrays the noise, ADC and scaling of a whole row block run in one compiled pass
(``fused``) that consumes the stream exactly as the array code does, so both give the same numbers
(the array code is the reference, and the path of the torch backend). Programming (:func:`program`)
runs per weight in one compiled pass as well. Compiled kernels are cached on disk by numba.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from math import ceil, erfc, exp, log, pi, sqrt
from typing import Any, Callable

import numpy as np

from .errors import HetmoeError
from .spec import ChipSpec, NoiseSpec, ProgrammingNoiseSpec

Normal = Callable[[tuple[int, ...]], Any]
_ZERO_CLIP = 1e-7


def converter_step(bits: int, bound: float) -> float:
    """Step of a signed ``bits``-bit converter over ``[-bound, bound]``: ``2 * bound / (2^bits - 2)``."""
    if bits < 2:
        raise HetmoeError(f"a signed converter needs at least 2 bits for the noise model, got {bits}")
    return 2.0 * bound / (2 ** bits - 2)


def quantize(x: Any, step: float, bound: float) -> Any:
    """Round to the nearest multiple of ``step`` (ties to even, as ``rint``), then clip to ``±bound``."""
    xp = _ns(x)
    return xp.clip(xp.round(x / step) * step, -bound, bound)


def slot_grid(out_features: int, in_features: int, rows: int, cols: int) -> tuple[list[slice], list[slice]]:
    """Input (row) blocks and output (column) blocks of a matrix on ``rows x cols`` crossbars.

    ``ceil(in / rows) * ceil(out / cols)`` slots, as the mapping counts them; the last block of
    each axis is the remainder."""
    rb = [slice(i * rows, min((i + 1) * rows, in_features)) for i in range(ceil(in_features / rows))]
    cb = [slice(j * cols, min((j + 1) * cols, out_features)) for j in range(ceil(out_features / cols))]
    return rb, cb


# ----------------------------------------------------------------------------- programming noise

@dataclass(frozen=True)
class DeviceModel:
    """Constants of one aihwkit PCM device model (conductances in uS, times in s)."""

    prog_coeff: tuple[float, ...]
    prog_coeff_g_max_reference_us: float
    g_max_us: float
    t0_s: float
    t_read_s: float
    name: str

    def sigma_prog_us(self, g: np.ndarray) -> np.ndarray:
        rel = g / self.g_max_us
        sig = np.full_like(g, self.prog_coeff[0])
        power = np.ones_like(g)
        for c in self.prog_coeff[1:]:
            power = power * rel
            sig = sig + c * power
        return sig * (self.g_max_us / self.prog_coeff_g_max_reference_us)

    def drift_nu(self, g_target: np.ndarray, normal: Callable[[tuple[int, ...]], np.ndarray]) -> np.ndarray:
        rel = np.clip(np.abs(g_target / self.g_max_us), _ZERO_CLIP, None)
        if self.name == "pcm":
            mu = np.clip(-0.0155 * np.log(rel) + 0.0244, 0.049, 0.1)
            sig = np.clip(-0.0125 * np.log(rel) - 0.0059, 0.008, 0.045)
        else:
            mu = np.where(rel < 0.0945, np.clip(-0.0387 * np.log(rel) - 0.0182, 0.0720, 0.13),
                          -0.0436 * rel ** 2 - 0.0126 * rel + 0.0736)
            cut, low, high = ((0.3039, (-0.0120, -0.0023, 0.0124, 0.04), (-0.0165, 0.0116, 0.0104))
                              if self.name == "hermes1" else
                              (0.3055, (-0.0117, -0.0057, 0.0091, 0.04), (-0.0118, 0.0093, 0.0073)))
            sig = np.where(rel < cut, np.clip(low[0] * np.log(rel) + low[1], low[2], low[3]),
                           high[0] * rel ** 2 + high[1] * rel + high[2])
        return np.abs(mu + sig * normal(g_target.shape))

    def q_s(self, g_prog: np.ndarray) -> np.ndarray:
        rel = np.abs(g_prog) / self.g_max_us
        if self.name == "pcm":
            return np.clip(0.0088 / np.clip(rel ** 0.65, 1e-3, None), None, 0.2)
        if self.name == "hermes1":
            return np.where(rel < 0.1591, np.clip(-0.0078 * np.log(np.clip(rel, _ZERO_CLIP, None)) + 0.0038,
                                                  0.0179, 0.04),
                            0.0664 * rel ** 3 - 0.1352 * rel ** 2 + 0.0768 * rel + 0.0088)
        return np.where(rel < 0.16, np.clip(-0.0117 * np.log(np.clip(rel, _ZERO_CLIP, None)) - 0.0069, 0.015, 0.04),
                        0.0069 * rel ** 3 - 0.0280 * rel ** 2 + 0.0211 * rel + 0.0123)


def device_model(prog: ProgrammingNoiseSpec) -> DeviceModel:
    """The aihwkit 1.2 constants for ``programming.model`` ``pcm`` or ``hermes``."""
    if prog.model == "pcm":
        # aihwkit PCMLikeNoiseModel defaults, fitted on PCM devices (Nandakumar et al., ICECS 2019)
        return DeviceModel((0.26348, 1.9650, -1.1731), 25.0, prog.g_max_us or 25.0, 20.0, 250e-9, "pcm")
    if prog.model == "hermes":
        # aihwkit HermesNoiseModel defaults, fitted on the HERMES chip (Le Gallo et al., Nat. Electron. 2023)
        if prog.num_devices == 2:
            return DeviceModel((0.16603222, 4.71806468, -8.48101252, 4.68961419), 20.7,
                               prog.g_max_us or 20.7, 300.0, 512e-9, "hermes2")
        return DeviceModel((0.15781817, 2.32443916, -2.16310839, 0.68841818), 10.35,
                           prog.g_max_us or 10.35, 200.0, 512e-9, "hermes1")
    raise HetmoeError(f"programming model {prog.model!r} has no device constants")


_MODEL_CODE = {"pcm": 0, "hermes1": 1, "hermes2": 2}
DEVICE_DRAWS = 6      # per weight: programming, drift exponent (g+, g-), then read noise (g+, g-)
READOUT_DRAWS = 2     # per weight, with global drift compensation: read-out of programmed, of drifted


def program(w_norm: np.ndarray, noise: NoiseSpec, out_step: float,
            normal: Callable[[tuple[int, ...]], np.ndarray], fused: bool | None = None) -> tuple[np.ndarray, float]:
    """Programmed (and drifted) normalised weights of one slot and its drift-compensation ``alpha``.

    ``w_norm`` is the slot's target weights divided by max|W| over the ``weight_scaling`` scope.
    ``alpha`` (global drift compensation) is ``readout(programmed) / readout(drifted)`` where
    ``readout`` is the mean |ADC output| over the slot's one-hot read-out vectors, i.e. the mean of
    ``|Q(w + sigma * N)|`` over the slot's weights (``sigma``: the output noise of each read-out
    vector, :func:`output_noise_std`), as aihwkit reads ``eye(in)`` through the tile.

    Draws: ``normal((*shape, 6))`` for the devices (per weight: programming of g+, drift exponent of
    g+, the same for g-, then the read noise of g+ and of g-), then, with global compensation,
    ``normal((*shape, 2))`` for the two read-outs. ``fused`` (default: when ``normal`` is a
    :class:`NormalStream` and ``w_norm`` a 2-D float32 array) runs the same arithmetic per weight in
    one compiled pass (float64 inside, float32 out), drawing the same numbers in the same order.
    """
    prog = noise.programming
    w_norm = np.asarray(w_norm)
    if prog.model == "none":
        return w_norm, 1.0
    if prog.model == "relative":
        return w_norm + prog.sigma_relative * normal(w_norm.shape), 1.0
    dev = device_model(prog)
    if fused is None:
        fused = isinstance(normal, NormalStream) and w_norm.dtype == np.float32 and w_norm.ndim == 2
    if fused:
        return _program_fused(w_norm, noise, out_step, normal, dev)
    g_max = dev.g_max_us
    z = normal((*w_norm.shape, DEVICE_DRAWS))
    targets = (np.clip(w_norm, 0.0, 1.0) * g_max, np.clip(-w_norm, 0.0, 1.0) * g_max)
    g_prog, nus = [], []
    for k, g in enumerate(targets):
        g_prog.append(np.clip(g + prog.prog_noise_scale * dev.sigma_prog_us(g) * z[..., 2 * k], 0.0, None))
        nus.append(dev.drift_nu(g, lambda shape, k=k: z[..., 2 * k + 1]) * prog.drift_scale)
    programmed = (g_prog[0] - g_prog[1]) / g_max
    t = prog.t_inference_s + dev.t0_s
    drifted = []
    for k, (g, nu) in enumerate(zip(g_prog, nus)):
        gd = g * (t / dev.t0_s) ** (-nu) if t > dev.t0_s else g
        sig = dev.q_s(g) * sqrt(log((t + dev.t_read_s) / (2 * dev.t_read_s)))
        drifted.append(np.clip(gd + np.abs(gd) * prog.read_noise_scale * sig * z[..., 4 + k], 0.0, None))
    final = (drifted[0] - drifted[1]) / g_max
    alpha = 1.0
    if prog.drift_compensation == "global":
        r = normal((*w_norm.shape, READOUT_DRAWS))
        alpha = _readout(programmed, noise, out_step, r[..., 0]) / _readout(final, noise, out_step, r[..., 1])
    return final, float(alpha)


def _readout(w: np.ndarray, noise: NoiseSpec, out_step: float, z: np.ndarray) -> float:
    """Mean |ADC output| of the one-hot read-out vectors: input j reads column ``w[:, j]``."""
    std = noise.out_noise
    if noise.out_noise_relative > 0:
        peak = np.abs(w).max(axis=0, keepdims=True) if w.ndim == 2 else np.abs(w).max()
        std = np.sqrt(noise.out_noise ** 2 + (noise.out_noise_relative * peak) ** 2)
    y = w + std * z
    if noise.out_range == "fixed":
        y = quantize(y, out_step, noise.out_bound)
    return max(float(np.abs(y).mean()), 1e-4)


def _program_fused(w_norm: np.ndarray, noise: NoiseSpec, out_step: float, stream: "NormalStream",
                   dev: DeviceModel) -> tuple[np.ndarray, float]:
    prog = noise.programming
    t = prog.t_inference_s + dev.t0_s
    coeff = np.asarray(dev.prog_coeff, np.float64) * (dev.g_max_us / dev.prog_coeff_g_max_reference_us)
    final = np.empty(w_norm.shape, np.float32)
    programmed = np.empty(w_norm.shape, np.float32)
    w = np.ascontiguousarray(w_norm)
    _kernels()["program"](w, programmed, final, _MODEL_CODE[dev.name], coeff, dev.g_max_us, t, dev.t0_s,
                          sqrt(log((t + dev.t_read_s) / (2 * dev.t_read_s))), prog.prog_noise_scale,
                          prog.drift_scale, prog.read_noise_scale, stream.state, _ZIG_K, _ZIG_W, _ZIG_F)
    alpha = 1.0
    if prog.drift_compensation == "global":
        r = stream((*w.shape, READOUT_DRAWS))
        alpha = _readout(programmed, noise, out_step, r[..., 0]) / _readout(final, noise, out_step, r[..., 1])
    return final, float(alpha)


# ----------------------------------------------------------------------------- random draws

def _ziggurat_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Marsaglia & Tsang's ziggurat (J. Stat. Softw. 5(8), 2000) for N(0, 1) with 256 layers and
    23-bit magnitudes, the layout of numpy's float32 ``standard_normal``: ``k`` acceptance bounds,
    ``w`` widths per unit of magnitude, ``f`` the density at each layer's edge."""
    r = _ZIG_R
    f = lambda x: exp(-0.5 * x * x)  # noqa: E731
    v = r * f(r) + sqrt(pi / 2) * erfc(r / sqrt(2))       # area of each layer
    m = 2.0 ** 23
    k, w, fa = np.zeros(256, np.int64), np.zeros(256), np.zeros(256)
    q = v / f(r)
    k[0], w[0], fa[0] = int((r / q) * m), q / m, 1.0
    w[255], fa[255] = r / m, f(r)
    dn = tn = r
    for i in range(254, 0, -1):
        dn = sqrt(-2.0 * log(v / dn + f(dn)))
        k[i + 1] = int((dn / tn) * m)
        tn = dn
        fa[i], w[i] = f(dn), dn / m
    return k, w, fa


_ZIG_R = 3.6541528853610088
_ZIG_K, _ZIG_W, _ZIG_F = _ziggurat_tables()


class NormalStream:
    """A reproducible stream of standard normal float32 draws: ``stream(shape)``.

    xoshiro256++ (Blackman & Vigna 2018) seeded through numpy's ``SeedSequence(entropy)``; each
    64-bit output gives two candidates for the 256-layer ziggurat (exact in distribution, tail
    included; float32 output, 23-bit magnitudes as numpy's float32 normals). A call draws its numbers
    in order, pair by pair (an odd count drops the last pair's second number): a compiled kernel that
    draws the same count inline from ``stream.state`` in one call gets the same numbers as
    ``stream(shape)``, so kernels and array code agree exactly.
    """

    def __init__(self, entropy: Any) -> None:
        self.state = np.random.SeedSequence(entropy).generate_state(4, np.uint64)
        if not self.state.any():
            self.state[0] = np.uint64(1)

    @classmethod
    def from_generator(cls, rng: np.random.Generator) -> "NormalStream":
        """A stream seeded by four words of ``rng`` (same ``rng`` state, same stream)."""
        return cls([int(v) for v in rng.bit_generator.random_raw(4)])

    def __call__(self, shape: tuple[int, ...] | int) -> np.ndarray:
        out = np.empty(shape, np.float32)
        if out.size:
            _kernels()["fill"](self.state, out.reshape(-1), _ZIG_K, _ZIG_W, _ZIG_F)
        return out


def as_stream(rng: "np.random.Generator | NormalStream") -> "NormalStream":
    return rng if isinstance(rng, NormalStream) else NormalStream.from_generator(rng)


# ----------------------------------------------------------------------------- one slot's MVM

def output_noise_std(noise: NoiseSpec, norm2: Any, peak: Any) -> Any:
    """Std of the Gaussian on one slot output, normalised output units (the slot's max|W| = 1 and the
    DAC range = 1): ``sqrt(out_noise^2 + w_noise^2 ||xq||^2 + (out_noise_relative * max|y|)^2)``.

    ``norm2``: ``||xq||^2`` of the DAC output vector; ``peak``: max |y| over the slot's noise-free
    outputs for that vector. The three terms are independent Gaussians, so their sum is one Gaussian
    of the summed variance:

    - ``out_noise``: aihwkit's additive output noise, a constant in normalised units (the output of
      one full-scale weight driven by a full-scale input is 1), whatever the vector;
    - ``w_noise``: aihwkit's read noise on every weight, in output-referred form;
    - ``out_noise_relative``: the convention in which measured crossbar MVM error is usually quoted,
      an error std that is a fraction of the output vector's own range, e.g. "4 % of max|y|"; here
      the range is the max |y| of the slot's noise-free outputs for that input vector (after the
      DAC), so a vector that lights the columns weakly gets proportionally less noise.

    A single active term is returned as is (not through the square root), so that float32 rounding
    does not depend on which terms are off."""
    terms = []
    if noise.out_noise > 0:
        terms.append((noise.out_noise, None))
    if noise.w_noise > 0:
        terms.append((noise.w_noise, norm2))
    if noise.out_noise_relative > 0:
        terms.append((noise.out_noise_relative, peak))
    if not terms:
        return 0.0
    if len(terms) == 1:
        c, v = terms[0]
        if v is None:
            return c
        return c * (_ns(v).sqrt(v) if v is norm2 else v)
    var = 0.0
    for c, v in terms:
        var = var + (c * c if v is None else c * c * (v if v is norm2 else v * v))
    return var ** 0.5


def noisy(noise: NoiseSpec) -> bool:
    """Whether a slot's MVM draws output noise at all."""
    return noise.out_noise > 0 or noise.w_noise > 0 or noise.out_noise_relative > 0


def slot_mvm(x: Any, w: Any, noise: NoiseSpec, dac_bits: int, adc_bits: int, normal: Normal) -> Any:
    """``x @ w.T`` through one crossbar slot, in the units of ``x`` times normalised weights.

    ``x``: ``[n, rows_used]`` input slice; ``w``: ``[cols_used, rows_used]`` normalised programmed
    weights. The caller multiplies by max|W| and alpha and adds the slots' partial sums."""
    return block_mvm(x, w, noise, dac_bits, adc_bits, normal)


def block_mvm(x: Any, w: Any, noise: NoiseSpec, dac_bits: int, adc_bits: int, normal: Normal,
              width: int | None = None, col_scale: Any = None, fused: bool | None = None) -> Any:
    """One row block of a matrix: the slots ``w[j*width:(j+1)*width]`` (column blocks side by side,
    ``w``: ``[out, rows_used]``) all read the same input slice ``x`` ``[n, rows_used]``.

    Each slot converts ``x`` with its DAC (one conversion serves every slot of the row block: the same
    slice, range and step, unless ``inp_noise`` gives each slot its own DAC noise), multiplies, adds
    its output noise and converts with its ADC; a vector whose output saturates a slot's ADC is re-run
    through that slot alone with its input halved (iterative bound management). Returns ``[n, out]``:
    every slot's ADC output scaled back by the input range and by ``col_scale`` (``[out]``: each
    column's max|W| x alpha; None: 1).

    Draws: ``normal((n, out))`` for the first pass of the whole row block (only when the noise model
    has output noise, :func:`noisy`), then those of the re-runs, column block by column block."""
    xp = _ns(x)
    n, out = x.shape[0], w.shape[0]
    width = out if width is None else width
    blocks = ceil(out / width) if out else 0
    if noise.inp_noise > 0 and blocks > 1:
        parts = [block_mvm(x, w[j * width:(j + 1) * width], noise, dac_bits, adc_bits, normal, None,
                           None if col_scale is None else col_scale[j * width:(j + 1) * width], fused)
                 for j in range(blocks)]
        return xp.concat(parts, axis=1)
    in_step = converter_step(dac_bits, noise.inp_bound)
    if fused is None:
        fused = isinstance(normal, NormalStream) and isinstance(x, np.ndarray) and x.dtype == np.float32
    abs_max = noise.noise_management == "abs_max"
    if fused and noise.inp_noise == 0:
        x = np.ascontiguousarray(x)
        xq, scale = np.empty_like(x), np.empty((n, 1), np.float32)
        _kernels()["dac"](x, np.float32(in_step), np.float32(noise.inp_bound), abs_max, xq, scale[:, 0])
        xn = None                     # rebuilt from x and scale for the rare re-runs
        scale = scale if abs_max else None
    else:
        if abs_max:
            scale = xp.max(xp.abs(x), axis=1, keepdims=True)
            scale = xp.where(scale > 0, scale, xp.ones_like(scale))
            xn = x / scale
        else:
            scale = None
            xn = x
        xq = _dac(xn, noise, in_step, normal)
    y = xq @ w.T
    limit = noise.max_bm_res / in_step
    check = noise.out_range == "fixed" and noise.bound_management == "iterative" and 1.0 <= limit
    std, step, bound = _adc_params(xp, xq, y, noise, adc_bits, width, blocks)
    val, sat = (_adc_fused if fused else _adc)(y, std, step, bound, scale, col_scale, width, check, normal, noise)
    if sat is None or not bool(sat.any()):
        return val
    sat = _to_numpy(sat)
    if xn is None:
        xn = x / scale if scale is not None else x
    for j in np.flatnonzero(sat.any(axis=0)):
        cols = slice(int(j) * width, min((int(j) + 1) * width, out))
        _rerun(xp, val, xn, np.flatnonzero(sat[:, j]), cols, w[cols], scale,
               None if col_scale is None else col_scale[cols], noise, in_step, adc_bits, limit, normal)
    return val


def _rerun(xp: Any, val: Any, xn: Any, todo: np.ndarray, cols: slice, w: Any, scale: Any, col_scale: Any,
           noise: NoiseSpec, in_step: float, adc_bits: int, limit: float, normal: Normal) -> None:
    """Iterative bound management of one slot for the vectors ``todo`` that saturated its ADC."""
    reduction = 2.0
    while todo.size:
        idx = _index(xp, todo)
        xq = _dac(xn[idx] / reduction, noise, in_step, normal)
        y = xq @ w.T
        last = reduction * 2 > 1000 or reduction > limit
        std, step, bound = _adc_params(xp, xq, y, noise, adc_bits, w.shape[0], 1)
        part, sat = _adc(y, std, step, bound, None if scale is None else scale[idx], col_scale, w.shape[0],
                         not last, normal, noise, reduction)
        sat = np.zeros(todo.size, bool) if sat is None else _to_numpy(sat)[:, 0]
        done = np.flatnonzero(~sat)
        if done.size:
            val[_index(xp, todo[done]), cols] = part[_index(xp, done)]
        todo = todo[sat]
        reduction *= 2.0


def _adc_params(xp: Any, xq: Any, y: Any, noise: NoiseSpec, adc_bits: int, width: int,
                blocks: int) -> tuple[Any, Any, Any]:
    """Per vector and column block: output-noise std, ADC step and ADC bound (``[n, blocks]`` arrays,
    or Python floats where they are constants)."""
    peak = None
    if noise.out_noise_relative > 0 or noise.out_range == "calibrated":
        peak = _block_absmax(xp, y, width, blocks)
    norm2 = xp.sum(xq * xq, axis=1, keepdims=True) if noise.w_noise > 0 else None
    std = output_noise_std(noise, norm2, peak) if noisy(noise) else 0.0
    if noise.out_range == "calibrated":
        bound = xp.where(peak > 0, peak, xp.ones_like(peak))
        return std, bound * converter_step(adc_bits, 1.0), bound
    return std, converter_step(adc_bits, noise.out_bound), noise.out_bound


def _block_absmax(xp: Any, y: Any, width: int, blocks: int) -> Any:
    n, out = y.shape
    a = xp.abs(y)
    if blocks == 1:
        return xp.max(a, axis=1, keepdims=True)
    if out % width == 0:
        return xp.max(xp.reshape(a, (n, blocks, width)), axis=2)
    return xp.stack([xp.max(a[:, j * width:(j + 1) * width], axis=1) for j in range(blocks)], axis=1)


def _expand(xp: Any, a: Any, width: int, out: int) -> Any:
    """``[n, blocks]`` per-block values to ``[n, out]`` per column (Python floats pass through)."""
    if isinstance(a, float) or a.shape[1] == 1:
        return a
    n, blocks = a.shape
    if out % width == 0:
        return xp.reshape(xp.broadcast_to(a[:, :, None], (n, blocks, width)), (n, out))
    return xp.concat([xp.broadcast_to(a[:, j:j + 1], (n, min(width, out - j * width))) for j in range(blocks)],
                     axis=1)


def _adc(y: Any, std: Any, step: Any, bound: Any, scale: Any, col_scale: Any, width: int, check: bool,
         normal: Normal, noise: NoiseSpec, reduction: float = 1.0) -> tuple[Any, Any]:
    """Output noise, ADC and scaling back of a row block's slot outputs ``y`` (array code: the reference).

    Returns the scaled outputs, zero where a slot saturated, and the saturation flags ``[n, blocks]``
    (None when not checked)."""
    xp = _ns(y)
    n, out = y.shape
    blocks = ceil(out / width)
    if noisy(noise):
        y = y + _expand(xp, std, width, out) * normal((n, out))
    st, bd = _expand(xp, step, width, out), _expand(xp, bound, width, out)
    q = xp.round(y / st) * st
    sat = None
    if check:
        over = xp.abs(q) > bd
        sat = _block_any(xp, over, width, blocks)
    q = xp.clip(q, -bd, bd) if isinstance(bd, float) else xp.minimum(xp.maximum(q, -bd), bd)
    if reduction != 1.0:
        q = q * reduction
    if scale is not None:
        q = q * scale
    if col_scale is not None:
        q = q * col_scale
    if sat is not None and bool(xp.any(sat)):
        q = xp.where(_expand(xp, sat, width, out), xp.zeros_like(q), q)
    return q, sat


def _block_any(xp: Any, over: Any, width: int, blocks: int) -> Any:
    n, out = over.shape
    if blocks == 1:
        return xp.any(over, axis=1, keepdims=True)
    if out % width == 0:
        return xp.any(xp.reshape(over, (n, blocks, width)), axis=2)
    return xp.stack([xp.any(over[:, j * width:(j + 1) * width], axis=1) for j in range(blocks)], axis=1)


def _adc_fused(y: np.ndarray, std: Any, step: Any, bound: Any, scale: Any, col_scale: Any, width: int,
               check: bool, stream: "NormalStream", noise: NoiseSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`_adc` in one compiled pass over ``y`` (in place), numpy float32 only; same draws, same
    float32 operations in the same order, so the same numbers."""
    n, out = y.shape
    blocks = ceil(out / width)
    f32 = np.float32

    std, step, bound = (np.ascontiguousarray(a, f32) for a in
                        np.broadcast_arrays(*(np.full((1, 1), a, f32) if isinstance(a, float) else a
                                              for a in (std, step, bound))))
    sat = np.zeros((n, blocks), np.bool_)
    sx = np.ones(n, f32) if scale is None else np.ascontiguousarray(scale[:, 0], f32)
    cs = np.ones(out, f32) if col_scale is None else np.ascontiguousarray(col_scale, f32)
    _kernels()["adc"](y, std, step, bound, sx, cs, width, noisy(noise), check, stream.state, sat,
                      _ZIG_K, _ZIG_W, _ZIG_F)
    return y, (sat if check else None)


def _dac(xn: Any, noise: NoiseSpec, step: float, normal: Normal) -> Any:
    xq = quantize(xn, step, noise.inp_bound)
    if noise.inp_noise > 0:
        xq = xq + noise.inp_noise * normal(tuple(xq.shape))
    return xq


# ----------------------------------------------------------------------------- compiled kernels
# Plain Python in numba's subset, compiled on first use (``numba.njit(cache=True)``: later processes
# load them from numba's on-disk cache). Unsigned constants are np.uint64 so that numba keeps the
# generator's arithmetic in uint64; the float32 steps mirror the array code operation by operation.

def _xoshiro(s0: Any, s1: Any, s2: Any, s3: Any) -> tuple:
    t0 = s0 + s3
    r = ((t0 << np.uint64(23)) | (t0 >> np.uint64(41))) + s0
    t = s1 << np.uint64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = (s3 << np.uint64(45)) | (s3 >> np.uint64(19))
    return r, s0, s1, s2, s3


def _candidate(r32: Any, s0: Any, s1: Any, s2: Any, s3: Any, K: np.ndarray, W: np.ndarray,
               F: np.ndarray) -> tuple:
    """One N(0, 1) draw (float64) by the ziggurat from the 32-bit candidate ``r32`` (bits 0-7 the layer,
    bit 8 the sign, bits 9-31 the magnitude); the rare rejections draw more from the generator."""
    while True:
        idx = r32 & 0xFF
        negative = (r32 >> 8) & 1
        rabs = (r32 >> 9) & 0x7FFFFF
        x = rabs * W[idx]
        if rabs < K[idx]:
            return (-x if negative else x), s0, s1, s2, s3
        if idx == 0:                                  # the tail beyond R (Marsaglia 1964)
            while True:
                r, s0, s1, s2, s3 = _xoshiro(s0, s1, s2, s3)
                u1 = np.float64(np.int64(r >> np.uint64(11))) * (1.0 / 9007199254740992.0)
                r, s0, s1, s2, s3 = _xoshiro(s0, s1, s2, s3)
                u2 = np.float64(np.int64(r >> np.uint64(11))) * (1.0 / 9007199254740992.0)
                xx = -np.log1p(-u1) / 3.6541528853610088
                yy = -np.log1p(-u2)
                if yy + yy > xx * xx:
                    x = 3.6541528853610088 + xx
                    return (-x if negative else x), s0, s1, s2, s3
        else:                                         # the wedge between layers idx - 1 and idx
            r, s0, s1, s2, s3 = _xoshiro(s0, s1, s2, s3)
            u = np.float64(np.int64(r >> np.uint64(11))) * (1.0 / 9007199254740992.0)
            if (F[idx - 1] - F[idx]) * u + F[idx] < np.exp(-0.5 * x * x):
                return (-x if negative else x), s0, s1, s2, s3
        r, s0, s1, s2, s3 = _xoshiro(s0, s1, s2, s3)  # rejected: a new candidate
        r32 = np.int64(r >> np.uint64(32))


def _gauss(s0: Any, s1: Any, s2: Any, s3: Any, have: bool, spare: float, K: np.ndarray, W: np.ndarray,
           F: np.ndarray) -> tuple:
    """The next N(0, 1) draw of a kernel's sequence: the second of the current pair if one is left
    (``have``), else the first of a new pair. Returns it, the generator state and the new spare."""
    if have:
        return spare, s0, s1, s2, s3, False, spare
    r, s0, s1, s2, s3 = _xoshiro(s0, s1, s2, s3)
    a, s0, s1, s2, s3 = _candidate(np.int64(r & np.uint64(0xFFFFFFFF)), s0, s1, s2, s3, K, W, F)
    b, s0, s1, s2, s3 = _candidate(np.int64(r >> np.uint64(32)), s0, s1, s2, s3, K, W, F)
    return a, s0, s1, s2, s3, True, b


def _draw(z: np.ndarray, s0: Any, s1: Any, s2: Any, s3: Any, have: bool, spare: float, K: np.ndarray,
          W: np.ndarray, F: np.ndarray) -> tuple:
    """Fill ``z`` with the sequence's next draws (as :func:`_gauss` one by one, a pair at a time)."""
    n = z.size
    c = 0
    if have and n > 0:
        z[0] = np.float32(spare)
        have = False
        c = 1
    while c + 1 < n:
        r, s0, s1, s2, s3 = _xoshiro(s0, s1, s2, s3)
        a, s0, s1, s2, s3 = _candidate(np.int64(r & np.uint64(0xFFFFFFFF)), s0, s1, s2, s3, K, W, F)
        b, s0, s1, s2, s3 = _candidate(np.int64(r >> np.uint64(32)), s0, s1, s2, s3, K, W, F)
        z[c] = np.float32(a)
        z[c + 1] = np.float32(b)
        c += 2
    if c < n:
        a, s0, s1, s2, s3, have, spare = _gauss(s0, s1, s2, s3, have, spare, K, W, F)
        z[c] = np.float32(a)
    return s0, s1, s2, s3, have, spare


def _k_fill(state: np.ndarray, out: np.ndarray, K: np.ndarray, W: np.ndarray, F: np.ndarray) -> None:
    s0, s1, s2, s3 = state[0], state[1], state[2], state[3]
    s0, s1, s2, s3, _, _ = _draw(out, s0, s1, s2, s3, False, 0.0, K, W, F)
    state[0], state[1], state[2], state[3] = s0, s1, s2, s3


def _k_adc(y: np.ndarray, std: np.ndarray, step: np.ndarray, bound: np.ndarray, sx: np.ndarray, cs: np.ndarray,
           width: int, draw: bool, check: bool, state: np.ndarray, sat: np.ndarray,
           K: np.ndarray, W: np.ndarray, F: np.ndarray) -> None:
    """:func:`_adc` per row: the row's draws first (the generator is sequential), then per column block
    a branch-free loop over the block's own views (a form the compiler vectorises)."""
    s0, s1, s2, s3 = state[0], state[1], state[2], state[3]
    n, out = y.shape
    per_row = std.shape[0] > 1
    per_block = std.shape[1] > 1
    blocks = (out + width - 1) // width
    z = np.zeros(out, np.float32)
    have, spare = False, 0.0
    for r in range(n):
        if draw:
            s0, s1, s2, s3, have, spare = _draw(z, s0, s1, s2, s3, have, spare, K, W, F)
        rr = r if per_row else 0
        sxr = sx[r]
        for j in range(blocks):
            c0 = j * width
            c1 = min(out, c0 + width)
            jj = j if per_block else 0
            sd, st, bd = std[rr, jj], step[rr, jj], bound[rr, jj]
            nbd = -bd
            row, zb, csb = y[r, c0:c1], z[c0:c1], cs[c0:c1]
            over = False
            if draw:
                for c in range(row.size):
                    q = np.rint((row[c] + sd * zb[c]) / st) * st
                    over |= abs(q) > bd
                    row[c] = (min(max(q, nbd), bd) * sxr) * csb[c]
            else:
                for c in range(row.size):
                    q = np.rint(row[c] / st) * st
                    over |= abs(q) > bd
                    row[c] = (min(max(q, nbd), bd) * sxr) * csb[c]
            if check and over:
                sat[r, j] = True
                row[:] = 0
    state[0], state[1], state[2], state[3] = s0, s1, s2, s3


def _k_dac(x: np.ndarray, step: float, bound: float, abs_max: bool, xq: np.ndarray, scale: np.ndarray) -> None:
    """:func:`block_mvm`'s DAC: per row ``scale = max|x|`` (or 1), ``xq = clip(rint(x / scale / step) *
    step, -bound, bound)``, the array code's float32 operations in its order. The max is taken over
    the magnitudes' bit patterns (their order is the numbers' order), which vectorises."""
    n, m = x.shape
    nb = -bound
    bits = x.view(np.int32)
    one = np.zeros(1, np.int32)
    one_f = one.view(np.float32)
    for r in range(n):
        row, out = x[r], xq[r]
        if abs_max:
            br = bits[r]
            mx = np.int32(0)
            for c in range(m):
                a = br[c] & np.int32(0x7FFFFFFF)
                mx = a if a > mx else mx
            one[0] = mx
            s = one_f[0] if one_f[0] > 0 else np.float32(1.0)
            scale[r] = s
            for c in range(m):
                out[c] = min(max(np.rint((row[c] / s) / step) * step, nb), bound)
        else:
            scale[r] = np.float32(1.0)
            for c in range(m):
                out[c] = min(max(np.rint(row[c] / step) * step, nb), bound)


def _nu_params(model: int, rl: float) -> tuple:
    """Mean and std of the drift exponent at relative target conductance ``rl`` (DeviceModel.drift_nu)."""
    lg = np.log(rl)
    if model == 0:
        return min(max(-0.0155 * lg + 0.0244, 0.049), 0.1), min(max(-0.0125 * lg - 0.0059, 0.008), 0.045)
    if rl < 0.0945:
        mu = min(max(-0.0387 * lg - 0.0182, 0.0720), 0.13)
    else:
        mu = -0.0436 * rl * rl - 0.0126 * rl + 0.0736
    if model == 1:
        if rl < 0.3039:
            return mu, min(max(-0.0120 * lg - 0.0023, 0.0124), 0.04)
        return mu, -0.0165 * rl * rl + 0.0116 * rl + 0.0104
    if rl < 0.3055:
        return mu, min(max(-0.0117 * lg - 0.0057, 0.0091), 0.04)
    return mu, -0.0118 * rl * rl + 0.0093 * rl + 0.0073


def _q_s(model: int, rp: float) -> float:
    """Accumulated 1/f read-noise coefficient at relative programmed conductance ``rp`` (DeviceModel.q_s)."""
    if model == 0:
        if rp <= 0.0:
            return 0.2
        return min(0.0088 / max(np.exp(0.65 * np.log(rp)), 1e-3), 0.2)
    if model == 1:
        if rp < 0.1591:
            return min(max(-0.0078 * np.log(max(rp, 1e-7)) + 0.0038, 0.0179), 0.04)
        return 0.0664 * rp ** 3 - 0.1352 * rp * rp + 0.0768 * rp + 0.0088
    if rp < 0.16:
        return min(max(-0.0117 * np.log(max(rp, 1e-7)) - 0.0069, 0.015), 0.04)
    return 0.0069 * rp ** 3 - 0.0280 * rp * rp + 0.0211 * rp + 0.0123


def _device(model: int, coeff: np.ndarray, g_max: float, g: float, z_prog: float, z_nu: float, z_read: float,
            drift: bool, log_t: float, read_factor: float, prog_scale: float, drift_scale: float,
            read_scale: float, mu0: float, sg0: float) -> tuple:
    """One device's programmed and drifted conductance (DeviceModel's formulas, one weight at a time);
    ``mu0``, ``sg0``: the drift exponent's mean and std of a zero target (computed once)."""
    if g > 0.0:
        rel = g / g_max
        sig = coeff[0]
        power = 1.0
        for c in range(1, coeff.size):
            power = power * rel
            sig = sig + coeff[c] * power
        mu, sg = _nu_params(model, max(rel, 1e-7))
    else:
        sig, mu, sg = coeff[0], mu0, sg0
    gp = max(g + prog_scale * sig * z_prog, 0.0)
    if gp == 0.0:
        return 0.0, 0.0                               # drift and read noise scale with g: nothing to add
    nu = abs(mu + sg * z_nu) * drift_scale
    gd = gp * np.exp(-nu * log_t) if drift else gp
    qs = _q_s(model, gp / g_max)
    return gp, max(gd + gd * read_scale * qs * read_factor * z_read, 0.0)


def _k_program(w: np.ndarray, programmed: np.ndarray, final: np.ndarray, model: int, coeff: np.ndarray,
               g_max: float, t: float, t0: float, read_factor: float, prog_scale: float, drift_scale: float,
               read_scale: float, state: np.ndarray, K: np.ndarray, W: np.ndarray, F: np.ndarray) -> None:
    """:func:`program`'s device chain per weight: six draws, then g+ and g- through :func:`_device`."""
    s0, s1, s2, s3 = state[0], state[1], state[2], state[3]
    rows, cols = w.shape
    drift = t > t0
    log_t = np.log(t / t0)
    mu0, sg0 = _nu_params(model, 1e-7)
    have, spare = False, 0.0
    z = np.zeros(6 * cols, np.float32)
    for i in range(rows):
        s0, s1, s2, s3, have, spare = _draw(z, s0, s1, s2, s3, have, spare, K, W, F)   # the row's draws
        for j in range(cols):
            wn = np.float64(w[i, j])
            k = 6 * j
            pp, fp = _device(model, coeff, g_max, min(max(wn, 0.0), 1.0) * g_max, np.float64(z[k]),
                             np.float64(z[k + 1]), np.float64(z[k + 4]), drift, log_t, read_factor, prog_scale,
                             drift_scale, read_scale, mu0, sg0)
            pm, fm = _device(model, coeff, g_max, min(max(-wn, 0.0), 1.0) * g_max, np.float64(z[k + 2]),
                             np.float64(z[k + 3]), np.float64(z[k + 5]), drift, log_t, read_factor, prog_scale,
                             drift_scale, read_scale, mu0, sg0)
            programmed[i, j] = np.float32((pp - pm) / g_max)
            final[i, j] = np.float32((fp - fm) / g_max)
    state[0], state[1], state[2], state[3] = s0, s1, s2, s3


@lru_cache(maxsize=None)
def _kernels() -> dict[str, Callable]:
    """The compiled kernels (numba is imported here, on first use, not with this module)."""
    import numba

    g = globals()
    g["_xoshiro"] = numba.njit(cache=True, inline="always")(g["_xoshiro"])
    for name in ("_candidate", "_gauss", "_draw"):
        g[name] = numba.njit(cache=True, inline="always")(g[name])
    for name in ("_nu_params", "_q_s", "_device"):
        g[name] = numba.njit(cache=True, inline="always", error_model="numpy")(g[name])
    jit = numba.njit(cache=True, error_model="numpy")
    return {"fill": jit(_k_fill), "adc": jit(_k_adc), "dac": jit(_k_dac), "program": jit(_k_program)}


@dataclass(frozen=True)
class SlotPhysics:
    """What the noise model needs of a system: its noise section, converter bits and slot size.

    ``dac_bits`` is the input resolution seen by the array: ``analog.dac.bits`` when one pass carries
    the input; when the input is sliced over several passes (bit-serial, or activations wider than a
    PWM DAC) the passes rebuild the full ``precision.activation_bits``-bit input, so that is the
    resolution (each pass's conversion is taken as lossless, as ISAAC-style designs size their ADCs to
    be; the ADC quantisation is applied once to the summed output)."""

    noise: NoiseSpec
    dac_bits: int
    adc_bits: int
    rows: int
    cols: int


def slot_physics(chip: ChipSpec) -> SlotPhysics:
    a = chip.analog
    act = chip.precision.activation_bits
    dac_bits = a.dac.bits if a.dac.bits >= act else act
    return SlotPhysics(a.noise, dac_bits, a.adc.bits, a.tile.rows, a.tile.cols)


def quantize_weights_per_channel(w: np.ndarray, bits: int) -> np.ndarray:
    """Symmetric per-output-channel integer weights (``bits`` wide), returned dequantised.

    Scale of row i: ``max|W[i, :]| / (2^(bits-1) - 1)``; error per weight <= scale / 2."""
    qmax = 2 ** (bits - 1) - 1
    scale = np.abs(w).max(axis=1, keepdims=True) / qmax
    scale = np.where(scale > 0, scale, 1.0)
    return (np.clip(np.round(w / scale), -qmax, qmax) * scale).astype(w.dtype)


# ----------------------------------------------------------------------------- namespaces

def _ns(x: Any) -> Any:
    from array_api_compat import array_namespace

    return array_namespace(x)


def _index(xp: Any, idx: np.ndarray) -> Any:
    return idx if _is_numpy(xp) else xp.asarray(idx)


def _is_numpy(xp: Any) -> bool:
    return "numpy" in getattr(xp, "__name__", "")


def _to_numpy(a: Any) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a
    return np.asarray(a.cpu()) if hasattr(a, "cpu") else np.asarray(a)
