"""Systems of chips (issue 31): all-to-all bytes and link times against hand counts, one-chip systems against
the single-chip engine, topology hop counts, the fit against the crossbar slot count, and validation."""

from __future__ import annotations

import json
from math import ceil
from pathlib import Path

import numpy as np
import pytest

from arch import costs, load_chip
from arch.system import load_system, load_system_text
from sim.api import simulate
from sim.cli import main
from sim.engine.workplan import build_plan
from sim.placement import PlacementContext, place
from sim.system.alltoall import layer_traffic
from sim.system.layout import SystemLayoutError, assign, build_layout, split_counts
from sim.system.simulate import simulate_system
from sim.system.topology import build_topology, phase_energy_pj, phase_time_ns
from tests.conftest import UNIT_YAML
from workloads.checkpoints.stats import synthetic_stats
from workloads.shapes import from_hf_config, load_model
from workloads.traces.format import RoutingTrace
from workloads.traces.synthetic import SyntheticSpec

# hidden 4, one MoE layer of 4 experts, top-2: every matrix fits one 4x4 crossbar slot of the unit chip
TINY = {"hidden_size": 4, "num_hidden_layers": 1, "num_attention_heads": 1, "num_key_value_heads": 1,
        "head_dim": 4, "vocab_size": 4, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 4}

BW_GBPS, LAT_NS, E_PJ = 8.0, 3.0, 0.5


def two_chip_yaml(topology: str = "full", extra: str = "") -> str:
    return f"""name: two
chips:
  - {{hw: unit.yaml, count: 2, role: analog}}
interconnect:
  topology: {topology}
  link_bandwidth_gbps: {BW_GBPS}
  link_latency_ns: {LAT_NS}
  link_energy_pj_per_bit: {E_PJ}
{extra}all_to_all: {{dispatch_bits: 8, combine_bits: 16, overlap: none}}
attention: {{placement: each-chip}}
"""


@pytest.fixture
def unit_dir(tmp_path: Path) -> Path:
    (tmp_path / "unit.yaml").write_text(UNIT_YAML)
    return tmp_path


def trace_of(model, routes: list[tuple[int, int]]) -> RoutingTrace:
    T = len(routes)
    experts = np.array(routes, np.int16).reshape(T, 1, 2)
    return RoutingTrace(experts, np.full((T, 1, 2), 0.5, np.float32), np.zeros(T, np.int32),
                        np.arange(T, dtype=np.int32), np.zeros(T, np.int8), np.ones(1, bool), model.num_experts,
                        {"source": "test"})


# tokens and their top-2 experts; chip 0 holds experts 0, 1 and chip 1 experts 2, 3 (contiguous); token i lives
# on chip i mod 2 (data-parallel attention over both chips)
ROUTES = [(0, 1), (0, 2), (2, 3), (1, 3), (0, 3), (2, 3)]
# by hand: token -> (dispatch messages src->dst, combine messages src->dst)
#  t0 home 0, experts on {0}: none | t1 home 1, {0, 1}: 1->0, back 0->1 | t2 home 0, {1}: 0->1, back 1->0
#  t3 home 1, {0, 1}: 1->0, back 0->1 | t4 home 0, {0, 1}: 0->1, back 1->0 | t5 home 1, {1}: none
HAND_DISPATCH = {(0, 1): 2, (1, 0): 2}
HAND_COMBINE = {(0, 1): 2, (1, 0): 2}


def test_two_chips_dispatch_combine_and_link_time_by_hand(unit_dir):
    system = load_system_text(two_chip_yaml(), "two.yaml", unit_dir)
    model = from_hf_config(TINY, name="tiny")
    tr = trace_of(model, ROUTES)
    placement = place("all-analog", PlacementContext(model, tr, synthetic_stats(model, 0)))
    plan = build_plan(tr, model, "prefill", 64)
    lay = build_layout(system, model, placement, "contiguous", plan.counts.sum(axis=0))
    assert lay.chip_of_expert[0].tolist() == [0, 0, 1, 1]
    traffic = layer_traffic(system, model, plan, lay, 0)
    h = model.hidden_size
    d_bytes, c_bytes = h * 8 / 8, h * 16 / 8
    for (s, d), msgs in HAND_DISPATCH.items():
        assert traffic.dispatch[0, s, d] == msgs * d_bytes
    for (s, d), msgs in HAND_COMBINE.items():
        assert traffic.combine[0, s, d] == msgs * c_bytes
    assert traffic.dispatch.sum() == sum(HAND_DISPATCH.values()) * d_bytes
    assert traffic.combine.sum() == sum(HAND_COMBINE.values()) * c_bytes
    topo = build_topology(system.spec.interconnect, 2)
    t_d, _ = phase_time_ns(topo, system.spec.interconnect, traffic.dispatch[0])
    t_c, _ = phase_time_ns(topo, system.spec.interconnect, traffic.combine[0])
    # full topology: one direct link each way, 1 hop; the busiest link carries 2 messages
    assert t_d == 2 * d_bytes * 8 / BW_GBPS + 1 * LAT_NS
    assert t_c == 2 * c_bytes * 8 / BW_GBPS + 1 * LAT_NS
    result = simulate_system(system, model, tr, "all-analog", layout="contiguous")
    m = result.metrics
    assert m["all_to_all_dispatch_bytes_per_token"] == sum(HAND_DISPATCH.values()) * d_bytes / len(ROUTES)
    assert m["all_to_all_combine_bytes_per_token"] == sum(HAND_COMBINE.values()) * c_bytes / len(ROUTES)
    assert result.data["time_s"]["dispatch"] == pytest.approx(t_d * 1e-9, rel=1e-12)
    assert result.data["time_s"]["combine"] == pytest.approx(t_c * 1e-9, rel=1e-12)
    bits = 8 * (sum(HAND_DISPATCH.values()) * d_bytes + sum(HAND_COMBINE.values()) * c_bytes)
    assert m["interconnect_energy_j"] == pytest.approx(bits * 1 * E_PJ * 1e-12, rel=1e-12)
    # overlap none: the layer is A + D + E + C
    ts = result.data["time_s"]
    assert m["makespan_s"] == pytest.approx(ts["attention"] + ts["dispatch"] + ts["experts"] + ts["combine"],
                                            rel=1e-12)


POLICIES = ("all-analog", "all-digital", "maxnn", "maxnn-lowest", "random", "frequency")


@pytest.mark.parametrize("policy", POLICIES)
def test_one_chip_system_is_the_single_chip_result(unit_dir, policy):
    model = from_hf_config({**TINY, "num_experts": 2, "num_experts_per_tok": 1}, name="tiny2")   # 12 of 16 slots
    spec = SyntheticSpec(tokens=40, requests=2, seed=3)
    system = load_system(unit_dir / "unit.yaml")
    assert system.single_chip and system.n_chips == 1
    got = simulate_system(system, model, spec, policy, fraction=0.25, batch=8, seed=3).data
    want = simulate(load_chip(unit_dir / "unit.yaml"), model, spec, policy, fraction=0.25, batch=8, seed=3).data
    assert got["counters"] == want["counters"]
    assert got["metrics"]["makespan_s"] == want["metrics"]["makespan_s"]
    assert got["energy_pj"] == want["energy_pj"]


def test_one_chip_preset_system_equals_run():
    system = load_system("aimc-3d-moe")
    spec = SyntheticSpec(tokens=64, seed=1)
    got = simulate_system(system, "olmoe-1b-7b", spec, "maxnn").data
    want = simulate("aimc-3d-moe", "olmoe-1b-7b", spec, "maxnn").data
    assert got["counters"] == want["counters"] and got["metrics"]["makespan_s"] == want["metrics"]["makespan_s"]


def test_link_bound_phase_is_bytes_over_bandwidth_plus_hops_times_latency(unit_dir):
    yaml = two_chip_yaml("ring").replace("count: 2", "count: 4")
    system = load_system_text(yaml, "ring.yaml", unit_dir)
    ic = system.spec.interconnect
    topo = build_topology(ic, 4)
    B = 1000.0
    pb = np.zeros((4, 4))
    pb[0, 2] = B                   # 2 hops clockwise: links 0->1, 1->2
    pb[1, 2] = B                   # 1 hop: link 1->2, shared with the message above
    t, link = phase_time_ns(topo, ic, pb)
    assert link[1] == 2 * B        # link 1 (chip 1 -> chip 2) carries both
    assert t == 2 * B * 8 / BW_GBPS + 2 * LAT_NS
    assert phase_energy_pj(topo, ic, pb) == B * 8 * (2 + 1) * E_PJ
    # through a switch: two link traversals and the switch once
    sw = two_chip_yaml("switch", "  switch_latency_ns: 7.0\n  switch_energy_pj_per_bit: 0.25\n").replace(
        "interconnect:\n  topology: switch\n", "interconnect:\n  topology: switch\n").replace("count: 2", "count: 4")
    s2 = load_system_text(sw, "sw.yaml", unit_dir)
    topo2 = build_topology(s2.spec.interconnect, 4)
    t2, link2 = phase_time_ns(topo2, s2.spec.interconnect, pb)
    assert link2[4 + 2] == 2 * B   # the switch's downlink to chip 2
    assert t2 == 2 * B * 8 / BW_GBPS + 2 * LAT_NS + 7.0
    assert phase_energy_pj(topo2, s2.spec.interconnect, pb) == 2 * B * 8 * (2 * E_PJ + 0.25)


def test_hop_counts_by_hand(unit_dir):
    ring = build_topology(load_system_text(two_chip_yaml("ring").replace("count: 2", "count: 6"), "r", unit_dir)
                          .spec.interconnect, 6)
    assert [int(ring.hops[0, d]) for d in range(6)] == [0, 1, 2, 3, 2, 1]
    assert ring.path(0, 3) == [0, 1, 2]                 # a tie goes clockwise
    assert ring.path(0, 5) == [6 + 0]                   # counter-clockwise link leaving chip 0
    torus_yaml = two_chip_yaml("torus2d", "  dims: [4, 3]\n").replace("count: 2", "count: 12")
    torus = build_topology(load_system_text(torus_yaml, "t", unit_dir).spec.interconnect, 12)
    # chip c at (c mod 4, c div 4): (0,0) -> (2,1) = chip 6: 2 + 1; (0,0) -> (3,2) = chip 11: 1 + 1 (wrap)
    assert torus.hops[0, 6] == 3 and torus.hops[0, 11] == 2 and torus.hops[5, 5] == 0
    assert torus.path(0, 11) == [4 * 0 + 1, 4 * 3 + 3]  # -x to (3,0), then -y to (3,2)
    sw = build_topology(load_system_text(two_chip_yaml("switch").replace("count: 2", "count: 5"), "s", unit_dir)
                        .spec.interconnect, 5)
    assert (sw.hops == 2 * (1 - np.eye(5, dtype=int))).all() and sw.path(1, 3) == [1, 5 + 3]
    full = build_topology(load_system_text(two_chip_yaml("full").replace("count: 2", "count: 5"), "f", unit_dir)
                          .spec.interconnect, 5)
    assert (full.hops == 1 - np.eye(5, dtype=int)).all() and full.path(2, 4) == [2 * 5 + 4]


def test_layouts_split_equally_and_round_robin_deals_in_turn():
    counts = split_counts(10, 4, 1)
    assert counts.tolist() == [2, 3, 3, 2]               # extras on chips 1, 2
    assert assign(counts, 1, "contiguous", np.zeros(10)).tolist() == [0, 0, 1, 1, 1, 2, 2, 2, 3, 3]
    assert assign(counts, 1, "round-robin", np.zeros(10)).tolist() == [(1 + j) % 4 for j in range(10)]
    load = np.array([9, 1, 1, 1, 8, 1, 1, 1, 7, 6], float)
    la = assign(counts, 1, "load-aware", load)
    assert np.bincount(la, minlength=4).tolist() == counts.tolist()
    assert len({la[0], la[4], la[8], la[9]}) == 4       # the four busiest experts on four chips


def test_capacity_error_names_the_chip_and_the_chips_needed(unit_dir):
    model = from_hf_config({**TINY, "num_experts": 16}, name="tiny16")
    system = load_system_text(two_chip_yaml(), "two.yaml", unit_dir)
    tr = trace_of(from_hf_config(TINY), ROUTES)
    tr = RoutingTrace(tr.experts, tr.weights, tr.request, tr.position, tr.phase, tr.observed, 16, tr.meta)
    placement = place("all-analog", PlacementContext(model, tr, synthetic_stats(model, 0)))
    # by hand: every matrix of the tiny model is 1 slot of 4x4 except the router [16, 4]: 4 column blocks.
    # Each chip holds 8 experts x 3 matrices and a replica of q, k, v, o, the router and lm_head: 24 + 4 + 4 + 1
    experts, replicas, have = 8 * 3, 4 + 4 + 1, 8 * 2
    need, unique = experts + replicas, 2 * experts
    with pytest.raises(SystemLayoutError, match=rf"unit#0 \(analog\) must hold {need} crossbar slots .* but has "
                                                rf"{have} \(8 tiles x 2 tiers\); the 2 unit chips must hold {unique} "
                                                rf"slots besides {replicas} slots of dense-module replicas each, i\.e\. "
                                                rf"at least {ceil(unique / (have - replicas))} such chips"):
        build_layout(system, model, placement, "contiguous", np.zeros((1, 16)))


def test_fit_deepseek_v3_all_analog_is_the_slot_count_and_runs(tmp_path, capsys):
    model = load_model("deepseek-v3")
    chip = load_chip("aimc-3d-moe")
    a = chip.analog
    slots = sum(costs.crossbar_slots(m.out_features, m.in_features, a.tile.rows, a.tile.cols) for m in model.matrices)
    expected = ceil(slots / (a.tile_count * a.tile.tiers))
    out = tmp_path / "ds.yaml"
    assert main(["system", "fit", "--model", "deepseek-v3", "--chip", "aimc-3d-moe", "--tokens", "64",
                 "--out", str(out)]) == 0
    fitted = load_system(out)
    assert fitted.n_chips == expected and fitted.analog.all()
    assert f"at least {expected} chips, {expected} hold" in capsys.readouterr().out
    run = tmp_path / "run"
    assert main(["system", "run", "--system", str(out), "--model", "deepseek-v3", "--policy", "all-analog",
                 "--tokens", "8", "--requests", "1", "--quiet", "--out", str(run)]) == 0
    data = json.loads((run / "result.json").read_text())
    r = data["runs"][0]
    assert r["metrics"]["chips"] == expected and r["metrics"]["tokens"] == 8
    assert (run / "per_chip_load.png").is_file() and (run / "report.md").is_file()
    again = tmp_path / "hw-fit.yaml"                   # hw fit --system is the same sizing
    assert main(["hw", "fit", "--system", "--model", "deepseek-v3", "--from", "aimc-3d-moe", "--tokens", "64",
                 "--out", str(again)]) == 0
    assert load_system(again).n_chips == expected


@pytest.mark.parametrize("edit, match", [
    (("  link_latency_ns:", "  link_colour: red\n  link_latency_ns:"), r"two\.yaml:\d+: interconnect\.link_colour: "
                                                                       r"unknown key"),
    (("topology: full", "topology: hypercube"), r"two\.yaml:\d+: interconnect\.topology: 'hypercube' is not allowed; "
                                                r"one of switch, ring, torus2d, full"),
    ((f"link_bandwidth_gbps: {BW_GBPS}", "link_bandwidth_gbps: .nan"), r"two\.yaml:\d+: interconnect\."
                                                                       r"link_bandwidth_gbps: NaN is not allowed"),
])
def test_validation_errors_are_one_line_exit_2(unit_dir, capsys, edit, match):
    path = unit_dir / "two.yaml"
    text = two_chip_yaml()
    assert edit[0] in text
    path.write_text(text.replace(*edit, 1))
    assert main(["system", "show", "--system", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    import re
    assert re.search(match, err), err


# ----------------------------------------------------------------------------- replicated hot experts
# expert 0 is hot: tokens 0-4 and 6 (6 of 8); experts 1, 2, 3 get 3, 4, 3. Contiguous: chip 0 holds 0, 1 and
# chip 1 holds 2, 3; token t lives on chip t mod 2 (each-chip attention over both chips).
ROUTES_HOT = [(0, 1), (0, 2), (0, 3), (0, 2), (0, 1), (2, 3), (0, 3), (1, 2)]


def test_replicate_hot_copies_the_hot_expert_and_splits_its_tokens_by_hand(unit_dir):
    from arch.system import with_replicate_hot
    from sim.system.simulate import analog_cost, tile_batch

    yaml = two_chip_yaml() + "experts: {replicate_hot: 1}\n"
    system = load_system_text(yaml, "two.yaml", unit_dir)
    assert system.spec.experts.replicate_hot == 1
    model = from_hf_config(TINY, name="tiny")
    tr = trace_of(model, ROUTES_HOT)
    placement = place("all-analog", PlacementContext(model, tr, synthetic_stats(model, 0)))
    plan = build_plan(tr, model, "prefill", 64)
    assert plan.token_order.tolist() == list(range(8)) and plan.n_mb == 1
    lay = build_layout(system, model, placement, "contiguous", plan.counts.sum(axis=0))
    assert lay.chip_of_expert[0].tolist() == [0, 0, 1, 1]           # the primaries are today's
    assert lay.replica_chip[0].tolist() == [1, -1, -1, -1]          # the hot expert's copy on the other chip
    # slots by hand: 2 experts x 3 matrices + q, k, v, o, router [4, 4], lm_head, 1 slot each; chip 1 + 3 copies
    assert lay.capacity["slots_needed"].tolist() == [6 + 6, 6 + 6 + 3]
    assert lay.capacity["replica_slots"].tolist() == [0, 3]
    # the rule: expert 0's token goes to the copy on its home chip (both chips hold one): even t -> chip 0
    # (t = 0, 2, 4, 6), odd t -> chip 1 (t = 1, 3). Chip 0 computes e0 x 4 + e1 x 3 = 7; chip 1 e0 x 2 + e2 x 4
    # + e3 x 3 = 9 (without the copy: 9 and 7).
    # Dispatch (distinct chips of a token's experts, less its home): t2 {0,1} home 0: 0->1; t6 the same; t7 {0,1}
    # home 1: 1->0; t1 and t3 (e0 on their home chip 1 now, e2 there too) send nothing; the rest are local.
    hand_dispatch = {(0, 1): 2, (1, 0): 1}
    traffic = layer_traffic(system, model, plan, lay, 0)
    h = model.hidden_size
    d_bytes, c_bytes = h * 8 / 8, h * 16 / 8
    for s in range(2):
        for d in range(2):
            assert traffic.dispatch[0, s, d] == hand_dispatch.get((s, d), 0) * d_bytes
            assert traffic.combine[0, s, d] == hand_dispatch.get((d, s), 0) * c_bytes     # back the same way
    assert traffic.dispatch_messages == 3 and traffic.combine_messages == 3
    r = simulate_system(system, model, tr, "all-analog", layout="contiguous").data
    assert r["per_chip"]["expert_tokens"] == [7.0, 9.0]
    assert r["metrics"]["all_to_all_dispatch_bytes_per_token"] == 3 * d_bytes / 8
    assert r["metrics"]["all_to_all_combine_bytes_per_token"] == 3 * c_bytes / 8
    assert r["layout"]["replicas_per_layer"] == [1] and r["layout"]["replica_crossbar_slots"] == 3
    assert r["layout"]["replicate_hot"] == 1 and r["layout"]["replicas_unplaced"] == 0
    assert r["per_chip"]["replica_crossbar_slots"] == [0, 3]
    assert "replicated hot experts" not in r["engine"]["not_modelled"]
    # expert phase: the busiest expert copy now computes 4 tokens (chip 0: e0 x 4; chip 1: e2 x 4), not 6
    chip = system.chip(0)
    g, dn = analog_cost(chip, model.expert_width, h, {}), analog_cost(chip, h, model.expert_width, {})
    assert r["time_s"]["experts"] == pytest.approx(float(tile_batch(g, 4) + tile_batch(dn, 4)) * 1e-9, rel=1e-12)
    base = simulate_system(with_replicate_hot(system, 0), model, tr, "all-analog", layout="contiguous").data
    assert base["per_chip"]["expert_tokens"] == [9.0, 7.0]
    assert base["time_s"]["experts"] == pytest.approx(float(tile_batch(g, 6) + tile_batch(dn, 6)) * 1e-9, rel=1e-12)
    # the same work, only moved: every action counted once per token and matrix
    assert r["energy_pj"]["chips_by_domain"]["analog"] == pytest.approx(
        base["energy_pj"]["chips_by_domain"]["analog"], rel=1e-12)


def test_replica_copy_alternates_by_position_off_the_home_chips(unit_dir):
    # three chips, attention data-parallel on all: token t lives on chip t mod 3. Contiguous over 3 chips: chip 0
    # holds experts 0, 1, chip 1 expert 2, chip 2 expert 3. Expert 0 (hot) gets its copy on the chip with the
    # fewest routed tokens: chip 2 (expert 3: 3 tokens) before chip 1 (expert 2: 4).
    from sim.system.alltoall import expert_chips, homes_of, token_positions

    system = load_system_text(two_chip_yaml().replace("count: 2", "count: 3") + "experts: {replicate_hot: 1}\n",
                              "three.yaml", unit_dir)
    model = from_hf_config(TINY, name="tiny")
    tr = trace_of(model, ROUTES_HOT)
    placement = place("all-analog", PlacementContext(model, tr, synthetic_stats(model, 0)))
    plan = build_plan(tr, model, "prefill", 64)
    lay = build_layout(system, model, placement, "contiguous", plan.counts.sum(axis=0))
    assert lay.chip_of_expert[0].tolist() == [0, 0, 1, 2] and lay.replica_chip[0].tolist() == [2, -1, -1, -1]
    pos = token_positions(plan)
    chips, to_copy = expert_chips(lay, 0, plan.experts[:, 0, :].astype(np.int64), homes_of(lay, 0, pos), pos)
    # expert 0's tokens t = 0, 1, 2, 3, 4, 6 with homes 0, 1, 2, 0, 1, 0: home 0 -> primary (t 0, 3, 6); home 2 ->
    # the copy (t 2); home 1 holds neither: t 1 (odd) -> copy, t 4 (even) -> primary
    e0 = {t: int(chips[t, 0]) for t in (0, 1, 2, 3, 4, 6)}
    assert e0 == {0: 0, 1: 2, 2: 2, 3: 0, 4: 0, 6: 0}
    assert to_copy.sum() == 2 and (chips[:, 1] == lay.chip_of_expert[0][plan.experts[:, 0, 1]]).all()
    r = simulate_system(system, model, tr, "all-analog", layout="contiguous").data
    # chip 0: e0 x 4 + e1 x 3; chip 1: e2 x 4; chip 2: e0 copy x 2 + e3 x 3
    assert r["per_chip"]["expert_tokens"] == [7.0, 4.0, 5.0]


# recorded from the system simulator before replicas existed (the tiny case also by hand: 5 dispatch messages,
# (0, 1) x 2 and (1, 0) x 3; chips computing 9 and 7 expert tokens)
TODAY_TINY = {"makespan_ns": 285.0, "energy_j": 2.68e-09, "dispatch_bytes": 20.0, "combine_bytes": 40.0,
              "messages": 5, "expert_tokens": [9.0, 7.0], "chip_energy_j": [1.304e-09, 1.136e-09],
              "by_domain": {"analog": 2136.0, "digital": 288.0, "memory": 16.0, "noc": 0.0}}
TODAY_RACK = {"makespan_ns": 1799000.9436051368, "energy_j": 3.2689244757686122, "dispatch_bytes": 33054720.0,
              "combine_bytes": 66109440.0, "messages": 16140,
              "by_domain": {"analog": 23282342627.055553, "digital": 1542047103317.537, "memory": 1635709428742.2837,
                            "noc": 39643648313.73579}}


def test_replicate_hot_zero_is_todays_result(unit_dir):
    from arch.system import with_replicate_hot

    model = from_hf_config(TINY, name="tiny")
    tiny = load_system_text(two_chip_yaml(), "two.yaml", unit_dir)
    rack = load_system("aimc-rack")
    cases = [(tiny, (model, trace_of(model, ROUTES_HOT), "all-analog"), {}, TODAY_TINY),
             (rack, ("olmoe-1b-7b", SyntheticSpec(tokens=128, seed=2), "maxnn"), {"layout": "load-aware"}, TODAY_RACK)]
    for system, args, kw, today in cases:
        assert system.spec.experts.replicate_hot == 0                  # the default
        default = simulate_system(system, *args, **kw).data
        zero = simulate_system(with_replicate_hot(system, 0), *args, **kw).data
        for key in ("metrics", "per_chip", "energy_pj", "time_s", "all_to_all", "layout"):
            assert json.dumps(zero[key], sort_keys=True) == json.dumps(default[key], sort_keys=True), key  # NaN too
        assert default["layout"]["replicas"] == 0 and default["layout"]["replica_crossbar_slots"] == 0
        m, a2a = default["metrics"], default["all_to_all"]
        assert m["makespan_ns"] == pytest.approx(today["makespan_ns"], rel=1e-12)
        assert m["energy_j"] == pytest.approx(today["energy_j"], rel=1e-12)
        assert a2a["dispatch_bytes"] == today["dispatch_bytes"] and a2a["combine_bytes"] == today["combine_bytes"]
        assert a2a["dispatch_messages"] == a2a["combine_messages"] == today["messages"]
        assert default["energy_pj"]["chips_by_domain"] == pytest.approx(today["by_domain"], rel=1e-12)
        if "expert_tokens" in today:
            assert default["per_chip"]["expert_tokens"] == today["expert_tokens"]
            assert default["per_chip"]["energy_j"] == pytest.approx(today["chip_energy_j"], rel=1e-12)


def test_replicas_that_do_not_fit_give_the_whole_truth(unit_dir):
    # unit chip: 8 tiles x 2 tiers = 16 slots; each chip holds 2 experts (6 slots) + 6 slots of dense replicas.
    # replicate_hot 3: hot experts 0 (6 tokens), 2 (4), then 1 (3; ties with 3, lower id). e0's copy -> chip 1
    # (free 4 -> 1), e2's -> chip 0 (free 4 -> 1), e1's -> chip 1 (no chip has room: the fewest-tokens other chip,
    # there the only one): chip 1 must hold 6 + 6 + 3 + 3 = 18 slots
    system = load_system_text(two_chip_yaml() + "experts: {replicate_hot: 3}\n", "two.yaml", unit_dir)
    model = from_hf_config(TINY, name="tiny")
    tr = trace_of(model, ROUTES_HOT)
    placement = place("all-analog", PlacementContext(model, tr, synthetic_stats(model, 0)))
    counts = build_plan(tr, model, "prefill", 64).counts.sum(axis=0)
    lay = build_layout(system, model, placement, "contiguous", counts, check=False)
    assert lay.replica_chip[0].tolist() == [1, 1, 0, -1]
    need, have, replicas = 6 + 6 + 3 + 3, 16, 6
    unique = (6 + 3) + (6 + 3 + 3)                       # both chips, less their dense replicas
    with pytest.raises(SystemLayoutError, match=(
            rf"unit#1 \(analog\) must hold {need} crossbar slots of 4x4 \(12 routed-expert matrices, 6 of them "
            rf"copies of hot experts taking 6 slots \(experts\.replicate_hot 3\), and its dense modules under policy "
            rf"all-analog, layout contiguous, attention each-chip\), but has {have} \(8 tiles x 2 tiers\); the 2 unit "
            rf"chips must hold {unique} slots \(9 of them hot-expert copies\) besides {replicas} slots of "
            rf"dense-module replicas each, i\.e\. at least {ceil(unique / (have - replicas))} such chips; lower "
            rf"experts\.replicate_hot \(3\) or `hetmoe system fit")):
        build_layout(system, model, placement, "contiguous", counts)
    # replicate_hot 2 fits: chip 0 and chip 1 hold 15 slots each
    ok = load_system_text(two_chip_yaml() + "experts: {replicate_hot: 2}\n", "two.yaml", unit_dir)
    lay2 = build_layout(ok, model, placement, "contiguous", counts)
    assert lay2.capacity["slots_needed"].tolist() == [15, 15] and lay2.replica_chip[0].tolist() == [1, -1, 0, -1]


def test_replicate_hot_option_and_validation(unit_dir, tmp_path, capsys):
    path = unit_dir / "two.yaml"
    path.write_text(two_chip_yaml() + "experts: {replicate_hot: -1}\n")
    assert main(["system", "show", "--system", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "two.yaml:11: experts.replicate_hot: -1 is outside the allowed range: in [0, 4096]" in err
    assert err.count("\n") == 0
    run = tmp_path / "run"
    assert main(["system", "run", "--system", "aimc-rack", "--model", "olmoe-1b-7b", "--tokens", "64", "--quiet",
                 "--replicate-hot", "2", "--out", str(run)]) == 0
    r = json.loads((run / "result.json").read_text())["runs"][0]
    model = load_model("olmoe-1b-7b")
    assert r["layout"]["replicate_hot"] == 2
    assert r["layout"]["replicas"] + r["layout"]["replicas_unplaced"] == 2 * len(model.moe_layers)
    assert main(["system", "run", "--system", "aimc-rack", "--model", "olmoe-1b-7b", "--tokens", "8", "--quiet",
                 "--replicate-hot", "-3", "--out", str(run)]) == 2
    assert "--replicate-hot -3: allowed an integer 0 .. 4096" in capsys.readouterr().err
