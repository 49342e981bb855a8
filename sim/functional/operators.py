"""One weight-static matrix as the placement runs it: exact, low-bit digital, or analog per slot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from arch.noise import SlotPhysics, converter_step, program, quantize_weights_per_channel, slot_grid, slot_mvm

from .backend import Backend


@dataclass(frozen=True, eq=False)
class AnalogMatrix:
    """A matrix programmed onto crossbar slots for one noise seed.

    ``slots[j][i]`` is ``(normalised programmed weights, max|W| scale, alpha)`` of column block j,
    row block i; the output of column block j is ``sum_i slot_mvm(x[:, rows_i], w) * scale * alpha``."""

    rows: list[slice]
    cols: list[slice]
    slots: list[list[tuple[Any, float, float]]]
    out_features: int


def program_matrix(w: np.ndarray, phys: SlotPhysics, rng: np.random.Generator, be: Backend) -> AnalogMatrix:
    """Cut ``w[out, in]`` into slots as the mapping does and program each (draws from ``rng``)."""
    noise = phys.noise
    rows, cols = slot_grid(w.shape[0], w.shape[1], phys.rows, phys.cols)
    out_step = converter_step(phys.adc_bits, noise.out_bound)
    whole = float(np.abs(w).max())
    normal = lambda shape: rng.standard_normal(shape, dtype=np.float32)  # noqa: E731
    slots = []
    for cb in cols:
        line = []
        for rb in rows:
            block = np.asarray(w[cb, rb], np.float32)
            scale = float(np.abs(block).max()) if noise.weight_scaling == "slot" else whole
            scale = scale if scale > 0 else 1.0
            prog, alpha = program(block / scale, noise, out_step, normal)
            line.append((be.asarray(prog.astype(np.float32)), scale, alpha))
        slots.append(line)
    return AnalogMatrix(rows, cols, slots, w.shape[0])


def analog_apply(x: Any, m: AnalogMatrix, phys: SlotPhysics, normal: Callable, be: Backend) -> Any:
    """``x @ W.T`` through the slots of ``m`` (``x``: ``[n, in]``)."""
    xp = be.xp
    parts = []
    for j, cb in enumerate(m.cols):
        acc = None
        for i, rb in enumerate(m.rows):
            w, scale, alpha = m.slots[j][i]
            y = slot_mvm(x[:, rb], w, phys.noise, phys.dac_bits, phys.adc_bits, normal) * (scale * alpha)
            acc = y if acc is None else acc + y
        parts.append(acc)
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=1)


def lowbit(w: np.ndarray, bits: int) -> np.ndarray:
    """Symmetric per-output-channel ``bits``-bit weights (dequantised), for digital matrices."""
    return quantize_weights_per_channel(w, bits)
