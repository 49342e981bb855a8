"""Map a placement onto the chip (DESIGN §4). Deterministic rules:

- Analog matrices take crossbar slots in model order (layer by layer: attention, router, shared
  expert, routed experts 0..E-1 with gate, up, down), each matrix on consecutive slots starting at
  a multiple of the largest power of two not above its slot count (at most 64), so matrices sit on
  aligned groups of tiles (skipped slots stay empty and are reported). Slot ``s``
  is tile ``s % tile_count``, tier ``s // tile_count``: every tile's tier 0 fills before any tile's
  tier 1, so the experts of one layer sit on different tiles before sharing a tile's tiers, and one
  expert's matrices sit on neighbouring tiles (tiles fill NoC nodes ``tiles_per_node`` at a time).
- A matrix's home node is the node of its first slot; its input arrives there and its reduced
  output leaves from there.
- Digital matrices are SRAM-resident greedily by expected use (micro-batch operations that need
  them, from the work plan), largest use first, ties in model order, while they fit in
  ``memory.sram.capacity_mib``; the rest stream from DRAM at every use.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil
from typing import Any

import numpy as np

from arch import costs
from arch.errors import HetmoeError
from arch.noc import Network, build_network
from arch.spec import ChipSpec
from workloads.shapes import EXPERT, LM_HEAD, ModelShape

from .placement import Placement
from .engine.workplan import WorkPlan


class MappingError(HetmoeError):
    pass


@dataclass(frozen=True, eq=False)
class AnalogMatrix:
    tiles: tuple[int, ...]          # distinct tiles, in slot order
    mvm_ps: tuple[int, ...]         # per tile: sum of its slots' single-vector latency, ps
    ii_ps: tuple[int, ...]          # per tile: sum of its slots' initiation intervals, ps
    groups: tuple[int, ...]         # tile groups (tiles used by exactly the same matrices) it occupies
    group_mvm_ps: tuple[int, ...]   # per group: max over its tiles of mvm_ps
    group_ii_ps: tuple[int, ...]    # per group: max over its tiles of ii_ps
    home: Any                       # NoC node of the first slot
    row_blocks: int
    remote_partial_nodes: tuple[Any, ...]  # nodes (not home) holding slots of this matrix
    dac_per_token: int
    adc_per_token: int
    cells_per_token: int


@dataclass(frozen=True, eq=False)
class Mapping:
    network: Network
    analog: dict[int, AnalogMatrix]   # matrix index -> tiles
    tile_groups: int                  # number of tile groups (contention units)
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


def build_mapping(chip: ChipSpec, model: ModelShape, placement: Placement, plan: WorkPlan) -> Mapping:
    net = build_network(chip.noc)
    a, bits = chip.analog, chip.precision.activation_bits
    rows, cols, T = a.tile.rows, a.tile.cols, a.tile_count
    digital = np.array([placement.is_digital(m) for m in model.matrices], bool)
    needed, pad = slots_needed(model, digital, rows, cols)
    available = T * a.tile.tiers
    if needed > available:
        raise MappingError(
            f"the analog matrices of {model.name} under policy {placement.policy} need {needed:,} crossbar slots of "
            f"{rows}x{cols} (including {pad:,} alignment slots), but {chip.name} has {available:,} ({T:,} tiles x "
            f"{a.tile.tiers} tiers), i.e. {-(-needed // available)} chips of this kind; set analog.tile_count >= "
            f"{-(-needed // a.tile.tiers):,} at {a.tile.tiers} tiers, or analog.tile.tiers >= {-(-needed // T):,} at "
            f"{T:,} tiles (the NoC must hold the tiles: noc.width x noc.height x noc.tiles_per_node), or give more "
            "experts to the digital side (--fraction)")
    placed: dict[int, tuple[dict[int, list[int]], int, int, int]] = {}
    slot = padding = 0
    tier_count: dict[int, int] = {}
    cache: dict[tuple[int, int], tuple[int, int, costs.MvmActions]] = {}
    for i, m in enumerate(model.matrices):
        if digital[i]:
            continue
        shapes = costs.slot_shapes(m.out_features, m.in_features, rows, cols)
        align = _alignment(len(shapes))
        if slot % align:
            padding += align - slot % align
            slot += align - slot % align
        per_tile: dict[int, list[int]] = {}
        dac = adc = cells = 0
        for r, c in shapes:
            if (r, c) not in cache:
                t = costs.mvm_latency_ns(a, bits, r, c)
                ii = costs.initiation_interval_ns(a, bits, r, c)
                cache[r, c] = (round(t * 1000), round(ii * 1000), costs.mvm_actions(a, bits, r, c))
            t_ps, ii_ps, act = cache[r, c]
            tier_count[slot // T] = tier_count.get(slot // T, 0) + 1
            acc = per_tile.setdefault(slot % T, [0, 0])
            acc[0] += t_ps
            acc[1] += ii_ps
            dac, adc, cells = dac + act.dac_conversions, adc + act.adc_conversions, cells + act.cell_reads
            slot += 1
        placed[i] = (per_tile, dac, adc, cells)
    assert slot == needed and padding == pad, "slots_needed must count what the placement loop places"
    # tiles used by exactly the same matrices form one group: one calendar in the engine
    users: dict[int, list[int]] = {}
    for i, (per_tile, *_rest) in placed.items():
        for t in per_tile:
            users.setdefault(t, []).append(i)
    group_of: dict[tuple[int, ...], int] = {}
    tile_group = {t: group_of.setdefault(tuple(u), len(group_of)) for t, u in sorted(users.items())}
    analog: dict[int, AnalogMatrix] = {}
    for i, (per_tile, dac, adc, cells) in placed.items():
        m = model.matrices[i]
        tiles = tuple(per_tile)
        home = net.node_of_tile(tiles[0])
        remote = tuple(dict.fromkeys(net.node_of_tile(t) for t in tiles if net.node_of_tile(t) != home))
        gmax: dict[int, list[int]] = {}
        for t, (a_ps, b_ps) in per_tile.items():
            g = gmax.setdefault(tile_group[t], [0, 0])
            g[0], g[1] = max(g[0], a_ps), max(g[1], b_ps)
        analog[i] = AnalogMatrix(tiles, tuple(v[0] for v in per_tile.values()), tuple(v[1] for v in per_tile.values()),
                                 tuple(gmax), tuple(v[0] for v in gmax.values()), tuple(v[1] for v in gmax.values()),
                                 home, ceil(m.in_features / rows), remote, dac, adc, cells)
    uses = matrix_uses(model, plan)
    wbytes = np.array([m.params * chip.precision.digital_weight_bits / 8 for m in model.matrices])
    resident = np.zeros(len(model.matrices), bool)
    capacity = chip.memory.sram.capacity_mib * 2 ** 20
    used = 0.0
    for i in sorted(np.flatnonzero(digital), key=lambda j: (-uses[j], j)):
        if uses[i] > 0 and used + wbytes[i] <= capacity:
            resident[i] = True
            used += wbytes[i]
    report = {
        "analog_matrices": len(analog), "digital_matrices": int(digital.sum()),
        "crossbar_slots_used": slot, "crossbar_slots_available": available,
        "tiles_used": len(users), "tile_count": T,
        "tier_occupancy_slots": [tier_count.get(k, 0) for k in range(a.tile.tiers)],
        "sram_capacity_bytes": capacity, "sram_resident_bytes": used,
        "sram_resident_matrices": int(resident.sum()),
        "dram_streamed_matrices": int((digital & ~resident & (uses > 0)).sum()),
        "dram_streamed_bytes_per_use": float(wbytes[digital & ~resident & (uses > 0)].sum()),
        "unused_digital_matrices": int((digital & (uses == 0)).sum()),
    }
    report["alignment_padding_slots"] = padding
    report["tile_groups"] = len(group_of)
    return Mapping(net, analog, len(group_of), resident, digital, uses, report)
