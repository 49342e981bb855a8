"""Numbers a hardware description cannot mean, and JSON no strict parser reads (issue 30, items 3-5).

- Every numeric key of the hardware YAML (found from ``arch.spec``'s dataclasses, not listed by hand) set to
  ``.inf``, ``-.inf`` or ``.nan``, through ``--set`` and through a YAML file, is refused in one line naming the
  key (and the file and line) with the allowed range: exit 2, never 1 or 70.
- ``1e30`` and ``1e-30`` give that line or a sane result (finite figures, strict JSON); the times, bandwidths
  and clocks the engine's int64 picosecond clock cannot carry are refused by their range, and a run whose
  simulated time would pass the clock's span stops with one line.
- Every JSON file hetmoe writes (a short run, a decode run, a Chrome trace, a sweep, ``hw show --json``) parses
  with a strict parser: an undefined figure is ``null`` with its reason under ``null_why``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from pathlib import Path
from typing import get_type_hints

import numpy as np
import pytest

from arch import load_chip
from arch.spec import MAX_STEP_NS, OP_PS, SPAN_PS, ChipSpec
from sim.engine import kernel as K
from sim.result import fmt_number, load_result
from tests.conftest import graph_yaml
from tests.cli_helpers import cli

PRESET = "aimc-3d-moe"
NON_FINITE = (".inf", "-.inf", ".nan")
EXTREME = ("1e30", "1e-30")


def numeric_keys(cls: type = ChipSpec, prefix: str = "", obj: object = None) -> list[str]:
    """Dotted path of every int, float and mapping-of-numbers key of the schema, as the preset fills it (a mapping
    key: each name the preset gives, and ``int8``); list-valued sections (graph edges) are covered below."""
    out: list[str] = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        opts = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) else [tp]
        path, sub = f"{prefix}{f.name}", getattr(obj, f.name, None)
        origins = [typing.get_origin(o) or o for o in opts]
        if any(dataclasses.is_dataclass(o) for o in opts):
            out += numeric_keys(next(o for o in opts if dataclasses.is_dataclass(o)), path + ".", sub)
        elif dict in origins:
            out += [f"{path}.{k}" for k in dict.fromkeys([*(sub or {}), "int8"])]
        elif list not in origins and any(o in (int, float) for o in opts):
            out.append(path)
    return out


KEYS = numeric_keys(obj=load_chip(PRESET))


def error_line(err: str) -> str:
    """The one error line (warnings, and the one-off notice that the kernels compile, may come before it); no
    traceback."""
    assert "Traceback" not in err, err
    lines = [x for x in err.strip().splitlines() if not x.startswith(("hetmoe: warning", "hetmoe: compiling"))]
    assert len(lines) == 1, err
    assert lines[0].startswith("hetmoe: error: "), err
    return lines[0]


def strict_json(text: str) -> object:
    """Parse as strict JSON: NaN, Infinity and -Infinity are errors."""
    return json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(f"{c} in strict JSON")))


def nested_yaml(key: str, value: str) -> str:
    """A hardware YAML extending the preset that sets ``key`` (dotted) to ``value``, one mapping level a line."""
    lines = [f"extends: {PRESET}"]
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        lines.append("  " * depth + f"{part}:")
    lines.append("  " * (len(parts) - 1) + f"{parts[-1]}: {value}")
    return "\n".join(lines) + "\n"


def test_the_schema_walk_finds_the_keys_the_issue_names():
    named = {"memory.sram.capacity_mib", "analog.adc.energy_pj_per_conversion", "analog.tile.integration_ns",
             "analog.tile.initiation_interval_ns", "analog.dac.step_ns", "analog.adc.conversion_ns",
             "memory.dram.latency_ns", "noc.router_latency_ns", "memory.sram.bandwidth_gbps",
             "memory.dram.bandwidth_gbps", "noc.link_bandwidth_gbps", "digital.simd.clock_ghz",
             "digital.simd.mac_rate_scale.int8"}
    assert named <= set(KEYS)
    assert len(KEYS) >= 56 and len(set(KEYS)) == len(KEYS)


# ----------------------------------------------------------------------------- item 3: non-finite numbers

@pytest.mark.parametrize("key", KEYS)
def test_non_finite_values_are_refused_through_set(key, capsys):
    for value in NON_FINITE:
        rc, _, err = cli(["hw", "show", PRESET, "--set", f"{key}={value}"], capsys)
        assert rc == 2, (key, value, err)
        line = error_line(err)
        assert f"--set {key}=" in line and f" {key}: " in line, line
        assert "allowed" in line, line


@pytest.mark.parametrize("key", KEYS)
def test_non_finite_values_are_refused_in_a_yaml_file_with_its_line(key, tmp_path, capsys):
    for value in NON_FINITE:
        path = tmp_path / "chip.yaml"
        path.write_text(nested_yaml(key, value))
        rc, _, err = cli(["hw", "show", path], capsys)
        assert rc == 2, (key, value, err)
        line = error_line(err)
        # the key sits on the last line of the file: one line for extends, one per mapping level
        assert f"{path}:{len(key.split('.')) + 1}: {key}: " in line, line
        # a float key: "NaN/inf is not allowed; allowed: a finite number ..."; an integer key: "is not an integer"
        assert ("is not allowed; allowed: a finite number" in line or "is not an integer; allowed: an integer"
                in line), line


@pytest.mark.parametrize("key", KEYS)
def test_a_run_refuses_infinity_before_it_starts(key, tmp_path, capsys):
    out = tmp_path / "out"
    rc, _, err = cli(["run", "--hw", PRESET, "--tokens", 16, "--out", out, "--quiet", "--set", f"{key}=.inf"], capsys)
    assert rc == 2, (key, err)
    assert f" {key}: " in error_line(err)
    assert not (out / "result.json").exists()


@pytest.mark.parametrize("field", ["bandwidth_gbps", "energy_pj_per_bit"])
@pytest.mark.parametrize("value", NON_FINITE)
def test_a_graph_edge_refuses_non_finite_numbers(field, value, tmp_path, capsys):
    path = tmp_path / "graph.yaml"
    path.write_text(graph_yaml(f"[{{a: a, b: b, {field}: {value}}}, {{a: b, b: c}}]", "[b, c]", 4))
    rc, _, err = cli(["hw", "show", path], capsys)
    assert rc == 2, err
    line = error_line(err)
    assert f"noc.edges[0].{field}: " in line and "allowed" in line, line


def test_an_integer_beyond_float64_is_a_line_not_a_crash(capsys):
    rc, _, err = cli(["hw", "show", PRESET, "--set", f"memory.sram.capacity_mib={10 ** 400}"], capsys)
    assert rc == 2
    assert "memory.sram.capacity_mib: an integer of 401 digits is beyond float64" in error_line(err)


def test_an_unbounded_integer_key_stops_at_2_to_the_53(capsys):
    assert load_chip(PRESET, {"noc": {"tiles_per_node": 2 ** 53}}).noc.tiles_per_node == 2 ** 53
    rc, _, err = cli(["hw", "show", PRESET, "--set", f"noc.tiles_per_node={2 ** 53 + 1}"], capsys)
    assert rc == 2
    assert "noc.tiles_per_node: 9007199254740993 is outside the allowed range" in error_line(err)


# ----------------------------------------------------------------------------- item 5: the clock's bounds

def test_the_clock_limits_are_int64_picoseconds():
    assert SPAN_PS == 2 ** 62 and OP_PS == 2 ** 60
    assert (K.SPAN_PS, K.OP_PS) == (SPAN_PS, OP_PS)
    # 2^63 ps is the int64 clock (106.75 days); the span is half of it, so a time plus a duration cannot wrap
    assert 2 ** 63 / 1e12 / 86400 == pytest.approx(106.752, abs=1e-3)
    assert SPAN_PS / 1e12 / 86400 == pytest.approx(53.376, abs=1e-3)
    # one step of MAX_STEP_NS fits the span many times over
    assert MAX_STEP_NS * 1000 * 1e6 < OP_PS


@pytest.mark.parametrize("key, lo, hi", [
    ("analog.tile.integration_ns", 0.0, 1e9), ("analog.tile.initiation_interval_ns", 1e-6, 1e9),
    ("analog.dac.step_ns", 1e-6, 1e9), ("analog.adc.conversion_ns", 1e-6, 1e9),
    ("memory.dram.latency_ns", 0.0, 1e9), ("noc.router_latency_ns", 0.0, 1e9),
    ("memory.sram.bandwidth_gbps", 1e-3, 1e15), ("memory.dram.bandwidth_gbps", 1e-3, 1e15),
    ("noc.link_bandwidth_gbps", 1e-3, 1e15), ("digital.simd.clock_ghz", 1e-3, 1e3),
    ("analog.local_digital.clock_ghz", 1e-3, 1e3), ("digital.simd.mac_rate_scale.int8", 1e-3, 1e3),
    ("digital.simd.mac_efficiency", 1e-3, 1.0),
])
def test_times_bandwidths_and_clocks_have_bounds_the_clock_carries(key, lo, hi, capsys):
    *section, name = key.split(".")

    def override(v: float) -> dict:
        node: dict = {name: v}
        for part in reversed(section):
            node = {part: node}
        return node

    def value_of(chip: object) -> float:
        obj: object = chip
        for part in key.split("."):
            obj = obj[part] if isinstance(obj, typing.Mapping) else getattr(obj, part)
        return obj

    big = "analog.dac.step_ns" == key or "analog.adc.conversion_ns" == key or "integration_ns" in key
    if not big:      # the tile's whole MVM is checked too: only the per-key bounds are asked here
        assert value_of(load_chip(PRESET, override(hi))) == hi
    assert value_of(load_chip(PRESET, override(lo))) == lo
    for bad in (math.nextafter(hi, math.inf), math.nextafter(lo, -math.inf) if lo > 0 else -1e-9, 0.0 if lo else -1.0):
        rc, _, err = cli(["hw", "show", PRESET, "--set", f"{key}={bad!r}"], capsys)
        assert rc == 2, (bad, err)
        line = error_line(err)
        assert f" {key}: " in line and f"{hi:g}]" in line, line
        if key.endswith(("_ns", "_gbps", "_ghz")):
            assert "int64 picoseconds" in line and "2^62 ps" in line, line


def test_a_full_tile_mvm_longer_than_a_second_is_refused_naming_its_largest_term(capsys):
    # aimc-3d-moe: 8-bit PWM, one pass, one row group (512 DACs), 32 conversions of 0.78125 ns, integration 24.2 ns
    step = 1e8
    t = 1 * (1 * ((2 ** 7 - 1) * step + 24.2) + 32 * 0.78125)
    assert t > MAX_STEP_NS
    rc, _, err = cli(["hw", "show", PRESET, "--set", f"analog.dac.step_ns={step:g}"], capsys)
    assert rc == 2
    line = error_line(err)
    assert "analog.dac.step_ns: one MVM of a full 512x512 tile takes" in line
    assert f"{t:.4g} ns" in line and f"at most {MAX_STEP_NS:g} ns per MVM" in line, line


def test_the_kernel_saturates_durations_and_flags_bookings_past_the_span():
    assert K.ps(1.0) == 1000 and K.ps(0.0004) == 0
    assert K.ps(1e30) == OP_PS and K.ps(float("nan")) == OP_PS and K.ps(float("inf")) == OP_PS
    cal = np.array([[0, 4, 0, 0]], np.int64)
    ivl = np.zeros((4, 2), np.int64)
    misc = np.zeros(K.S_OVERFLOW + 1, np.int64)
    K.cal_book(cal, ivl, misc, 0, SPAN_PS - 100, 100, 0)          # ends exactly at the span: allowed
    assert misc[K.S_OVERFLOW] == 0
    K.cal_book(cal, ivl, misc, 0, SPAN_PS - 100, 101, 0)          # one ps past it
    assert misc[K.S_OVERFLOW] == 1


def test_a_run_past_the_clock_span_stops_with_one_line(tmp_path, capsys):
    # the SIMD at its slowest bounds: one core of one MAC at 1 MHz and 1/1000 efficiency, 1e6 ns per MAC; OLMoE's
    # digital matrices (attention, router, 12.5 % of the experts) then pass 2^62 ps (4.6e6 s) within a few layers
    out = tmp_path / "out"
    rc, _, err = cli(["run", "--hw", PRESET, "--tokens", 16, "--out", out, "--quiet",
                      "--set", "digital.simd.clock_ghz=0.001", "--set", "digital.simd.mac_efficiency=0.001",
                      "--set", "digital.simd.cores=1", "--set", "digital.simd.macs_per_cycle=1"], capsys)
    assert rc == 2, err
    line = error_line(err)
    assert "passes the engine's span" in line and "int64 picoseconds" in line and "2^62 ps" in line, line
    assert not (out / "result.json").exists()


# keys the engine's timing reads: both extremes go through a run; every other key runs one of them (alternating),
# the other through hw show only, to keep the file fast
TIMING = ("_ns", "_gbps", "_ghz", "mac_rate_scale", "mac_efficiency", "capacity_mib", "staging_mib", "capacity_gib")


@pytest.mark.parametrize("key", KEYS)
def test_extreme_values_give_one_line_or_a_sane_result(key, tmp_path, capsys):
    for i, value in enumerate(EXTREME):
        rc, _, err = cli(["hw", "show", PRESET, "--set", f"{key}={value}"], capsys)
        assert rc in (0, 2), (key, value, err)
        if rc == 2:
            assert f" {key}: " in error_line(err)
            continue
        if not any(t in key for t in TIMING) and i != KEYS.index(key) % 2:
            continue
        out = tmp_path / value
        rc, _, err = cli(["run", "--hw", PRESET, "--tokens", 16, "--out", out, "--quiet", "--set", f"{key}={value}"],
                         capsys)
        assert rc in (0, 2), (key, value, err)
        if rc == 2:
            assert key in error_line(err)
            continue
        data = strict_json((out / "result.json").read_text())
        m = data["metrics"]
        for name in ("makespan_s", "energy_per_token_uj", "throughput_tokens_per_s", "average_power_w"):
            assert isinstance(m[name], float) and math.isfinite(m[name]) and m[name] > 0, (key, value, name, m[name])


# ----------------------------------------------------------------------------- item 4: strict JSON out

def _every_json_is_strict(folder: Path) -> list[Path]:
    files = sorted(folder.rglob("*.json"))
    for path in files:
        strict_json(path.read_text(encoding="utf-8"))
    return files


def test_a_short_run_writes_strict_json_with_nulls_and_reasons(tmp_path, capsys):
    out = tmp_path / "run"
    rc, _, err = cli(["run", "--hw", PRESET, "--tokens", 16, "--out", out, "--quiet",
                      "--trace-events", out / "trace.json"], capsys)
    assert rc == 0, err
    assert {p.name for p in _every_json_is_strict(out)} == {"result.json", "trace.json"}
    data = strict_json((out / "result.json").read_text())
    steady = data["steady_state"]
    # 16 tokens in micro-batches of the default batch with 4 in flight: fewer than 2 x 4 + 2 completions
    assert steady["reached"] is False and steady["needed_micro_batches"] == 2 * 4 + 2
    for name in ("steady_throughput_tokens_per_s", "steady_energy_per_token_uj", "steady_tokens_per_s_per_w",
                 "steady_tokens_per_s_per_mm2"):
        assert data["metrics"][name] is None
        assert "too short for a steady-state window" in data["null_why"][f"metrics.{name}"]
    assert data["metrics"]["tpot_mean_us"] is None and "prefill" in data["null_why"]["metrics.tpot_mean_us"]
    # aimc-3d-moe attaches its DRAM directly: no NoC path bounds a stream (was Infinity)
    assert data["bottleneck"]["stream_path_gbps"] is None
    assert "direct" in data["null_why"]["bottleneck.stream_path_gbps"]
    assert set(data["null_why"]) == {"metrics." + k for k, v in data["metrics"].items() if v is None} | {
        "bottleneck.stream_path_gbps"}
    # read back, an undefined figure is NaN again and prints as n/a
    back = load_result(out)
    assert math.isnan(back["metrics"]["steady_energy_per_token_uj"])
    assert fmt_number(back["metrics"]["steady_energy_per_token_uj"]) == "n/a" == fmt_number(None)


def test_a_decode_run_and_a_sweep_write_strict_json(tmp_path, capsys):
    rc, _, err = cli(["run", "--hw", PRESET, "--tokens", 16, "--mode", "decode", "--out", tmp_path / "decode",
                      "--quiet"], capsys)
    assert rc == 0, err
    decode = strict_json((tmp_path / "decode" / "result.json").read_text())
    assert isinstance(decode["metrics"]["tpot_mean_us"], float)
    spec = tmp_path / "sweep.yaml"
    spec.write_text(f"hw: {PRESET}\npolicies: [maxnn]\nfractions: [0.125, 0.25]\ntokens: 16\n")
    rc, out, err = cli(["sweep", spec, "--out", tmp_path / "sweep", "--quiet"], capsys)
    assert rc == 0, err
    files = _every_json_is_strict(tmp_path / "sweep")
    assert {p.name for p in files} == {"results.json", "result.json", "point.json"}
    runs = strict_json((tmp_path / "sweep" / "results.json").read_text())
    assert len(runs) == 2 and all(r["metrics"]["steady_energy_per_token_uj"] is None for r in runs)
    assert all("too short" in r["null_why"]["metrics.steady_energy_per_token_uj"] for r in runs)
    assert "n/a" in (tmp_path / "sweep" / "report.md").read_text(encoding="utf-8")


def test_hw_show_json_is_strict(capsys):
    rc, out, err = cli(["hw", "show", PRESET, "--json", "--set", "digital.simd.energy_pj_per_mac.int8=0"], capsys)
    assert rc == 0, err
    data = strict_json(out)
    # a MAC of 0 pJ: infinitely many TOPS/W, written as null with why
    assert data["digital_tops_per_w"] is None and "digital_tops_per_w" in data["null_why"]
