"""The report's answer from hand-built result dicts (no simulation): the two rules, the ridge point, the binding
resource, the unit figures the headline ratio rests on, and the default what-if knobs."""

from __future__ import annotations

import json
from types import SimpleNamespace

from sim.report.answer import binding_line, cost_answer, operating_point_line, ridge_line, rests_on, rule_split
from sim.report.whatif import flat_knobs, load_whatif, sentences
from sim.whatif import DEFAULT_VARY, default_vary, with_value

HW = {"peak_digital_tops": 16.384, "dram_bandwidth_gbps": 2048.0, "digital_weight_bits": 8, "tile_count": 4,
      "adc_energy_pj_per_conversion": 12.0, "adc_bits": 8, "digital_tops_per_w": 2 / 0.23, "static_power_mw": 1750.0,
      "area_process_nm": 14.0}
MODEL = {"name": "toy", "experts": 64, "top_k": 8, "params_by_module": {"attention": 10, "router": 1, "lm_head": 5,
                                                                        "dense": 0, "shared": 0, "expert": 100}}


def _run(policy, fraction, tpw, tps, energy=None, *, hw="chip", batch=64, bottleneck=None, hw_figures=None,
         role=None, counters=None):
    run = {"placement": {"policy": policy, "fraction": fraction, "digital_expert_share": fraction,
                         "digital_modules": [] if policy == "all-analog" else
                         ["attention", "dense", "lm_head", "router", "shared"]},
           "config": {"hw": hw, "hw_source": "/nonexistent/chip.yaml", "batch": batch, "model": "toy"},
           "metrics": {"tokens_per_s_per_w": tpw, "throughput_tokens_per_s": tps, "energy_per_token_uj": 1e6 / tpw,
                       "tokens": 100},
           "energy_pj": energy or {"analog": {"adc": 1.0}}, "counters": counters or {},
           "hw_figures": hw_figures or HW, "model_summary": MODEL}
    if bottleneck:
        run["bottleneck"] = bottleneck
    if role:
        run.update(role=role, show_hw=True)
    return run


def _four(**kw):
    return [_run("all-analog", 0.0, 12695.0, 100790.0, {"analog": {"adc": 32.0, "static": 22.0},
                                                        "memory": {"dram": 11.7}, "digital": {"mac": 4.9}}, **kw),
            _run("maxnn", 0.0, 2585.0, 13897.0, **kw),
            _run("maxnn", 0.125, 858.6, 3898.0, {"analog": {"adc": 1.4, "static": 20.0},
                                                 "memory": {"dram": 43.5, "dram_static": 18.6},
                                                 "digital": {"mac": 7.4}}, **kw),
            _run("all-digital", 1.0, 157.0, 634.8, **kw)]


def test_answer_states_the_dense_module_rule_and_the_expert_rule_separately():
    runs = _four()
    text = " ".join(cost_answer(runs))
    dense_w, dense_s = 12695.0 / 2585.0, 100790.0 / 13897.0
    expert_w, expert_s = 2585.0 / 858.6, 13897.0 / 3898.0
    assert (f"the dense-module rule (all-analog → maxnn 0 %: attention, lm_head and router moved to digital) "
            f"costs ×{dense_w:.3g} in tokens/s/W (12,695 → 2,585) and ×{dense_s:.3g} in tokens/s") in text
    assert (f"the expert rule (maxnn 0 % → maxnn 12.5 %: 8 of 64 routed experts per MoE layer moved to digital) "
            f"costs ×{expert_w:.3g} in tokens/s/W (2,585 → 858.6) and ×{expert_s:.3g} in tokens/s") in text
    assert f"{100 * 858.6 / 12695.0:.3g} % of all-analog's" in text
    # without maxnn 0 % the answer does not invent the split
    assert rule_split([r for r in runs if r["placement"]["fraction"] != 0.0 or r["placement"]["policy"] != "maxnn"]) \
        is None
    assert "Two rules" not in " ".join(cost_answer(runs[:1] + runs[2:]))


def test_a_step_that_raises_the_metric_is_called_a_gain():
    runs = _four()
    runs[1]["metrics"]["throughput_tokens_per_s"] = 2 * 100790.0     # maxnn 0 % faster than all-analog
    assert "and gains ×2 in tokens/s" in rule_split(runs)


def test_ridge_line_puts_the_per_expert_batch_against_the_ridge():
    stream = 512.0
    runs = _four(bottleneck={"binding_resource": "noc_link", "binding_utilisation": 0.99, "dram_peak_gbps": 2048.0,
                             "stream_path_gbps": stream, "effective_stream_gbps": stream,
                             "dram_delivered_gbps": 480.0})
    per_expert = 64 * 8 / 64
    macs_per_ns = 16.384 / 2 * 1000
    ridge = macs_per_ns * (8 / 8) / (stream / 8)
    line = ridge_line(runs)
    assert f"64 × 8 / 64 = {per_expert:g} tokens" in line
    assert f"= {ridge:,.0f} tokens (at the 512 Gbit/s the weight streams get)" in line
    assert f"**memory-bound**: each one's weights are streamed for {per_expert:g} tokens; it would take {ridge:,.0f}" \
        in line
    assert f"At the DRAM's 2,048 Gbit/s peak the ridge would be {macs_per_ns / (2048 / 8):g}" in line
    assert "64 tokens: also below the ridge" in line


def test_ridge_without_bottleneck_uses_the_dram_peak_and_can_be_compute_bound():
    runs = _four(batch=4096, hw_figures={**HW, "digital_weight_bits": 4})
    per_expert = 4096 * 8 / 64
    ridge = 16.384 / 2 * 1000 * (4 / 8) / (2048 / 8)
    line = ridge_line(runs)
    assert f"= {ridge:g} tokens (at the DRAM's 2,048 Gbit/s peak" in line
    assert f"**compute-bound**: each one's weights serve {per_expert:,.0f} tokens" in line
    assert "memory-bound" not in line


def test_binding_line_names_each_headline_runs_resource_and_the_stream():
    assert binding_line(_four()) is None
    b = {"binding_resource": "noc_link", "binding_utilisation": 0.875, "dram_peak_gbps": 2048.0,
         "stream_path_gbps": 512.0, "effective_stream_gbps": 512.0, "dram_delivered_gbps": 480.0}
    runs = _four(bottleneck=b)
    runs[0]["bottleneck"] = {**b, "binding_resource": "tile", "binding_utilisation": 0.25}
    line = binding_line(runs)
    assert "all-analog: the analog tiles at 25 %" in line and "maxnn 12.5 %: a NoC link at 87.5 %" in line
    assert "maxnn 12.5 %'s weight streams get 512 of 2,048 Gbit/s: the NoC path, not the DRAM, limits them" in line
    for r in runs:
        r["bottleneck"] = {**b, "stream_path_gbps": 4096.0, "effective_stream_gbps": 2048.0}
    assert "2,048 of 2,048 Gbit/s: the DRAM's peak limits them" in binding_line(runs)


def test_rests_on_ranks_the_unit_figures_by_how_far_doubling_moves_the_ratio(tmp_path):
    runs = _four()
    aa, mx = runs[0], runs[2]
    ratio = 858.6 / 12695.0

    def share(run, keys):
        tot = sum(v for comps in run["energy_pj"].values() for v in comps.values())
        return sum(run["energy_pj"].get(d, {}).get(c, 0.0) for d, c in keys) / tot

    adc = ratio * (1 + share(aa, [("analog", "adc")])) / (1 + share(mx, [("analog", "adc")]))
    static = [("analog", "static"), ("digital", "static"), ("memory", "sram_static"), ("memory", "dram_static")]
    stat = ratio * (1 + share(aa, static)) / (1 + share(mx, static))
    text = " ".join(rests_on(runs))
    assert f"12 pJ per ADC conversion (8-bit): {100 * share(mx, [('analog', 'adc')]):.3g} % of maxnn 12.5 %'s" in text
    assert f"doubling it takes the ratio to {100 * adc:.3g} %" in text
    assert f"1.75 W static power" in text and f"takes the ratio to {100 * stat:.3g} %" in text
    assert "0.23 pJ per digital MAC" in text and "chip at 14 nm" in text
    assert text.index("per ADC conversion") < text.index("per digital MAC")      # ADC moves it more here
    # the what-if's top three knobs, and a knob that moves nothing, with the bottleneck's reason
    rows = []
    for key, vals, scale in (("batch", [16, 256], [0.4, 1.6]), ("memory.sram.capacity_mib", [32, 8192], [1.0, 3.0]),
                             ("analog.adc.energy_pj_per_conversion", [3.0, 48.0], [0.7, 1.75]),
                             ("digital.simd.energy_pj_per_mac.int8", [0.0575, 0.92], [1.05, 0.9]),
                             ("memory.dram.bandwidth_gbps", [1024, 16384], [1.0, 1.0])):
        for v, s in zip(vals, scale):
            rows += [{"param": key, "value": v, "placement": "all-analog", "tokens_per_s_per_w": 1000.0,
                      "throughput_tokens_per_s": 10.0},
                     {"param": key, "value": v, "placement": "maxnn 12.5%", "tokens_per_s_per_w": 50.0 * s,
                      "throughput_tokens_per_s": 5.0 * s,
                      "bottleneck": {"effective_stream_gbps": 512.0, "stream_path_gbps": 512.0,
                                     "dram_peak_gbps": float(v) if "dram" in key else 2048.0,
                                     "binding_resource": "noc_link"}}]
    data = {"hw": "chip", "model": "toy", "maxnn": "maxnn 12.5%", "rows": rows,
            "varied": {"batch": [16, 256], "memory.sram.capacity_mib": [32, 8192],
                       "analog.adc.energy_pj_per_conversion": [3.0, 48.0],
                       "digital.simd.energy_pj_per_mac.int8": [0.0575, 0.92],
                       "memory.dram.bandwidth_gbps": [1024, 16384]}}
    (tmp_path / "whatif").mkdir()
    (tmp_path / "whatif" / "whatif.json").write_text(json.dumps(data))
    loaded = load_whatif(tmp_path, runs)
    assert loaded is not None and load_whatif(tmp_path, [_run("all-analog", 0.0, 1.0, 1.0, hw="other")]) is None
    text = " ".join(rests_on(runs, loaded))
    assert ("swing maxnn 12.5% ÷ all-analog most are batch (2 % at 16 to 8 % at 256); memory.sram.capacity_mib "
            "(5 % at 32 to 15 % at 8192); analog.adc.energy_pj_per_conversion (3.5 % at 3.0 to 8.75 % at 48.0).") \
        in text
    assert "digital.simd.energy_pj_per_mac" not in text.split("swing")[1].split(".")[0]
    assert ("memory.dram.bandwidth_gbps does not move the result: every placement's tokens/s/W is the same at 1024 "
            "and 16384; maxnn 12.5%'s weight streams get 512 Gbit/s at every value: the NoC path (512 Gbit/s), not "
            "the DRAM, limits them.") in text
    assert [k for k, _, _ in flat_knobs(data)] == ["memory.dram.bandwidth_gbps"]
    assert any("memory.dram.bandwidth_gbps does not move the result" in s for s in sentences(data))


def test_default_knobs_include_the_mac_and_adc_energies():
    keys = [k for k, _ in DEFAULT_VARY]
    assert "digital.simd.energy_pj_per_mac.{mac}" in keys and "analog.adc.energy_pj_per_conversion" in keys
    chip = SimpleNamespace(
        precision=SimpleNamespace(digital_mac="int8"),
        digital=SimpleNamespace(simd=SimpleNamespace(energy_pj_per_mac={"int8": 0.23, "fp16": 1.5})),
        analog=SimpleNamespace(adc=SimpleNamespace(energy_pj_per_conversion=12.0)),
        memory=SimpleNamespace(sram=SimpleNamespace(capacity_mib=32), dram=SimpleNamespace(
            bandwidth_gbps=2048.0, energy_pj_per_bit=3.9)))
    resolved = dict(default_vary(chip))
    assert resolved["digital.simd.energy_pj_per_mac.int8"] == [0.0575, 0.92]
    assert resolved["analog.adc.energy_pj_per_conversion"] == [3.0, 48.0]
    # the dotted key reaches into the per-precision dict of the overrides, the other precisions left to the preset
    point = with_value({"hw_overrides": {}}, "digital.simd.energy_pj_per_mac.int8", 0.92)
    assert point["hw_overrides"] == {"digital": {"simd": {"energy_pj_per_mac": {"int8": 0.92}}}}
    # a digital-only chip (ADC energy 0) gets no ADC knob
    chip.analog.adc.energy_pj_per_conversion = 0.0
    assert "analog.adc.energy_pj_per_conversion" not in dict(default_vary(chip))


def test_weight_bits_come_from_the_mapping_when_the_figures_do_not_state_them():
    from sim.report.answer import weight_bits

    hw = {k: v for k, v in HW.items() if k != "digital_weight_bits"}
    run = _run("maxnn", 0.125, 858.6, 3898.0, hw_figures=hw)
    digital = 10 + 1 + 5 + 0.125 * 100                   # attention, router, lm_head and 1/8 of the experts
    run["mapping"] = {"sram_resident_bytes": 12.0, "dram_streamed_bytes_per_use": 2 * digital - 12.0,
                      "unused_digital_matrices": 0}
    assert weight_bits(run) == 16.0
    runs = _four(hw_figures=hw)
    for r in runs:
        r["mapping"] = run["mapping"]
    ridge = 16.384 / 2 * 1000 * 2 / (2048 / 8)
    assert f"× 2 bytes per weight ÷ 256 weight bytes/ns = {ridge:g} tokens" in ridge_line(runs)
    run["config"]["hw_overrides"] = {"precision": {"digital_weight_bits": 4}}
    assert weight_bits(run) == 4.0


def test_operating_point_line_names_the_closed_batch_and_the_batch_swing():
    runs = _four()
    for r in runs:
        r["config"].update(mode="prefill", max_inflight=4)
    text = operating_point_line(runs)
    assert "same closed batch (prefill, micro-batches of 64 tokens, 4 in flight" in text
    assert "--slo-ttft-ms" in text and "what-if" not in text
    rows = [{"param": "batch", "value": v, "placement": p, "tokens_per_s_per_w": tpw, "throughput_tokens_per_s": 1.0}
            for v, a, m in ((16, 1000.0, 20.0), (256, 1000.0, 90.0))
            for p, tpw in (("all-analog", a), ("maxnn 12.5%", m))]
    data = {"maxnn": "maxnn 12.5%", "rows": rows, "varied": {"batch": [16, 256]}}
    text = operating_point_line(runs, data)
    assert f"batch alone moves maxnn 12.5% ÷ all-analog from {100 * 20 / 1000:.3g} % (batch 16) to " \
           f"{100 * 90 / 1000:.3g} % (batch 256)" in text
