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
   MVM, drawn here in its exact output-referred form ``w_noise * ||x||_2 * N(0, 1)``) and additive
   output noise ``out_noise``;
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
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil, log, sqrt
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


def program(w_norm: np.ndarray, noise: NoiseSpec, out_step: float,
            normal: Callable[[tuple[int, ...]], np.ndarray]) -> tuple[np.ndarray, float]:
    """Programmed (and drifted) normalised weights of one slot and its drift-compensation ``alpha``.

    ``w_norm`` is the slot's target weights divided by max|W| over the ``weight_scaling`` scope.
    ``alpha`` (global drift compensation) is ``readout(programmed) / readout(drifted)`` where
    ``readout`` is the mean |ADC output| over the slot's one-hot read-out vectors, i.e. the mean of
    ``|Q(w + out_noise * N)|`` over the slot's weights, as aihwkit reads ``eye(in)`` through the tile.
    """
    prog = noise.programming
    w_norm = np.asarray(w_norm)
    if prog.model == "none":
        return w_norm, 1.0
    if prog.model == "relative":
        return w_norm + prog.sigma_relative * normal(w_norm.shape), 1.0
    dev = device_model(prog)
    g_max = dev.g_max_us
    targets = (np.clip(w_norm, 0.0, 1.0) * g_max, np.clip(-w_norm, 0.0, 1.0) * g_max)
    g_prog, nus = [], []
    for g in targets:
        g_prog.append(np.clip(g + prog.prog_noise_scale * dev.sigma_prog_us(g) * normal(g.shape), 0.0, None))
        nus.append(dev.drift_nu(g, normal) * prog.drift_scale)
    programmed = (g_prog[0] - g_prog[1]) / g_max
    t = prog.t_inference_s + dev.t0_s
    drifted = []
    for g, nu in zip(g_prog, nus):
        gd = g * (t / dev.t0_s) ** (-nu) if t > dev.t0_s else g
        sig = dev.q_s(g) * sqrt(log((t + dev.t_read_s) / (2 * dev.t_read_s)))
        drifted.append(np.clip(gd + np.abs(gd) * prog.read_noise_scale * sig * normal(g.shape), 0.0, None))
    final = (drifted[0] - drifted[1]) / g_max
    alpha = 1.0
    if prog.drift_compensation == "global":
        ref = _readout(programmed, noise, out_step, normal)
        alpha = ref / _readout(final, noise, out_step, normal)
    return final, float(alpha)


def _readout(w: np.ndarray, noise: NoiseSpec, out_step: float, normal: Callable) -> float:
    y = w + noise.out_noise * normal(w.shape)
    if noise.out_range == "fixed":
        y = quantize(y, out_step, noise.out_bound)
    return max(float(np.abs(y).mean()), 1e-4)


# ----------------------------------------------------------------------------- one slot's MVM

def slot_mvm(x: Any, w: Any, noise: NoiseSpec, dac_bits: int, adc_bits: int, normal: Normal) -> Any:
    """``x @ w.T`` through one crossbar slot, in the units of ``x`` times normalised weights.

    ``x``: ``[n, rows_used]`` input slice; ``w``: ``[cols_used, rows_used]`` normalised programmed
    weights. The caller multiplies by max|W| and alpha and adds the slots' partial sums."""
    xp = _ns(x)
    n = x.shape[0]
    in_step = converter_step(dac_bits, noise.inp_bound)
    if noise.noise_management == "abs_max":
        scale = xp.max(xp.abs(x), axis=1, keepdims=True)
        scale = xp.where(scale > 0, scale, xp.ones_like(scale))
    else:
        scale = xp.ones((n, 1), dtype=x.dtype)
    xn = x / scale
    if noise.out_range == "calibrated":
        xq = _dac(xn, noise, in_step, normal)
        clean = xq @ w.T
        bound = xp.max(xp.abs(clean), axis=1, keepdims=True)
        bound = xp.where(bound > 0, bound, xp.ones_like(bound))
        step = bound * (converter_step(adc_bits, 1.0))
        y = _analog(xq, w, noise, normal)
        return xp.clip(xp.round(y / step) * step, -bound, bound) * scale
    out_step = converter_step(adc_bits, noise.out_bound)
    limit = noise.max_bm_res / in_step
    out = xp.zeros((n, w.shape[0]), dtype=x.dtype)
    todo = np.arange(n)
    reduction = 1.0
    while todo.size:
        xs = xn[_index(xp, todo)] / reduction if todo.size < n else xn / reduction
        y = _analog(_dac(xs, noise, in_step, normal), w, noise, normal)
        y = xp.round(y / out_step) * out_step
        last = noise.bound_management == "none" or reduction * 2 > 1000 or reduction > limit
        sat = _to_numpy(xp.any(xp.abs(y) > noise.out_bound, axis=1)) if not last else np.zeros(todo.size, bool)
        y = xp.clip(y, -noise.out_bound, noise.out_bound) * reduction
        done = ~sat
        if todo.size == n and done.all():
            out = y
        else:
            rows = todo[done]
            out[_index(xp, rows)] = y[_index(xp, np.flatnonzero(done))]
        todo = todo[sat]
        reduction *= 2.0
    return out * scale


def _dac(xn: Any, noise: NoiseSpec, step: float, normal: Normal) -> Any:
    xq = quantize(xn, step, noise.inp_bound)
    if noise.inp_noise > 0:
        xq = xq + noise.inp_noise * normal(tuple(xq.shape))
    return xq


def _analog(xq: Any, w: Any, noise: NoiseSpec, normal: Normal) -> Any:
    xp = _ns(xq)
    y = xq @ w.T
    shape = (xq.shape[0], w.shape[0])
    if noise.w_noise > 0:
        norm = xp.sqrt(xp.sum(xq * xq, axis=1, keepdims=True))
        y = y + noise.w_noise * norm * normal(shape)
    if noise.out_noise > 0:
        y = y + noise.out_noise * normal(shape)
    return y


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
