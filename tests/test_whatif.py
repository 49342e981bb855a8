"""What-if, break-even bisection, baselines, the answer-first report, multi-chip assumptions, hw fit."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from arch import costs, load_chip
from arch.derived import derived_figures
from arch.errors import HetmoeError
from sim.whatif import bisect, parse_vary, with_value
from workloads.shapes import load_model
from workloads.traces.synthetic import SyntheticSpec


def test_bisection_finds_a_hand_computed_crossing():
    """Digital time = bytes x 8 / bandwidth against a fixed analog time: they cross at bw* = bytes x 8 / t."""
    weight_bytes, t_analog_ns = 1e6, 1000.0
    f = lambda bw: t_analog_ns / (weight_bytes * 8 / bw) - 1          # noqa: E731  >= 0 once digital is as fast
    star = weight_bytes * 8 / t_analog_ns                                # 8,000 Gbit/s
    be = bisect(f, 100.0, 1e5, key="memory.dram.bandwidth_gbps", rel_tol=0.01)
    assert be.reached and be.below < star <= be.value
    assert be.value <= star * 1.01 + 1e-9


def test_integer_bisection_brackets_to_adjacent_values():
    be = bisect(lambda b: b - 37.5, 1, 1024, key="batch", integer=True)
    assert (be.below, be.value) == (37, 38)


def test_no_crossing_says_not_reached():
    be = bisect(lambda v: v - 5000.0, 10.0, 1000.0, key="memory.sram.capacity_mib")
    assert not be.reached and be.value is None
    assert "not reached in [10, 1,000]" in be.sentence("maxnn 12.5% reaches 50 % of all-analog's tokens/s/W")
    low = bisect(lambda v: 1.0, 10.0, 1000.0, key="k")
    assert low.reached and low.value == 10.0 and "already reached" in low.sentence("x")


def test_vary_values_go_to_overrides_or_run_options():
    key, vals = parse_vary("memory.sram.capacity_mib=32,128")
    p = with_value({"hw_overrides": {"memory": {"dram": {"channels": 2}}}, "batch": 64}, key, vals[1])
    assert p["hw_overrides"] == {"memory": {"dram": {"channels": 2}, "sram": {"capacity_mib": 128}}}
    assert with_value({"batch": 64}, "batch", 16.0)["batch"] == 16
    with pytest.raises(ValueError, match="at least two"):
        parse_vary("batch=4")


def test_whatif_cli_reports_not_reached_and_writes_a_tornado(tmp_path):
    out = tmp_path / "wi"
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "whatif", "--tokens", "128", "--quiet",
                           "--vary", "memory.sram.capacity_mib=32,256", "--break-even",
                           "memory.sram.capacity_mib=32:256", "--reach", "1000", "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "not reached in [32, 256] of memory.sram.capacity_mib" in proc.stdout
    assert (out / "tornado.png").stat().st_size > 10_000 and (out / "whatif.csv").is_file()


def test_whatif_rejects_an_unknown_key_before_running(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "whatif", "--tokens", "64", "--vary",
                           "memory.sram.size=1,2", "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown key" in proc.stderr and "Traceback" not in proc.stderr


def test_baseline_must_be_digital_only_and_runs():
    from sim.api import simulate
    from sim.cli.common import baseline_point

    with pytest.raises(HetmoeError, match="analog tiles; a baseline must be"):
        baseline_point({"hw_overrides": {}}, "aimc-3d-moe")
    p = baseline_point({"hw_overrides": {}, "batch": 32}, "a100-gpu")
    assert p["policy"] == "all-digital" and p["role"] == "baseline"
    r = simulate("a100-gpu", "olmoe-1b-7b", SyntheticSpec(tokens=64, seed=0), "all-digital", batch=32)
    assert r.data["mapping"]["tiles_used"] == 0
    # compute roofline from the spec: every token needs its dense matrices and top_k of each layer's experts
    # (out x in MACs each), on 108 SMs x 2,048 int8 MACs x 1.41 GHz x mac_efficiency 0.5
    from workloads.shapes import EXPERT
    m = load_model("olmoe-1b-7b")
    macs = sum(x.out_features * x.in_features * (m.top_k / m.num_experts if x.module == EXPERT else 1)
               for x in m.matrices)
    assert 1.1e9 < macs < 1.3e9          # OLMoE: 1.3 B active parameters, 0.1 B of them the embedding lookup
    roof = 108 * 2048 * 1.41e9 * 0.5 / macs
    assert 0 < r.metrics["throughput_tokens_per_s"] <= roof
    with pytest.raises(HetmoeError, match="no analog tiles"):
        simulate("a100-gpu", "olmoe-1b-7b", SyntheticSpec(tokens=64, seed=0), "maxnn", batch=32)


def _run(policy, fraction, tpw, tps, energy, *, hw="chip", role=None, counters=None, tokens=100):
    return {"placement": {"policy": policy, "fraction": fraction}, "config": {"hw": hw},
            "metrics": {"tokens_per_s_per_w": tpw, "throughput_tokens_per_s": tps, "energy_per_token_uj": 1e6 / tpw,
                        "tokens": tokens},
            "energy_pj": energy, "counters": counters or {}, **({"role": role, "show_hw": True} if role else {})}


def test_answer_names_the_front_and_the_dominant_energy_term():
    from sim.report.answer import cost_answer

    runs = [_run("all-analog", 0.0, 1000.0, 100.0, {"analog": {"adc": 8.0, "dac": 2.0}}),
            _run("maxnn", 0.125, 500.0, 300.0, {"memory": {"dram": 7.0, "sram": 1.0}, "analog": {"adc": 2.0}},
                 counters={"dram_bytes": 5e9}),
            _run("all-digital", 1.0, 100.0, 50.0, {"memory": {"dram": 9.0}, "digital": {"mac": 1.0}}),
            _run("all-digital", 1.0, 50.0, 1000.0, {"digital": {"static": 1.0}}, hw="gpu", role="baseline")]
    text = " ".join(cost_answer(runs))
    # front (lower energy, higher throughput): all-analog (1000 tpw), maxnn (300 tps), gpu baseline (1000 tps)
    assert "Pareto front: all-analog, maxnn 12.5%, gpu: all-digital." in text
    assert "50 % of all-analog's (1000)" in text and "5× all-digital's (100)" in text
    assert "70 % of maxnn 12.5 %'s energy is DRAM weight and KV streaming: 50 MB per token" in text
    assert "90 % of all-digital's energy is DRAM" in text
    assert "Against the baseline gpu" in text and "10× its tokens/s/W" in text


def test_multi_chip_report_keeps_each_chips_assumptions():
    from sim.report.markdown import _chip_lines

    runs = [{"config": {"hw": n, "hw_source": n}, "hw_figures": derived_figures(load_chip(n))}
            for n in ("aimc-3d-moe", "hermes-64", "aimc-3d-moe")]
    lines = _chip_lines(runs)
    assert len(lines) == 2
    assert "`aimc-3d-moe`" in lines[0] and "2,048 tiles of 512x512" in lines[0] and "SRAM 32 MiB" in lines[0]
    assert "`hermes-64`" in lines[1] and "64 tiles of 256x256" in lines[1] and "SRAM 8 MiB" in lines[1]


def _slots_by_hand(model, rows, cols) -> int:
    """Every matrix on ceil(out/rows) x ceil(in/cols) slots... as arch.costs.crossbar_slots, each starting at a
    multiple of the largest power of two <= its slot count (at most 64), in model order."""
    slot = 0
    for m in model.matrices:
        n = costs.crossbar_slots(m.out_features, m.in_features, rows, cols)
        align = 1 << min(int(math.log2(n)), 6)
        slot = -(-slot // align) * align + n
    return slot


def test_hw_fit_writes_a_system_that_holds_exactly_the_slots_and_runs(tmp_path):
    from sim.api import simulate

    out = tmp_path / "fit.yaml"
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "hw", "fit", "--model", "olmoe-1b-7b", "--from",
                           "aimc-3d-moe", "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    chip = load_chip(out)
    model = load_model("olmoe-1b-7b")
    need = _slots_by_hand(model, chip.analog.tile.rows, chip.analog.tile.cols)
    tiers = chip.analog.tile.tiers
    assert chip.analog.tile_count == -(-need // tiers)
    assert chip.noc.width * chip.noc.height * chip.noc.tiles_per_node >= chip.analog.tile_count
    assert "extends: aimc-3d-moe" in out.read_text() and "der:" in out.read_text()
    r = simulate(str(out), model, SyntheticSpec(tokens=64, seed=0), "all-analog", batch=32)
    assert r.data["mapping"]["crossbar_slots_used"] <= chip.analog.tile_count * tiers
    assert np.isfinite(r.metrics["tokens_per_s_per_mm2"])
