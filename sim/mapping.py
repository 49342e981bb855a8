"""Map a placement onto the chip (DESIGN §4). Deterministic rules:

- Analog matrices take crossbar slots in model order (layer by layer: attention, router, shared
  expert, routed experts 0..E-1 with gate, up, down), each matrix on consecutive slots starting at
  a multiple of the largest power of two not above its slot count (at most 64), so matrices sit on
  aligned groups of tiles (skipped slots stay empty and are reported). With ``analog.slot_order:
  spread`` (default) slot ``s`` is tile ``s % tile_count``, tier ``s // tile_count``: every tile's tier 0
  fills before any tile's tier 1, so the experts of one layer sit on different tiles before sharing a
  tile's tiers, and one expert's matrices sit on neighbouring tiles (tiles fill NoC nodes
  ``tiles_per_node`` at a time). With ``pack`` slot ``s`` is tile ``s // tiers``, tier ``s % tiers``:
  the fewest tiles hold matrices, and the rest are power-gated when ``power_gate_unused_tiles`` is on.
- A matrix's slots are listed row-block major (slot j is row block ``j // col_blocks``, column block
  ``j % col_blocks``); its home node is the node of its first slot. Where inputs go, where partial
  sums meet and where outputs leave is the engine's rule (``sim.engine.kernel``).
- Digital matrices are SRAM-resident greedily by expected use (micro-batch operations that need
  them, from the work plan), largest use first, ties in model order, while they fit in
  ``memory.sram.capacity_mib``; the rest stream from DRAM at every use.
- DRAM capacity (``memory.dram.capacity_gib``, when given) must hold the digital weights that are not
  SRAM-resident (``params x precision.digital_weight_bits / 8`` bytes each) plus the KV cache the run
  needs at once (:func:`plan_kv_tokens` for a closed batch; a serving run's scheduler checks each request
  against what the weights leave): else a :class:`MappingError` with needed and available GiB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from arch import costs
from arch.errors import HetmoeError
from arch.noc import Network, build_network
from arch.spec import ChipSpec
from workloads.shapes import EXPERT, LM_HEAD, ModelShape

from .engine.workplan import WorkPlan
from .placement import Placement


class MappingError(HetmoeError):
    pass


@dataclass(frozen=True, eq=False)
class AnalogMatrix:
    first_slot: int                 # crossbar slot of its row block 0, column block 0
    slot_tiles: np.ndarray          # int64 [slots]: tile of each slot, row-block major
    slot_mvm_ps: np.ndarray         # int64 [slots]: single-vector latency of each slot, ps
    slot_ii_ps: np.ndarray          # int64 [slots]: initiation interval of each slot, ps
    row_blocks: int
    col_blocks: int
    home: Any                       # NoC node of the first slot
    dac_per_token: int
    adc_per_token: int
    cells_per_token: int

    @property
    def tiles(self) -> tuple[int, ...]:
        """Distinct tiles, in slot order."""
        return tuple(dict.fromkeys(self.slot_tiles.tolist()))


@dataclass(frozen=True, eq=False)
class Mapping:
    network: Network
    analog: dict[int, AnalogMatrix]   # matrix index -> slots
    tiles_used: np.ndarray            # bool [tile_count]: tiles holding at least one slot
    resident: np.ndarray              # bool [matrices]: digital and SRAM-resident
    digital: np.ndarray               # bool [matrices]
    uses: np.ndarray                  # int [matrices]: micro-batch operations per matrix
    report: dict[str, Any]


def matrix_uses(model: ModelShape, plan: WorkPlan) -> np.ndarray:
    """Micro-batch operations that need each matrix (experts: micro-batches routing to them)."""
    active = (plan.counts > 0).sum(axis=0)          # [layers, experts]
    lm_ops = int((plan.lm_head_tokens > 0).sum())
    out = np.empty(len(model.matrices), np.int64)
    for i, m in enumerate(model.matrices):
        out[i] = active[m.layer, m.expert] if m.module == EXPERT else lm_ops if m.module == LM_HEAD else plan.n_mb
    return out


def _alignment(n_slots: int) -> int:
    """A matrix of ``n_slots`` slots starts at a multiple of the largest power of two <= n (at most 64)."""
    return 1 << min(n_slots.bit_length() - 1, 6)


def slots_needed(model: ModelShape, digital: np.ndarray, rows: int, cols: int) -> tuple[int, int]:
    """(crossbar slots the mapping will place, of which alignment padding) for the analog matrices."""
    slot = padding = 0
    for m, d in zip(model.matrices, digital):
        if d:
            continue
        n = costs.crossbar_slots(m.out_features, m.in_features, rows, cols)
        align = _alignment(n)
        if slot % align:
            padding += align - slot % align
            slot += align - slot % align
        slot += n
    return slot, padding


def _blocks(a, bits: int, out_features: int, in_features: int) -> tuple:
    """Row and column blocks of an ``out x in`` matrix, each slot's MVM latency and initiation interval
    (ps, row-block-major) and the DAC, ADC and cell actions of one input vector."""
    rows, cols = a.tile.rows, a.tile.cols
    rb, cb = costs.crossbar_blocks(out_features, in_features, rows, cols)
    r_used = np.minimum(rows, in_features - np.arange(rb) * rows)
    c_used = np.minimum(cols, out_features - np.arange(cb) * cols)
    mvm, ii = np.empty((rb, cb), np.int64), np.empty((rb, cb), np.int64)
    dac = adc = cells = 0
    for r in np.unique(r_used).tolist():
        for c in np.unique(c_used).tolist():
            t_ps = round(costs.mvm_latency_ns(a, bits, r, c) * 1000)
            ii_ps = round(costs.initiation_interval_ns(a, bits, r, c) * 1000)
            act = costs.mvm_actions(a, bits, r, c)
            sel = np.ix_(r_used == r, c_used == c)
            mvm[sel], ii[sel] = t_ps, ii_ps
            k = int((r_used == r).sum() * (c_used == c).sum())
            dac, adc, cells = dac + k * act.dac_conversions, adc + k * act.adc_conversions, cells + k * act.cell_reads
    mvm.setflags(write=False)
    ii.setflags(write=False)
    return rb, cb, mvm.ravel(), ii.ravel(), dac, adc, cells


def slot_capacity(chip: ChipSpec, model: ModelShape, placement: Placement) -> tuple[int, int, int]:
    """(crossbar slots the placement's analog matrices need, of which alignment padding, slots the chip has):
    the check :func:`build_mapping` makes, cheap enough to run before any simulation or noisy pass."""
    digital = np.array([placement.is_digital(m) for m in model.matrices], bool)
    needed, pad = slots_needed(model, digital, chip.analog.tile.rows, chip.analog.tile.cols)
    return needed, pad, chip.analog.tile_count * chip.analog.tile.tiers


def kv_bytes_per_token(chip: ChipSpec, model: ModelShape) -> float:
    """KV-cache bytes one token keeps over all layers: ``kv_elements_per_token x layers x activation_bits / 8``
    (the engine's attention streams and the serving KV capacity use the same count)."""
    return model.kv_elements_per_token() * model.num_layers * chip.precision.activation_bits / 8


def plan_kv_tokens(plan: WorkPlan) -> tuple[int, str]:
    """The most KV-cache tokens a closed-batch run holds at once, and the rule: decode, the largest step's
    ``sum(position + 1)`` over the sequences decoding together; prefill, the longest request's cache at its
    last chunk (a lower bound: requests whose micro-batches overlap hold theirs too)."""
    if plan.n_mb == 0:
        return 0, "no micro-batches"
    if plan.mode == "decode":
        b = int(np.argmax(plan.context_sum))
        return int(plan.context_sum[b]), (f"the {int(plan.mb_tokens[b])} sequences decoding together at their "
                                          "longest context")
    tokens = int((plan.kv_prior + plan.mb_tokens).max())
    return tokens, "the longest request's prompt, at least one request's cache at a time"


def check_dram_capacity(chip: ChipSpec, model: ModelShape, digital: np.ndarray, resident: np.ndarray,
                        kv_tokens: int = 0, kv_rule: str = "") -> dict[str, Any]:
    """Refuse (:class:`MappingError`, needed vs available GiB and what to change) when the digital weights held
    in DRAM plus ``kv_tokens`` of KV cache exceed ``memory.dram.capacity_gib``; return the figures (also
    when the capacity is not given: then nothing is checked)."""
    bits = chip.precision.digital_weight_bits
    in_dram = np.flatnonzero(digital & ~resident).tolist()
    weights = sum(model.matrices[i].params for i in in_dram) * bits / 8
    per_token = kv_bytes_per_token(chip, model)
    kv = kv_tokens * per_token
    cap = chip.memory.dram.capacity_gib
    info = {"dram_weight_bytes": weights, "dram_weight_matrices": len(in_dram), "kv_tokens": kv_tokens,
            "kv_bytes": kv, "dram_needed_bytes": weights + kv,
            "dram_capacity_bytes": None if cap is None else cap * 2**30}
    if cap is None or weights + kv <= cap * 2**30:
        return info
    need, over = weights + kv, weights + kv - cap * 2**30
    kv_text = (f" plus {_size(kv)} of KV cache ({kv_tokens:,} tokens x {per_token:,.0f} B: {kv_rule})"
               if kv_tokens else "")
    changes = [f"set memory.dram.capacity_gib >= {need / 2**30:,.2f}"]
    weights_fix, kv_fix = over <= weights, over <= kv       # would either side alone be enough?
    if weights and (weights_fix or not kv_fix):
        changes += [f"hold {_size(min(over, weights))} more of the digital weights in SRAM (memory.sram.capacity_mib, "
                    f"now {chip.memory.sram.capacity_mib:g} MiB)",
                    "put fewer experts on the digital side (a lower --fraction, with analog tiles to hold the rest)",
                    f"store them in fewer bits (precision.digital_weight_bits, now {bits})"]
    if kv >= 0.05 * need and (kv_fix or not weights_fix):
        changes.append("run a shorter context (fewer tokens per request, --context-tokens, --batch)")
    changes.append("or spread the model over several chips (hetmoe system fit sizes such a system)")
    raise MappingError(
        f"{model.name} on {chip.name} needs {_size(need)} of DRAM: {_size(weights)} of digital weights not held in "
        f"SRAM ({len(in_dram):,} matrices at precision.digital_weight_bits {bits}){kv_text}, but "
        f"memory.dram.capacity_gib is {cap:g} GiB ({need / 2**30 / cap:,.2f}x); " + "; ".join(changes))


def _size(n_bytes: float) -> str:
    """Bytes in GiB (MiB below 0.1 GiB), for capacity messages."""
    return f"{n_bytes / 2**30:,.2f} GiB" if n_bytes >= 0.1 * 2**30 else f"{n_bytes / 2**20:,.2f} MiB"


def build_mapping(chip: ChipSpec, model: ModelShape, placement: Placement, plan: WorkPlan, *,
                  kv_tokens: int = 0, kv_rule: str = "") -> Mapping:
    """Slots, homes and SRAM residency; refuses a placement that needs more crossbar slots than the chip has,
    or more DRAM than ``memory.dram.capacity_gib`` for its digital weights plus ``kv_tokens`` of KV cache
    (:func:`check_dram_capacity`)."""
    net = build_network(chip.noc)
    a, bits = chip.analog, chip.precision.activation_bits
    rows, cols, T = a.tile.rows, a.tile.cols, a.tile_count
    digital = np.array([placement.is_digital(m) for m in model.matrices], bool)
    needed, pad, available = slot_capacity(chip, model, placement)
    tiers = a.tile.tiers
    pack = a.slot_order == "pack"

    def tile_of(slots: np.ndarray) -> np.ndarray:
        return slots // tiers if pack else slots % T

    def tier_of(slots: np.ndarray) -> np.ndarray:
        return slots % tiers if pack else slots // T
    if needed > 0 and available == 0:
        raise MappingError(f"{chip.name} has no analog tiles, but policy {placement.policy} puts {needed:,} crossbar "
                           "slots of matrices on analog tiles; use policy all-digital on a digital-only system")
    if needed > available:
        raise MappingError(
            f"the analog matrices of {model.name} under policy {placement.policy} need {needed:,} crossbar slots of "
            f"{rows}x{cols} (including {pad:,} alignment slots), but {chip.name} has {available:,} ({T:,} tiles x "
            f"{a.tile.tiers} tiers), i.e. {-(-needed // available)} chips of this kind; set analog.tile_count >= "
            f"{-(-needed // a.tile.tiers):,} at {a.tile.tiers} tiers, or analog.tile.tiers >= {-(-needed // T):,} at "
            f"{T:,} tiles (the NoC must hold the tiles: noc.width x noc.height x noc.tiles_per_node), or give more "
            "experts to the digital side (--fraction); `hetmoe hw fit` writes a system sized for the model")
    analog: dict[int, AnalogMatrix] = {}
    slot = padding = 0
    tier_count = np.zeros(a.tile.tiers, np.int64)
    tiles_used = np.zeros(T, bool)
    shapes: dict[tuple[int, int], tuple] = {}
    starts, sizes = [], []
    for i, m in enumerate(model.matrices):
        if digital[i]:
            continue
        key = (m.out_features, m.in_features)
        if key not in shapes:          # every matrix of one shape has the same blocks, latencies and actions
            shapes[key] = _blocks(a, bits, m.out_features, m.in_features)
        rb, cb, mvm, ii, dac, adc, cells = shapes[key]
        n = rb * cb
        align = _alignment(n)
        if slot % align:
            padding += align - slot % align
            slot += align - slot % align
        tiles = tile_of(np.arange(slot, slot + n, dtype=np.int64))
        analog[i] = AnalogMatrix(slot, tiles, mvm, ii, rb, cb, net.node_of_tile(int(tiles[0])), dac, adc, cells)
        starts.append(slot)
        sizes.append(n)
        slot += n
    if starts:
        all_slots = np.concatenate([np.arange(s0, s0 + k, dtype=np.int64) for s0, k in zip(starts, sizes)])
        tier_count += np.bincount(tier_of(all_slots), minlength=a.tile.tiers)[:a.tile.tiers]
        tiles_used[tile_of(all_slots)] = True
    assert slot == needed and padding == pad, "slots_needed must count what the placement loop places"
    uses = matrix_uses(model, plan)
    wbytes = np.array([m.params * chip.precision.digital_weight_bits / 8 for m in model.matrices])
    resident = np.zeros(len(model.matrices), bool)
    capacity = chip.memory.sram.capacity_mib * 2 ** 20
    used = 0.0
    for i in sorted(np.flatnonzero(digital), key=lambda j: (-uses[j], j)):
        if uses[i] > 0 and used + wbytes[i] <= capacity:
            resident[i] = True
            used += wbytes[i]
    dram = check_dram_capacity(chip, model, digital, resident, kv_tokens, kv_rule)
    report = {
        "analog_matrices": len(analog), "digital_matrices": int(digital.sum()),
        "crossbar_slots_used": slot, "crossbar_slots_available": available,
        "tiles_used": int(tiles_used.sum()), "tile_count": T,
        "tiles_powered": int(tiles_used.sum()) if a.power_gate_unused_tiles else T,
        "tier_occupancy_slots": tier_count.tolist(),
        "sram_capacity_bytes": capacity, "sram_resident_bytes": used,
        "sram_resident_matrices": int(resident.sum()),
        "dram_streamed_matrices": int((digital & ~resident & (uses > 0)).sum()),
        "dram_streamed_bytes_per_use": float(wbytes[digital & ~resident & (uses > 0)].sum()),
        "unused_digital_matrices": int((digital & (uses == 0)).sum()),
    }
    report["alignment_padding_slots"] = padding
    report["dram_capacity"] = dram
    return Mapping(net, analog, tiles_used, resident, digital, uses, report)
