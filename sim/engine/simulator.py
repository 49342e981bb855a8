"""The discrete-event engine (DESIGN §5): SimPy for the pipeline, a compiled scheduler for each stage.

Time is integer picoseconds; every operation's closed-form duration (from :mod:`arch.costs`) is
rounded to the nearest ps once.

Granularity: one SimPy process per micro-batch (prefill; at most ``max_inflight`` in the pipeline
at once, admitted in order) or one for the decode loop; per layer two stages (attention, then
FFN/MoE) each end in one timeout. A stage's operations are laid out when the stage starts, in a
fixed order (attention projections, core, o_proj; router, shared expert, routed experts by id,
combine), like a compiled static schedule, by one call into :mod:`sim.engine.kernel` (its
docstring states the per-slot, reduction, weight-stream (prefetch) and tie-break rules).

Resources with contention, each a reservation calendar: every analog tile (one MVM at a time
whatever the tier), every node's local digital unit (partial-sum adds and activations), the SIMD
cores (a digital operation is spread over all of them, so they are one gang), every directed NoC
link (a message holds every link of its path for its serialisation time), every DRAM channel.
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass, field
from types import ModuleType, SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np
import simpy

from arch import costs
from arch.errors import HetmoeError
from arch.spec import OP_PS, SPAN_PS, SPAN_TEXT, ChipSpec
from workloads.shapes import ATTENTION, DENSE, EXPERT, LM_HEAD, ROUTER, SHARED, ModelShape

from . import kernel as K
from .kernels import compile_notice, load
from .workplan import WorkPlan

if TYPE_CHECKING:  # the engine reads a Mapping; it never builds one
    from ..mapping import Mapping

MODULE_CODE = {ATTENTION: K.MOD_ATTENTION, ROUTER: K.MOD_ROUTER, SHARED: K.MOD_SHARED, EXPERT: K.MOD_EXPERT,
               DENSE: K.MOD_DENSE, LM_HEAD: K.MOD_LM_HEAD}
# Live intervals a calendar row holds before it drops finished ones (and, if still full, closes its
# earliest gap, which can only delay later operations): per resource kind. Sized on the heaviest
# preset case we know (Mixtral-8x7B all-analog on aimc-3d-moe at 256 tiers, 512 tokens, micro-batch 64):
# 1 gap closed in 5.1 M bookings; with 16 per link 560,053 were, and the makespan came out 82 % long.
# Rows shrink (halving, not below MIN_CAPACITY) when all calendars together would pass
# CALENDAR_BUDGET_BYTES, as on NoCs of a million links.
CAPACITY = {"tile": 64, "local_digital": 128, "link": 256, "simd": 1024, "dram": 256}
MIN_CAPACITY = {"tile": 16, "local_digital": 32, "link": 16, "simd": 1024, "dram": 256}
CALENDAR_BUDGET_BYTES = 256 * 2**20
INTERVAL_BYTES = 16                      # one live interval: start and end, int64 ps


def calendar_capacity(rows: dict[str, int], budget_bytes: int = CALENDAR_BUDGET_BYTES) -> dict[str, int]:
    """Intervals per calendar row for each resource kind, given how many rows of each kind hold any:
    :data:`CAPACITY`, halved kind by kind (the kind with the most bytes first, never below
    :data:`MIN_CAPACITY`) until all rows together fit ``budget_bytes``."""
    cap = dict(CAPACITY)

    def total() -> int:
        return sum(rows.get(k, 0) * c for k, c in cap.items()) * INTERVAL_BYTES

    while total() > budget_bytes:
        shrinkable = [k for k in cap if cap[k] // 2 >= MIN_CAPACITY[k] and rows.get(k, 0)]
        if not shrinkable:
            break
        k = max(shrinkable, key=lambda kind: (rows[kind] * cap[kind], kind))
        cap[k] //= 2
    return cap


assert (K.SPAN_PS, K.OP_PS) == (SPAN_PS, OP_PS), "sim.engine.kernel's clock limits must equal arch.spec's"


class SpanError(HetmoeError):
    """The simulated time would pass what the engine's int64 picosecond clock carries (arch.spec.SPAN_PS)."""


def ps(ns: float) -> int:
    """Nanoseconds -> integer picoseconds (the engine's clock quantum), rounded half up."""
    return int(ns * 1000.0 + 0.5)


@dataclass
class Counters:
    """Action counts; energy is priced from these afterwards (:mod:`sim.metrics`)."""

    adc_conversions: float = 0.0
    dac_conversions: float = 0.0
    array_cell_reads: float = 0.0
    simd_macs: float = 0.0
    simd_vector_ops: float = 0.0
    local_digital_ops: float = 0.0
    sram_bytes: float = 0.0
    dram_bytes: float = 0.0
    noc_bit_hops: float = 0.0
    noc_energy_pj: float = 0.0          # link energy; per-link energies differ on graph topologies
    noc_router_bits: float = 0.0        # bits x routers crossed (h + 1 per message of h hops)
    routed_expert_macs_analog: float = 0.0
    routed_expert_macs_digital: float = 0.0
    routed_expert_weight_bytes_moved: float = 0.0


COUNTER_INDEX = {"adc_conversions": K.C_ADC, "dac_conversions": K.C_DAC, "array_cell_reads": K.C_CELLS,
                 "simd_macs": K.C_MACS, "simd_vector_ops": K.C_VEC, "local_digital_ops": K.C_LD,
                 "sram_bytes": K.C_SRAM, "dram_bytes": K.C_DRAM, "noc_bit_hops": K.C_BITHOPS,
                 "noc_energy_pj": K.C_NOC_PJ, "noc_router_bits": K.C_ROUTER_BITS,
                 "routed_expert_macs_analog": K.C_EXP_MACS_A, "routed_expert_macs_digital": K.C_EXP_MACS_D,
                 "routed_expert_weight_bytes_moved": K.C_EXP_WBYTES}


REC_COLUMNS = 7      # resource, start ps, end ps, label, aux, micro-batch, layer (num_layers: the output head)
# stage indices of Timeline.stages: 0 attention, 1 norm+router, 2 experts, 3 combine, 4 output head


@dataclass
class Timeline:
    """Optional per-operation records for the Chrome trace: (resource, start_ps, end_ps, label, micro-batch,
    layer); and per micro-batch and layer the stage spans (micro-batch, layer, stage index (above),
    start_ps, end_ps), each stage waiting for the one before it (the critical path of a micro-batch)."""

    records: list[tuple[str, int, int, str, int, int]] = field(default_factory=list)
    stages: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    dropped: int = 0


def _csr(lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    ptr = np.zeros(len(lists) + 1, np.int64)
    ptr[1:] = np.cumsum([len(x) for x in lists])
    flat = np.fromiter((v for x in lists for v in x), np.int64, count=int(ptr[-1]))
    return ptr, flat


INT_TABLES = ("pair_path path_ptr path_links dram_route m_in m_out m_params m_module m_analog m_resident m_rb m_cb "
              "s_ptr s_tile s_mvm s_ii s_mn s_cbn mn_ptr mn_node mn_rows mnr_ptr mnr_rb mn_disp mn_group cbn_ptr cbn_cb "
              "cbn_node cbn_k cb_ptr cb_site cb_nodes gp_ptr gp_node gp_rows l_group ex_ptr ex_q ex_g ex_u ex_d la_ptr "
              "la_mat la_first l_oproj l_router l_dense l_shared").split()
FLOAT_TABLES = "link_bw link_pj m_dac m_adc m_cells".split()
SCALARS = ("T N n_dram r_ld0 r_link0 r_simd r_dram0 simd_node mesh_w mesh_h router_ps dram_route_n dram_route_pj "
           "dram_stream_gbps dram_lat_ns dram_hops_ns act_bytes psum_bytes wbits mac_rate vec_rate ld_rate sram_gbps "
           "prefetch staging_half_bytes rows cols H E top_k num_heads attn_macs_per_ctx kv_per_token lm_head").split()
SCRATCH_INT = "path mn_ready cbn_t out_t out_node disp_n disp_stamp disp_t agg_t agg_list".split()
# The kernel's tables: every integer table (2-D ones row-major) lives in the int64 array I and every float
# table in the float64 array F; the field of the same name is that table's offset (few arrays cross each
# call, which keeps calls cheap). Scratch space lives in the state: int64 S (S[0:8] misc: bookings, gaps
# closed, records, queued output nodes, router done and experts done of the last FFN stage, the micro-batch and the
# layer a timeline row is booked for; S[8:10] the prefetch buffers' last ends; S[10] the clock-overflow flag
# (kernel.S_OVERFLOW); then o_<name>
# offsets) and float64 C (counters, then the GEMM cost buffer o_fbuf, then per-node bytes o_agg_b, then the bytes
# each DRAM channel delivered o_dram_bytes, then the bits each NoC link carried o_link_bits).
Tables = namedtuple("Tables", "I F P")     # P: one record holding every scalar and offset, by name
State = namedtuple("State", "cal ivl rec S C")
Plan = namedtuple("Plan", "counts experts mb_start context_sum kv_prior")


def scalars(tb: Tables) -> SimpleNamespace:
    """The scalars and offsets of ``tb.P`` as plain Python values, by name (for Python-side code)."""
    return SimpleNamespace(**{k: tb.P[0][k].item() for k in tb.P.dtype.names})


def _pack(tables: dict, dtype: type) -> tuple[np.ndarray, dict[str, int]]:
    offsets, parts, at = {}, [], 0
    for name, arr in tables.items():
        flat = np.ascontiguousarray(arr, dtype).ravel()
        offsets[name] = at
        parts.append(flat)
        at += flat.size
    return (np.concatenate(parts) if parts else np.zeros(0, dtype)), offsets


def _slot_layout(nodes: list[int], cb: int, rows: int, in_features: int) -> tuple:
    """Where one analog matrix's slots sit, relative to the matrix: per slot its input-node entry and its
    (column block, node) entry; per input node (first-appearance order) the node, the input rows it needs
    and its row blocks; per (column block, node) entry the block, node and slot count; per column block
    its reduction site (the node of its row-block-0 slot) and how many nodes hold its slots."""
    mn_index: dict[int, int] = {}
    cbn_index: dict[tuple[int, int], int] = {}
    rbs_at: dict[int, list[int]] = {}
    s_mn, s_cbn, cbn_cb, cbn_node, cbn_k = [], [], [], [], []
    for j, node in enumerate(nodes):
        r, c = divmod(j, cb)
        if node not in mn_index:
            mn_index[node] = len(mn_index)
            rbs_at[node] = []
        if r not in rbs_at[node]:
            rbs_at[node].append(r)
        if (c, node) not in cbn_index:
            cbn_index[c, node] = len(cbn_index)
            cbn_cb.append(c)
            cbn_node.append(node)
            cbn_k.append(0)
        cbn_k[cbn_index[c, node]] += 1
        s_mn.append(mn_index[node])
        s_cbn.append(cbn_index[c, node])
    mn_node = list(mn_index)
    mn_rows = [sum(min(rows, in_features - r * rows) for r in rbs_at[node]) for node in mn_node]
    mnr = [sorted(rbs_at[node]) for node in mn_node]
    cb_site = [nodes[c] for c in range(cb)]
    cb_nodes = [sum(1 for (cc, _n) in cbn_index if cc == c) for c in range(cb)]
    return s_mn, s_cbn, mn_node, mn_rows, mnr, cbn_cb, cbn_node, cbn_k, cb_site, cb_nodes


def build_tables(chip: ChipSpec, model: ModelShape, mapping: Mapping) -> tuple[tuple, dict]:
    """Static per-matrix, per-slot, per-layer and NoC tables the kernel reads (a named tuple), and
    the sizes the state arrays need."""
    net = mapping.network
    a, p, mem = chip.analog, chip.precision, chip.memory
    rows, cols = a.tile.rows, a.tile.cols
    T, N, Lk = a.tile_count, net.node_count, net.link_count
    ld = a.local_digital
    M = len(model.matrices)
    m_in = np.array([m.in_features for m in model.matrices], np.int64)
    m_out = np.array([m.out_features for m in model.matrices], np.int64)
    m_params = np.array([m.params for m in model.matrices], np.int64)
    m_module = np.array([MODULE_CODE.get(m.module, K.MOD_OTHER) for m in model.matrices], np.int64)
    m_analog = np.zeros(M, bool)
    m_rb, m_cb = np.ones(M, np.int64), np.ones(M, np.int64)
    m_dac, m_adc, m_cells = np.zeros(M), np.zeros(M), np.zeros(M)
    s_lists: dict[str, list] = {k: [] for k in ("tile", "mvm", "ii", "mn", "cbn")}
    s_ptr, mn_ptr, cbn_ptr, cb_ptr = (np.zeros(M + 1, np.int64) for _ in range(4))
    mn_node, mn_rows, mnr = [], [], []
    cbn_cb, cbn_node, cbn_k = [], [], []
    cb_site, cb_nodes = [], []
    layouts: dict[tuple, tuple] = {}
    for i in range(M):
        am = mapping.analog.get(i)
        if am is not None:
            m_analog[i] = True
            rb, cb = am.row_blocks, am.col_blocks
            m_rb[i], m_cb[i] = rb, cb
            m_dac[i], m_adc[i], m_cells[i] = am.dac_per_token, am.adc_per_token, am.cells_per_token
            key = (am.slot_tiles.tobytes(), cb, int(m_in[i]))
            if key not in layouts:          # tiers repeat the same tile pattern: lay each pattern out once
                layouts[key] = _slot_layout(net.tile_node_id(am.slot_tiles).tolist(), cb, rows, int(m_in[i]))
            lay = layouts[key]
            s_lists["tile"].extend(am.slot_tiles.tolist())
            s_lists["mvm"].extend(am.slot_mvm_ps.tolist())
            s_lists["ii"].extend(am.slot_ii_ps.tolist())
            s_lists["mn"].extend(int(mn_ptr[i]) + x for x in lay[0])
            s_lists["cbn"].extend(int(cbn_ptr[i]) + x for x in lay[1])
            mn_node.extend(lay[2])
            mn_rows.extend(lay[3])
            mnr.extend(lay[4])
            cbn_cb.extend(lay[5])
            cbn_node.extend(lay[6])
            cbn_k.extend(lay[7])
            cb_site.extend(lay[8])
            cb_nodes.extend(lay[9])
        s_ptr[i + 1] = len(s_lists["tile"])
        mn_ptr[i + 1] = len(mn_node)
        cbn_ptr[i + 1] = len(cbn_cb)
        cb_ptr[i + 1] = len(cb_site)
    mnr_ptr, mnr_rb = _csr(mnr)

    # per layer: attention matrices, router, shared expert, dense FFN, routed experts
    L, E = model.num_layers, model.num_experts
    by_layer: dict[tuple[int, str], list[int]] = {}
    for i, m in enumerate(model.matrices):
        by_layer.setdefault((m.layer, m.module), []).append(i)
    la = [by_layer[(layer, ATTENTION)][:-1] for layer in range(L)]
    la_ptr, la_mat = _csr(la)
    la_first = np.array([m_in[i] == model.hidden_size for i in la_mat], bool)
    l_oproj = np.array([by_layer[(layer, ATTENTION)][-1] for layer in range(L)], np.int64)
    l_router = np.array([by_layer[(layer, ROUTER)][0] if (layer, ROUTER) in by_layer else -1 for layer in range(L)],
                        np.int64)
    l_dense = np.full((L, 3), -1, np.int64)
    l_shared = np.full((L, 4), -1, np.int64)
    for layer in range(L):
        if (layer, DENSE) in by_layer:
            l_dense[layer] = by_layer[(layer, DENSE)][:3]
        sh = by_layer.get((layer, SHARED), [])
        l_shared[layer, :len(sh)] = sh[:4]
    ex = np.full((L, max(E, 1), 3), -1, np.int64)
    for i, m in enumerate(model.matrices):
        if m.module == EXPERT:
            k = int((ex[m.layer, m.expert] >= 0).sum())
            ex[m.layer, m.expert, k] = i
    lm_head = by_layer[(-1, LM_HEAD)][0]

    # dispatch groups: the nodes a chain's input goes to, with the rows (union of row blocks) each needs
    mn_disp = np.full(len(mn_node), -1, np.int64)
    mn_group = np.full(len(mn_node), -1, np.int64)
    gp_node, gp_rows, gp_ptr = [], [], [0]
    l_group = np.full(L, -1, np.int64)
    ex_need: list[list[int]] = [[] for _ in range(L * max(E, 1))]

    def group(chains: list[tuple[int, int]]) -> int:
        """One dispatch group over the gate/up matrices of ``chains`` ((gate, up) pairs); returns its id."""
        gid = len(gp_ptr) - 1
        base = len(gp_node)
        rbs: dict[int, set[int]] = {}
        for g, u in chains:
            for mi in (g, u):
                for j in range(mn_ptr[mi], mn_ptr[mi + 1]):
                    rbs.setdefault(mn_node[j], set()).update(mnr[j])
        index = {}
        for node, rset in rbs.items():
            index[node] = base + len(index)
            gp_node.append(node)
            gp_rows.append(sum(min(rows, model.hidden_size - r * rows) for r in rset))
        for g, u in chains:
            for mi in (g, u):
                for j in range(mn_ptr[mi], mn_ptr[mi + 1]):
                    mn_disp[j] = index[mn_node[j]]
                    mn_group[j] = gid
        gp_ptr.append(len(gp_node))
        return gid

    for layer in range(L):
        for chain in (l_dense[layer], l_shared[layer]):
            if chain[0] >= 0 and m_analog[chain[0]]:
                group([(int(chain[0]), int(chain[1]))])
        if l_router[layer] >= 0:
            routed = [(int(ex[layer, e, 0]), int(ex[layer, e, 1])) for e in range(E) if m_analog[ex[layer, e, 0]]]
            if routed:
                l_group[layer] = group(routed)
                for e in range(E):
                    g, u = int(ex[layer, e, 0]), int(ex[layer, e, 1])
                    if m_analog[g]:
                        ex_need[layer * E + e] = sorted({int(mn_disp[j]) for mi in (g, u)
                                                         for j in range(mn_ptr[mi], mn_ptr[mi + 1])})
    ex_ptr, ex_q = _csr(ex_need)

    # NoC: graph topologies get a path table over the nodes the run touches; meshes route arithmetically
    mesh = chip.noc.topology == "mesh"
    if mesh:
        pair_path = np.zeros((0, 0), np.int64)
        path_ptr, path_links = np.zeros(1, np.int64), np.zeros(0, np.int64)
        max_hops = max(1, net.spec.width + net.spec.height - 2)
    else:
        used = sorted({net.simd_id, net.dram_id, *mn_node})
        pair_path = np.full((N, N), -1, np.int64)
        paths = []
        for u in used:
            for v in used:
                pair_path[u, v] = len(paths)
                paths.append(net.path_ids(u, v).tolist())
        path_ptr, path_links = _csr(paths)
        max_hops = max([len(x) for x in paths] + [1])
    dram_route = (net.path_ids(net.dram_id, net.simd_id) if mem.dram.attachment == "noc"
                  else np.zeros(0, np.int64))
    dram_gbps = mem.dram.bandwidth_gbps
    if dram_route.size:
        dram_gbps = min(dram_gbps, float(net.link_bandwidth[dram_route].min()))

    simd = chip.digital.simd
    scalars = dict(
        T=T, N=N, n_dram=mem.dram.channels, r_ld0=T, r_link0=T + (N if ld else 0),
        r_simd=T + (N if ld else 0) + Lk, r_dram0=T + (N if ld else 0) + Lk + 1,
        simd_node=net.simd_id, mesh_w=net.spec.width if mesh else 0, mesh_h=net.spec.height if mesh else 0,
        router_ps=chip.noc.router_latency_ns * 1000.0, dram_route_n=int(dram_route.size),
        dram_route_pj=float(net.link_energy[dram_route].sum()),
        dram_stream_gbps=float(dram_gbps), dram_lat_ns=float(mem.dram.latency_ns),
        dram_hops_ns=float(dram_route.size * chip.noc.router_latency_ns),
        act_bytes=p.activation_bits / 8, psum_bytes=p.partial_sum_bits / 8, wbits=float(p.digital_weight_bits),
        mac_rate=float(costs.simd_macs_per_ns(simd, p.digital_mac)), vec_rate=float(costs.simd_vector_ops_per_ns(simd)),
        ld_rate=float(ld.ops_per_cycle * ld.clock_ghz) if ld else 0.0,
        sram_gbps=float(mem.sram.bandwidth_gbps), prefetch=bool(mem.sram.prefetch),
        staging_half_bytes=mem.sram.staging_mib * 2 ** 20 / 2, rows=rows, cols=cols,
        H=model.hidden_size, E=E, top_k=model.top_k, num_heads=model.num_heads,
        attn_macs_per_ctx=float(model.attention_macs_per_context()), kv_per_token=float(model.kv_elements_per_token()),
        lm_head=lm_head)
    ints = dict(
        pair_path=pair_path, path_ptr=path_ptr, path_links=path_links, dram_route=dram_route,
        m_in=m_in, m_out=m_out, m_params=m_params, m_module=m_module, m_analog=m_analog,
        m_resident=np.asarray(mapping.resident, bool), m_rb=m_rb, m_cb=m_cb,
        s_ptr=s_ptr, s_tile=s_lists["tile"], s_mvm=s_lists["mvm"], s_ii=s_lists["ii"], s_mn=s_lists["mn"],
        s_cbn=s_lists["cbn"], mn_ptr=mn_ptr, mn_node=mn_node, mn_rows=mn_rows, mnr_ptr=mnr_ptr, mnr_rb=mnr_rb,
        mn_disp=mn_disp, mn_group=mn_group, cbn_ptr=cbn_ptr, cbn_cb=cbn_cb, cbn_node=cbn_node, cbn_k=cbn_k,
        cb_ptr=cb_ptr, cb_site=cb_site, cb_nodes=cb_nodes, gp_ptr=gp_ptr, gp_node=gp_node, gp_rows=gp_rows,
        l_group=l_group, ex_ptr=ex_ptr, ex_q=ex_q, ex_g=ex[:, :, 0], ex_u=ex[:, :, 1], ex_d=ex[:, :, 2],
        la_ptr=la_ptr, la_mat=la_mat, la_first=la_first, l_oproj=l_oproj, l_router=l_router, l_dense=l_dense,
        l_shared=l_shared)
    floats = dict(link_bw=net.link_bandwidth, link_pj=net.link_energy, m_dac=m_dac, m_adc=m_adc, m_cells=m_cells)
    I, i_off = _pack(ints, np.int64)
    F, f_off = _pack(floats, np.float64)
    max_cb = int(m_cb.max(initial=1))
    groups = max(len(gp_node), 1)
    sizes = dict(path=max_hops + 1, mn_ready=int(np.diff(mn_ptr).max(initial=1)),
                 cbn_t=int(np.diff(cbn_ptr).max(initial=1)), out_t=3 * max_cb, out_node=3 * max_cb,
                 disp_n=groups, disp_stamp=groups, disp_t=groups, agg_t=N, agg_list=N)
    at, o = K.S_OVERFLOW + 1, {}                 # S[0:10] misc and prefetch ends, S[10] the overflow flag
    for name in SCRATCH_INT:
        o[f"o_{name}"] = at
        at += sizes[name]
    sizes["S"] = at
    sizes["C"] = K.N_COUNTERS + 2 + N + mem.dram.channels + Lk
    fields = dict(max_cb=max_cb, o_fbuf=K.N_COUNTERS, o_agg_b=K.N_COUNTERS + 2,
                  o_dram_bytes=K.N_COUNTERS + 2 + N, o_link_bits=K.N_COUNTERS + 2 + N + mem.dram.channels,
                  **scalars, **i_off, **f_off, **o)
    P = np.zeros(1, dtype=[(k, np.float64 if isinstance(v, float) else np.int64) for k, v in fields.items()])
    for k, v in fields.items():
        P[0][k] = v
    return Tables(I, F, P), sizes


def build_state(chip: ChipSpec, mapping: Mapping, tb: tuple, sizes: dict, timeline: bool) -> tuple[State, dict]:
    """Calendars (one row per resource, capacity by kind; unused tiles and local units get none) and
    scratch arrays; with the capacity per kind (:func:`calendar_capacity`)."""
    net = mapping.network
    q = scalars(tb)
    T, N = q.T, q.N
    hosts = np.zeros(N, bool)
    if q.ld_rate > 0:
        hosts[net.tile_node_id(np.flatnonzero(mapping.tiles_used))] = True
    per_kind = calendar_capacity({"tile": int(mapping.tiles_used.sum()), "local_digital": int(hosts.sum()),
                                  "link": q.r_simd - q.r_link0, "simd": 1, "dram": q.n_dram})
    cap = np.zeros(q.r_dram0 + q.n_dram, np.int64)
    cap[:T] = np.where(mapping.tiles_used, per_kind["tile"], 0)
    cap[q.r_ld0:q.r_ld0 + N] = np.where(hosts, per_kind["local_digital"], 0)
    cap[q.r_link0:q.r_simd] = per_kind["link"]
    cap[q.r_simd] = per_kind["simd"]
    cap[q.r_dram0:] = per_kind["dram"]
    off = np.zeros(cap.size, np.int64)
    off[1:] = np.cumsum(cap)[:-1]
    total = int(cap.sum())
    R = cap.size
    cal = np.zeros((R, 4), np.int64)
    cal[:, 0], cal[:, 1] = off, cap
    S = np.zeros(sizes["S"], np.int64)
    S[q.o_disp_stamp:q.o_disp_stamp + sizes["disp_stamp"]] = -1
    return State(cal, np.zeros((total, 2), np.int64), np.zeros((1 << 16 if timeline else 0, REC_COLUMNS), np.int64), S,
                 np.zeros(sizes["C"])), per_kind


class Engine:
    def __init__(self, chip: ChipSpec, model: ModelShape, mapping: Mapping, plan: WorkPlan,
                 timeline: Timeline | None = None, max_inflight: int = 4, kernels: ModuleType | None = None,
                 progress: object | None = None) -> None:
        """``progress``: anything with ``update(n)`` (a tqdm bar), advanced once per layer of a micro-batch."""
        self.chip, self.model, self.map, self.plan = chip, model, mapping, plan
        self.max_inflight = max_inflight
        self.env = simpy.Environment()
        self.timeline = timeline
        self.progress = progress
        self.net = mapping.network
        self.tb, sizes = build_tables(chip, model, mapping)
        self.k = kernels or load()
        self.q = scalars(self.tb)
        self.st, self.calendar_capacity = build_state(chip, mapping, self.tb, sizes, timeline is not None)
        self.pl = Plan(plan.counts, plan.experts, plan.mb_start, plan.context_sum, plan.kv_prior)
        self._check_slot_times()
        self.mb_start_ps = [0] * plan.n_mb
        self.mb_end_ps = [0] * plan.n_mb
        self.layer_visits = [0] * plan.n_mb
        # stage spans summed over micro-batches, ps (decode: they partition the makespan)
        self.split_ps = {"attention": 0, "norm_router": 0, "experts": 0, "combine": 0, "lm_head": 0}

    @property
    def k(self) -> ModuleType:
        """The kernel namespace: compiled, or the plain-Python reference."""
        return self._k

    @k.setter
    def k(self, kernels: ModuleType) -> None:
        # compiled code reads P's fields from a structured array; plain Python needs attribute access
        compiled = kernels is not K
        self.tb = self.tb._replace(P=self.tb.P.view(np.ndarray) if compiled else self.tb.P.view(np.recarray))
        self._k = kernels

    # ----------------------------------------------------------------------- the clock's span
    def _check_slot_times(self) -> None:
        """A tile booking lasts ``t_mvm + (n - 1) x II`` for ``n`` vectors (at most a micro-batch's tokens); the
        longest must fit one operation of the clock (arch.spec.OP_PS), or the kernel's int64 sum would wrap."""
        n = int(np.max(self.plan.mb_tokens, initial=1))
        worst = 0
        for am in self.map.analog.values():
            if am.slot_mvm_ps.size:
                worst = max(worst, int(am.slot_mvm_ps.max()) + (n - 1) * int(am.slot_ii_ps.max()))
        if worst > OP_PS:
            raise SpanError(f"one tile's work for a micro-batch of {n:,} tokens takes {worst / 1e12:.4g} s (MVM "
                            "latency + (tokens - 1) x analog.tile.initiation_interval_ns); allowed: at most 2^60 ps "
                            f"({OP_PS / 1e12 / 86400:.1f} days) per operation: {SPAN_TEXT}. Use a smaller --batch or "
                            "faster analog times")

    def _check_span(self, t: int, what: str, b: int) -> None:
        """Refuse a stage whose end ``t`` (ps) or any booking passed the clock's span (:class:`SpanError`)."""
        if self.st.S[K.S_OVERFLOW] or t < 0 or t >= SPAN_PS:
            raise SpanError(f"the simulated time passes the engine's span in {what} of micro-batch {b} "
                            f"(after {max(self.env.now, 0) / 1e12:.4g} s simulated): {SPAN_TEXT}. The hardware's "
                            "times, bandwidths and clocks (e.g. memory.dram.bandwidth_gbps, digital.simd.clock_ghz, "
                            "memory.dram.latency_ns) or --tokens make this run longer than that")

    # ----------------------------------------------------------------------- single operations
    # For tests and notebooks: one operation booked on this engine's calendars outside any stage
    # (nothing is pruned). Times in ps; nodes by name.
    @property
    def matrices(self) -> list:
        return self.model.matrices

    def gemm(self, ready: int, mi: int, n: int) -> int:
        """A digital GEMM of matrix ``mi`` on ``n`` tokens; returns its end."""
        return int(self.k.gemm(self.tb, self.st, ready, mi, n, 0))

    def matrix_op(self, ready: int, mi: int, n: int) -> int:
        """Any matrix with its input at the SIMD node; returns when its output is back there."""
        return int(self.k.matrix_op(self.tb, self.st, ready, mi, n, 0))

    def xfer(self, ready: int, src: object, dst: object, nbytes: float) -> int:
        """A NoC message of ``nbytes`` from node ``src`` to ``dst``; returns its arrival."""
        return int(self.k.xfer(self.tb, self.st, self.net.node_id(src), self.net.node_id(dst), float(nbytes), ready,
                               0, K.L_DISPATCH, -1))

    # ----------------------------------------------------------------------- results
    @property
    def c(self) -> Counters:
        return Counters(**{name: float(self.st.C[i]) for name, i in COUNTER_INDEX.items()})

    @property
    def bookings(self) -> int:
        """Calendar bookings made (one per resource an operation holds)."""
        return int(self.st.S[0])

    @property
    def gaps_closed(self) -> int:
        """Times a full calendar row closed its earliest gap (a small loss of back-filling; see kernel)."""
        return int(self.st.S[1])

    def busy_ps(self, kind: str) -> np.ndarray:
        """Busy time of every resource of one kind: tile, local_digital, link, simd, dram."""
        tb, b = self.q, self.st.cal[:, 3]
        span = {"tile": (0, tb.T), "local_digital": (tb.r_ld0, tb.r_link0), "link": (tb.r_link0, tb.r_simd),
                "simd": (tb.r_simd, tb.r_simd + 1), "dram": (tb.r_dram0, tb.r_dram0 + tb.n_dram)}[kind]
        return b[span[0]:span[1]]

    def dram_channel_bytes(self) -> np.ndarray:
        """Bytes each DRAM channel delivered (weights and KV cache streamed to the SIMD node)."""
        q = self.q
        return self.st.C[q.o_dram_bytes:q.o_dram_bytes + q.n_dram].copy()

    def link_bits(self) -> np.ndarray:
        """Bits every NoC link carried (messages and DRAM streams)."""
        q = self.q
        return self.st.C[q.o_link_bits:q.o_link_bits + (q.r_simd - q.r_link0)].copy()

    def tile_busy_ps(self) -> np.ndarray:
        """Busy time of every tile: sum over its slots' operations of ``t_mvm + (n - 1) * II``."""
        return self.busy_ps("tile")

    def resource_name(self, r: int) -> str:
        tb = self.q
        if r < tb.T:
            return f"tile {r}"
        if r < tb.r_link0:
            return f"local_digital {self.net.node_names[r - tb.r_ld0]}"
        if r < tb.r_simd:
            return f"link {self.net.link_name(r - tb.r_link0)}"
        if r == tb.r_simd:
            return "simd"
        return f"dram ch{r - tb.r_dram0}"

    def link_bandwidths_gbps(self) -> dict[str, float]:
        """Each NoC link's bandwidth (Gbit/s), by its resource name."""
        q = scalars(self.tb)
        bw = self.tb.F[q.link_bw:q.link_bw + (q.r_simd - q.r_link0)]
        return {self.resource_name(q.r_link0 + i): float(g) for i, g in enumerate(bw)}

    def label(self, code: int, aux: int) -> str:
        names = self.model.matrices
        if code >= 0:
            return names[code].name.rsplit(".", 1)[0] if aux == 1 else names[code].name
        text = K.LABELS[code]
        if code == K.L_ATTN_CORE:
            return f"L{aux}.{text}"
        if code in (K.L_INPUT, K.L_OUTPUT, K.L_PARTIALS, K.L_REDUCE, K.L_ACTIVATION, K.L_UP_OUT) and aux >= 0:
            return f"{names[aux].name} {text}"
        return text

    def _collect_timeline(self) -> None:
        st, tl = self.st, self.timeline
        n = int(st.S[2])
        kept = min(n, st.rec.shape[0])
        tl.records = [(self.resource_name(int(r)), int(s), int(e), self.label(int(lab), int(aux)), int(b), int(layer))
                      for r, s, e, lab, aux, b, layer in st.rec[:kept]]
        tl.dropped = n - kept

    # ----------------------------------------------------------------------- processes
    def _grow_records(self) -> None:
        st = self.st
        if st.rec.shape[0] and st.S[2] > st.rec.shape[0] // 2:
            rec = np.zeros((st.rec.shape[0] * 4, REC_COLUMNS), np.int64)
            rec[:st.rec.shape[0]] = st.rec
            self.st = st._replace(rec=rec)

    def _layers(self, pl: Plan, b: int, n: int, lm: int, own: tuple | None, preds: list):
        """Micro-batch ``b`` of plan ``pl`` (``n`` tokens; ``lm`` of them through lm_head) through every
        layer. ``own``: (gates, ends) this micro-batch signals after each layer's attention (a later chunk
        of its requests waits on them); ``preds``: such pairs of earlier chunks this one waits for."""
        env, k, tb = self.env, self.k, self.tb
        timeline = self.timeline is not None
        split = self.split_ps
        visits = 0
        for layer in range(self.model.num_layers):
            ready = env.now
            for gate, end in preds:
                if not gate[layer].triggered:
                    yield gate[layer]
                ready = max(ready, env.now, end[layer])
            if timeline:
                self._grow_records()
                self.st.S[6], self.st.S[7] = b, layer
            t = int(k.attention_stage(tb, self.st, pl, ready, b, layer, n, env.now))
            self._check_span(t, f"layer {layer}'s attention", b)
            split["attention"] += t - ready
            if own is not None:
                own[1][layer] = t
                own[0][layer].succeed()
            if timeline:
                self.timeline.stages.append((b, layer, 0, ready, t))
            yield env.timeout(t - env.now)
            if timeline:
                self.st.S[6], self.st.S[7] = b, layer
            t = int(k.ffn_stage(tb, self.st, pl, env.now, b, layer, n, env.now))
            self._check_span(t, f"layer {layer}'s FFN", b)
            router, experts = int(self.st.S[4]), int(self.st.S[5])
            if timeline:
                self.timeline.stages += [(b, layer, 1, env.now, router), (b, layer, 2, router, experts),
                                         (b, layer, 3, experts, t)]
            split["norm_router"] += router - env.now
            split["experts"] += experts - router
            split["combine"] += t - experts
            yield env.timeout(t - env.now)
            visits += 1
            if self.progress is not None:
                self.progress.update(1)
        if lm:
            if timeline:
                self.st.S[6], self.st.S[7] = b, self.model.num_layers
            t = int(k.lm_head_stage(tb, self.st, env.now, lm, env.now))
            self._check_span(t, "the output head", b)
            if timeline:
                self.timeline.stages.append((b, self.model.num_layers, 4, env.now, t))
            split["lm_head"] += t - env.now
            yield env.timeout(t - env.now)
        return visits

    def _prefill_mb(self, b: int, gates: list, ends: list, admission: simpy.Resource):
        n = int(self.plan.mb_tokens[b])
        prev = int(self.plan.mb_prev[b])
        own = (gates[b], ends[b]) if gates[b] is not None else None
        preds = [(gates[prev], ends[prev])] if prev >= 0 else []
        with admission.request() as slot:
            yield slot
            self.mb_start_ps[b] = self.env.now
            self.layer_visits[b] = yield from self._layers(self.pl, b, n, int(self.plan.lm_head_tokens[b]), own, preds)
            self.mb_end_ps[b] = self.env.now

    def _decode(self):
        for b in range(self.plan.n_mb):
            self.mb_start_ps[b] = self.env.now
            self.layer_visits[b] = yield from self._layers(self.pl, b, int(self.plan.mb_tokens[b]),
                                                           int(self.plan.lm_head_tokens[b]), None, [])
            self.mb_end_ps[b] = self.env.now

    def run(self) -> int:
        """Simulate the whole plan; returns the makespan in ps."""
        self.start()
        with compile_notice(self.k):
            self.env.run()
        if self.timeline is not None:
            self._collect_timeline()
        return int(self.env.now)

    def start(self) -> None:
        """Register the plan's processes without running them (benchmarks step the environment)."""
        L = self.model.num_layers
        if self.plan.mode == "prefill":
            chained = {int(p) for p in self.plan.mb_prev if p >= 0}
            gates = [[self.env.event() for _ in range(L)] if b in chained else None for b in range(self.plan.n_mb)]
            ends = [[0] * L if b in chained else None for b in range(self.plan.n_mb)]
            admission = simpy.Resource(self.env, capacity=self.max_inflight)
            for b in range(self.plan.n_mb):
                self.env.process(self._prefill_mb(b, gates, ends, admission))
        else:
            self.env.process(self._decode())
