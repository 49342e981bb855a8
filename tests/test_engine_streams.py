"""Weight streams and the SIMD gang (sim/engine/kernel.py, "Weight streams"), and utilisation as work
delivered (sim.api.utilisation). Every expected time is a closed form computed here from the spec.

The rule under test: a stream of B bytes holds a DRAM channel (and the DRAM route's links) for
B x 8 / min(DRAM, route) from its start t; its last byte is on chip at arrive = t + latency + that
+ route hops; the SIMD is booked for exactly the operation's compute time c from the earliest free
s >= max(ready, arrive - c). The SIMD is never held while an operation waits for its weights."""

from __future__ import annotations

import pytest
import yaml

from arch import costs, load_chip_text
from sim.api import build_run, utilisation
from sim.engine import ops
from tests.conftest import UNIT_YAML
from tests.test_schedule import WIDE, engine_for, ps, q_proj
from workloads.checkpoints.stats import synthetic_stats
from workloads.shapes import from_hf_config
from workloads.traces.synthetic import SyntheticSpec, synthesize

def _set_flow(text: str, key: str, **values) -> str:
    """Update the one-line mapping ``  key: {...}`` of a YAML text (other entries kept as they are)."""
    line = next(x for x in text.splitlines() if x.startswith(f"  {key}: {{"))
    body = yaml.safe_load(line.strip())[key]
    body.update(values)
    return text.replace(line, f"  {key}: {{" + ", ".join(f"{k}: {v}" for k, v in body.items()) + "}")


def streaming_chip(*, macs_per_cycle: int = 1, vector_ops_per_cycle: int = 1, sram_mib: int = 0,
                   sram_gbps: float = 8, dram_node: str = "[0, 0]", **dram) -> str:
    """UNIT_YAML with the DRAM entries ``dram`` and by default no SRAM for weights (every digital matrix
    streams)."""
    text = _set_flow(_set_flow(UNIT_YAML, "dram", **dram), "sram", capacity_mib=sram_mib, bandwidth_gbps=sram_gbps)
    assert "  macs_per_cycle: 1\n" in text and "vector_ops_per_cycle: 1\n" in text
    return (text.replace("  macs_per_cycle: 1\n", f"  macs_per_cycle: {macs_per_cycle}\n")
            .replace("vector_ops_per_cycle: 1\n", f"vector_ops_per_cycle: {vector_ops_per_cycle}\n")
            .replace("dram_node: [0, 0]", f"dram_node: {dram_node}"))


def gemm_compute_ns(chip, m, n: int) -> float:
    """A digital GEMM's time once its weights are on chip: MACs or activations through SRAM."""
    ab = chip.precision.activation_bits / 8
    return max(n * m.params / costs.simd_macs_per_ns(chip.digital.simd, chip.precision.digital_mac),
               n * (m.in_features + m.out_features) * ab * 8 / chip.memory.sram.bandwidth_gbps)


def weight_bytes(chip, m) -> float:
    return m.params * chip.precision.digital_weight_bits / 8


def simd_intervals(e) -> list[list[int]]:
    r = e.q.r_simd
    o, n = e.st.cal[r, 0], e.st.cal[r, 2]
    return e.st.ivl[o:o + n].tolist()


# ------------------------------------------------------------------------- (a) DRAM-bound digital op
def test_dram_bound_op_simd_busy_only_for_compute_and_dram_utilisation_is_delivered_bandwidth():
    """q_proj (8 x 8, 64 weight bytes) on 1 token, DRAM at node (1, 0) one hop from the SIMD node, DRAM
    32 Gbit/s behind 8 Gbit/s links: the stream runs at 8 Gbit/s (X = 64 ns on channel and link), arrives
    at L + 1 hop + X = 165 ns, while compute (4 MACs/ns) is c = 16 ns. The op ends at 165 ns = makespan. SIMD
    utilisation = c / makespan (the old gang booking held it for the wait: 1.0); DRAM utilisation =
    bytes x 8 / (32 Gbit/s x makespan) = 25 % of the booked X / makespan."""
    text = streaming_chip(bandwidth_gbps=32, latency_ns=100.0, macs_per_cycle=4, dram_node="[1, 0]")
    run = engine_for(text, policy="all-digital")
    e, chip = run.engine, run.chip
    mi = q_proj(run)
    m = run.model.matrices[mi]
    dram, noc = chip.memory.dram, chip.noc
    B = weight_bytes(chip, m)
    stream_gbps = min(dram.bandwidth_gbps, noc.link_bandwidth_gbps)
    X = B * 8 / stream_gbps
    arrive_ns = dram.latency_ns + 1 * noc.router_latency_ns + X
    c = gemm_compute_ns(chip, m, 1)
    assert arrive_ns > c                                    # DRAM-bound: the SIMD would wait

    end = e.gemm(0, mi, 1)
    assert end == ps(max(c, arrive_ns))
    assert simd_intervals(e) == [[ps(arrive_ns) - ps(c), ps(arrive_ns)]]    # computes as the last bytes land

    u = utilisation(chip, e, end)
    simd = [r for r in u["rows"] if r["kind"] == "simd"]
    assert simd[0]["utilisation"] == pytest.approx(ps(c) / end, rel=1e-12)
    assert u["summary"]["simd_mean"] == pytest.approx(c / (end / 1000), rel=1e-9)
    (ch,) = [r for r in u["rows"] if r["kind"] == "dram"]
    assert ch["utilisation"] == pytest.approx(B * 8 / (dram.bandwidth_gbps * end / 1000), rel=1e-12)
    assert ch["booked"] == pytest.approx(ps(X) / end, rel=1e-12)           # the channel's calendar
    assert u["summary"]["dram_mean"] == pytest.approx(0.25 * ch["booked"], rel=1e-3)
    b = u["bottleneck"]
    assert b["dram_peak_gbps"] == dram.channels * dram.bandwidth_gbps
    assert b["stream_path_gbps"] == noc.link_bandwidth_gbps
    assert b["effective_stream_gbps"] == stream_gbps
    assert b["dram_delivered_gbps"] == pytest.approx(B * 8 / (end / 1000), rel=1e-12)
    # the link into the SIMD node carries the stream at its own bandwidth: it binds (X / makespan)
    assert b["binding_resource"] == "noc_link"
    assert b["binding_utilisation"] == pytest.approx(X / (end / 1000), rel=1e-9)


# ------------------------------------------------------------------------- (b) two micro-batches
def test_second_micro_batch_computes_while_the_first_waits_for_its_weights():
    """Two DRAM channels straight into the SIMD (attachment: direct), DRAM 1 byte/ns, latency 100 ns, 16
    MACs/ns. Micro-batch 1's op A: q_proj on 1 token, 64 weight bytes: stream on channel 0 from 0, arrives
    at L + X_A = 164 ns; compute c_A = 4 ns. Micro-batch 2's op B, ready at the same time: the router (16
    bytes) on 32 tokens: stream on channel 1 from 0, arrives L + X_B = 116 ns; compute c_B = 80 ns
    (activations through SRAM). B's compute [L + X_B - c_B, L + X_B] lies inside A's wait, A's compute is
    [L + X_A - c_A, L + X_A], and the two end at max(c_B, L + X_B) and L + X_A. (Holding the SIMD from
    A's ready until its weights arrive, B could only start at L + X_A: makespan L + X_A + c_B.)"""
    text = streaming_chip(bandwidth_gbps=8, latency_ns=100.0, channels=2, attachment="direct", macs_per_cycle=16)
    run = engine_for(text, policy="all-digital")
    e, chip = run.engine, run.chip
    mats = run.model.matrices
    a = q_proj(run)
    b = next(i for i, m in enumerate(mats) if m.module == "router")
    dram = chip.memory.dram
    L = dram.latency_ns
    X_a, X_b = (weight_bytes(chip, mats[i]) * 8 / dram.bandwidth_gbps for i in (a, b))
    c_a, c_b = gemm_compute_ns(chip, mats[a], 1), gemm_compute_ns(chip, mats[b], 32)
    assert L + X_b <= L + X_a - c_a and c_b < L + X_b                      # the case the docstring works out

    end_a = e.gemm(0, a, 1)          # micro-batch 1
    end_b = e.gemm(0, b, 32)         # micro-batch 2, booked after it
    assert end_a == ps(L + X_a)
    assert end_b == ps(max(c_b, L + X_b))
    assert max(end_a, end_b) < ps(L + X_a + c_b)                            # the gang-held schedule's makespan
    assert simd_intervals(e) == [[ps(L + X_b) - ps(c_b), ps(L + X_b)], [ps(L + X_a) - ps(c_a), ps(L + X_a)]]
    assert e.busy_ps("dram").tolist() == [ps(X_a), ps(X_b)]                 # channel 0: A, channel 1: B


def test_simd_busy_time_does_not_depend_on_the_pipeline_depth():
    """A whole prefill run, all-digital, every weight streamed: the SIMD is booked only for compute, so its
    busy time is the same whether one or four micro-batches are in flight (waits differ, work does not)."""
    text = streaming_chip(bandwidth_gbps=8, latency_ns=100.0, macs_per_cycle=16)
    model = from_hf_config(dict(WIDE, num_hidden_layers=2), name="wide")
    trace = synthesize(SyntheticSpec(tokens=32, requests=4, seed=1), model)
    busy, spans = {}, {}
    for inflight in (1, 4):
        run = build_run(load_chip_text(text, "s.yaml"), model, trace, "all-digital", batch=4,
                        max_inflight=inflight, stats=synthetic_stats(model, 0))
        spans[inflight] = run.engine.run()
        busy[inflight] = int(run.engine.busy_ps("simd")[0])
    assert spans[4] < spans[1]
    assert busy[4] == busy[1]


# ------------------------------------------------------------------------- (c) idle chip, direct DRAM
@pytest.mark.parametrize("prefetch", [True, False])
@pytest.mark.parametrize("macs_per_cycle", [1, 64])      # 1: compute-bound; 64: DRAM-bound
def test_one_digital_op_on_an_idle_chip_with_direct_dram(macs_per_cycle, prefetch):
    """attachment: direct, no hops: q_proj on 4 tokens, ready when the stage starts, lasts exactly
    max(macs / mac_rate, latency + bytes x 8 / bw) (SRAM activations are faster than both here), with or
    without prefetch, and the SIMD is busy for macs / mac_rate only."""
    text = streaming_chip(bandwidth_gbps=8, latency_ns=50.0, attachment="direct", macs_per_cycle=macs_per_cycle,
                          sram_gbps=1.0e6)
    text = _set_flow(text, "sram", prefetch=str(prefetch).lower())
    run = engine_for(text, policy="all-digital")
    e, chip = run.engine, run.chip
    assert chip.memory.sram.prefetch is prefetch
    mi = q_proj(run)
    m, n = run.model.matrices[mi], 4
    dram = chip.memory.dram
    macs_ns = n * m.params / costs.simd_macs_per_ns(chip.digital.simd, chip.precision.digital_mac)
    stream_ns = dram.latency_ns + weight_bytes(chip, m) * 8 / dram.bandwidth_gbps
    assert macs_ns == pytest.approx(gemm_compute_ns(chip, m, n))            # MACs bind the on-chip time
    end = e.gemm(0, mi, n)
    assert end == ps(max(macs_ns, stream_ns))
    assert int(e.busy_ps("simd")[0]) == ps(macs_ns)
    assert int(e.busy_ps("dram")[0]) == ps(weight_bytes(chip, m) * 8 / dram.bandwidth_gbps)
    assert utilisation(chip, e, end)["bottleneck"]["stream_path_gbps"] == float("inf")


# ------------------------------------------------------------------------- attention's KV stream
def test_attention_core_books_the_simd_for_compute_not_for_the_kv_stream():
    """Decode of one token at context c = 4096 on resident weights: the core reads kv_elements_per_token x
    (c + 1) activations from DRAM (X = bytes x 8 / bw) while it does attention MACs and softmax over c + 1
    positions (compute k). Its SIMD record lasts k and ends when the last KV byte lands, L + X after the
    stream starts."""
    text = streaming_chip(bandwidth_gbps=8, latency_ns=100.0, macs_per_cycle=64, vector_ops_per_cycle=16, sram_mib=64)
    model = from_hf_config(WIDE, name="wide")
    trace = synthesize(SyntheticSpec(tokens=1, requests=1, seed=0), model)
    chip = load_chip_text(text, "kv.yaml")
    c = 4096
    run = build_run(chip, model, trace, "all-digital", mode="decode", batch=1, context_tokens=c, timeline=True,
                    stats=synthetic_stats(model, 0))
    run.engine.run()
    simd = chip.digital.simd
    ctx = c + 1
    k = (model.attention_macs_per_context() * ctx / costs.simd_macs_per_ns(simd, chip.precision.digital_mac)
         + model.num_heads * ctx * ops.SOFTMAX_OPS_PER_ELEMENT / costs.simd_vector_ops_per_ns(simd))
    kv = model.kv_elements_per_token() * ctx * chip.precision.activation_bits / 8
    X = kv * 8 / chip.memory.dram.bandwidth_gbps
    L = chip.memory.dram.latency_ns
    assert L + X > k
    recs = run.engine.timeline.records
    (core,) = [r for r in recs if r[0] == "simd" and r[3] == "L0.attn.core"]
    (stream,) = [r for r in recs if r[0] == "dram ch0" and r[3] == "L0.attn.core"]
    assert stream[2] - stream[1] == ps(X)
    assert core[2] - core[1] == ps(k)
    assert core[2] == stream[1] + ps(L + X)
