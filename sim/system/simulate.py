"""A layer-synchronous model of MoE inference on a system of chips (closed forms, no event engine).

**One chip** (a chip preset or chip YAML given as the system): the single-chip simulator runs, unchanged
(:func:`sim.api.simulate`), and its result is returned with a ``system`` section added: there is no
inter-chip traffic, and every counter and the makespan are today's, bit for bit.

**Several chips**: micro-batches come from the single-chip work plan (:func:`sim.engine.workplan.build_plan`:
its ``counts [micro-batch, layer, expert]`` and routes). Micro-batches run one after another and, inside one,
layers run one after another; every chip waits for the slowest at each phase (layer-synchronous: a barrier per
phase, no pipelining across micro-batches except the pairing below). Per micro-batch b and layer l:

- ``A``, attention phase: each attention chip runs the layer's dense modules (attention projections, router,
  shared expert; dense FFN on dense layers; lm_head on the last layer for the micro-batch's lm_head tokens) for
  its tokens, plus the attention score/context MACs (``ModelShape.attention_macs_per_context x`` the
  micro-batch's attended positions, shared by token count) on its SIMD and the KV-cache read from DRAM.
  ``A`` = the slowest attention chip. A digital matrix of n tokens takes the roofline
  ``max(n x out x in / MAC rate, weight bytes / source bandwidth, activation bytes / SRAM bandwidth)``
  (:func:`arch.costs.gemm_latency_ns`; source: SRAM when resident, else DRAM, residency greedy by expected
  use as in :mod:`sim.mapping`); an analog one ``t_mvm + (n - 1) x II`` (its slots on distinct tiles in
  parallel), the dense matrices of a layer one after another.
- ``D``, dispatch, and ``C``, combine: the byte matrices of :mod:`sim.system.alltoall`, routed over the
  topology; each phase takes ``max over links (bytes x 8 / link bandwidth) + max hops x link latency
  (+ switch latency)`` (:func:`sim.system.topology.phase_time_ns`).
- ``E``, expert phase: chip c's time ``E_c`` is, for its analog experts, the largest over them of
  ``(t_mvm + (n_e - 1) II)`` of gate/up (in parallel) plus that of down (experts on distinct tiles run in
  parallel), and for its digital experts the sum of their GEMMs (the SIMD is shared); both kinds on one chip
  run side by side: ``E_c = max(analog, digital)``. ``E = max_c E_c``. A hot expert with an extra copy
  (``experts.replicate_hot``) counts as two experts here, one per copy, each with the tokens it actually
  receives (:func:`sim.system.alltoall.expert_chips`: the copy on the token's home chip, else the primary at
  even and the copy at odd positions of the micro-batch); a copy runs as its expert does (analog or digital).

Layer time: overlap ``none``: ``A + D + E + C``. Overlap ``microbatch`` (DeepSeek-V3's two-micro-batch
overlap): micro-batches run in pairs, and per layer the pair takes ``max(A_0 + E_0 + A_1 + E_1, D_0 + C_0 +
D_1 + C_1)``: the communication of one micro-batch hides behind the computation of the other, the slower
stream sets the pace (the fill of the first phase is not added); an odd last micro-batch runs alone.
The makespan is the sum of the layer times.

Energy is counted per chip as actions (DAC/ADC conversions, cell reads, MACs, vector ops, SRAM and DRAM bytes),
priced by the single-chip :func:`sim.metrics.price` with each chip's static power over the makespan (unused
tiles power-gated as ``analog.power_gate_unused_tiles`` says), plus the interconnect:
``bytes x 8 x (hops x link_energy_pj_per_bit + switch crossings x switch_energy_pj_per_bit)``.

Not modelled here (stated in the result): on-chip NoC traffic of the system path, tier conflicts between
experts of one layer on one chip (their slots are taken as on distinct tiles), softmax/norm vector work,
weight prefetch overlap, link static power, serving under load, and re-placing hot-expert copies during the
run (they are fixed from the whole trace).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from arch import costs
from arch.derived import derived_figures
from arch.errors import HetmoeError
from arch.spec import ChipSpec
from arch.system import System
from sim.engine.workplan import build_plan
from sim.metrics import price
from sim.placement import POLICIES, PlacementContext, place
from workloads.shapes import ModelShape

from .alltoall import expert_chips, homes_of, layer_traffic, token_positions
from .layout import SystemLayout, build_layout, layout_name, replica_matrices
from .topology import build_topology, phase_energy_pj, phase_time_ns

NOT_MODELLED = ("on-chip NoC traffic (the system path; one-chip systems run the full single-chip engine)",
                "tier conflicts between the experts of one layer on one chip (taken as on distinct tiles)",
                "softmax, norm and residual vector work", "weight prefetch overlapping compute",
                "link and switch static power", "serving under load (closed batch only)",
                "re-placing hot-expert copies during the run (vLLM's periodic EPLB rebalancing): the copies are "
                "fixed from the whole trace's tokens per expert", "the SwiGLU activation's vector work")

COUNTERS = ("adc_conversions", "dac_conversions", "array_cell_reads", "local_digital_ops", "simd_macs",
            "simd_vector_ops", "sram_bytes", "dram_bytes", "noc_energy_pj", "noc_router_bits")


@dataclass(frozen=True, eq=False)
class SystemResult:
    data: dict[str, Any]
    wall_s: float = 0.0

    @property
    def metrics(self) -> dict[str, Any]:
        return self.data["metrics"]


def simulate_system(system: System, model: str | ModelShape, trace=None, policy: str = "maxnn", *,
                    fraction: float = 0.125, layout: str = "contiguous", score: str = "gate_rows",
                    scope: str = "layer", mode: str = "prefill", batch: int = 64, seed: int = 0,
                    context_tokens: int = 512, max_inflight: int = 4, fill: str | None = None,
                    checkpoint: str | None = None, stats=None, placement_file: str | None = None,
                    memory=None) -> SystemResult:
    """Run ``model`` on ``system`` (rules in the module docstring) and return the result dict."""
    wall0 = time.perf_counter()
    layout = layout_name(layout)
    if system.single_chip:
        from sim.api import simulate

        r = simulate(system.chip(0), model, trace, policy, fraction=fraction, score=score, scope=scope, mode=mode,
                     batch=batch, seed=seed, context_tokens=context_tokens, max_inflight=max_inflight, fill=fill,
                     checkpoint=checkpoint, stats=stats, placement_file=placement_file, memory=memory)
        data = dict(r.data)
        data["system"] = {"name": system.name, "chips": 1, "single_chip_path": True, "layout": layout,
                          "replicate_hot": system.spec.experts.replicate_hot, "replicas": 0,
                          "note": "a one-chip system runs today's single-chip engine: no inter-chip traffic (and no "
                                  "other chip for a hot expert's copy)"}
        return SystemResult(data, time.perf_counter() - wall0)
    from sim.api import resolve_inputs

    if policy not in POLICIES:
        place(policy, None)      # raises with the list of valid policies
    chip0, shape, tr, st = resolve_inputs(system.chip(0), model, trace, seed=seed, fill=fill, checkpoint=checkpoint,
                                          stats=stats, memory=memory)
    placement = place(policy, PlacementContext(shape, tr, st, fraction, score, scope, seed, placement_file))
    plan = build_plan(tr, shape, mode, batch, context_tokens)
    expert_tokens = plan.counts.sum(axis=0, dtype=np.int64)
    lay = build_layout(system, shape, placement, layout, expert_tokens)
    data = run_layout(system, shape, plan, lay)
    data["config"] = {"system": system.name, "system_source": system.spec.source, "model": shape.name,
                      "policy": policy, "fraction": fraction, "layout": layout, "score": score, "scope": scope,
                      "mode": mode, "batch": batch, "seed": seed, "context_tokens": context_tokens,
                      "trace": tr.meta.get("source"), "scores_synthetic": st.synthetic}
    data["placement"] = placement.summary(shape)
    data["placement"].pop("digital_experts_per_layer", None)      # [layers x experts] is in the layout arrays
    from sim.metrics import exposure
    data["metrics"].update(exposure(tr, shape, placement.digital_experts, st.score(score)))
    return SystemResult(data, time.perf_counter() - wall0)


# ----------------------------------------------------------------------------- per-chip cost tables

@dataclass(frozen=True)
class AnalogCost:
    t_ns: float          # one vector through the matrix's slowest slot
    ii_ns: float         # initiation interval of that slot
    dac: int             # actions of one vector through all the matrix's slots
    adc: int
    cells: int
    adds: int            # digital partial-sum additions per vector


def analog_cost(chip: ChipSpec, out_f: int, in_f: int, cache: dict) -> AnalogCost:
    key = (id(chip), out_f, in_f)
    if key not in cache:
        a, bits = chip.analog, chip.precision.activation_bits
        r, c = min(a.tile.rows, in_f), min(a.tile.cols, out_f)
        dac = adc = cells = 0
        rb, cb = costs.crossbar_blocks(out_f, in_f, a.tile.rows, a.tile.cols)
        rows = [min(a.tile.rows, in_f - i * a.tile.rows) for i in range(rb)]
        cols = [min(a.tile.cols, out_f - j * a.tile.cols) for j in range(cb)]
        for rr in set(rows):
            for cc in set(cols):
                act = costs.mvm_actions(a, bits, rr, cc)
                k = rows.count(rr) * cols.count(cc)
                dac, adc, cells = dac + k * act.dac_conversions, adc + k * act.adc_conversions, cells + k * act.cell_reads
        cache[key] = AnalogCost(costs.mvm_latency_ns(a, bits, r, c), costs.initiation_interval_ns(a, bits, r, c),
                                dac, adc, cells, costs.reduction_adds(out_f, in_f, a.tile.rows))
    return cache[key]


def tile_batch(cost: AnalogCost, n: np.ndarray) -> np.ndarray:
    """``t_mvm + (n - 1) x II`` where n > 0, else 0 (vectorised :func:`arch.costs.tile_batch_latency_ns`)."""
    n = np.asarray(n, np.float64)
    return np.where(n > 0, cost.t_ns + (n - 1) * cost.ii_ns, 0.0)


@dataclass(frozen=True, eq=False)
class ChipRates:
    mac_per_ns: np.ndarray     # [chips]
    sram_gbps: np.ndarray
    dram_gbps: np.ndarray
    act_bits: np.ndarray
    weight_bits: np.ndarray


def chip_rates(system: System) -> ChipRates:
    n = system.n_chips
    kinds = [system.chip(c) for c in range(n)]
    return ChipRates(
        np.array([costs.simd_macs_per_ns(k.digital.simd, k.precision.digital_mac) for k in kinds]),
        np.array([k.memory.sram.bandwidth_gbps for k in kinds]),
        np.array([k.memory.dram.bandwidth_gbps for k in kinds]),
        np.array([k.precision.activation_bits for k in kinds], np.float64),
        np.array([k.precision.digital_weight_bits for k in kinds], np.float64))


def residency(system: System, lay: SystemLayout, uses: np.ndarray) -> np.ndarray:
    """bool [chips, matrices]: the digital matrices each chip holds in SRAM, greedy by expected use (micro-batch
    operations), ties in model order, while they fit ``memory.sram.capacity_mib`` (as :mod:`sim.mapping`)."""
    t = lay.table
    n, m = system.n_chips, t.layer.size
    out = np.zeros((n, m), bool)
    rep = np.flatnonzero(lay.matrix_chip < 0)
    copies, copy_chip = replica_matrices(t, lay.replica_chip)
    dp = set(lay.dp_chips.tolist())
    order = np.argsort(lay.matrix_chip, kind="stable")
    bounds = np.searchsorted(lay.matrix_chip[order], np.arange(n + 1))
    for c in range(n):
        chip = system.chip(c)
        own = order[bounds[c]:bounds[c + 1]]
        idx = np.union1d(own, rep) if c in dp else own
        if copies.size:
            idx = np.union1d(idx, copies[copy_chip == c])       # hot-expert copies held here
        idx = idx[t.digital[idx] | ~system.analog[c]]
        if not idx.size:
            continue
        wbytes = t.params[idx] * chip.precision.digital_weight_bits / 8
        cap = chip.memory.sram.capacity_mib * 2 ** 20
        if wbytes.sum() <= cap:
            out[c, idx[uses[idx] > 0]] = True
            continue
        used = 0.0
        for j in np.lexsort((idx, -uses[idx])).tolist():
            if uses[idx[j]] > 0 and used + wbytes[j] <= cap:
                out[c, idx[j]] = True
                used += wbytes[j]
    return out


def gemm_time(n: np.ndarray, out_f: int, in_f: int, rate: float, wbytes: float, src_gbps: float, act_bits: float,
              sram_gbps: float) -> np.ndarray:
    """Roofline of n tokens through ``W[out, in]`` (0 where n = 0), ns: :func:`arch.costs.gemm_latency_ns`."""
    n = np.asarray(n, np.float64)
    t = np.maximum(np.maximum(n * out_f * in_f / rate, wbytes * 8 / src_gbps),
                   n * (out_f + in_f) * act_bits / 8 * 8 / sram_gbps)
    return np.where(n > 0, t, 0.0)


# ----------------------------------------------------------------------------- the run

def dp_split(n_tokens: np.ndarray, a: int) -> np.ndarray:
    """[micro-batches, a]: tokens of each micro-batch on each of ``a`` data-parallel chips (token i on i mod a)."""
    n = np.asarray(n_tokens, np.int64)[:, None]
    j = np.arange(a)[None, :]
    return n // a + (j < n % a)


def run_layout(system: System, model: ModelShape, plan, lay: SystemLayout) -> dict[str, Any]:
    n, n_mb, L = system.n_chips, plan.n_mb, model.num_layers
    ic = system.spec.interconnect
    topo = build_topology(ic, n)
    t = lay.table
    rates = chip_rates(system)
    counts = plan.counts                                       # int32 [n_mb, L, E]
    mb_tokens = plan.mb_tokens.astype(np.int64)
    uses = np.zeros(t.layer.size, np.int64)
    r = np.flatnonzero(t.routed)
    active = (counts > 0).sum(axis=0)
    uses[r] = active[t.layer[r], t.expert[r]]
    uses[~t.routed] = n_mb
    lm_idx = np.flatnonzero((~t.routed) & (t.layer == L - 1) & (t.expert < 0))
    lm_mask = np.zeros(t.layer.size, bool)
    lm_idx = lm_idx[-1:]                                       # the last matrix of the model is lm_head
    lm_mask[lm_idx] = True
    uses[lm_idx] = int((plan.lm_head_tokens > 0).sum())
    resident = residency(system, lay, uses)
    cache: dict = {}
    C = {k: np.zeros(n) for k in COUNTERS}
    local = np.array([system.chip(c).analog.local_digital is not None for c in range(n)])
    pos = token_positions(plan)
    mb_of = plan.mb_of_token.astype(np.int64)
    attn_ns = np.zeros((n_mb, L))
    expert_ns = np.zeros((n_mb, L))
    dispatch_ns = np.zeros((n_mb, L))
    combine_ns = np.zeros((n_mb, L))
    busy = np.zeros(n)
    attn_tokens = np.zeros(n)
    expert_tokens_chip = np.zeros(n)
    link_bytes = np.zeros(topo.link_count)
    bytes_dispatch = bytes_combine = 0.0
    energy_dispatch = energy_combine = 0.0
    msgs = [0, 0]
    dense_by_layer = [np.flatnonzero((~t.routed) & (t.layer == layer)) for layer in range(L)]
    attn_macs_ctx = model.attention_macs_per_context()
    kv_bytes_tok = model.kv_elements_per_token()

    def add_digital(c: int, m: int, tokens: float, ops: float) -> None:
        """Counters of ``tokens`` through digital matrix m on chip c over ``ops`` uses."""
        chip = system.chip(c)
        wb = t.params[m] * chip.precision.digital_weight_bits / 8
        C["simd_macs"][c] += tokens * t.params[m]
        C["sram_bytes"][c] += tokens * (t.out_features[m] + t.in_features[m]) * chip.precision.activation_bits / 8
        C["sram_bytes" if resident[c, m] else "dram_bytes"][c] += ops * wb

    def add_analog(c: int, cost: AnalogCost, tokens: float) -> None:
        C["dac_conversions"][c] += tokens * cost.dac
        C["adc_conversions"][c] += tokens * cost.adc
        C["array_cell_reads"][c] += tokens * cost.cells
        C["local_digital_ops" if local[c] else "simd_vector_ops"][c] += tokens * cost.adds

    for layer in range(L):
        # --- attention phase: home chips and their token counts [n_mb, A]
        if lay.dense_chip[layer] >= 0:
            homes = np.array([lay.dense_chip[layer]])
            N = mb_tokens[:, None]
            N_lm = plan.lm_head_tokens[:, None]
        else:
            homes = lay.dp_chips
            N = dp_split(mb_tokens, homes.size)
            N_lm = dp_split(plan.lm_head_tokens, homes.size)
        T_attn = np.zeros((n_mb, homes.size))
        for j, c in enumerate(homes.tolist()):
            chip = system.chip(c)
            nj = N[:, j]
            chain = np.zeros(n_mb)
            for m in dense_by_layer[layer].tolist():
                nm = N_lm[:, j] if lm_mask[m] else nj
                tok = float(nm.sum())
                if t.digital[m] or not system.analog[c]:
                    wb = t.params[m] * chip.precision.digital_weight_bits / 8
                    src = rates.sram_gbps[c] if resident[c, m] else rates.dram_gbps[c]
                    chain += gemm_time(nm, int(t.out_features[m]), int(t.in_features[m]), rates.mac_per_ns[c], wb,
                                       src, rates.act_bits[c], rates.sram_gbps[c])
                    add_digital(c, m, tok, float((nm > 0).sum()))
                else:
                    cost = analog_cost(chip, int(t.out_features[m]), int(t.in_features[m]), cache)
                    chain += tile_batch(cost, nm)
                    add_analog(c, cost, tok)
            share = np.divide(nj, mb_tokens, out=np.zeros(n_mb), where=mb_tokens > 0)
            macs = attn_macs_ctx * plan.context_sum * share
            kv = kv_bytes_tok * (plan.kv_prior + mb_tokens) * share * rates.act_bits[c] / 8
            chain += np.maximum(macs / rates.mac_per_ns[c], kv * 8 / rates.dram_gbps[c])
            C["simd_macs"][c] += macs.sum()
            C["dram_bytes"][c] += kv.sum()
            T_attn[:, j] = chain
            busy[c] += chain.sum()
            attn_tokens[c] += nj.sum()
        attn_ns[:, layer] = T_attn.max(axis=1)
        # --- experts
        if layer in model.moe_layers:
            # one column per copy of an expert: the primaries 0..E-1, then the hot experts' extra copies
            cnt = counts[:, layer, :].astype(np.float64)           # [n_mb, copies]: tokens each copy computes
            chip_of = lay.chip_of_expert[layer].astype(np.int64)    # [copies]
            ex_of = np.arange(model.num_experts)                    # [copies]: the expert of each copy
            dig_of = lay.expert_digital[layer]                      # a copy runs as its expert does
            hot = np.flatnonzero(lay.replica_chip[layer] >= 0)
            if hot.size:
                E = model.num_experts
                ex = plan.experts[:, layer, :].astype(np.int64)
                _, to_copy = expert_chips(lay, layer, ex, homes_of(lay, layer, pos), pos)
                key = np.broadcast_to(mb_of[:, None], ex.shape)[to_copy] * E + ex[to_copy]
                moved = np.bincount(key, minlength=n_mb * E).reshape(n_mb, E).astype(np.float64)
                cnt = np.concatenate([cnt - moved, moved[:, hot]], axis=1)
                chip_of = np.concatenate([chip_of, lay.replica_chip[layer][hot].astype(np.int64)])
                ex_of = np.concatenate([ex_of, hot])
                dig_of = np.concatenate([dig_of, dig_of[hot]])
            per_chip = np.zeros((n_mb, n))
            ana = np.zeros((n_mb, n))
            dig = np.zeros((n_mb, n))
            ids = np.arange(ex_of.size)
            h, w = model.hidden_size, model.expert_width
            for kind in np.unique(system.kind_of_chip[chip_of]).tolist():
                chip = system.kinds[kind]
                of_kind = system.kind_of_chip[chip_of] == kind
                a_ids = ids[of_kind & ~dig_of]
                d_ids = ids[of_kind & dig_of]
                if a_ids.size:
                    g = analog_cost(chip, w, h, cache)
                    dn = analog_cost(chip, h, w, cache)
                    te = tile_batch(g, cnt[:, a_ids]) + tile_batch(dn, cnt[:, a_ids])
                    order = np.argsort(chip_of[a_ids], kind="stable")
                    cs = chip_of[a_ids][order]
                    starts = np.flatnonzero(np.r_[True, cs[1:] != cs[:-1]])
                    ana[:, cs[starts]] = np.maximum.reduceat(te[:, order], starts, axis=1)
                    tot = cnt[:, a_ids].sum(axis=0)
                    for cost, k in ((g, 2), (dn, 1)):
                        for field in ("dac", "adc", "cells", "adds"):
                            key = {"dac": "dac_conversions", "adc": "adc_conversions", "cells": "array_cell_reads",
                                   "adds": None}[field]
                            vals = tot * getattr(cost, field) * k
                            if key is None:
                                sel = local[chip_of[a_ids]]
                                np.add.at(C["local_digital_ops"], chip_of[a_ids][sel], vals[sel])
                                np.add.at(C["simd_vector_ops"], chip_of[a_ids][~sel], vals[~sel])
                            else:
                                np.add.at(C[key], chip_of[a_ids], vals)
                if d_ids.size:
                    te = np.zeros((n_mb, d_ids.size))
                    cd = chip_of[d_ids]
                    d_ex = ex_of[d_ids]
                    first = np.flatnonzero(t.routed & (t.layer == layer) & (t.expert == d_ex[0]))
                    for k, (o, i) in enumerate(((w, h), (w, h), (h, w))):
                        mats = first[k] + (d_ex - d_ex[0]) * 3            # gate, up, down of each expert
                        wb = o * i * rates.weight_bits[cd] / 8
                        src = np.where(resident[cd, mats], rates.sram_gbps[cd], rates.dram_gbps[cd])
                        x = cnt[:, d_ids]
                        tm = np.maximum(np.maximum(x * o * i / rates.mac_per_ns[cd], wb * 8 / src),
                                        x * (o + i) * rates.act_bits[cd] / 8 * 8 / rates.sram_gbps[cd])
                        te += np.where(x > 0, tm, 0.0)
                        tot = x.sum(axis=0)
                        ops = (x > 0).sum(axis=0)
                        np.add.at(C["simd_macs"], cd, tot * o * i)
                        np.add.at(C["sram_bytes"], cd, tot * (o + i) * rates.act_bits[cd] / 8)
                        res = resident[cd, mats]
                        np.add.at(C["sram_bytes"], cd[res], (ops * wb)[res])
                        np.add.at(C["dram_bytes"], cd[~res], (ops * wb)[~res])
                    np.add.at(dig.T, cd, te.T)
            per_chip = np.maximum(ana, dig)
            expert_ns[:, layer] = per_chip.max(axis=1)
            busy += per_chip.sum(axis=0)
            np.add.at(expert_tokens_chip, chip_of, cnt.sum(axis=0))
        # --- all-to-all
        traffic = layer_traffic(system, model, plan, lay, layer, pos)
        msgs[0] += traffic.dispatch_messages
        msgs[1] += traffic.combine_messages
        for phase, out in ((traffic.dispatch, dispatch_ns), (traffic.combine, combine_ns)):
            if not phase.any():
                continue
            tp, lb = phase_time_ns(topo, ic, phase)
            out[:, layer] = tp
            link_bytes += lb.sum(axis=0)
        bytes_dispatch += float(traffic.dispatch.sum())
        bytes_combine += float(traffic.combine.sum())
        energy_dispatch += phase_energy_pj(topo, ic, traffic.dispatch)
        energy_combine += phase_energy_pj(topo, ic, traffic.combine)
    # --- the schedule
    compute = attn_ns + expert_ns
    comm = dispatch_ns + combine_ns
    overlap = system.spec.all_to_all.overlap
    if overlap == "none":
        layer_time = compute + comm
        makespan_ns = float(layer_time.sum())
    else:
        pairs = n_mb // 2
        cp = compute[:2 * pairs].reshape(pairs, 2, L).sum(axis=1)
        mp = comm[:2 * pairs].reshape(pairs, 2, L).sum(axis=1)
        makespan_ns = float(np.maximum(cp, mp).sum() + (compute[-1] + comm[-1]).sum() * (n_mb % 2))
    tokens = int(plan.token_order.size)
    # --- energy
    chips_energy = []
    by_domain: dict[str, float] = {}
    cap = lay.capacity
    for c in range(n):
        chip = system.chip(c)
        a = chip.analog
        slots = int(cap["slots_needed"][c]) if system.analog[c] else 0
        if not a.power_gate_unused_tiles:
            powered = a.tile_count
        elif a.slot_order == "pack":
            powered = min(a.tile_count, -(-slots // a.tile.tiers))
        else:
            powered = min(a.tile_count, slots)
        counters = SimpleNamespace(**{k: float(v[c]) for k, v in C.items()})
        e = price(chip, counters, makespan_ns, powered)
        tot = sum(sum(d.values()) for d in e.values())
        chips_energy.append(tot)
        for dom, parts in e.items():
            by_domain[dom] = by_domain.get(dom, 0.0) + sum(parts.values())
    interconnect_pj = energy_dispatch + energy_combine
    total_pj = sum(chips_energy) + interconnect_pj
    seconds = makespan_ns * 1e-9
    energy_j = total_pj * 1e-12
    # --- area
    figures = {k: derived_figures(chip) for k, chip in enumerate(system.kinds)}
    fp = sum(figures[int(k)].get("footprint_mm2", float("nan")) if figures[int(k)].get("area_modelled") else
             float("nan") for k in system.kind_of_chip)
    si = sum(figures[int(k)].get("silicon_mm2", float("nan")) if figures[int(k)].get("area_modelled") else
             float("nan") for k in system.kind_of_chip)
    comm_s = float(comm.sum()) * 1e-9
    exposed_ns = makespan_ns - float(compute.sum())
    exposed_s = (exposed_ns if exposed_ns > 1e-9 * makespan_ns else 0.0) * 1e-9    # float residue of the sums: 0
    busiest_link = int(np.argmax(link_bytes)) if link_bytes.size else -1
    util = busy / makespan_ns if makespan_ns else np.zeros(n)
    busiest_chip = int(np.argmax(busy))
    metrics = {
        "makespan_s": seconds, "makespan_ns": makespan_ns, "tokens": tokens,
        "throughput_tokens_per_s": tokens / seconds if seconds else float("inf"),
        "energy_j": energy_j, "energy_per_token_uj": energy_j / tokens * 1e6 if tokens else float("nan"),
        "average_power_w": energy_j / seconds if seconds else 0.0,
        "tokens_per_s_per_w": tokens / energy_j if energy_j else float("inf"),
        "chips": n, "system_footprint_mm2": fp, "system_silicon_mm2": si,
        "tokens_per_s_per_mm2": (tokens / seconds / fp) if seconds and fp == fp and fp > 0 else float("nan"),
        "all_to_all_dispatch_bytes_per_token": bytes_dispatch / tokens if tokens else 0.0,
        "all_to_all_combine_bytes_per_token": bytes_combine / tokens if tokens else 0.0,
        "all_to_all_time_s": comm_s,
        "all_to_all_time_share": comm_s / seconds if seconds else 0.0,
        "all_to_all_exposed_time_s": exposed_s,
        "all_to_all_exposed_time_share": exposed_s / seconds if seconds else 0.0,
        "interconnect_energy_j": interconnect_pj * 1e-12,
        "all_to_all_energy_share": interconnect_pj / total_pj if total_pj else 0.0,
        "busiest_chip": system.label(busiest_chip), "busiest_chip_utilisation": float(util[busiest_chip]),
        "busiest_link": topo.link_name(busiest_link) if busiest_link >= 0 else None,
        "busiest_link_bytes": float(link_bytes[busiest_link]) if busiest_link >= 0 else 0.0,
        "busiest_link_utilisation": (float(link_bytes[busiest_link]) * 8 / ic.link_bandwidth_gbps / makespan_ns
                                     if busiest_link >= 0 and makespan_ns else 0.0),
    }
    per_chip = {
        "chip": [system.label(c) for c in range(n)],
        "kind": [system.chip(c).name for c in range(n)],
        "role": ["analog" if system.analog[c] else "digital" for c in range(n)],
        "expert_tokens": expert_tokens_chip.tolist(), "attention_tokens": attn_tokens.tolist(),
        "busy_s": (busy * 1e-9).tolist(), "utilisation": util.tolist(),
        "energy_j": (np.asarray(chips_energy) * 1e-12).tolist(),
        "crossbar_slots_used": cap["slots_needed"].tolist(),
        "digital_weight_gib": (cap["digital_weight_bytes"] / 2 ** 30).tolist(),
        "routed_expert_matrices": cap["expert_matrices"].tolist(),
        "replica_expert_matrices": cap["replica_matrices"].tolist(),
        "replica_crossbar_slots": cap["replica_slots"].tolist(),
    }
    return {
        "kind": "hetmoe-system-result",
        "metrics": metrics,
        "system": {"name": system.name, "source": system.spec.source, "chips": n, "counts": system.counts(),
                   "topology": ic.topology, "link_bandwidth_gbps": ic.link_bandwidth_gbps,
                   "link_latency_ns": ic.link_latency_ns, "link_energy_pj_per_bit": ic.link_energy_pj_per_bit,
                   "switch_latency_ns": ic.switch_latency_ns, "switch_energy_pj_per_bit": ic.switch_energy_pj_per_bit,
                   "dims": list(ic.dims) if ic.dims else None, "links": topo.link_count,
                   "dispatch_bits": system.spec.all_to_all.dispatch_bits,
                   "combine_bits": system.spec.all_to_all.combine_bits, "overlap": overlap,
                   "attention": lay.attention, "single_chip_path": False},
        "energy_pj": {"chips_by_domain": by_domain,
                      "interconnect": {"dispatch": energy_dispatch, "combine": energy_combine}},
        "time_s": {"attention": float(attn_ns.sum()) * 1e-9, "experts": float(expert_ns.sum()) * 1e-9,
                   "dispatch": float(dispatch_ns.sum()) * 1e-9, "combine": float(combine_ns.sum()) * 1e-9,
                   "basis": ("phase times summed over micro-batches and layers; overlap none: they add up to the "
                             "makespan; microbatch: per layer and pair max(compute, communication)")},
        "all_to_all": {"dispatch_bytes": bytes_dispatch, "combine_bytes": bytes_combine,
                       "dispatch_messages": msgs[0], "combine_messages": msgs[1]},
        "per_chip": per_chip,
        "layout": {"name": lay.layout, "attention": lay.attention, "attention_chips": lay.dp_chips.tolist(),
                   "dense_chip_per_layer": lay.dense_chip.tolist(), **replica_summary(system, lay)},
        "engine": {"model": "layer-synchronous closed forms (sim/system/simulate.py)", "micro_batches": n_mb,
                   "layers": L, "not_modelled": list(NOT_MODELLED)},
        "model_summary": {"name": model.name, "layers": L, "moe_layers": len(model.moe_layers),
                          "experts": model.num_experts, "top_k": model.top_k, "hidden_size": model.hidden_size},
    }


def replica_summary(system: System, lay: SystemLayout) -> dict[str, Any]:
    """What ``experts.replicate_hot`` added: copies per layer, and the extra crossbar slots and digital weights
    they hold."""
    cap = lay.capacity
    return {"replicate_hot": lay.replicate_hot,
            "replicas_per_layer": (lay.replica_chip >= 0).sum(axis=1).astype(int).tolist(),
            "replicas": int((lay.replica_chip >= 0).sum()),
            "replicas_unplaced": lay.replicas_unplaced,
            "replica_crossbar_slots": int(cap["replica_slots"].sum()),
            "replica_digital_weight_gib": float(cap["replica_weight_bytes"].sum()) / 2 ** 30,
            "replica_rule": ("per MoE layer the replicate_hot experts with the most routed tokens get one extra copy "
                             "on another chip of their group (fewest routed tokens so far, with room); a token uses "
                             "the copy on its home chip, else the primary at even and the copy at odd positions of "
                             "its micro-batch")}


def check_system_args(tokens: int | None) -> None:
    if tokens is not None and tokens < 1:
        raise HetmoeError(f"--tokens {tokens}: allowed an integer >= 1")
