"""One weight-static matrix as the placement runs it: exact, low-bit digital, or analog per slot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from arch.noise import (NormalStream, SlotPhysics, as_stream, block_mvm, converter_step, program,
                        quantize_weights_per_channel, slot_grid)

from .backend import Backend


@dataclass(frozen=True, eq=False)
class AnalogMatrix:
    """A matrix programmed onto crossbar slots for one noise seed.

    ``slots[j][i]`` is ``(normalised programmed weights, max|W| scale, alpha)`` of column block j,
    row block i; the output of column block j is ``sum_i slot_mvm(x[:, rows_i], w) * scale * alpha``.
    ``blocks[i]`` holds row block i's slots side by side (``[out, rows_i]``, the slots' weights are
    views of it) and ``col_scale[i]`` each of its columns' ``scale * alpha`` (``[out]``), so that one
    product serves a whole row block (:func:`arch.noise.block_mvm`)."""

    rows: list[slice]
    cols: list[slice]
    slots: list[list[tuple[Any, float, float]]]
    out_features: int
    blocks: list[Any]
    col_scale: list[Any]
    width: int


def program_matrix(w: np.ndarray, phys: SlotPhysics, rng: np.random.Generator | NormalStream,
                   be: Backend) -> AnalogMatrix:
    """Cut ``w[out, in]`` into slots as the mapping does and program each (draws from ``rng``, a
    :class:`~arch.noise.NormalStream` or a numpy generator that seeds one; slots in order column
    block by column block, row block by row block)."""
    noise = phys.noise
    stream = as_stream(rng)
    rows, cols = slot_grid(w.shape[0], w.shape[1], phys.rows, phys.cols)
    out_step = converter_step(phys.adc_bits, noise.out_bound)
    whole = float(np.abs(w).max())
    blocks = [np.empty((w.shape[0], rb.stop - rb.start), np.float32) for rb in rows]
    col_scale = [np.empty(w.shape[0], np.float32) for _ in rows]
    factors = []
    for cb in cols:
        line = []
        for i, rb in enumerate(rows):
            block = np.asarray(w[cb, rb], np.float32)
            scale = float(np.abs(block).max()) if noise.weight_scaling == "slot" else whole
            scale = scale if scale > 0 else 1.0
            prog, alpha = program(block / np.float32(scale), noise, out_step, stream)
            blocks[i][cb] = prog
            col_scale[i][cb] = np.float32(scale * alpha)
            line.append((scale, alpha))
        factors.append(line)
    dev_blocks = [be.asarray(b) for b in blocks]
    slots = [[(dev_blocks[i][cb], *factors[j][i]) for i in range(len(rows))] for j, cb in enumerate(cols)]
    return AnalogMatrix(rows, cols, slots, w.shape[0], dev_blocks, [be.asarray(c) for c in col_scale], phys.cols)


def analog_apply(x: Any, m: AnalogMatrix, phys: SlotPhysics, normal: Callable, be: Backend,
                 fused: bool | None = None) -> Any:
    """``x @ W.T`` through the slots of ``m`` (``x``: ``[n, in]``): one :func:`~arch.noise.block_mvm`
    per row block (every column block at once), partial sums added digitally in row-block order."""
    acc = None
    for i, rb in enumerate(m.rows):
        xi = x if len(m.rows) == 1 else x[:, rb]
        y = block_mvm(xi, m.blocks[i], phys.noise, phys.dac_bits, phys.adc_bits, normal, m.width,
                      m.col_scale[i], fused)
        acc = y if acc is None else acc + y
    return acc


def lowbit(w: np.ndarray, bits: int) -> np.ndarray:
    """Symmetric per-output-channel ``bits``-bit weights (dequantised), for digital matrices."""
    return quantize_weights_per_channel(w, bits)
