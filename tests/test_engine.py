"""Engine: closed-form oracles for one token, contention, properties, determinism, counters."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arch import costs, load_chip_text
from sim.engine import ops
from sim.engine.simulator import ps as ps_of
from sim.api import build_run, simulate
from tests.conftest import UNIT_YAML
from workloads.checkpoints.stats import VARIANTS, ExpertStats, synthetic_stats
from workloads.shapes import from_hf_config, load_model
from workloads.traces.synthetic import SyntheticSpec, synthesize
from workloads.traces.format import RoutingTrace

# A tiny model: every matrix is 4x4 or smaller, so each takes exactly one 4x4 crossbar slot.
TINY = {"hidden_size": 4, "num_hidden_layers": 1, "num_attention_heads": 1, "num_key_value_heads": 1,
        "head_dim": 4, "vocab_size": 4, "num_experts": 2, "num_experts_per_tok": 1, "moe_intermediate_size": 4}

# Unit system on a 2x1 mesh: tiles 0-3 at node (0,0) with the SIMD core, tiles 4-7 at node (1,0),
# with a local digital unit doing 1 op/ns.
TWO_NODE = (UNIT_YAML.replace("width: 2\n  height: 2\n  tiles_per_node: 2", "width: 2\n  height: 1\n  tiles_per_node: 4")
            .replace("  static_power_mw_per_tile: 0.0\n",
                     "  static_power_mw_per_tile: 0.0\n  local_digital: {ops_per_cycle: 1, clock_ghz: 1.0, "
                     "energy_pj_per_op: 1.0}\n"))


def tiny_trace(model, routes: list[int], request: list[int] | None = None) -> RoutingTrace:
    T = len(routes)
    experts = np.full((T, model.num_layers, 1), -1, np.int16)
    experts[:, 0, 0] = routes
    return RoutingTrace(experts, np.ones((T, model.num_layers, 1), np.float32),
                        np.asarray(request or [0] * T, np.int32), np.arange(T, dtype=np.int32),
                        np.zeros(T, np.int8), np.ones(model.num_layers, bool), model.num_experts,
                        {"source": "test"})


@pytest.fixture
def chip():
    return load_chip_text(TWO_NODE, "two_node.yaml")


@pytest.fixture
def tiny():
    return from_hf_config(TINY, name="tiny")


def expected_single_token_ns(chip, model, analog_expert: bool, analog_dense: bool, expert_remote: bool) -> float:
    """Sum of closed forms for one token through the tiny model, in the documented stage order.

    Slot rule (DESIGN/mapping): analog matrices in model order take slots 0, 1, 2, ... . All-analog:
    q, k, v, o -> tiles 0-3 (node (0,0) = SIMD node); router -> tile 4; expert 0 gate/up/down -> tiles
    5-7 (node (1,0), ``expert_remote``); expert 1 -> tiles 0-2 tier 1; lm_head -> tile 3. Under maxnn
    only expert 0 is analog: tiles 0-2, at the SIMD node.
    """
    H, W, E = model.hidden_size, model.expert_width, model.num_experts
    ab = chip.precision.activation_bits / 8
    simd, mem, noc, a = chip.digital.simd, chip.memory, chip.noc, chip.analog
    vec = lambda n_ops: n_ops / costs.simd_vector_ops_per_ns(simd)  # noqa: E731
    hop = lambda nbytes: costs.noc_latency_ns(nbytes, 1, noc.link_bandwidth_gbps, noc.router_latency_ns)  # noqa: E731
    mvm = costs.mvm_latency_ns(a, chip.precision.activation_bits, 4, 4)
    ld_rate = a.local_digital.ops_per_cycle * a.local_digital.clock_ghz

    def gemm(out, inp):  # all weights fit the 1 MiB SRAM
        return costs.gemm_latency_ns(out * inp, costs.simd_macs_per_ns(simd), out * inp, mem.sram.bandwidth_gbps,
                                     (out + inp) * ab, mem.sram.bandwidth_gbps)

    # attention stage: norm, q|k|v, core, o, residual
    proj = mvm if analog_dense else gemm(H, H)
    t = vec(H * ops.NORM_OPS_PER_ELEMENT)
    t += proj if analog_dense else 3 * proj          # analog: q, k, v in parallel at the SIMD node
    ctx = 1
    core_compute = model.attention_macs_per_context() * ctx / costs.simd_macs_per_ns(simd) + vec(
        model.num_heads * ctx * ops.SOFTMAX_OPS_PER_ELEMENT)
    kv_bytes = model.kv_elements_per_token() * 1 * ab
    t += max(core_compute, costs.dram_latency_ns(kv_bytes, mem.dram.latency_ns, mem.dram.bandwidth_gbps))
    t += proj
    t += vec(H * ops.RESIDUAL_OPS_PER_ELEMENT)
    # FFN stage: norm, router (+ softmax/top-k), expert chain, combine
    t += vec(H * ops.NORM_OPS_PER_ELEMENT)
    t += (hop(H * ab) + mvm + hop(E * ab)) if analog_dense else gemm(E, H)
    t += vec(E * (ops.SOFTMAX_OPS_PER_ELEMENT + ops.TOPK_OPS_PER_ELEMENT))
    act_ops = W * ops.SWIGLU_OPS_PER_ELEMENT
    if analog_expert:   # dispatch, gate|up, local activation, down, combine
        trip = hop(H * ab) if expert_remote else 0.0
        t += trip + mvm + act_ops / ld_rate + mvm + trip
    else:
        t += 3 * gemm(W, H) + vec(act_ops)
    t += vec(model.top_k * H * ops.COMBINE_OPS_PER_ELEMENT + H * ops.RESIDUAL_OPS_PER_ELEMENT)
    t += mvm if analog_dense else gemm(model.vocab_size, H)   # lm_head at tile 3, node (0,0)
    return t


@pytest.mark.parametrize("policy,route,analog_expert,analog_dense", [
    ("all-analog", 0, True, True), ("all-digital", 0, False, False),
    ("maxnn", 0, True, False), ("maxnn", 1, False, False)])
def test_single_token_matches_closed_form(chip, tiny, policy, route, analog_expert, analog_dense):
    # scores planted so that maxnn at fraction 0.5 puts expert 1 (larger MaxNNScore) on digital
    planted = np.array([[1.0, 2.0]])
    stats = ExpertStats({v: planted for v in VARIANTS}, planted, planted, False, "planted")
    run = build_run(chip, tiny, tiny_trace(tiny, [route]), policy, fraction=0.5, stats=stats, batch=1)
    assert run.placement.digital_experts[0].tolist() == ([False, True] if policy == "maxnn" else
                                                          [policy == "all-digital"] * 2)
    makespan_ns = run.engine.run() / 1000
    assert makespan_ns == pytest.approx(expected_single_token_ns(chip, tiny, analog_expert, analog_dense,
                                                                  expert_remote=policy == "all-analog"), abs=1e-3)


def _records(policy, chip, model, routes, batch=8, **kw):
    run = build_run(chip, model, tiny_trace(model, routes), policy, batch=batch, timeline=True,
                    stats=synthetic_stats(model, 0), **kw)
    run.engine.run()
    return run, run.engine.timeline.records


def test_two_tokens_same_single_tile_expert_take_twice_as_long(chip, tiny):
    run1, rec1 = _records("all-analog", chip, tiny, [0])
    run2, rec2 = _records("all-analog", chip, tiny, [0, 0])
    gate = lambda recs: [r for r in recs if r[3] == "L0.E0.gate_proj"]  # noqa: E731
    (g1,), (g2,) = gate(rec1), gate(rec2)
    assert (g2[2] - g2[1]) == 2 * (g1[2] - g1[1])      # II defaults to one MVM latency


def test_experts_on_different_tiles_overlap(chip, tiny):
    _, recs = _records("all-analog", chip, tiny, [0, 1])
    g0 = next(r for r in recs if r[3] == "L0.E0.gate_proj")
    g1 = next(r for r in recs if r[3] == "L0.E1.gate_proj")
    assert g0[0] != g1[0]
    assert max(g0[1], g1[1]) < min(g0[2], g1[2])        # their busy intervals overlap in time


def test_experts_in_tiers_of_one_tile_serialize(tiny):
    one_tile = load_chip_text(TWO_NODE.replace("tile_count: 8", "tile_count: 1").replace("tiers: 2", "tiers: 16"),
                              "one_tile.yaml")
    _, recs = _records("all-analog", one_tile, tiny, [0, 1])
    busy = sorted((r[1], r[2]) for r in recs if r[0] == "tile 0")
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(busy, busy[1:]))
    g = [r for r in recs if r[3] in ("L0.E0.gate_proj", "L0.E1.gate_proj")]
    assert len(g) == 2 and (g[0][2] <= g[1][1] or g[1][2] <= g[0][1])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tokens=st.integers(1, 40), batch=st.integers(1, 16), seed=st.integers(0, 50),
       policy=st.sampled_from(["all-analog", "all-digital", "maxnn", "random"]),
       mode=st.sampled_from(["prefill", "decode"]))
def test_properties(chip, tiny, tokens, batch, seed, policy, mode):
    trace = synthesize(SyntheticSpec(tokens=tokens, requests=min(3, tokens), seed=seed), tiny)
    r = simulate(chip, tiny, trace, policy, fraction=0.5, batch=batch, seed=seed, mode=mode)
    d = r.data
    assert all(v >= 0 for comps in d["energy_pj"].values() for v in comps.values())
    assert all(row["utilisation"] <= 1 + 1e-9 for row in d["utilisation_rows"])
    assert d["engine"]["layer_visits"] == d["engine"]["micro_batches"] * tiny.num_layers
    run = build_run(chip, tiny, trace, policy, fraction=0.5, batch=batch, seed=seed, mode=mode)
    counts = run.plan.counts
    assert counts.sum(axis=(0, 2)).tolist() == [tokens * tiny.top_k]     # every token routed once per layer
    assert sorted(run.plan.token_order.tolist()) == list(range(tokens))  # every token scheduled exactly once


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(b1=st.integers(1, 16), b2=st.integers(1, 16), seed=st.integers(0, 20))
def test_per_token_energy_independent_of_micro_batch(chip, tiny, b1, b2, seed):
    """Actions that scale per token do not depend on micro-batching; weight fetches scale with uses."""
    trace = synthesize(SyntheticSpec(tokens=30, requests=30, seed=seed), tiny)
    runs = []
    for b in (b1, b2):
        r = simulate(chip, tiny, trace, "all-analog", batch=b, mode="decode")
        runs.append(r.data["counters"])
    for key in ("adc_conversions", "dac_conversions", "array_cell_reads", "simd_macs", "local_digital_ops",
                "noc_bit_hops"):
        assert runs[0][key] == pytest.approx(runs[1][key]), key


def test_weight_traffic_equals_uses_times_bytes(chip, tiny):
    trace = synthesize(SyntheticSpec(tokens=25, requests=5, seed=3), tiny)
    run = build_run(chip, tiny, trace, "all-digital", batch=4)
    run.engine.run()
    wbits = chip.precision.digital_weight_bits
    expected = sum(u * m.params * wbits / 8 for u, m in zip(run.mapping.uses, tiny.matrices))
    acts = run.engine.c.sram_bytes - expected
    # every GEMM reads its input and writes its output through SRAM: tokens x (in + out) x activation bytes.
    # Dense matrices see all 25 tokens, an expert the tokens routed to it (from the trace), lm_head the
    # tokens that emit one (the decode token of each of the 5 requests: prompts of 4 emit none here)
    ab = chip.precision.activation_bits / 8
    assert int(run.plan.lm_head_tokens.sum()) == 5
    want = 0.0
    for m in tiny.matrices:
        if m.expert >= 0:
            n = int((trace.experts[:, m.layer, :] == m.expert).sum())
        elif m.module == "lm_head":
            n = 5
        else:
            n = 25
        want += n * (m.in_features + m.out_features) * ab
    assert acts == pytest.approx(want, rel=1e-12)
    # all resident in 1 MiB: DRAM only carries the KV cache (checked below)
    kv = sum(tiny.kv_elements_per_token() * (int(p) + int(n)) * ab * tiny.num_layers
             for p, n in zip(run.plan.kv_prior, run.plan.mb_tokens))
    assert run.engine.c.dram_bytes == pytest.approx(kv)


def test_same_seed_identical_result_json(tmp_path):
    kw = dict(hw="aimc-3d-moe", model="olmoe-1b-7b", trace=SyntheticSpec(tokens=256, seed=5), policy="random",
              fraction=0.25, seed=5, batch=32)
    a, b = simulate(**kw), simulate(**kw)
    a.write(tmp_path / "a")
    b.write(tmp_path / "b")
    assert (tmp_path / "a" / "result.json").read_bytes() == (tmp_path / "b" / "result.json").read_bytes()


def test_olmoe_counters_order_weight_traffic():
    model = load_model("olmoe-1b-7b")
    trace = synthesize(SyntheticSpec(tokens=128, seed=1), model)
    moved = {}
    for policy in ("all-analog", "maxnn", "all-digital"):
        r = simulate("aimc-3d-moe", model, trace, policy, batch=64)
        moved[policy] = r.data["counters"]["routed_expert_weight_bytes_moved"]
    distinct = sum(len(np.unique(trace.experts[:, layer].ravel())) for layer in model.moe_layers)
    expert_bytes = 3 * model.hidden_size * model.expert_width * 8 / 8
    assert moved["all-analog"] == 0
    assert moved["all-digital"] >= distinct * expert_bytes
    assert 0 < moved["maxnn"] < moved["all-digital"]


def test_exposure_matches_engine_counters():
    model = load_model("olmoe-1b-7b")
    r = simulate("aimc-3d-moe", model, SyntheticSpec(tokens=128, seed=2), "maxnn", fraction=0.25, batch=64)
    c = r.data["counters"]
    share = c["routed_expert_macs_analog"] / (c["routed_expert_macs_analog"] + c["routed_expert_macs_digital"])
    assert r.metrics["analog_exposure_macs"] == pytest.approx(share)
    assert 0.6 < share < 0.9


def test_mapping_fails_with_numbers(tiny):
    small = load_chip_text(TWO_NODE.replace("tile_count: 8", "tile_count: 2"), "small.yaml")
    with pytest.raises(Exception, match=r"need 12 crossbar slots of 4x4 \(including 0 alignment slots\), but unit has 4"):
        simulate(small, tiny, tiny_trace(tiny, [0]), "all-analog")


def test_result_files(tmp_path):
    r = simulate("aimc-3d-moe", "olmoe-1b-7b", SyntheticSpec(tokens=64, seed=0), "maxnn", batch=32)
    r.write(tmp_path)
    data = json.loads((tmp_path / "result.json").read_text())
    assert data["metrics"]["tokens"] == 64
    header = (tmp_path / "summary.csv").read_text().splitlines()[0]
    assert "throughput_tokens_per_s" in header and "energy_per_token_uj" in header
    assert (tmp_path / "energy.csv").read_text().startswith("run,domain,component,energy_pj")


def test_digital_weight_bytes_scale_with_weight_bits():
    """All-digital prefill with no SRAM streams every weight from DRAM at every use, plus KV-cache traffic
    that does not depend on weight bits: DRAM bytes = W * bits / 8 + KV. So the 16 -> 8 bit saving is
    twice the 8 -> 4 bit saving (int4 moves half the weight bytes of int8), and the MAC rate follows the
    preset's mac_rate_scale (aimc-3d-moe: int4 2x, fp16 0.5x the int8 rate)."""
    model = load_model("olmoe-1b-7b")
    trace = synthesize(SyntheticSpec(tokens=128, seed=0), model)
    dram, rate = {}, {}
    for bits, mac in ((16, "fp16"), (8, "int8"), (4, "int4")):
        over = {"precision": {"digital_weight_bits": bits, "digital_mac": mac},
                "memory": {"sram": {"capacity_mib": 0}, "dram": {"capacity_gib": 16}}}   # 16-bit weights: 12.7 GiB
        run = build_run("aimc-3d-moe", model, trace, "all-digital", batch=64, hw_overrides=over)
        run.engine.run()
        dram[bits], rate[bits] = run.engine.c.dram_bytes, run.engine.q.mac_rate
    weights_8bit = dram[16] - dram[8]                  # W * (16 - 8) / 8 = W bytes
    assert dram[8] - dram[4] == pytest.approx(weights_8bit / 2, rel=1e-12)
    assert rate[4] / rate[8] == pytest.approx(2.0) and rate[16] / rate[8] == pytest.approx(0.5)


def _dram_engine(dram_node: str, links_gbps: int = 8, attachment: str = "noc"):
    """Unit system (2x2 mesh, SIMD at [0, 0]), DRAM at ``dram_node``, 16 Gbit/s DRAM, no SRAM, 64 MACs/ns."""
    text = (UNIT_YAML.replace("dram_node: [0, 0]", f"dram_node: {dram_node}")
            .replace("link_bandwidth_gbps: 8", f"link_bandwidth_gbps: {links_gbps}")
            .replace("sram: {capacity_mib: 1", "sram: {capacity_mib: 0")
            .replace("macs_per_cycle: 1\n", "macs_per_cycle: 64\n")         # so the weight stream dominates
            .replace("dram: {bandwidth_gbps: 8,", f"dram: {{attachment: {attachment}, bandwidth_gbps: 16,"))
    model = from_hf_config(TINY)
    trace = synthesize(SyntheticSpec(tokens=4, requests=1, seed=0), model)
    return build_run(load_chip_text(text), model, trace, "all-digital", batch=4).engine


def test_dram_streams_cross_the_noc_from_the_dram_node():
    """A non-resident digital GEMM at the SIMD node [0, 0]: from DRAM at [1, 1] (h = 2 hops over 8 Gbit/s
    links) its weights stream at min(16, 8) Gbit/s and pay 2 router latencies; from DRAM at [0, 0] (or
    attached directly) at 16 Gbit/s and none. Energy adds bits * h * 0.125 pJ per bit-hop."""
    near, far, direct = _dram_engine("[0, 0]"), _dram_engine("[1, 1]"), _dram_engine("[1, 1]", attachment="direct")
    mi = next(i for i, m in enumerate(near.matrices) if m.module == "lm_head")
    wbytes = near.matrices[mi].params * 8 / 8
    ends = {name: e.gemm(0, mi, 1) for name, e in (("near", near), ("far", far), ("direct", direct))}
    # duration = max(MACs, DRAM stream, activations); the stream dominates with these sizes
    assert ends["near"] == ps_of(1.0 + wbytes * 8 / 16)
    assert ends["direct"] == ends["near"]
    assert ends["far"] == ps_of(1.0 + wbytes * 8 / 8 + 2 * 1.0)
    assert far.c.noc_bit_hops == wbytes * 8 * 2 and far.c.noc_energy_pj == wbytes * 8 * 2 * 0.125
    assert near.c.noc_bit_hops == 0 and direct.c.noc_bit_hops == 0


def test_two_dram_streams_sharing_a_link_serialise():
    far = _dram_engine("[1, 1]")
    mi = next(i for i, m in enumerate(far.matrices) if m.module == "lm_head")
    stream = ps_of(far.matrices[mi].params * 8 / 8)      # bytes * 8 / 8 Gbit/s, ns
    first = far.gemm(0, mi, 1)
    second = far.gemm(0, mi, 1)
    assert second - first >= stream                       # the second waits for the shared links


def test_noc_message_charges_links_per_hop_and_routers_per_node():
    """A message over h hops crosses h links and h + 1 routers: E = bits * (h * e_link + (h + 1) * e_router)."""
    text = UNIT_YAML.replace("  dram_node: [0, 0]\n", "  dram_node: [0, 0]\n  energy_pj_per_bit_per_router: 0.5\n")
    model = from_hf_config(TINY)
    run = build_run(load_chip_text(text), model, synthesize(SyntheticSpec(tokens=4, requests=1, seed=0), model),
                    "all-digital", batch=4)
    e = run.engine
    e.xfer(0, (0, 0), (1, 1), 10.0)                    # 2 hops on the 2x2 mesh, 80 bits
    from sim.metrics import price
    noc = price(run.chip, e.c, 1.0)["noc"]
    assert noc["links"] == pytest.approx(80 * 2 * 0.125) and noc["routers"] == pytest.approx(80 * 3 * 0.5)


def test_capacity_error_counts_every_slot_the_mapping_places():
    """The first capacity error's slot count (alignment included) is what a just-large-enough chip holds."""
    import re

    from sim.mapping import MappingError

    cfg = {**TINY, "hidden_size": 8, "head_dim": 8, "moe_intermediate_size": 12, "vocab_size": 12}
    model = from_hf_config(cfg)
    trace = synthesize(SyntheticSpec(tokens=8, requests=1, seed=0), model)
    with pytest.raises(MappingError, match=r"need ([\d,]+) crossbar slots .* \(including ([\d,]+) alignment") as err:
        build_run(load_chip_text(UNIT_YAML), model, trace, "all-analog", batch=8)
    needed = int(re.search(r"need ([\d,]+)", str(err.value)).group(1).replace(",", ""))
    assert "analog.tile_count" in str(err.value) and "analog.tile.tiers" in str(err.value)
    tiles = -(-needed // 2)                                             # the unit chip has 2 tiers
    text = (UNIT_YAML.replace("tile_count: 8", f"tile_count: {tiles}")
            .replace("width: 2\n  height: 2", f"width: {-(-tiles // 2)}\n  height: 1"))
    run = build_run(load_chip_text(text), model, trace, "all-analog", batch=8)
    assert run.mapping.report["crossbar_slots_used"] == needed             # the slot counter includes padding
    # by hand (sim/mapping.py rule): all-analog places q, k, v, o (8 x 8: 2 x 2 = 4 slots on 4 x 4 crossbars),
    # the router (2 x 8: 2 slots), per expert gate, up (12 x 8: 2 row x 3 column blocks = 6) and down (8 x 12:
    # 3 x 2 = 6), then lm_head (12 x 8: 6); each starts at a multiple of the largest power of two <= its slots
    slot = padding = 0
    for n in [4, 4, 4, 4, 2] + [6, 6, 6] * 2 + [6]:
        align = 1 << (n.bit_length() - 1)
        padding += -slot % align
        slot += -slot % align + n
    assert (slot, padding) == (74, 14)      # q..o 0-15, router 16-17, then 6-slot matrices at 20, 28, ..., 68
    assert needed == slot and run.mapping.report["alignment_padding_slots"] == padding


def test_steady_state_throughput_does_not_depend_on_run_length():
    """Same tokens per request (64) and micro-batches of 16 with 4 in flight: whole-run figures include the
    pipeline's fill and drain, steady-state ones (between the 4th and the (n-4)-th completion) do not."""
    model = from_hf_config(TINY)
    steady, whole = {}, {}
    for tokens in (1024, 8192):
        trace = synthesize(SyntheticSpec(tokens=tokens, requests=tokens // 64, seed=0), model)
        r = simulate(load_chip_text(UNIT_YAML), model, trace, "all-analog", batch=16, max_inflight=4)
        assert r.data["steady_state"]["reached"]
        steady[tokens] = r.metrics["steady_throughput_tokens_per_s"]
        whole[tokens] = r.metrics["throughput_tokens_per_s"]
    assert steady[8192] == pytest.approx(steady[1024], rel=0.02)
    short = simulate(load_chip_text(UNIT_YAML), model, synthesize(SyntheticSpec(tokens=64, requests=1, seed=0), model),
                     "all-analog", batch=16, max_inflight=4)
    assert not short.data["steady_state"]["reached"] and short.data["steady_state"]["needed_micro_batches"] == 10
    assert short.metrics["steady_throughput_tokens_per_s"] != short.metrics["steady_throughput_tokens_per_s"]  # NaN


def test_steady_state_window_by_hand():
    from sim.metrics import steady_state

    ends = np.array([10, 20, 30, 40, 50, 60, 70, 80], np.int64) * 1000        # ps
    s = steady_state(ends, np.full(8, 5), in_flight=2)
    # window from the 2nd completion (20 ns) to the 6th (60 ns): completions 3..6 inside, 4 x 5 tokens in 40 ns
    assert s["window_s"] == [20e-9, 60e-9] and s["tokens"] == 20
    assert s["throughput_tokens_per_s"] == pytest.approx(20 / 40e-9)


def test_exposure_shares_by_hand():
    """Raw, gate-weighted and score-weighted analog shares of a two-token, two-layer trace, summed by hand;
    the unobserved slot (-1) counts nowhere."""
    from sim.metrics import exposure

    class Model:
        moe_layers = (0, 1)

    experts = np.array([[[0, 1], [2, -1]], [[1, 2], [0, 0]]], np.int16)     # [T=2, L=2, k=2]
    weights = np.array([[[0.5, 0.25], [0.75, 0.0]], [[0.125, 0.5], [0.25, 0.25]]], np.float32)
    digital = np.array([[True, False, False], [False, False, True]])         # [layers, experts]
    scores = np.array([[1.0, 2.0, 4.0], [8.0, np.nan, 3.0]])
    trace = RoutingTrace(experts, weights, np.zeros(2, np.int32), np.arange(2, dtype=np.int32), np.zeros(2, np.int8),
                         np.ones(2, bool), 3, {"source": "test"})
    got = exposure(trace, Model, digital, scores)
    # selections (layer, expert, weight, score, analog): (0,0,.5,1,no) (0,1,.25,2,yes) (1,2,.75,3,no)
    # (0,1,.125,2,yes) (0,2,.5,4,yes) (1,0,.25,8,yes) (1,0,.25,8,yes)
    assert got["analog_exposure_macs"] == pytest.approx(5 / 7)
    assert got["analog_exposure_gate_weighted"] == pytest.approx((0.25 + 0.125 + 0.5 + 0.25 + 0.25) / 2.625)
    assert got["analog_exposure_score_weighted"] == pytest.approx((2 + 2 + 4 + 8 + 8) / 28)
