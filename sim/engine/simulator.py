"""The discrete-event engine (DESIGN §5): timing and contention on SimPy.

Time is integer picoseconds; every operation's closed-form duration (from :mod:`arch.costs`) is
rounded to the nearest ps once. Resources are reservation calendars (:mod:`sim.calendar`): an
operation that becomes ready at ``t`` starts at the earliest time ``>= t`` at which all its
resources are free for its whole duration, and holds each for its own busy time. Bookings are made
in a fixed order (SimPy orders same-time events by insertion), so results are deterministic.

Granularity: one SimPy process per micro-batch (prefill; at most ``max_inflight`` in the pipeline
at once, admitted in order) or one for the decode loop; per layer two
stages (attention, then FFN/MoE) each end in one timeout. Inside a stage, its operations are
list-scheduled at the stage's start in a fixed order (attention projections, core, o_proj; router,
shared expert, routed experts by id, combine), like a compiled static schedule: an expert's
gate/up -> activation -> down chain reserves its tiles, NoC links, SIMD core and DRAM as each step's
inputs become ready. Multi-tile matrices are gang-scheduled: all their tiles start together.

Resources with contention: every analog tile (one MVM at a time whatever the tier), the SIMD
cores (a digital operation is spread over all of them, so they are one gang), every directed NoC
link (a message holds every link of its path for its serialisation time), every DRAM channel
(earliest free first). Local digital units beside the tiles add latency but are not contended.
Weights streamed from DRAM take ``latency + bytes / bandwidth``; the channel is busy for
``bytes / bandwidth``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import simpy

from arch import costs
from arch.spec import ChipSpec
from workloads.shapes import ATTENTION, DENSE, EXPERT, LM_HEAD, ROUTER, SHARED, ModelShape

from . import ops
from .calendar import Calendar, gang_fit, gang_fit_same
from .workplan import WorkPlan

if TYPE_CHECKING:  # the engine reads a Mapping; it never builds one
    from ..mapping import Mapping


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


@dataclass
class Timeline:
    """Optional per-operation records for the Chrome trace: (resource, start_ps, end_ps, label)."""

    records: list[tuple[str, int, int, str]] = field(default_factory=list)


class Engine:
    def __init__(self, chip: ChipSpec, model: ModelShape, mapping: Mapping, plan: WorkPlan,
                 timeline: Timeline | None = None, max_inflight: int = 4) -> None:
        self.chip, self.model, self.map, self.plan = chip, model, mapping, plan
        self.max_inflight = max_inflight
        self.env = simpy.Environment()
        self.c = Counters()
        self.timeline = timeline
        net = mapping.network
        self.net = net
        self.simd_node = net.simd_node
        p = chip.precision
        self.act_bytes = p.activation_bits / 8
        self.psum_bytes = p.partial_sum_bits / 8
        self.wbits = p.digital_weight_bits
        simd = chip.digital.simd
        self.mac_rate = costs.simd_macs_per_ns(simd, p.digital_mac)
        self.vec_rate = costs.simd_vector_ops_per_ns(simd)
        ld = chip.analog.local_digital
        self.ld_rate = ld.ops_per_cycle * ld.clock_ghz if ld else None
        mem = chip.memory
        self.sram_gbps, self.dram_gbps, self.dram_lat = mem.sram.bandwidth_gbps, mem.dram.bandwidth_gbps, mem.dram.latency_ns
        # resources
        clock = lambda: self.env.now  # noqa: E731
        self.groups = [Calendar(clock) for _ in range(mapping.tile_groups)]
        self.simd = Calendar(clock)
        self.dram = [Calendar(clock) for _ in range(mem.dram.channels)]
        self.links = list(net.graph.edges)
        self.link_index = {link: i for i, link in enumerate(self.links)}
        self.link_cal = [Calendar(clock) for _ in self.links]
        self.analog_ops = [0] * len(model.matrices)      # per matrix: operations and tokens, for tile busy time
        self.analog_tokens = [0] * len(model.matrices)
        self.bookings = 0                                 # engine operations booked on calendars
        self._mcal = {mi: tuple(self.groups[g] for g in am.groups) for mi, am in mapping.analog.items()}
        self._paths: dict[tuple[Any, Any], tuple[tuple[int, ...], float, float, int]] = {}
        self.router_ps = chip.noc.router_latency_ns * 1000.0
        # DRAM attachment: streams cross the NoC from dram_node to the SIMD node unless attached directly
        self.dram_route: tuple | None = None
        self.dram_stream_gbps, self.dram_hops_ns = self.dram_gbps, 0.0
        if mem.dram.attachment == "noc" and net.dram_node != net.simd_node:
            links, bw, e_bit, hops, cals = self._path(net.dram_node, net.simd_node)
            self.dram_route = (links, e_bit, hops, cals)
            self.dram_stream_gbps = min(bw, self.dram_gbps)
            self.dram_hops_ns = hops * chip.noc.router_latency_ns
        # per-matrix static data
        self.matrices = model.matrices
        self.index = {m.name: i for i, m in enumerate(model.matrices)}
        self.by_layer: dict[tuple[int, str], list[int]] = {}
        for i, m in enumerate(model.matrices):
            self.by_layer.setdefault((m.layer, m.module), []).append(i)
        self.expert_mats = {}
        for i, m in enumerate(model.matrices):
            if m.module == EXPERT:
                self.expert_mats.setdefault((m.layer, m.expert), []).append(i)
        # analog routed experts: which NoC nodes need a token's activations (homes of gate and up)
        self.node_list = list(net.graph.nodes)
        node_ix = {node: i for i, node in enumerate(self.node_list)}
        self.dispatch_member: dict[int, np.ndarray] = {}
        for layer in model.moe_layers:
            member = np.zeros((model.num_experts, len(self.node_list)), bool)
            for e in range(model.num_experts):
                g, u, _ = self.expert_mats[(layer, e)]
                for mi in (g, u):
                    if mi in mapping.analog:
                        member[e, node_ix[mapping.analog[mi].home]] = True
            self.dispatch_member[layer] = member
        # outputs
        self.mb_start_ps = [0] * plan.n_mb
        self.mb_end_ps = [0] * plan.n_mb
        self.layer_visits = [0] * plan.n_mb

    # ----------------------------------------------------------------------- primitive reservations
    def _record(self, resource: str, start: int, end: int, label: str) -> None:
        if self.timeline is not None and end > start:
            self.timeline.records.append((resource, start, end, label))

    def _path(self, src: Any, dst: Any) -> tuple[tuple[int, ...], float, float, int, tuple[Calendar, ...]]:
        key = (src, dst)
        if key not in self._paths:
            links = self.net.path(src, dst)
            bw = min(self.net.link_bandwidth_gbps(link) for link in links)
            e_bit = sum(self.net.link_energy_pj_per_bit(link) for link in links)
            idx = tuple(self.link_index[link] for link in links)
            self._paths[key] = (idx, bw, e_bit, len(links), tuple(self.link_cal[i] for i in idx))
        return self._paths[key]

    def xfer(self, ready: int, src: Any, dst: Any, nbytes: float, label: str = "") -> int:
        """NoC message: ``h * router_latency + bytes / bottleneck_bandwidth``; links held for the latter."""
        if src == dst or nbytes <= 0:
            return ready
        path = self._paths.get((src, dst)) or self._path(src, dst)
        links, bw, e_bit, hops, cals = path
        ser = int(nbytes * 8000.0 / bw + 0.5)
        start = gang_fit_same(cals, ser, ready)
        end_ser = start + ser
        for cal in cals:
            cal.book(start, ser)
        self.bookings += len(cals)
        if self.timeline is not None:
            for li in links:
                self._record(f"link {self.links[li][0]}->{self.links[li][1]}", start, end_ser, label)
        bits = nbytes * 8.0
        c = self.c
        c.noc_bit_hops += bits * hops
        c.noc_router_bits += bits * (hops + 1)
        c.noc_energy_pj += bits * e_bit
        return end_ser + int(hops * self.router_ps + 0.5)

    def dram_ns(self, nbytes: float) -> float:
        """Time to stream ``nbytes`` from DRAM to the SIMD core: ``latency + bytes / min(DRAM bandwidth,
        path bandwidth) + hops * router latency`` (no path term with ``attachment: direct``), ns."""
        return self.dram_lat + nbytes * 8.0 / self.dram_stream_gbps + self.dram_hops_ns

    def simd_op(self, ready: int, dur: int, dram_bytes: float = 0.0, label: str = "") -> int:
        """A gang operation on all SIMD cores, optionally streaming ``dram_bytes`` from one DRAM channel
        (and over the NoC links from the DRAM node, which it holds for the stream's serialisation)."""
        if dram_bytes > 0:
            d = ps(dram_bytes * 8.0 / self.dram_stream_gbps)
            route = self.dram_route
            extra = route[3] if route else ()
            fits = [gang_fit((self.simd, ch, *extra), (dur, d, *(d,) * len(extra)), ready) for ch in self.dram]
            ch = min(range(len(fits)), key=fits.__getitem__)
            start = fits[ch]
            self.dram[ch].book(start, d)
            self.c.dram_bytes += dram_bytes
            self._record(f"dram ch{ch}", start, start + d, label)
            if route:
                links, e_bit, hops, cals = route
                for cal, li in zip(cals, links):
                    cal.book(start, d)
                    self._record(f"link {self.links[li][0]}->{self.links[li][1]}", start, start + d, label)
                bits = dram_bytes * 8.0
                self.c.noc_bit_hops += bits * hops
                self.c.noc_router_bits += bits * (hops + 1)
                self.c.noc_energy_pj += bits * e_bit
                self.bookings += len(cals)
        else:
            start = self.simd.fit(ready, dur)
        self.simd.book(start, dur)
        self.bookings += 1 + (dram_bytes > 0)
        self._record("simd", start, start + dur, label)
        return start + dur

    def vec(self, ready: int, n_ops: float, label: str = "vector") -> int:
        self.c.simd_vector_ops += n_ops
        return self.simd_op(ready, ps(n_ops / self.vec_rate), label=label)

    # ----------------------------------------------------------------------- matrices
    def gemm(self, ready: int, mi: int, n: int) -> int:
        """Digital ``W[out, in]`` on ``n`` tokens: roofline over MACs, weight source and SRAM activations."""
        dur, dram = self.gemm_cost(mi, n)
        return self.simd_op(ready, dur, dram_bytes=dram, label=self.matrices[mi].name)

    def gemm_cost(self, mi: int, n: int) -> tuple[int, float]:
        """Count a digital GEMM's actions; return its duration (ps) and the bytes it streams from DRAM."""
        m = self.matrices[mi]
        macs = n * m.params
        wbytes = m.params * self.wbits / 8
        act = n * (m.in_features + m.out_features) * self.act_bytes
        t_mac = macs / self.mac_rate
        t_act = act * 8.0 / self.sram_gbps
        self.c.simd_macs += macs
        self.c.sram_bytes += act
        if m.module == EXPERT:
            self.c.routed_expert_macs_digital += macs
            self.c.routed_expert_weight_bytes_moved += wbytes   # read from SRAM or DRAM
        if self.map.resident[mi]:
            self.c.sram_bytes += wbytes
            return ps(max(t_mac, wbytes * 8.0 / self.sram_gbps, t_act)), 0.0
        return ps(max(t_mac, self.dram_ns(wbytes), t_act)), wbytes

    def analog_mvm(self, ready: int, mi: int, n: int) -> tuple[int, Any]:
        """``n`` vectors through an analog matrix whose input is at its home node at ``ready``.

        Tiles start together; each is busy ``sum(t_mvm) + (n - 1) * sum(II)`` over its slots. Partial
        outputs then go to the reduction site (the home node's local digital unit, or the SIMD core
        when there is none), which adds them. Returns (end, node holding the result).
        """
        am = self.map.analog[mi]
        k = n - 1
        cals = self._mcal[mi]
        if len(cals) == 1:
            cal = cals[0]
            d = am.group_mvm_ps[0] + k * am.group_ii_ps[0]
            start = cal.fit(ready, d)
            cal.book(start, d)
            end = start + d
        else:
            durs = [a + k * b for a, b in zip(am.group_mvm_ps, am.group_ii_ps)]
            start = gang_fit(cals, durs, ready)
            for cal, d in zip(cals, durs):
                cal.book(start, d)
            end = start + max(durs)
        self.bookings += len(cals)
        return self._after_mvm(mi, am, n, start, end)

    def _after_mvm(self, mi: int, am: Any, n: int, start: int, end: int) -> tuple[int, Any]:
        """Count an analog MVM's actions, then move and add its partial sums."""
        m = self.matrices[mi]
        self.analog_ops[mi] += 1
        self.analog_tokens[mi] += n
        if self.timeline is not None:
            for x, a, b in zip(am.tiles, am.mvm_ps, am.ii_ps):
                self._record(f"tile {x}", start, start + a + (n - 1) * b, m.name)
        c = self.c
        c.dac_conversions += n * am.dac_per_token
        c.adc_conversions += n * am.adc_per_token
        c.array_cell_reads += n * am.cells_per_token
        if m.module == EXPERT:
            c.routed_expert_macs_analog += n * m.params
        site = am.home if self.ld_rate else self.simd_node
        arrive = end
        if am.remote_partial_nodes or site != am.home:
            nodes = (am.home, *am.remote_partial_nodes)
            share = n * m.out_features * am.row_blocks * self.psum_bytes / len(nodes)
            for node in nodes:
                t = self.xfer(end, node, site, share, "partials")
                if t > arrive:
                    arrive = t
        if am.row_blocks > 1:
            adds = n * m.out_features * (am.row_blocks - 1) * ops.PARTIAL_SUM_OPS_PER_ADD
            if self.ld_rate:
                c.local_digital_ops += adds
                arrive += ps(adds / self.ld_rate)
            else:
                arrive = self.vec(arrive, adds, m.name + " reduce")
        return arrive, site

    def matrix_op(self, ready: int, mi: int, n: int) -> int:
        """Any matrix with its input at the SIMD node; returns when the output is back there."""
        if mi not in self.map.analog:
            return self.gemm(ready, mi, n)
        m, am = self.matrices[mi], self.map.analog[mi]
        t = self.xfer(ready, self.simd_node, am.home, n * m.in_features * self.act_bytes, m.name + " in")
        t, node = self.analog_mvm(t, mi, n)
        return self.xfer(t, node, self.simd_node, n * m.out_features * self.act_bytes, m.name + " out")

    def ffn_chain(self, ready: int, gate: int, up: int, down: int, n: int) -> int:
        """SwiGLU FFN (shared expert or dense FFN) on ``n`` tokens from and back to the SIMD node."""
        if gate not in self.map.analog:
            return self.digital_chain(ready, gate, up, down, n)
        hidden = self.matrices[gate].in_features
        arrivals: dict[Any, int] = {}
        for mi in (gate, up):
            home = self.map.analog[mi].home
            if home not in arrivals:
                arrivals[home] = self.xfer(ready, self.simd_node, home, n * hidden * self.act_bytes, "dispatch")
        t, node = self.analog_chain(arrivals, gate, up, down, n)
        return self.xfer(t, node, self.simd_node, n * hidden * self.act_bytes, "combine")

    def digital_chain(self, ready: int, gate: int, up: int, down: int, n: int) -> int:
        """Gate, up, activation and down back to back on the SIMD gang: one booking."""
        dur, dram = 0, 0.0
        for mi in (gate, up, down):
            d, b = self.gemm_cost(mi, n)
            dur, dram = dur + d, dram + b
        act_ops = n * self.matrices[gate].out_features * ops.SWIGLU_OPS_PER_ELEMENT
        self.c.simd_vector_ops += act_ops
        dur += ps(act_ops / self.vec_rate)
        return self.simd_op(ready, dur, dram_bytes=dram, label=self.matrices[gate].name.rsplit(".", 1)[0])

    def analog_chain(self, arrivals: dict[Any, int], gate: int, up: int, down: int, n: int) -> tuple[int, Any]:
        """Analog gate|up -> activation -> down, inputs present at the nodes in ``arrivals``.

        Returns (end, node holding the output)."""
        width = self.matrices[gate].out_features
        act_ops = n * width * ops.SWIGLU_OPS_PER_ELEMENT
        tg, ng = self.analog_mvm(arrivals[self.map.analog[gate].home], gate, n)
        tu, nu = self.analog_mvm(arrivals[self.map.analog[up].home], up, n)
        if self.ld_rate:
            # activation at the gate's node; the up projection's output joins it there if it is elsewhere
            tu = self.xfer(tu, nu, ng, n * width * self.act_bytes, "up out")
            self.c.local_digital_ops += act_ops
            t, site = max(tg, tu) + ps(act_ops / self.ld_rate), ng
        else:
            t = max(self.xfer(tg, ng, self.simd_node, n * width * self.act_bytes, "gate out"),
                    self.xfer(tu, nu, self.simd_node, n * width * self.act_bytes, "up out"))
            t, site = self.vec(t, act_ops, "swiglu"), self.simd_node
        dhome = self.map.analog[down].home
        t = self.xfer(t, site, dhome, n * width * self.act_bytes, "activation")
        return self.analog_mvm(t, down, n)

    # ----------------------------------------------------------------------- stages
    def attention_stage(self, ready: int, b: int, layer: int, n: int) -> int:
        model, H = self.model, self.model.hidden_size
        t = self.vec(ready, n * H * ops.NORM_OPS_PER_ELEMENT, "rmsnorm")
        mats = self.by_layer[(layer, ATTENTION)]
        o_proj = mats[-1]
        first = [mi for mi in mats[:-1] if self.matrices[mi].in_features == H]
        second = [mi for mi in mats[:-1] if self.matrices[mi].in_features != H]
        t = max(self.matrix_op(t, mi, n) for mi in first)
        if second:
            t = max(self.matrix_op(t, mi, n) for mi in second)
        ctx = int(self.plan.context_sum[b])
        macs = model.attention_macs_per_context() * ctx
        soft = model.num_heads * ctx * ops.SOFTMAX_OPS_PER_ELEMENT
        kv = model.kv_elements_per_token() * (int(self.plan.kv_prior[b]) + n) * self.act_bytes
        self.c.simd_macs += macs
        self.c.simd_vector_ops += soft
        dur = ps(max(macs / self.mac_rate + soft / self.vec_rate,
                     self.dram_ns(kv)))
        t = self.simd_op(t, dur, dram_bytes=kv, label=f"L{layer}.attn.core")
        t = self.matrix_op(t, o_proj, n)
        return self.vec(t, n * H * ops.RESIDUAL_OPS_PER_ELEMENT, "residual")

    def ffn_stage(self, ready: int, b: int, layer: int, n: int) -> int:
        model, H = self.model, self.model.hidden_size
        t = self.vec(ready, n * H * ops.NORM_OPS_PER_ELEMENT, "rmsnorm")
        if layer not in model.moe_layers:
            g, u, d = self.by_layer[(layer, DENSE)]
            t = self.ffn_chain(t, g, u, d, n)
            return self.vec(t, n * H * ops.RESIDUAL_OPS_PER_ELEMENT, "residual")
        (router,) = self.by_layer[(layer, ROUTER)]
        E = model.num_experts
        tr = self.matrix_op(t, router, n)
        tr = self.vec(tr, n * E * (ops.SOFTMAX_OPS_PER_ELEMENT + ops.TOPK_OPS_PER_ELEMENT), "router softmax/top-k")
        end = tr
        shared = self.by_layer.get((layer, SHARED))
        if shared:
            end = max(end, self.ffn_chain(t, shared[0], shared[1], shared[2], n))
            if len(shared) > 3:
                end = max(end, self.matrix_op(t, shared[3], n))
        end = max(end, self.routed_experts(tr, b, layer))
        combine = n * model.top_k * H * ops.COMBINE_OPS_PER_ELEMENT + n * H * ops.RESIDUAL_OPS_PER_ELEMENT
        return self.vec(end, combine, "combine")

    def routed_experts(self, ready: int, b: int, layer: int) -> int:
        """Every active routed expert of micro-batch ``b`` at ``layer``, in expert order.

        Analog experts: one dispatch message per destination node carrying each token once (however
        many of its experts sit there), and one combine message per node carrying its experts'
        outputs back to the SIMD node. Digital experts run on the SIMD gang.
        """
        row = self.plan.counts[b, layer]
        active = row.nonzero()[0].tolist()
        H = self.model.hidden_size
        end = ready
        member = self.dispatch_member[layer]
        analog = [e for e in active if member[e].any()]
        arrivals: dict[Any, int] = {}
        if analog:
            routes = self.plan.experts[self.plan.mb_start[b]:self.plan.mb_start[b + 1], layer]
            per_node = member[routes.astype(np.int64)].any(axis=1).sum(axis=0)   # distinct tokens per node
            for ni in per_node.nonzero()[0].tolist():
                node = self.node_list[ni]
                arrivals[node] = self.xfer(ready, self.simd_node, node, int(per_node[ni]) * H * self.act_bytes,
                                           "dispatch")
        done: dict[Any, list] = {}
        for e in active:
            g, u, d = self.expert_mats[(layer, e)]
            n = int(row[e])
            if g in self.map.analog:
                t, node = self.analog_chain(arrivals, g, u, d, n)
                slot = done.setdefault(node, [t, 0])
                slot[0] = max(slot[0], t)
                slot[1] += n
            else:
                end = max(end, self.digital_chain(ready, g, u, d, n))
        for node, (t, n_out) in done.items():
            end = max(end, self.xfer(t, node, self.simd_node, n_out * H * self.act_bytes, "combine"))
        return end

    # ----------------------------------------------------------------------- processes
    def _layers(self, b: int, n: int, attn_gate: list[simpy.Event] | None, prev_gate: list[simpy.Event] | None,
                attn_end: list[int] | None, prev_end: list[int] | None):
        env = self.env
        for layer in range(self.model.num_layers):
            ready = env.now
            if prev_gate is not None:
                if not prev_gate[layer].triggered:
                    yield prev_gate[layer]
                ready = max(env.now, prev_end[layer])
            t = self.attention_stage(ready, b, layer, n)
            if attn_gate is not None:
                attn_end[layer] = t
                attn_gate[layer].succeed()
            yield env.timeout(t - env.now)
            t = self.ffn_stage(env.now, b, layer, n)
            yield env.timeout(t - env.now)
            self.layer_visits[b] += 1
        lm = int(self.plan.lm_head_tokens[b])
        if lm:
            (head,) = self.by_layer[(-1, LM_HEAD)]
            t = self.matrix_op(env.now, head, lm)
            yield env.timeout(t - env.now)

    def _prefill_mb(self, b: int, gates: list, ends: list, admission: simpy.Resource):
        n = int(self.plan.mb_tokens[b])
        prev = int(self.plan.mb_prev[b])
        with admission.request() as slot:
            yield slot
            self.mb_start_ps[b] = self.env.now
            yield from self._layers(b, n, gates[b], gates[prev] if prev >= 0 else None, ends[b],
                                    ends[prev] if prev >= 0 else None)
            self.mb_end_ps[b] = self.env.now

    def _decode(self):
        for b in range(self.plan.n_mb):
            self.mb_start_ps[b] = self.env.now
            yield from self._layers(b, int(self.plan.mb_tokens[b]), None, None, None, None)
            self.mb_end_ps[b] = self.env.now

    def tile_busy_ps(self) -> list[int]:
        """Busy time of every tile: sum over operations of ``t_mvm + (n - 1) * II`` of its slots."""
        busy = [0] * self.chip.analog.tile_count
        for mi, am in self.map.analog.items():
            ops_, toks = self.analog_ops[mi], self.analog_tokens[mi]
            for x, a, b in zip(am.tiles, am.mvm_ps, am.ii_ps):
                busy[x] += ops_ * a + (toks - ops_) * b
        return busy

    def run(self) -> int:
        """Simulate the whole plan; returns the makespan in ps."""
        self.start()
        self.env.run()
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
