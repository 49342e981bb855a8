"""The MoE all-to-all between chips, per layer and micro-batch, as byte matrices ``[micro-batch, src, dst]``.

Rules (DeepEP-style, one message per token and destination chip):

- A token lives on its *home* chip at each layer (:meth:`sim.system.layout.SystemLayout.homes`: data-parallel
  attention puts token i of a micro-batch on attention chip ``i mod A``; ``spread`` puts every token of the
  layer on that layer's dense chip).
- A hot expert with a copy (``experts.replicate_hot``, :mod:`sim.system.layout`) is computed, for a token, on
  the copy on the token's home chip when one of its two copies is there; else the primary copy serves the
  tokens at even positions of the micro-batch and the extra copy those at odd positions
  (:func:`expert_chips`). Every rule below uses the copy chosen.
- **Dispatch**: the token's hidden state goes once to every *distinct* chip computing at least one of its top-k
  experts, other than its home: ``hidden_size x dispatch_bits / 8`` bytes each. A token whose experts all sit
  on its home chip sends nothing.
- **Combine**: every chip that computed at least one of the token's experts sends its weighted partial sum once
  to the token's home at the next layer (if it is not that chip): ``hidden_size x combine_bits / 8`` bytes.
- **Residual move** (``spread`` only): a token whose next layer's home differs from this layer's moves its hidden
  state there, ``hidden_size x combine_bits / 8`` bytes, booked with the combine (dense layers too).

The bytes are routed over the topology and timed by :func:`sim.system.topology.phase_time_ns`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arch.system import System
from sim.engine.workplan import WorkPlan
from workloads.shapes import ModelShape

from .layout import SystemLayout


@dataclass(frozen=True, eq=False)
class LayerTraffic:
    dispatch: np.ndarray      # float64 [n_mb, n, n]: bytes src -> dst
    combine: np.ndarray       # float64 [n_mb, n, n]: bytes src -> dst (combine and residual moves)
    dispatch_messages: int    # (token, destination chip) messages
    combine_messages: int


def token_positions(plan: WorkPlan) -> np.ndarray:
    """Index of every token (execution order) inside its micro-batch."""
    return np.arange(plan.token_order.size) - plan.mb_start[plan.mb_of_token]


def homes_of(lay: SystemLayout, layer: int, pos: np.ndarray) -> np.ndarray:
    """Home chip of every token at ``layer`` (``pos``: its index inside its micro-batch)."""
    if lay.dense_chip[layer] >= 0:
        return np.full(pos.size, int(lay.dense_chip[layer]), np.int64)
    return lay.dp_chips[pos % lay.dp_chips.size].astype(np.int64)


def expert_chips(lay: SystemLayout, layer: int, ex: np.ndarray, home: np.ndarray,
                 pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Chip computing each (token, expert) pair of ``ex [T, k]`` at ``layer`` (-1 where ``ex < 0``), and whether it
    is the hot expert's copy (``lay.replica_chip``): the copy on the token's home chip when one copy is there,
    else the primary for an even ``pos`` (index in the micro-batch) and the copy for an odd one."""
    valid = ex >= 0
    e = np.maximum(ex, 0)
    chips = np.where(valid, lay.chip_of_expert[layer][e], -1).astype(np.int64)
    rep = lay.replica_chip[layer][e].astype(np.int64)
    has = valid & (rep >= 0)
    if not has.any():
        return chips, np.zeros(ex.shape, bool)
    hm = home[:, None]
    to_copy = has & ((hm == rep) | ((hm != chips) & (pos[:, None] % 2 == 1)))
    return np.where(to_copy, rep, chips), to_copy


def layer_traffic(system: System, model: ModelShape, plan: WorkPlan, lay: SystemLayout, layer: int,
                  pos: np.ndarray | None = None) -> LayerTraffic:
    """Dispatch and combine bytes of every micro-batch at ``layer`` (rules in the module docstring)."""
    n, n_mb = system.n_chips, plan.n_mb
    a2a = system.spec.all_to_all
    h = model.hidden_size
    pos = token_positions(plan) if pos is None else pos
    mb = plan.mb_of_token.astype(np.int64)
    home = homes_of(lay, layer, pos)
    nxt = homes_of(lay, min(layer + 1, model.num_layers - 1), pos)
    size = n_mb * n * n
    dispatch = np.zeros(size)
    combine = np.zeros(size)
    d_msgs = c_msgs = 0
    if layer in model.moe_layers:
        ex = plan.experts[:, layer, :].astype(np.int64)              # [T, k]
        chips, _ = expert_chips(lay, layer, ex, home, pos)
        chips.sort(axis=1)
        distinct = (chips >= 0) & np.r_['1', np.ones((chips.shape[0], 1), bool), chips[:, 1:] != chips[:, :-1]]
        rows, cols = np.nonzero(distinct)
        dst = chips[rows, cols]
        src_home = home[rows]
        away = dst != src_home
        key = (mb[rows[away]] * n + src_home[away]) * n + dst[away]
        dispatch = np.bincount(key, minlength=size).astype(np.float64) * (h * a2a.dispatch_bits / 8)
        d_msgs = int(away.sum())
        back = dst != nxt[rows]
        key = (mb[rows[back]] * n + dst[back]) * n + nxt[rows[back]]
        combine = np.bincount(key, minlength=size).astype(np.float64) * (h * a2a.combine_bits / 8)
        c_msgs = int(back.sum())
    move = home != nxt
    if move.any():
        key = (mb[move] * n + home[move]) * n + nxt[move]
        combine += np.bincount(key, minlength=size) * (h * a2a.combine_bits / 8)
        c_msgs += int(move.sum())
    return LayerTraffic(dispatch.reshape(n_mb, n, n), combine.reshape(n_mb, n, n), d_msgs, c_msgs)
