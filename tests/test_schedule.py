"""The stage scheduler's rules, each against a time computed by hand from the spec, and the compiled
scheduler against its plain-Python reference on random small systems."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arch import costs, load_chip_text
from sim.api import build_run
from sim.engine.kernels import load
from tests.conftest import UNIT_YAML
from workloads.checkpoints.stats import synthetic_stats
from workloads.shapes import from_hf_config
from workloads.traces.synthetic import SyntheticSpec, synthesize


def ps(ns: float) -> int:
    return int(ns * 1000.0 + 0.5)


# hidden 8 on 4x4 crossbars: q_proj (8 x 8) is the first analog matrix, 2 row blocks x 2 column blocks
WIDE = {"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
        "head_dim": 4, "vocab_size": 8, "num_experts": 2, "num_experts_per_tok": 1, "moe_intermediate_size": 4}
LOCAL_UNIT = "  local_digital: {ops_per_cycle: 1, clock_ghz: 1.0, energy_pj_per_op: 1.0}\n"


def chip_yaml(width: int, tiles: int, tiles_per_node: int, *, fast_noc: bool = False, extra: str = "") -> str:
    text = (UNIT_YAML.replace("width: 2\n  height: 2\n  tiles_per_node: 2",
                              f"width: {width}\n  height: 1\n  tiles_per_node: {tiles_per_node}")
            .replace("tile_count: 8", f"tile_count: {tiles}").replace("tiers: 2", "tiers: 64")
            .replace("  static_power_mw_per_tile: 0.0\n", "  static_power_mw_per_tile: 0.0\n" + LOCAL_UNIT))
    if fast_noc:   # messages take ~0 ps, so the test isolates tiles and digital units
        text = text.replace("link_bandwidth_gbps: 8", "link_bandwidth_gbps: 1.0e12").replace(
            "router_latency_ns: 1.0", "router_latency_ns: 0.0")
    return text + extra


def engine_for(text: str, policy: str = "all-analog", model_cfg: dict = WIDE, tokens: int = 4, **kw):
    model = from_hf_config(model_cfg, name="wide")
    trace = synthesize(SyntheticSpec(tokens=tokens, requests=1, seed=0), model)
    return build_run(load_chip_text(text, "t.yaml"), model, trace, policy, stats=synthetic_stats(model, 0), **kw)


def slot_ps(chip, r: int = 4, c: int = 4) -> int:
    return round(costs.mvm_latency_ns(chip.analog, chip.precision.activation_bits, r, c) * 1000)


def q_proj(run) -> int:
    return next(i for i, m in enumerate(run.model.matrices) if m.name.endswith("q_proj"))


def test_slots_book_their_own_tiles_and_serialise_on_a_shared_tile():
    """q_proj's 4 slots on 2 tiles of one node: slot s on tile s % 2, so tile 0 holds (row 0, col 0) and
    (row 1, col 0), tile 1 the two of column 1. Tile 0 is busy until P. Per slot: tile 1's slots run
    [0, m], [m, 2m]; tile 0's [P, P + m], [P + m, P + 2m]. Column 0's two partials meet on the node's
    unit after P + 2m and take 4 adds (1 op/ns); column 1's adds [2m, 2m + 4 ns] fit before that.
    End = P + 2m + 4 ns. (Gang booking would start all four at P: P + 2m + 4 ns only by accident of
    equal loads; it would also hold tile 1 idle until P, which the check on tile 1's busy end catches.)"""
    run = engine_for(chip_yaml(1, 2, 2))
    e, mi = run.engine, q_proj(run)
    m, P = slot_ps(run.chip), 50_000
    e.k.take(e.st, 0, 0, P, 0, -1, -1)                   # tile 0 busy [0, P)
    end = e.matrix_op(0, mi, 1)
    assert end == P + 2 * m + ps(4 / 1.0)
    ivl = e.st.ivl[e.st.cal[1, 0]:e.st.cal[1, 0] + e.st.cal[1, 2]]
    assert ivl.tolist() == [[0, 2 * m]]                  # tile 1 ran at once, its two slots back to back


def test_column_blocks_reduce_at_their_own_sites_in_parallel():
    """q_proj's 4 slots on 4 tiles, one per node of a 4 x 1 mesh (messages ~free): column 0 = slots on
    nodes 0 and 2 reduces at node 0, column 1 = nodes 1 and 3 at node 1, both at once:
    end = m(n) + (2 - 1) * n * 4 adds / 1 op/ns. One reduction site would serialise the two: + 4n ns more."""
    for n in (1, 3):
        run = engine_for(chip_yaml(4, 4, 1, fast_noc=True))
        e, mi = run.engine, q_proj(run)
        a = run.chip.analog
        d = slot_ps(run.chip) + (n - 1) * round(costs.initiation_interval_ns(a, 2, 4, 4) * 1000)
        assert e.matrix_op(0, mi, n) == d + ps(4 * n / 1.0)
        assert e.busy_ps("local_digital")[:2].tolist() == [ps(4 * n), ps(4 * n)]   # sites 0 and 1


def test_prefetch_overlaps_the_second_stream_with_the_first_compute():
    """Two streamed digital GEMMs, the second on the first's output. Stream i: DRAM channel busy
    X_i = bytes_i * 8 / bw, weights on chip L + X_i after it starts; compute C_i. Serial (prefetch off):
    end = max(C_1, L + X_1) + max(C_2, L + X_2). Prefetch: the second stream starts when the channel
    frees (X_1), so end = max(end_1 + C_2, X_1 + L + X_2)."""
    text = (UNIT_YAML.replace("sram: {capacity_mib: 1", "sram: {capacity_mib: 0")
            .replace("latency_ns: 1.0, static", "latency_ns: 100.0, static"))
    ends = {}
    for prefetch in (True, False):
        run = engine_for(text.replace("capacity_mib: 0,", f"capacity_mib: 0, prefetch: {str(prefetch).lower()},"),
                         policy="all-digital", model_cfg=WIDE)
        e, chip = run.engine, run.chip
        mats = run.model.matrices
        a, b = q_proj(run), q_proj(run) + 1                 # q_proj then k_proj, both 8 x 8
        n = 2
        mem, simd = chip.memory, chip.digital.simd
        X = [ps(mats[i].params * 8 / 8 * 8 / mem.dram.bandwidth_gbps) for i in (a, b)]
        S = [ps(mem.dram.latency_ns + mats[i].params * 8 / mem.dram.bandwidth_gbps) for i in (a, b)]
        C = [ps(max(n * mats[i].params / costs.simd_macs_per_ns(simd),
                    n * (mats[i].in_features + mats[i].out_features) * 2 / 8 * 8 / mem.sram.bandwidth_gbps))
             for i in (a, b)]
        first = e.gemm(0, a, n)
        ends[prefetch] = e.gemm(first, b, n)
        assert first == max(C[0], S[0])
        expect = max(first + C[1], X[0] + S[1]) if prefetch else first + max(C[1], S[1])
        assert ends[prefetch] == expect
    assert ends[True] < ends[False]


def test_decode_context_sets_kv_reads():
    """Decode of one sequence of T tokens from a trace without positions at --context-tokens c: token i
    attends to c + i + 1 positions, so each layer reads kv_elements_per_token x (c + i + 1) x bytes."""
    model = from_hf_config(WIDE, name="wide")
    trace = synthesize(SyntheticSpec(tokens=6, requests=1, seed=0), model)
    assert (trace.position < 0).all()
    chip = load_chip_text(UNIT_YAML.replace("capacity_mib: 1", "capacity_mib: 64"), "u.yaml")  # weights resident
    dram = {}
    for c in (0, 4096):
        run = build_run(chip, model, trace, "all-digital", mode="decode", batch=1, context_tokens=c,
                        stats=synthetic_stats(model, 0))
        run.engine.run()
        dram[c] = run.engine.c.dram_bytes
        per_layer = sum(model.kv_elements_per_token() * (c + i + 1) * 2 / 8 for i in range(6))
        assert dram[c] == pytest.approx(model.num_layers * per_layer)
        assert str(c) in run.plan.context_source
    assert dram[4096] > dram[0]


def test_power_gating_charges_only_tiles_that_hold_a_matrix():
    """All-digital uses no tile: gated, no tile leaks; ungated, all 8 leak 2 mW for the whole run."""
    from sim.api import simulate
    text = UNIT_YAML.replace("static_power_mw_per_tile: 0.0", "static_power_mw_per_tile: 2.0")
    gated = simulate(load_chip_text(text, "u.yaml"), from_hf_config(WIDE, name="wide"),
                     SyntheticSpec(tokens=8, requests=1), "all-digital")
    ungated_chip = load_chip_text(text.replace("  static_power_mw_per_tile: 2.0\n",
                                               "  static_power_mw_per_tile: 2.0\n  power_gate_unused_tiles: false\n"),
                                  "u.yaml")
    leaky = simulate(ungated_chip, from_hf_config(WIDE, name="wide"), SyntheticSpec(tokens=8, requests=1),
                     "all-digital")
    assert gated.data["engine"]["tiles_powered"] == 0
    assert gated.data["energy_pj"]["analog"]["static"] == 0.0
    span_ns = leaky.data["metrics"]["makespan_s"] * 1e9
    assert leaky.data["energy_pj"]["analog"]["static"] == pytest.approx(8 * 2.0 * span_ns)


def test_yaml_accepts_exponent_and_underscore_numbers():
    chip = load_chip_text(UNIT_YAML.replace("link_bandwidth_gbps: 8", "link_bandwidth_gbps: 1e9")
                          .replace("capacity_mib: 1,", "capacity_mib: 1_000,")
                          .replace("bandwidth_gbps: 8, energy_pj_per_bit: 0.125", "bandwidth_gbps: 8.0e0, "
                                   "energy_pj_per_bit: 0.125"), "u.yaml")
    assert chip.noc.link_bandwidth_gbps == 1e9 and chip.memory.sram.capacity_mib == 1000


# ------------------------------------------------------------------------- compiled == reference
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(width=st.integers(1, 3), tiles_per_node=st.integers(1, 3), tiers=st.integers(2, 8),
       local=st.booleans(), prefetch=st.booleans(), experts=st.integers(2, 4), top_k=st.integers(1, 2),
       policy=st.sampled_from(["all-analog", "maxnn", "all-digital"]), mode=st.sampled_from(["prefill", "decode"]),
       seed=st.integers(0, 3))
def test_compiled_and_reference_schedules_agree(width, tiles_per_node, tiers, local, prefetch, experts, top_k,
                                                policy, mode, seed):
    cfg = dict(WIDE, num_hidden_layers=2, num_experts=experts, num_experts_per_tok=top_k)
    tiles = width * tiles_per_node
    text = (UNIT_YAML.replace("width: 2\n  height: 2\n  tiles_per_node: 2",
                              f"width: {width}\n  height: 2\n  tiles_per_node: {tiles_per_node}")
            .replace("tile_count: 8", f"tile_count: {2 * tiles}").replace("tiers: 2", f"tiers: {64 + tiers * 8}")
            .replace("capacity_mib: 1,", f"capacity_mib: 0, prefetch: {str(prefetch).lower()},"))
    if local:
        text = text.replace("  static_power_mw_per_tile: 0.0\n", "  static_power_mw_per_tile: 0.0\n" + LOCAL_UNIT)
    model = from_hf_config(cfg, name="rand")
    trace = synthesize(SyntheticSpec(tokens=24, requests=2, seed=seed), model)
    out = []
    for compiled in (True, False):
        run = build_run(load_chip_text(text, "r.yaml"), model, trace, policy, batch=4, mode=mode,
                        stats=synthetic_stats(model, seed))
        run.engine.k = load(compiled)
        makespan = run.engine.run()
        out.append((makespan, list(run.engine.mb_end_ps), run.engine.st.C.tolist(), run.engine.st.cal[:, 3].tolist(),
                    run.engine.bookings))
    assert out[0] == out[1]


# ------------------------------------------------------------------------- one calendar row
def _earliest_fit(busy: list[tuple[int, int]], t: int, d: int) -> int:
    """Brute force: the earliest s >= t with [s, s + d) clear of every booked interval."""
    if d <= 0:
        return t
    moved = True
    while moved:
        moved = False
        for a, b in busy:
            if a < t + d and b > t:
                t, moved = b, True
    return t


@settings(max_examples=60, deadline=None, derandomize=True)
@given(capacity=st.sampled_from([4, 8, 40]),
       ops=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 12), st.integers(0, 3)), min_size=1, max_size=80))
def test_calendar_row_books_the_earliest_gap(capacity, ops):
    """One resource's calendar (both the compiled and the reference kernel) against a brute-force list of
    bookings: every operation gets the earliest start >= its ready time clear of all earlier bookings while
    no gap was closed (``now`` only grows and ready times are >= now, so dropping finished intervals never
    changes a fit); once a full row closes a gap, starts may only be later, and bookings never overlap."""
    import numpy as np

    for kernels in (load(False), load(True)):
        cal = np.array([[0, capacity, 0, 0]], np.int64)
        ivl = np.zeros((capacity, 2), np.int64)
        misc = np.zeros(4, np.int64)
        booked: list[tuple[int, int]] = []
        now = 0
        for ready, d, step in ops:
            now += step
            t = now + ready
            s = int(kernels.cal_fit(cal, ivl, 0, t, d))
            want = _earliest_fit(booked, t, d)
            assert s >= want if misc[1] else s == want
            kernels.cal_book(cal, ivl, misc, 0, s, d, now)
            if d > 0:
                assert all(s + d <= a or b <= s for a, b in booked)
                booked.append((s, s + d))
            n = int(cal[0, 2])
            assert n <= capacity and all(ivl[i, 1] < ivl[i + 1, 0] or ivl[i, 1] == ivl[i + 1, 0] for i in range(n - 1))
        assert int(cal[0, 3]) == sum(b - a for a, b in booked)


def test_compile_notice_once_per_block_and_only_for_compiled_kernels():
    """numba announces a compilation (a cache miss) with a "numba:compile" event; the notice fires on the
    first one only, and never for the plain-Python reference."""
    from numba.core import event

    from sim.engine.kernels import compile_notice

    told = []
    with compile_notice(load(True), lambda: told.append(1)):
        for _ in range(3):
            with event.trigger_event("numba:compile", data={}):
                pass
    with event.trigger_event("numba:compile", data={}):     # outside the block: no listener left
        pass
    assert told == [1]
    with compile_notice(load(False), lambda: told.append(2)):
        with event.trigger_event("numba:compile", data={}):
            pass
    assert told == [1]


# ------------------------------------------------------------------------- calendar capacity
def test_calendar_capacity_halves_the_largest_kind_until_the_budget_holds():
    from sim.engine.simulator import CAPACITY, INTERVAL_BYTES, MIN_CAPACITY, calendar_capacity

    small = {"tile": 2048, "local_digital": 64, "link": 224, "simd": 1, "dram": 1}
    assert calendar_capacity(small) == CAPACITY
    budget = 2**28
    fixed = (10 * CAPACITY["tile"] + 1024 + 256) * INTERVAL_BYTES     # 10 tiles, the SIMD row and one DRAM channel
    links = 100_000                                   # 409.6 MB of link rows at 256: halved once fits
    want = CAPACITY["link"]
    while fixed + links * want * INTERVAL_BYTES > budget:
        want //= 2
    got = calendar_capacity({"tile": 10, "local_digital": 0, "link": links, "simd": 1, "dram": 1}, budget)
    assert want == 128 and got == {**CAPACITY, "link": want}
    # 1.2 M links do not fit even at the floor: every kind that holds rows ends at its floor
    got = calendar_capacity({"tile": 10, "local_digital": 0, "link": 1_200_000, "simd": 1, "dram": 1}, budget)
    assert got == {**MIN_CAPACITY, "local_digital": CAPACITY["local_digital"]}


def test_default_calendar_capacity_schedules_as_unbounded_calendars(monkeypatch):
    """Mixtral-8x7B all-analog on a 256-tier aimc-3d-moe, one micro-batch of 64: many more messages cross a
    link within a stage than the old 16-interval rows held, so full rows closed gaps and delayed later
    operations. The default capacities must give exactly the schedule of (practically) unbounded calendars;
    the old ones do not."""
    import sim.engine.simulator as sim_engine
    from arch import load_chip
    from workloads.shapes import load_model

    model = load_model("mixtral-8x7b")
    chip = load_chip("aimc-3d-moe", {"analog": {"tile": {"tiers": 256}}})
    trace = synthesize(SyntheticSpec(tokens=64, requests=2, seed=1), model)

    def makespan(caps: dict) -> tuple[int, int]:
        with monkeypatch.context() as m:
            m.setattr(sim_engine, "CAPACITY", {**sim_engine.CAPACITY, **caps})
            run = build_run(chip, model, trace, "all-analog", mode="prefill", batch=64)
            return run.engine.run(), run.engine.gaps_closed

    default, gaps = makespan({})
    unbounded, _ = makespan({"tile": 1024, "local_digital": 1024, "link": 1024})
    old, old_gaps = makespan({"tile": 16, "local_digital": 32, "link": 16})
    assert gaps == 0 and default == unbounded
    assert old_gaps > 0 and old > default
