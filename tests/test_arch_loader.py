"""Bad hardware descriptions: each error names file, line and key path; the CLI exits 2 with one line."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from arch import SpecError, load_chip
from arch.derived import derived_figures
from tests.conftest import UNIT_YAML, graph_yaml


def _with(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


# (case id, edited YAML, needle whose line the error must name, key path, message fragment)
BAD = [
    ("yaml-syntax", _with(UNIT_YAML, "rows: 4", "rows: [4"), None, "", "YAML syntax error"),
    ("unknown-key", _with(UNIT_YAML, "rows: 4", "rows: 4\n    rowz: 5"), "rowz", "analog.tile.rowz",
     "unknown key; recognised keys here: .*cols.*rows"),
    ("wrong-type", _with(UNIT_YAML, "rows: 4", "rows: four"), "rows: four", "analog.tile.rows",
     "'four' is not an integer"),
    ("zero-size", _with(UNIT_YAML, "cols: 4", "cols: 0"), "cols: 0", "analog.tile.cols", r"outside .*\[1, 65536\]"),
    ("negative-energy", _with(UNIT_YAML, "array_energy_fj_per_cell: 1000.0", "array_energy_fj_per_cell: -1"),
     "array_energy_fj_per_cell", "analog.tile.array_energy_fj_per_cell", ">= 0"),
    ("adc-bits", _with(UNIT_YAML, "adc: {bits: 8", "adc: {bits: 20"), "adc:", "analog.adc.bits", r"\[1, 16\]"),
    ("bad-encoding", _with(UNIT_YAML, "encoding: pwm", "encoding: thermometer"), "encoding", "analog.dac.encoding",
     "one of pwm, bit_serial"),
    ("missing-section", UNIT_YAML.split("noc:")[0] + "precision:" + UNIT_YAML.split("precision:")[1], None,
     "noc", "missing required key"),
    ("missing-key", _with(UNIT_YAML, "    rows: 4\n", ""), "  tile:", "analog.tile.rows", "missing required key"),
    ("zero-clock", _with(UNIT_YAML, "clock_ghz: 1.0", "clock_ghz: 0"), "clock_ghz", "digital.simd.clock_ghz", "> 0"),
    ("mesh-too-small", _with(UNIT_YAML, "tile_count: 8", "tile_count: 9"), "width: 2", "noc.width",
     "holds 8 tiles, but analog.tile_count is 9"),
    ("node-off-mesh", _with(UNIT_YAML, "simd_node: [0, 0]", "simd_node: [5, 0]"), "simd_node", "noc.simd_node",
     "not a node of the mesh"),
    ("unpriced-precision", _with(UNIT_YAML, "digital_mac: int8", "digital_mac: fp8"), "digital_mac",
     "precision.digital_mac", "allowed: int8"),
    ("section-not-mapping", _with(UNIT_YAML, "name: unit", "name: unit\nmemory_extra: 1"), "memory_extra",
     "memory_extra", "unknown key"),
    ("duplicate-key", _with(UNIT_YAML, "rows: 4", "rows: 4\n    rows: 5"), "rows: 5", "rows", "duplicate key"),
    ("bool-for-int", _with(UNIT_YAML, "tiers: 2", "tiers: true"), "tiers", "analog.tile.tiers", "not an integer"),
    ("string-for-section", _with(UNIT_YAML, "precision: {activation_bits: 2, digital_weight_bits: 8, "
                                 "digital_mac: int8, partial_sum_bits: 8}", "precision: int8"),
     "precision: int8", "precision", "expected a mapping"),
    ("too-many-adcs", _with(UNIT_YAML, "adc: {bits: 8, per_tile: 4", "adc: {bits: 8, per_tile: 64"), "adc:",
     "analog.adc.per_tile", "allowed: <= cols"),
]


@pytest.mark.parametrize("case,text,needle,path,fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_input_names_file_line_and_path(tmp_path, case, text, needle, path, fragment):
    file = tmp_path / "bad.yaml"
    file.write_text(text)
    with pytest.raises(SpecError, match=fragment) as info:
        load_chip(file)
    err = info.value
    assert err.file == str(file)
    assert err.path == path
    if needle is not None:
        assert err.line == _line_of(text, needle), str(err)
    else:
        assert err.line is not None and err.line >= 1
    assert str(err).startswith(f"{file}:{err.line}:")


def test_empty_file(tmp_path):
    file = tmp_path / "empty.yaml"
    file.write_text("")
    with pytest.raises(SpecError, match="empty"):
        load_chip(file)


def test_extends_missing_preset(tmp_path):
    file = tmp_path / "x.yaml"
    file.write_text("extends: no-such-chip\n")
    with pytest.raises(SpecError, match=re.escape(f"{file}:1: extends: no preset or file named 'no-such-chip'")):
        load_chip(file)


def test_extends_cycle(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(SpecError, match="cycle of extends: .*a.yaml -> .*b.yaml -> .*a.yaml"):
        load_chip(tmp_path / "a.yaml")


def test_extends_preset_with_override_keeps_the_rest(tmp_path):
    file = tmp_path / "mine.yaml"
    file.write_text("extends: hermes-64\nanalog:\n  tile_count: 32\nnoc:\n  width: 4\n")
    chip = load_chip(file)
    base = load_chip("hermes-64")
    assert chip.analog.tile_count == 32
    assert chip.analog.tile == base.analog.tile
    assert derived_figures(chip)["peak_analog_tops"] == pytest.approx(derived_figures(base)["peak_analog_tops"] / 2)


def test_override_error_points_at_the_overriding_file(tmp_path):
    file = tmp_path / "mine.yaml"
    file.write_text("extends: hermes-64\nanalog:\n  adc:\n    bits: 99\n")
    with pytest.raises(SpecError) as info:
        load_chip(file)
    assert (info.value.file, info.value.line, info.value.path) == (str(file), 4, "analog.adc.bits")


def test_graph_not_connected(tmp_path):
    text = graph_yaml("[{a: a, b: b}]", "[b]", 8)
    file = tmp_path / "g.yaml"
    file.write_text(text)
    with pytest.raises(SpecError, match=f"{file}:{_line_of(text, 'edges')}: noc.edges: the graph is not connected"):
        load_chip(file)


@pytest.mark.parametrize("case,text", [(b[0], b[1]) for b in BAD[:6]], ids=[b[0] for b in BAD[:6]])
def test_cli_exits_2_with_one_line(tmp_path, case, text):
    file = tmp_path / "bad.yaml"
    file.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "hw", "show", str(file)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"hetmoe: error: {file}:"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_hw_show_json_hermes():
    import json

    proc = subprocess.run([sys.executable, "-m", "sim.cli", "hw", "show", "hermes-64", "--json"],
                          capture_output=True, text=True, check=True)
    data = json.loads(proc.stdout)
    assert abs(data["peak_analog_tops"] / 63.1 - 1) < 0.1
    assert abs(data["analog_tops_per_w"] / 9.76 - 1) < 0.1
    assert data["tile_count"] == 64
    assert data["analog_capacity_weights"] == 64 * 256 * 256


def test_every_preset_loads_and_cites_every_number():
    from arch.loader import PRESET_DIR, list_presets

    for name in list_presets():
        load_chip(name)
        for i, line in enumerate((PRESET_DIR / f"{name}.yaml").read_text().splitlines(), 1):
            body = line.split("#")[0]
            if re.search(r":\s*(-?[0-9.]+|\[.*\])\s*$", body):
                assert "#" in line, f"{name}.yaml:{i} has a number without a cited source: {line.strip()}"


def test_a_variant_is_named_by_its_file_not_its_base(tmp_path):
    variant = tmp_path / "my-chip.yaml"
    variant.write_text("extends: aimc-3d-moe\nmemory:\n  sram:\n    capacity_mib: 64\n")
    assert load_chip(str(variant)).name == "my-chip"
    named = tmp_path / "other.yaml"
    named.write_text("extends: aimc-3d-moe\nname: big-sram\nmemory:\n  sram:\n    capacity_mib: 256\n")
    assert load_chip(str(named)).name == "big-sram"
    from sim.api import simulate
    from sim.result import summary_row
    from workloads.traces.synthetic import SyntheticSpec

    result = simulate(str(variant), "olmoe-1b-7b", SyntheticSpec(tokens=64, requests=1), "maxnn")
    assert summary_row(result.data)["hw"] == "my-chip"           # the compare table's hw column


def test_hw_show_takes_set_overrides():
    base = subprocess.run([sys.executable, "-m", "sim.cli", "hw", "show", "aimc-3d-moe", "--json"],
                          capture_output=True, text=True)
    edited = subprocess.run([sys.executable, "-m", "sim.cli", "hw", "show", "aimc-3d-moe", "--set",
                             "analog.tile.tiers=8", "--json"], capture_output=True, text=True)
    import json

    b, e = json.loads(base.stdout), json.loads(edited.stdout)
    assert b["crossbar_slots"] == 2048 * 16 and e["crossbar_slots"] == 2048 * 8
