"""Chips that can be built (issue 29 item 1): a footprint above one reticle warns wherever the chip is shown
or used, DRAM capacity holds the DRAM-held digital weights plus the KV cache or the run is refused, and
``hw fit`` never writes a YAML its own loader rejects. Expectations are recomputed here from the spec."""

from __future__ import annotations

import json
from math import ceil
from pathlib import Path

import numpy as np
import pytest

from arch import load_chip
from arch.derived import derived_figures
from sim.api import build_run, resolve_inputs
from sim.cli import main
from sim.mapping import MappingError, slots_needed
from sim.placement import PlacementContext, place
from sim.report.markdown import _chip_lines
from workloads.shapes import load_model
from workloads.traces.synthetic import SyntheticSpec, synthesize

GIB = 2**30


def expected_warning(footprint_mm2: float, limit_mm2: float = 858.0) -> str:
    """The issue's wording, from the footprint and the limit."""
    return (f"footprint {footprint_mm2:,.1f} mm^2 exceeds one reticle ({limit_mm2:g} mm^2): this is "
            f"{footprint_mm2 / limit_mm2:,.1f} dies' worth of silicon; no single die can be "
            "built this large: split the design over several chips (hetmoe system fit sizes such a system)")


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


# ----------------------------------------------------------------------------- reticle


def test_spec_default_and_presets_cite_the_lithography_field():
    """858 mm^2 = 26 mm x 33 mm, the default, and every preset's area section states it with its source."""
    assert load_chip("aimc-3d-moe").area.reticle_limit_mm2 == 26 * 33
    for path in sorted((Path(__file__).resolve().parents[1] / "arch" / "presets").glob("*.yaml")):
        line = next(ln for ln in path.read_text().splitlines() if ln.strip().startswith("reticle_limit_mm2:"))
        assert "858" in line and "26 mm x 33 mm" in line.split("#", 1)[1], path.name


def test_a100_die_fits_one_reticle_and_a_bigger_one_warns(capsys):
    """a100-gpu puts its whole die in other_mm2 (no other part has area), so footprint = other_mm2: 826 mm^2
    is under the reticle (no warning); 1,716 mm^2 is two dies' worth."""
    chip = load_chip("a100-gpu")
    assert derived_figures(chip)["footprint_mm2"] == pytest.approx(chip.area.other_mm2)
    assert derived_figures(chip)["reticle_warning"] is None
    rc, out, err = cli(capsys, "hw", "show", "a100-gpu")
    assert rc == 0 and "exceeds one reticle" not in out + err

    big = load_chip("a100-gpu", {"area": {"other_mm2": 1716.0}})
    fig = derived_figures(big)
    assert fig["reticles"] == pytest.approx(2.0)
    assert fig["reticle_warning"] == expected_warning(1716.0)
    rc, out, _ = cli(capsys, "hw", "show", "a100-gpu", "--set", "area.other_mm2=1716")
    assert rc == 0 and expected_warning(1716.0) in out
    rc, out, _ = cli(capsys, "hw", "show", "a100-gpu", "--set", "area.other_mm2=1716", "--json")
    assert json.loads(out)["reticle_warning"] == expected_warning(1716.0)


def test_custom_reticle_limit_via_set(capsys):
    """aimc-3d-moe fits the default reticle; a 500 mm^2 limit (--set area.reticle_limit_mm2=500) does not."""
    fp = derived_figures(load_chip("aimc-3d-moe"))["footprint_mm2"]
    assert 500 < fp < 858
    rc, out, err = cli(capsys, "hw", "show", "aimc-3d-moe")
    assert rc == 0 and "exceeds one reticle" not in out + err
    rc, out, _ = cli(capsys, "hw", "show", "aimc-3d-moe", "--set", "area.reticle_limit_mm2=500")
    assert rc == 0 and expected_warning(fp, 500.0) in out
    assert derived_figures(load_chip("aimc-3d-moe", {"area": {"reticle_limit_mm2": 500}}))["reticles"] == \
        pytest.approx(fp / 500)


def test_report_chip_line_carries_the_warning():
    """The report's chip assumptions line states it from result.json's hw_figures (absent when it fits)."""
    runs = []
    for other in (826.0, 1716.0):
        fig = derived_figures(load_chip("a100-gpu", {"area": {"other_mm2": other}}))
        runs.append({"config": {"hw": f"a100-{other:g}", "hw_source": "a100-gpu", "hw_overrides": {}},
                     "hw_figures": fig})
    small, big = _chip_lines(runs)
    assert "reticle" not in small
    assert expected_warning(1716.0) in big


def test_run_warns_once_on_stderr_and_result_json_carries_it(capsys, tmp_path):
    rc, out, err = cli(capsys, "run", "--hw", "a100-gpu", "--set", "area.other_mm2=1716", "--model", "olmoe-1b-7b",
                       "--policy", "all-digital", "--tokens", "64", "--quiet", "--out", str(tmp_path / "r"))
    assert rc == 0
    assert err.count(expected_warning(1716.0)) == 1
    data = json.loads((tmp_path / "r" / "result.json").read_text())
    assert data["hw_figures"]["reticle_warning"] == expected_warning(1716.0)


# ----------------------------------------------------------------------------- hw fit


def _olmoe_slots_all_analog(base: str) -> int:
    chip, model, trace, stats = resolve_inputs(base, "olmoe-1b-7b", None)
    placement = place("all-analog", PlacementContext(model, trace, stats, 0.125, "gate_rows", "layer", 0, None))
    digital = np.array([placement.is_digital(m) for m in model.matrices], bool)
    return slots_needed(model, digital, chip.analog.tile.rows, chip.analog.tile.cols)[0]


def test_fit_above_the_reticle_warns(capsys, tmp_path):
    """olmoe all-analog on hermes-64's planar 256x256 tiles: one tile per slot, tiles x tile footprint far
    above one reticle; hw fit writes the file (a warning, not a refusal) and says so."""
    out = tmp_path / "big.yaml"
    rc, stdout, err = cli(capsys, "hw", "fit", "--model", "olmoe-1b-7b", "--from", "hermes-64", "--out", str(out))
    assert rc == 0 and out.is_file()
    fitted = load_chip(out)
    slots = _olmoe_slots_all_analog("hermes-64")
    assert fitted.analog.tile_count == slots
    fig = derived_figures(fitted)
    assert fig["footprint_mm2"] > slots * fig["tile_footprint_mm2"] > 858
    assert f"hetmoe: warning: big: {expected_warning(fig['footprint_mm2'])}" in err
    assert f"footprint {fig['footprint_mm2']:,.1f} mm^2" in stdout


def test_fit_within_the_reticle_does_not_warn(capsys, tmp_path):
    rc, _, err = cli(capsys, "hw", "fit", "--model", "olmoe-1b-7b", "--from", "aimc-3d-moe", "--scale", "tiers",
                     "--out", str(tmp_path / "small.yaml"))
    assert rc == 0 and "reticle" not in err
    assert derived_figures(load_chip(tmp_path / "small.yaml"))["footprint_mm2"] < 858


def test_fit_tiers_past_the_range_refuses_and_writes_nothing(capsys, tmp_path):
    """hermes-64 has 64 tiles: olmoe needs ceil(slots / 64) tiers per tile, above the 1,024 the loader allows."""
    tiers = ceil(_olmoe_slots_all_analog("hermes-64") / 64)
    assert tiers > 1024
    out = tmp_path / "sub" / "fit.yaml"
    rc, stdout, err = cli(capsys, "hw", "fit", "--model", "olmoe-1b-7b", "--from", "hermes-64", "--scale", "tiers",
                          "--out", str(out))
    assert rc == 2 and stdout == ""
    assert len(err.strip().splitlines()) == 1
    assert f"{tiers:,} tiers per tile, above the 1,024 analog.tile.tiers allows" in err
    assert "--scale tiles" in err and "nothing written" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_fit_never_leaves_a_file_the_loader_rejects(capsys, tmp_path, monkeypatch):
    """Whatever slips past fit_chip's range checks is loaded from a temporary before it replaces --out."""
    import sim.fit

    real = sim.fit.fit_chip

    def too_many_tiers(*args, **kwargs):
        fit = real(*args, **kwargs)
        return sim.fit.Fit(**{**fit.__dict__, "tiers": 5000})

    monkeypatch.setattr(sim.fit, "fit_chip", too_many_tiers)
    out = tmp_path / "fit.yaml"
    out.write_text("# an earlier file\n")
    rc, _, err = cli(capsys, "hw", "fit", "--model", "olmoe-1b-7b", "--from", "aimc-3d-moe", "--out", str(out))
    assert rc == 2 and "would not load" in err and "analog.tile.tiers" in err
    assert out.read_text() == "# an earlier file\n"             # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.yaml"]   # no temporary left


# ----------------------------------------------------------------------------- DRAM capacity


def _kv_bytes_per_token(model, chip) -> float:
    return model.kv_elements_per_token() * model.num_layers * chip.precision.activation_bits / 8


def test_dram_refusal_states_weights_plus_kv(capsys, tmp_path):
    """All-digital with no SRAM: every matrix's weights live in DRAM (params x 8 bits / 8), plus the longest
    request's KV cache (prefill); 4 GiB cannot hold olmoe's 6.3 GiB."""
    model = load_model("olmoe-1b-7b")
    over = {"memory": {"sram": {"capacity_mib": 0}, "dram": {"capacity_gib": 4}}}
    chip = load_chip("aimc-3d-moe", over)
    trace = synthesize(SyntheticSpec(tokens=256, seed=0), model)
    weights = sum(m.params for m in model.matrices) * chip.precision.digital_weight_bits / 8
    longest = int(np.bincount(trace.request).max())
    need = weights + longest * _kv_bytes_per_token(model, chip)
    with pytest.raises(MappingError) as exc:
        build_run(chip, model, trace, "all-digital")
    msg = str(exc.value)
    assert f"needs {need / GIB:,.2f} GiB of DRAM" in msg
    assert f"{weights / GIB:,.2f} GiB of digital weights not held in SRAM ({len(model.matrices):,} matrices" in msg
    assert f"({longest:,} tokens x {_kv_bytes_per_token(model, chip):,.0f} B" in msg
    assert "memory.dram.capacity_gib is 4 GiB" in msg
    assert f"memory.dram.capacity_gib >= {need / GIB:,.2f}" in msg and "several chips" in msg

    rc, _, err = cli(capsys, "run", "--hw", "aimc-3d-moe", "--model", "olmoe-1b-7b", "--policy", "all-digital",
                     "--tokens", "256", "--set", "memory.sram.capacity_mib=0", "--set", "memory.dram.capacity_gib=4",
                     "--quiet", "--out", str(tmp_path / "r"))
    assert rc == 2 and f"needs {need / GIB:,.2f} GiB of DRAM" in err
    assert not (tmp_path / "r").exists()


def test_dram_refusal_counts_decode_kv_of_every_live_sequence():
    """Decode, one request cut into 8 equal sequences of 32 tokens decoding together at context C: the last
    step holds 8 x (C + 32) KV tokens; the weights alone fit 8 GiB, the cache does not."""
    model = load_model("olmoe-1b-7b")
    chip = load_chip("aimc-3d-moe")
    trace = synthesize(SyntheticSpec(tokens=256, requests=1, seed=0), model)
    C = 20_000
    kv_tokens = 8 * (C + 32)
    with pytest.raises(MappingError) as exc:
        build_run(chip, model, trace, "maxnn", mode="decode", batch=8, context_tokens=C)
    msg = str(exc.value)
    assert f"({kv_tokens:,} tokens x {_kv_bytes_per_token(model, chip):,.0f} B" in msg
    assert f"{kv_tokens * _kv_bytes_per_token(model, chip) / GIB:,.2f} GiB of KV cache" in msg
    assert "shorter context" in msg
    assert "SRAM (memory.sram" not in msg         # moving weights alone could not make it fit


def test_dram_check_passes_and_reports_when_it_fits():
    model = load_model("olmoe-1b-7b")
    trace = synthesize(SyntheticSpec(tokens=128, seed=0), model)
    run = build_run("aimc-3d-moe", model, trace, "maxnn")
    d = run.mapping.report["dram_capacity"]
    wbits = run.chip.precision.digital_weight_bits
    held = sum(m.params for i, m in enumerate(model.matrices)
               if run.mapping.digital[i] and not run.mapping.resident[i]) * wbits / 8
    assert d["dram_weight_bytes"] == pytest.approx(held)
    assert d["dram_needed_bytes"] <= 8 * GIB == d["dram_capacity_bytes"]
    unbounded = build_run("aimc-3d-moe", model, trace, "all-digital",
                          hw_overrides={"memory": {"sram": {"capacity_mib": 0}, "dram": {"capacity_gib": None}}})
    assert unbounded.mapping.report["dram_capacity"]["dram_capacity_bytes"] is None
