"""Which chip holds each matrix of a model on a system of chips (expert parallelism), as arrays.

The single-chip placement policy (:func:`sim.placement.place`: ``maxnn``, ``frequency``, ...) decides which
routed experts and dense modules are *digital*; this module decides *which chip*:

- Routed experts, per MoE layer: the analog ones are spread over the analog chips, the digital ones over the
  digital chips (or, in a system without digital chips, over the analog chips, where they run on each chip's
  own digital SIMD core). Each group is split by a layout:

  * ``contiguous`` (vLLM's ``linear`` expert placement): the group's experts in id order, in consecutive
    blocks, one block per chip;
  * ``round-robin`` (vLLM's ``round_robin``): the experts dealt one per chip per round, in cyclic chip order
    from ``offset`` (with equal chips: the j-th expert of the group on chip ``(offset + j) mod K``);
  * ``load-aware``: greedy longest-processing-time on the trace's tokens per expert: the busiest expert first,
    each onto the chip with the fewest tokens so far among the chips with room (ties: lower expert id, lower
    chip), so every layer's load is balanced.

  How many of a layer's n experts each of the K chips takes is decided first: for the analog experts, one at a
  time onto the chip with the most free crossbar slots (after the dense modules it holds and the experts of
  earlier layers), ties in cyclic order from ``offset`` (the extras handed out at earlier layers, mod K). On
  equal chips that is ``floor(n / K)`` each and ``n mod K`` chips one more, the extras rotating over the chips,
  so every chip ends up with the same number of slots to within one expert; a chip holding dense modules takes
  fewer. The digital experts: ``floor(n / K)`` each, the extras rotating.
- Dense modules (attention, router, shared experts, dense FFNs, lm_head), by ``attention.placement``:
  ``digital-chips``: a replica on every digital chip; ``each-chip``: a replica on every chip; ``spread``: layer
  l's dense modules on one chip (lm_head with the last layer's), placed before the experts: analog ones on the
  analog chip with the most free crossbar slots (largest unit first), digital ones on the digital chips in turn
  (or the analog chips' own cores when there are none).

- Hot-expert copies (``experts.replicate_hot: N``, default 0; DeepSeek-V3's redundant experts, vLLM's EPLB),
  placed after every primary: per MoE layer, the N experts with the most routed tokens in the trace (ties:
  lower id; an expert with no token gets none; N above the layer's experts copies them all) get one extra copy each, hottest first, on a chip of their
  group other than their own (analog experts: the analog chips; digital experts: the digital chips, or the
  analog chips' own cores when there are none): among those with room (free crossbar slots for an analog
  expert; DRAM + SRAM bytes for a digital one), the one with the fewest routed tokens at this layer so far
  (ties: most free slots, lower chip), a replicated expert's tokens counted half on each copy. When no chip
  has room, the fewest-tokens chip takes it anyway and the capacity check below refuses, naming the copies;
  a hot expert whose group has a single chip gets no copy (``replicas_unplaced``). ``replica_chip`` is an int32
  ``[layers, experts]`` array, -1 where no copy. Which copy computes a token is
  :func:`sim.system.alltoall.expert_chips`'s rule: the copy on the token's home chip when there is one, else
  the primary for tokens at even positions of the micro-batch and the copy for odd ones.

Every chip's holdings are then checked like a single chip's mapping (:func:`check_capacity`): the crossbar slots
of its analog matrices (:func:`arch.costs.crossbar_slots`, whole matrices, packed without the single-chip
mapping's alignment gaps, which only order slots on one die) against its tiles x tiers, and its
digital weights not held in SRAM against its DRAM capacity, hot-expert copies included (their slots and
bytes are counted on the chip holding them); a refusal names the chip (and the copies it holds), what it must hold, what it
has, and how many chips would be needed. Nothing is a Python object per expert: ``chip_of_expert`` is an int32
``[layers, experts]`` array, matrices are described by parallel arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil

import numpy as np

from arch.errors import HetmoeError
from arch.system import System
from sim.placement import Placement
from workloads.shapes import EXPERT, LM_HEAD, ModelShape

LAYOUTS = ("contiguous", "round-robin", "load-aware")
ALIASES = {"linear": "contiguous", "round_robin": "round-robin"}    # vLLM's names of the first two


class SystemLayoutError(HetmoeError):
    """A layout that cannot be built, or a chip that cannot hold what the layout gives it (``role``: the role of
    the chip that could not, when one chip is to blame)."""

    def __init__(self, message: str, role: str | None = None) -> None:
        super().__init__(message)
        self.role = role


def layout_name(name: str) -> str:
    name = ALIASES.get(name, name)
    if name not in LAYOUTS:
        raise SystemLayoutError(f"--layout {name!r}; allowed: {', '.join(LAYOUTS)} (vLLM's linear = contiguous, "
                                "round_robin = round-robin)")
    return name


@dataclass(frozen=True, eq=False)
class MatrixTable:
    """The model's weight-static matrices as parallel arrays, in model order (``ModelShape.matrices``)."""

    layer: np.ndarray        # int32: decoder layer (-1 lm_head)
    expert: np.ndarray       # int32: routed expert id (-1 otherwise)
    routed: np.ndarray       # bool: a routed expert's matrix
    out_features: np.ndarray  # int64
    in_features: np.ndarray  # int64
    digital: np.ndarray      # bool: digital under the placement

    @property
    def params(self) -> np.ndarray:
        return self.out_features * self.in_features


def matrix_table(model: ModelShape, placement: Placement) -> MatrixTable:
    ms = model.matrices
    layer = np.fromiter((m.layer for m in ms), np.int32, len(ms))
    expert = np.fromiter((m.expert for m in ms), np.int32, len(ms))
    out = np.fromiter((m.out_features for m in ms), np.int64, len(ms))
    inp = np.fromiter((m.in_features for m in ms), np.int64, len(ms))
    routed = np.fromiter((m.module == EXPERT for m in ms), bool, len(ms))
    module_digital = {mod: mod in placement.digital_modules for mod in {m.module for m in ms}}
    digital = np.fromiter((module_digital[m.module] for m in ms), bool, len(ms))
    r = np.flatnonzero(routed)
    digital[r] = placement.digital_experts[layer[r], expert[r]]
    # lm_head belongs to the last layer's dense unit
    layer = np.where(np.fromiter((m.module == LM_HEAD for m in ms), bool, len(ms)), model.num_layers - 1, layer)
    return MatrixTable(layer, expert, routed, out, inp, digital)


@dataclass(frozen=True, eq=False)
class SystemLayout:
    layout: str
    chip_of_expert: np.ndarray     # int32 [layers, experts]: chip holding each routed expert (-1: not a MoE layer)
    expert_digital: np.ndarray     # bool [layers, experts]: runs digitally (digital chip, or an analog chip's SIMD)
    attention: str                 # digital-chips | each-chip | spread
    dp_chips: np.ndarray           # int32 [A]: chips running attention data-parallel (empty for spread)
    dense_chip: np.ndarray         # int32 [layers]: spread: the chip of each layer's dense modules (-1 otherwise)
    matrix_chip: np.ndarray        # int32 [matrices]: holder of each non-replicated matrix (-1: replicated)
    table: MatrixTable
    capacity: dict                 # per-chip holdings (check_capacity)
    replica_chip: np.ndarray | None = None   # int32 [layers, experts]: chip of a hot expert's extra copy (-1: none)
    replicate_hot: int = 0         # experts.replicate_hot asked for
    replicas_unplaced: int = 0     # hot experts left without a copy: no other chip in their group

    def __post_init__(self) -> None:
        if self.replica_chip is None:
            object.__setattr__(self, "replica_chip", np.full(self.chip_of_expert.shape, -1, np.int32))

    def homes(self, layer: int, n_tokens: int) -> np.ndarray:
        """Chip of each of a micro-batch's ``n_tokens`` tokens at ``layer``: data-parallel token i on
        ``dp_chips[i mod A]``; spread: the layer's dense chip."""
        if self.dense_chip[layer] >= 0:
            return np.full(n_tokens, self.dense_chip[layer], np.int64)
        return self.dp_chips[np.arange(n_tokens) % self.dp_chips.size].astype(np.int64)


def split_counts(n_items: int, k: int, offset: int, free: np.ndarray | None = None) -> np.ndarray:
    """Items per chip: ``floor(n / k)`` each and one more on ``n mod k`` chips: those with the most ``free``
    capacity, ties in cyclic order from ``offset`` (so with equal capacity chips ``offset .. offset + n mod k
    - 1``, mod k)."""
    counts = np.full(k, n_items // k, np.int64)
    extra = n_items % k
    if extra:
        cyc = (offset + np.arange(k)) % k
        if free is not None:
            cyc = cyc[np.argsort(-np.asarray(free, np.float64)[cyc], kind="stable")]
        counts[cyc[:extra]] += 1
    return counts


def fill_counts(n_items: int, free: np.ndarray, cost: np.ndarray, offset: int) -> np.ndarray:
    """Items per chip, capacity first: each item onto the chip with the most free slots left (``free`` less
    ``cost`` per item taken), ties in cyclic order from ``offset``. With equal ``free`` this is
    :func:`split_counts`: ``floor(n / k)`` each and the extras on chips ``offset ..``; a chip holding more
    (dense modules, earlier layers' extras) takes fewer."""
    k = free.size
    rank = np.empty(k, np.int64)
    rank[(offset + np.arange(k)) % k] = np.arange(k)
    f = np.asarray(free, np.float64).copy()
    cost = np.asarray(cost, np.float64)
    counts = np.zeros(k, np.int64)
    for _ in range(n_items):
        cand = np.flatnonzero(f == f.max())
        best = cand[np.argmin(rank[cand])]
        counts[best] += 1
        f[best] -= cost[best]
    return counts


def assign(counts: np.ndarray, offset: int, layout: str, load: np.ndarray) -> np.ndarray:
    """Chip (0..k-1) of each item in id order, chip k taking ``counts[k]`` items, under ``layout``:
    contiguous blocks in chip order; round-robin dealing, one item per chip per round in cyclic order from
    ``offset`` (with ``split_counts``'s rotation: item j on chip ``(offset + j) mod k``); load-aware: longest
    processing time first on ``load``, each onto the least-loaded chip with room (ties: lower id, lower chip)."""
    k = counts.size
    n = int(counts.sum())
    if layout == "contiguous":
        return np.repeat(np.arange(k), counts)
    if layout == "round-robin":
        cyc = (offset + np.arange(k)) % k
        seq = np.concatenate([cyc[counts[cyc] > r] for r in range(int(counts.max(initial=0)))] or [np.zeros(0, int)])
        return seq[:n]
    room = counts.copy()
    busy = np.zeros(k)
    out = np.empty(n, np.int64)
    for j in np.argsort(-np.asarray(load, float), kind="stable").tolist():
        fr = np.flatnonzero(room > 0)
        c = fr[np.argmin(busy[fr])]
        out[j] = c
        busy[c] += load[j]
        room[c] -= 1
    return out


def build_layout(system: System, model: ModelShape, placement: Placement, layout: str,
                 expert_tokens: np.ndarray, *, check: bool = True) -> SystemLayout:
    """Chips of every expert and dense module (rules in the module docstring); ``expert_tokens [layers,
    experts]``: tokens routed to each expert (load-aware); ``check``: refuse a chip that cannot hold its share."""
    layout = layout_name(layout)
    table = matrix_table(model, placement)
    L, E = model.num_layers, model.num_experts
    analog_chips, digital_chips = system.analog_chips, system.digital_chips
    mode = system.spec.attention.placement if system.n_chips > 1 else "each-chip"
    if mode == "digital-chips" and (~table.digital[~table.routed]).any():
        raise SystemLayoutError(
            f"policy {placement.policy} puts dense modules on analog tiles, but attention.placement digital-chips "
            "runs them on the digital chips; use attention.placement spread or each-chip, or a policy that keeps the "
            "dense modules digital (maxnn, frequency, ...)")
    digital_experts = np.asarray(placement.digital_experts, bool)
    if not analog_chips.size and (~digital_experts[list(model.moe_layers)]).any():
        raise SystemLayoutError(f"policy {placement.policy} puts routed experts on analog tiles, but the system has "
                                "no analog chip; use policy all-digital")
    # free crossbar slots of every analog chip, less the dense modules it holds
    slots_of = _slot_tables(system, table)
    free = np.array([chip_slot_capacity(system, c) if system.analog[c] else 0 for c in range(system.n_chips)],
                    np.int64)
    matrix_chip = np.full(table.layer.size, -1, np.int32)
    dense_chip = np.full(L, -1, np.int32)
    dense = np.flatnonzero(~table.routed)
    if mode == "digital-chips":
        dp = digital_chips
    elif mode == "each-chip":
        dp = np.arange(system.n_chips)
    else:
        dp = np.zeros(0, np.int32)
        dense_chip = _spread_dense(system, model, table, slots_of, free)
        matrix_chip[dense] = dense_chip[table.layer[dense]]
    for c in np.intersect1d(dp, analog_chips).tolist():
        ana = dense[~table.digital[dense]]
        free[c] -= int(slots_of[c][ana].sum())
    chip_of = np.full((L, E), -1, np.int32)
    groups = [(~digital_experts, analog_chips, True),
              (digital_experts, digital_chips if digital_chips.size else analog_chips, False)]
    if not analog_chips.size:
        groups = [(np.ones((L, E), bool), digital_chips, False)]      # all-digital system: every expert on digital
    r = np.flatnonzero(table.routed)
    for mask, chips, track in groups:
        offset = 0
        for layer in model.moe_layers:
            ids = np.flatnonzero(mask[layer])
            if not ids.size:
                continue
            k = chips.size
            if track:
                first = r[(table.layer[r] == layer) & (table.expert[r] == ids[0])]
                per_expert = np.array([int(slots_of[int(c)][first].sum()) for c in chips])
                counts = fill_counts(ids.size, free[chips], per_expert, offset)
                free[chips] -= counts * per_expert
            else:
                counts = split_counts(ids.size, k, offset)
            which = assign(counts, offset, layout, expert_tokens[layer, ids])
            chip_of[layer, ids] = chips[which]
            offset = (offset + ids.size % k) % k
    expert_digital = digital_experts | ~system.analog[np.maximum(chip_of, 0)]
    expert_digital[chip_of < 0] = False
    matrix_chip[r] = chip_of[table.layer[r], table.expert[r]]
    n_hot = system.spec.experts.replicate_hot
    replica_chip = np.full((L, E), -1, np.int32)
    unplaced = 0
    if n_hot:
        capacity = holdings(system, model, table, matrix_chip, dp, slots_of)
        replica_chip, unplaced = place_replicas(system, model, table, chip_of, expert_digital, expert_tokens,
                                                n_hot, free, slots_of, capacity["digital_weight_bytes"])
    rep_idx, rep_chip = replica_matrices(table, replica_chip)
    capacity = holdings(system, model, table, matrix_chip, dp, slots_of, rep_idx, rep_chip)
    out = SystemLayout(layout, chip_of, expert_digital, mode, np.asarray(dp, np.int32), dense_chip, matrix_chip, table,
                       capacity, replica_chip, n_hot, unplaced)
    if check:
        check_capacity(system, model, placement, out)
    return out


def matrix_slots(table: MatrixTable, rows: int, cols: int) -> np.ndarray:
    """Crossbar slots of every matrix on ``rows x cols`` crossbars (:func:`arch.costs.crossbar_slots`)."""
    return -(-table.in_features // rows) * -(-table.out_features // cols)


def _slot_tables(system: System, table: MatrixTable) -> list[np.ndarray]:
    """Per chip: the crossbar slots every matrix would take on it (0 on a digital chip)."""
    by_kind: dict[int, np.ndarray] = {}
    zeros = np.zeros(table.layer.size, np.int64)
    out = []
    for c in range(system.n_chips):
        if not system.analog[c]:
            out.append(zeros)
            continue
        k = int(system.kind_of_chip[c])
        if k not in by_kind:
            a = system.kinds[k].analog
            by_kind[k] = matrix_slots(table, a.tile.rows, a.tile.cols)
        out.append(by_kind[k])
    return out


def _spread_dense(system: System, model: ModelShape, table: MatrixTable, slots_of: list[np.ndarray],
                  free: np.ndarray) -> np.ndarray:
    """spread: each layer's dense modules on one chip. Layers with analog dense matrices: largest unit first,
    onto the analog chip with the most free slots (ties: lower chip; ``free`` is reduced); the rest: the
    digital chips in turn, else the analog chips in turn."""
    L = model.num_layers
    sel = ~table.routed & ~table.digital
    out = np.full(L, -1, np.int32)
    has_analog = np.zeros(L, bool)
    has_analog[np.unique(table.layer[sel])] = True
    if system.analog_chips.size and has_analog.any():
        unit = np.zeros(L, np.int64)
        ref = slots_of[int(system.analog_chips[0])]
        np.add.at(unit, table.layer[sel], ref[sel])
        masked = np.where(system.analog, free, np.iinfo(np.int64).min)
        for layer in np.argsort(-unit, kind="stable").tolist():
            if not has_analog[layer]:
                continue
            c = int(np.argmax(masked))
            out[layer] = c
            need = int(slots_of[c][sel & (table.layer == layer)].sum())
            masked[c] -= need
            free[c] -= need
    rest = np.flatnonzero(~has_analog)
    pool = system.digital_chips if system.digital_chips.size else system.analog_chips
    out[rest] = pool[np.arange(rest.size) % pool.size]
    return out


def replica_matrices(table: MatrixTable, replica_chip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The matrices of every hot-expert copy (indices into ``table``) and the chip holding each copy."""
    r = np.flatnonzero(table.routed)
    chips = replica_chip[table.layer[r], table.expert[r]]
    keep = chips >= 0
    return r[keep], chips[keep].astype(np.int64)


def place_replicas(system: System, model: ModelShape, table: MatrixTable, chip_of: np.ndarray,
                   expert_digital: np.ndarray, expert_tokens: np.ndarray, n_hot: int, free: np.ndarray,
                   slots_of: list[np.ndarray], digital_bytes: np.ndarray) -> tuple[np.ndarray, int]:
    """``replica_chip [layers, experts]`` (rules in the module docstring) and the number of hot experts left
    without a copy (no other chip in their group). ``free``: free crossbar slots after every primary holding
    (reduced here); ``digital_bytes``: digital weight bytes each chip holds before the copies."""
    L, E = chip_of.shape
    n = system.n_chips
    out = np.full((L, E), -1, np.int32)
    free = np.asarray(free, np.float64).copy()
    dram = np.array([system.chip(c).memory.dram.capacity_gib for c in range(n)], object)
    room_bytes = np.array([np.inf if dram[c] is None else dram[c] * 2 ** 30
                           + system.chip(c).memory.sram.capacity_mib * 2 ** 20 for c in range(n)], np.float64)
    room_bytes -= digital_bytes
    bits = np.array([system.chip(c).precision.digital_weight_bits for c in range(n)], np.float64)
    digital_pool = system.digital_chips if system.digital_chips.size else system.analog_chips
    r = np.flatnonzero(table.routed)
    unplaced = 0
    for layer in model.moe_layers:
        tok = np.asarray(expert_tokens[layer], np.float64)
        held = chip_of[layer] >= 0
        load = np.bincount(chip_of[layer][held], weights=tok[held], minlength=n)
        order = np.argsort(-tok, kind="stable")
        hot = order[(tok[order] > 0) & held[order]][:n_hot]
        for e in hot.tolist():
            home = int(chip_of[layer, e])
            digital = bool(expert_digital[layer, e])
            pool = (digital_pool if digital else system.analog_chips) if system.analog_chips.size else \
                system.digital_chips
            cand = pool[pool != home]
            if not cand.size:
                unplaced += 1
                continue
            mats = r[(table.layer[r] == layer) & (table.expert[r] == e)]
            if digital:
                need = np.array([float(table.params[mats].sum()) * bits[c] / 8 for c in cand])
                have = room_bytes[cand]
            else:
                need = np.array([float(slots_of[int(c)][mats].sum()) for c in cand])
                have = free[cand]
            fits = need <= have
            pick = cand[fits] if fits.any() else cand          # none fits: the capacity check says so
            c = int(pick[np.lexsort((pick, -free[pick], load[pick]))[0]])
            out[layer, e] = c
            load[home] -= tok[e] / 2
            load[c] += tok[e] / 2
            if digital or not system.analog[c]:
                room_bytes[c] -= float(table.params[mats].sum()) * bits[c] / 8
            else:
                free[c] -= float(slots_of[c][mats].sum())
    return out, unplaced


def holdings(system: System, model: ModelShape, table: MatrixTable, matrix_chip: np.ndarray,
             dp_chips: np.ndarray, slots_of: list[np.ndarray], rep_idx: np.ndarray | None = None,
             rep_chip: np.ndarray | None = None) -> dict:
    """What every chip holds: analog crossbar slots (its analog matrices' ``crossbar_slots``, packed without
    gaps), digital weight bytes, and the number of routed-expert matrices on it; ``rep_idx`` / ``rep_chip``: the
    matrices of hot-expert copies and their chips, counted on those chips besides (``replica_slots``,
    ``replica_matrices``)."""
    n = system.n_chips
    rep_idx = np.zeros(0, np.int64) if rep_idx is None else rep_idx
    rep_chip = np.zeros(0, np.int64) if rep_chip is None else rep_chip
    extra_slots = np.zeros(n, np.int64)
    extra_bytes = np.zeros(n, np.float64)
    replicated = matrix_chip < 0
    is_dp = np.zeros(n, bool)
    is_dp[dp_chips] = True
    slots_needed = np.zeros(n, np.int64)
    replicated_slots = np.zeros(n, np.int64)
    digital_bytes = np.zeros(n, np.float64)
    digital_matrices = np.zeros(n, np.int64)
    order = np.argsort(matrix_chip, kind="stable")           # model order within each chip
    bounds = np.searchsorted(matrix_chip[order], np.arange(n + 1))
    rep = np.flatnonzero(replicated)
    for c in range(n):
        chip = system.chip(c)
        own = order[bounds[c]:bounds[c + 1]]
        idx = np.union1d(own, rep) if is_dp[c] else own
        analog_here = system.analog[c]
        dig = idx[table.digital[idx] | ~analog_here]
        ana = idx[~table.digital[idx] & analog_here]
        bits = chip.precision.digital_weight_bits
        digital_bytes[c] = float(table.params[dig].sum()) * bits / 8
        digital_matrices[c] = dig.size
        slots_needed[c] = int(slots_of[c][ana].sum())
        if is_dp[c] and analog_here:
            replicated_slots[c] = int(slots_of[c][rep[~table.digital[rep]]].sum())
        if rep_idx.size:
            cp = rep_idx[rep_chip == c]
            dig = cp[table.digital[cp] | ~analog_here]
            ana = cp[~table.digital[cp] & analog_here]
            extra_bytes[c] = float(table.params[dig].sum()) * bits / 8
            extra_slots[c] = int(slots_of[c][ana].sum())
            digital_bytes[c] += extra_bytes[c]
            digital_matrices[c] += dig.size
            slots_needed[c] += extra_slots[c]
    experts = np.zeros(n, np.int64)
    r = table.routed & (matrix_chip >= 0)
    np.add.at(experts, matrix_chip[r], 1)
    replica_mats = np.bincount(rep_chip, minlength=n).astype(np.int64)
    return {"slots_needed": slots_needed, "replicated_slots": replicated_slots, "digital_weight_bytes": digital_bytes,
            "digital_matrices": digital_matrices, "expert_matrices": experts + replica_mats,
            "replica_matrices": replica_mats, "replica_slots": extra_slots, "replica_weight_bytes": extra_bytes}


def chip_slot_capacity(system: System, c: int) -> int:
    a = system.chip(c).analog
    return a.tile_count * a.tile.tiers


def sram_resident_bytes(system: System, c: int, digital_bytes: float) -> float:
    return min(digital_bytes, system.chip(c).memory.sram.capacity_mib * 2 ** 20)


def check_capacity(system: System, model: ModelShape, placement: Placement, lay: SystemLayout) -> None:
    """Refuse (one line, the whole truth) a chip whose analog matrices need more crossbar slots than it has, or
    whose digital weights not held in SRAM exceed its DRAM capacity; say how many chips of that kind would do."""
    cap = lay.capacity
    for c in range(system.n_chips):
        chip = system.chip(c)
        need, have = int(cap["slots_needed"][c]), chip_slot_capacity(system, c)
        if need > have:
            kind = system.analog & (system.kind_of_chip == system.kind_of_chip[c])
            rep = int(cap["replicated_slots"][c])
            unique = int((cap["slots_needed"][kind] - cap["replicated_slots"][kind]).sum())
            a = chip.analog
            copies = int(cap["replica_slots"][kind].sum())
            if rep >= have:
                needed = (f"its replicas of the dense modules alone take {rep:,}, so no number of such chips holds "
                          "them; use attention.placement spread or digital-chips")
            else:
                needed = (f"the {int(kind.sum())} {chip.name} chips must hold {unique:,} slots"
                          + (f" ({copies:,} of them hot-expert copies)" if copies else "") + " besides "
                          + (f"{rep:,} slots of dense-module replicas each" if rep else "nothing replicated")
                          + f", i.e. at least {ceil(unique / (have - rep))} such chips")
            mine = int(cap["replica_matrices"][c])
            here = (f", {mine:,} of them copies of hot experts taking {int(cap['replica_slots'][c]):,} slots "
                    f"(experts.replicate_hot {lay.replicate_hot})," if mine else "")
            fix = f"lower experts.replicate_hot ({lay.replicate_hot}) or " if copies else ""
            raise SystemLayoutError(
                f"{system.label(c)} (analog) must hold {need:,} crossbar slots of {a.tile.rows}x{a.tile.cols} "
                f"({int(cap['expert_matrices'][c]):,} routed-expert matrices{here} and its dense modules under policy "
                f"{placement.policy}, layout {lay.layout}, attention {lay.attention}), but has {have:,} "
                f"({a.tile_count:,} tiles x {a.tile.tiers} tiers); {needed}; {fix}`hetmoe system fit --model "
                f"{model.name} --chip {chip.source or chip.name}` sizes the system", role="analog")
        dram = chip.memory.dram.capacity_gib
        weights = float(cap["digital_weight_bytes"][c])
        in_dram = weights - sram_resident_bytes(system, c, weights)
        if dram is not None and in_dram > dram * 2 ** 30:
            kind = system.kind_of_chip == system.kind_of_chip[c]
            total = float(cap["digital_weight_bytes"][kind].sum())
            per_chip = dram * 2 ** 30 + chip.memory.sram.capacity_mib * 2 ** 20
            role = "analog" if system.analog[c] else "digital"
            raise SystemLayoutError(
                f"{system.label(c)} ({role}) must hold {weights / 2**30:,.2f} GiB of digital weights "
                f"({int(cap['digital_matrices'][c]):,} matrices at precision.digital_weight_bits "
                f"{chip.precision.digital_weight_bits}, attention {lay.attention}"
                + (f", {float(cap['replica_weight_bytes'][c]) / 2**30:,.2f} GiB of them copies of hot experts "
                   f"(experts.replicate_hot {lay.replicate_hot})" if cap["replica_weight_bytes"][c] else "")
                + f"), {in_dram / 2**30:,.2f} GiB of them "
                f"beyond its {chip.memory.sram.capacity_mib:g} MiB SRAM, but memory.dram.capacity_gib is {dram:g} GiB; "
                f"the {int(kind.sum())} {chip.name} chips hold {total / 2**30:,.2f} GiB in all, i.e. at least "
                f"{ceil(total / per_chip)} such chips if nothing were replicated; add digital chips, lower --fraction, "
                "or use attention.placement spread", role=role)


def fit_analog_count(system_of: callable, model: ModelShape, placement: Placement, layout: str,
                     expert_tokens: np.ndarray, max_chips: int = 65536) -> tuple[int, int, SystemLayout]:
    """The smallest number K of analog chips for which every chip holds its share: starting from the lower bound
    ``ceil(analog slots / slots per chip)`` (no alignment padding, no replication), K grows until
    :func:`check_capacity` passes. ``system_of(K)`` builds the system with K analog chips. Returns (K, lower
    bound, layout)."""
    probe = system_of(1)
    c = int(probe.analog_chips[0])
    chip = probe.chip(c)
    table = matrix_table(model, placement)
    slots = matrix_slots(table, chip.analog.tile.rows, chip.analog.tile.cols)
    total = int(slots[~table.digital].sum())
    per_chip = chip_slot_capacity(probe, c)
    lower = max(1, ceil(total / per_chip))
    last: Exception | None = None
    for k in range(lower, min(max_chips, lower * 2 + 8) + 1):
        system = system_of(k)
        try:
            lay = build_layout(system, model, placement, layout, expert_tokens)
        except SystemLayoutError as exc:
            last = exc
            if exc.role != "analog":
                raise          # a digital chip that cannot hold its share: more analog chips will not help
            continue
        return k, lower, lay
    raise SystemLayoutError(f"no number of {chip.name} chips up to {k} holds {model.name} under policy "
                            f"{placement.policy}: {last}")
