"""A reused --out (issue #30, item 1): finished points are reused only when their resolved inputs are the
same, whatever changed (the hardware YAML, --set, --tokens, the trace file, the checkpoint); exactly the
points whose inputs changed are computed again, and the numbers equal those of a fresh folder. One command
at a time writes a folder (OUT/.lock); a folder deleted under a sweep is said, not counted.

Everything runs in this process through ``sim.cli.main`` on a two-node unit chip and a tiny model (tens of
tokens, one worker); reuse is counted from the console line, never from timing."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from sim.cli import main
from sim.inputs_key import file_digest, point_key
from sim.outlock import LOCK_NAME, acquire
from tests.test_engine import TINY, TWO_NODE

CHIP = TWO_NODE.replace("tiers: 2", "tiers: 16")        # every placement of the tiny model fits


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "chip.yaml").write_text(CHIP)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps({**TINY, "num_experts": 8, "num_experts_per_tok": 2}))
    return tmp_path / "chip.yaml", tmp_path / "model" / "config.json"


def _compare(out: Path, chip: Path, model: Path | None, *extra: str, tokens: int = 32) -> str:
    args = ["compare", "--hw", str(chip), "--tokens", str(tokens), "--requests", "2", "--batch", "8", "--jobs", "1",
            "--out", str(out), "--quiet", *extra]
    if model is not None:
        args += ["--model", str(model)]
    return _main(args)


def _main(args: list[str]) -> str:
    import contextlib
    import io

    said = io.StringIO()
    with contextlib.redirect_stdout(said):
        rc = main(args)
    assert rc == 0, said.getvalue()
    return said.getvalue()


def _counts(said: str) -> tuple[int, int, str]:
    """(reused, recomputed, which inputs changed) from the console line of sim.sweep.reuse_line."""
    reused = re.search(r"reused (\d+) finished points?", said)
    again = re.search(r"recomputed (\d+) points? whose inputs changed \(([^)]*)\)", said)
    return (int(reused.group(1)) if reused else 0, int(again.group(1)) if again else 0,
            again.group(2) if again else "")


def _numbers(out: Path) -> dict[tuple, str]:
    """Every run's metrics, by chip, policy and fraction (JSON text: NaN equals NaN)."""
    runs = json.loads((out / "results.json").read_text())
    return {(r["config"]["hw"], r["placement"]["policy"], r["placement"].get("fraction"), r["config"]["mode"]):
            json.dumps(r["metrics"], sort_keys=True) for r in runs}


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


# ----------------------------------------------------------------------------- compare

def test_compare_reuses_unchanged_points_and_recomputes_after_a_yaml_edit(tiny, tmp_path):
    chip, model = tiny
    out = tmp_path / "out"
    first = _compare(out, chip, model)
    assert _counts(first) == (0, 0, "")
    before = _numbers(out)
    assert _counts(_compare(out, chip, model)) == (len(before), 0, "")        # nothing changed: all reused
    assert _numbers(out) == before
    _edit(chip, "energy_pj_per_vector_op: 1.0", "energy_pj_per_vector_op: 3.0")   # the YAML edited in place
    said = _compare(out, chip, model)
    # the a100-gpu baseline does not read the edited YAML: it alone is reused
    assert _counts(said) == (1, len(before) - 1, "chip")
    fresh = tmp_path / "fresh"
    _compare(fresh, chip, model)
    assert _numbers(out) == _numbers(fresh) != before


def test_compare_after_set_and_tokens_gives_the_numbers_of_a_fresh_folder(tiny, tmp_path):
    chip, model = tiny
    out = tmp_path / "out"
    _compare(out, chip, model)
    before = _numbers(out)
    n = len(before)
    # --set: the chip's points are new; the baseline (its own chip, no --set) is reused
    said = _compare(out, chip, model, "--set", "digital.simd.energy_pj_per_vector_op=3")
    assert _counts(said) == (1, 0, "")
    fresh = tmp_path / "fresh-set"
    _compare(fresh, chip, model, "--set", "digital.simd.energy_pj_per_vector_op=3")
    assert _numbers(out) == _numbers(fresh) != before
    # --tokens: the shared trace changed, so every point (the baseline too) is computed again
    said = _compare(out, chip, model, "--set", "digital.simd.energy_pj_per_vector_op=3", tokens=48)
    assert _counts(said) == (0, n, "trace")
    fresh = tmp_path / "fresh-tokens"
    _compare(fresh, chip, model, "--set", "digital.simd.energy_pj_per_vector_op=3", tokens=48)
    assert _numbers(out) == _numbers(fresh)
    assert {json.loads(m)["tokens"] for m in _numbers(out).values()} == {48}


def test_compare_with_another_trace_file_reports_that_trace(tiny, tmp_path):
    from workloads.shapes import load_model
    from workloads.traces.format import save_npz
    from workloads.traces.synthetic import SyntheticSpec, synthesize

    chip, model = tiny
    shape = load_model(model)
    for name, seed in (("a", 1), ("b", 2)):
        save_npz(synthesize(SyntheticSpec(tokens=32, requests=2, seed=seed), shape), tmp_path / f"{name}.npz")
    out = tmp_path / "out"
    _compare(out, chip, model, "--trace", str(tmp_path / "a.npz"), "--baseline", "none")
    n = len(_numbers(out))
    said = _compare(out, chip, model, "--trace", str(tmp_path / "b.npz"), "--baseline", "none")
    assert _counts(said) == (0, n, "trace")
    fresh = tmp_path / "fresh"
    _compare(fresh, chip, model, "--trace", str(tmp_path / "b.npz"), "--baseline", "none")
    assert _numbers(out) == _numbers(fresh)
    runs = json.loads((out / "results.json").read_text())
    assert {r["trace"]["source"] for r in runs} == {"synthetic(seed=2)"}
    # the same trace written again (new zip time stamps) is the same input: everything is reused
    save_npz(synthesize(SyntheticSpec(tokens=32, requests=2, seed=2), shape), tmp_path / "b2.npz")
    said = _compare(out, chip, model, "--trace", str(tmp_path / "b2.npz"), "--baseline", "none")
    assert _counts(said) == (n, 0, "")


def test_compare_recomputes_after_the_checkpoint_changes(tmp_path, monkeypatch):
    from tests.moe_checkpoints import olmoe_config, write_olmoe

    monkeypatch.setenv("HETMOE_CACHE_DIR", str(tmp_path / "cache"))
    chip = tmp_path / "chip.yaml"
    chip.write_text(CHIP.replace("tile_count: 8", "tile_count: 32").replace("tiles_per_node: 4",
                                                                            "tiles_per_node: 16"))
    cfg = olmoe_config(hidden=8, layers=1, heads=2, experts=8, top_k=2, width=4, vocab=16)
    ckpt = write_olmoe(tmp_path / "ckpt", cfg, seed=0, planted=50.0)
    out = tmp_path / "out"
    _compare(out, chip, None, "--checkpoint", str(ckpt), "--baseline", "none")
    before = _numbers(out)
    assert _counts(_compare(out, chip, None, "--checkpoint", str(ckpt), "--baseline", "none")) == (len(before), 0, "")
    write_olmoe(ckpt, cfg, seed=7)                  # other weights, same shapes, same folder
    said = _compare(out, chip, None, "--checkpoint", str(ckpt), "--baseline", "none")
    reused, again, which = _counts(said)
    assert reused == 0 and again == len(before) and "checkpoint" in which
    fresh = tmp_path / "fresh"
    _compare(fresh, chip, None, "--checkpoint", str(ckpt), "--baseline", "none")
    assert _numbers(out) == _numbers(fresh)


# ----------------------------------------------------------------------------- sweep and whatif

def _sweep_spec(tmp_path: Path, chip: Path, model: Path, trace: Path) -> Path:
    spec = tmp_path / "sweep.yaml"
    spec.write_text(f"hw: {chip}\nmodel: {model}\ntraces: [{trace}]\nbatch: 8\n"
                    "policies: [all-analog, all-digital, maxnn]\nfractions: [0.25]\n"
                    "hw_overrides:\n  - {}\n  - {digital.simd.energy_pj_per_vector_op: 3.0}\n")
    return spec


def test_sweep_recomputes_exactly_the_points_whose_chip_or_trace_changed(tiny, tmp_path):
    from workloads.shapes import load_model
    from workloads.traces.format import save_npz
    from workloads.traces.synthetic import SyntheticSpec, synthesize

    chip, model = tiny
    shape = load_model(model)
    trace = tmp_path / "trace.npz"
    save_npz(synthesize(SyntheticSpec(tokens=32, requests=2, seed=1), shape), trace)
    spec = _sweep_spec(tmp_path, chip, model, trace)
    out = tmp_path / "out"
    assert "6 points: 6 run, 0 already done, 0 failed" in _main(["sweep", str(spec), "--out", str(out), "--quiet",
                                                                  "--jobs", "1"])
    # the YAML's vector-op energy edited: the three points that override it read the same chip and are reused
    _edit(chip, "energy_pj_per_vector_op: 1.0", "energy_pj_per_vector_op: 2.0")
    said = _main(["sweep", str(spec), "--out", str(out), "--quiet", "--jobs", "1"])
    assert _counts(said) == (3, 3, "chip") and "6 points: 3 run, 3 already done, 0 failed" in said
    # the trace file rewritten with other routes, at the same path: every point
    save_npz(synthesize(SyntheticSpec(tokens=32, requests=2, seed=5), shape), trace)
    said = _main(["sweep", str(spec), "--out", str(out), "--quiet", "--jobs", "1"])
    assert _counts(said) == (0, 6, "trace")
    fresh = tmp_path / "fresh"
    _main(["sweep", str(spec), "--out", str(fresh), "--quiet", "--jobs", "1"])
    assert _numbers(out) == _numbers(fresh)
    assert len((out / "summary.csv").read_text().splitlines()) == 1 + 6


def test_whatif_recomputes_after_tokens_change(tiny, tmp_path):
    chip, model = tiny
    base = ["whatif", "--hw", str(chip), "--model", str(model), "--requests", "2", "--batch", "8", "--jobs", "1",
            "--vary", "batch=4,16", "--quiet"]

    def rows(out: Path) -> str:
        return json.dumps(json.loads((out / "whatif.json").read_text())["rows"], sort_keys=True)

    out = tmp_path / "out"
    _main(base + ["--tokens", "32", "--out", str(out)])
    assert _counts(_main(base + ["--tokens", "32", "--out", str(out)])) == (9, 0, "")
    said = _main(base + ["--tokens", "48", "--out", str(out)])
    assert _counts(said) == (0, 9, "trace")
    fresh = tmp_path / "fresh"
    _main(base + ["--tokens", "48", "--out", str(fresh)])
    assert rows(out) == rows(fresh)


# ----------------------------------------------------------------------------- the key itself

def test_the_key_follows_content_not_paths(tiny, tmp_path):
    import zipfile

    chip, model = tiny
    point = {"hw": str(chip), "model": str(model), "trace": {"tokens": 32, "requests": 2, "seed": 0},
             "policy": "maxnn", "fraction": 0.25, "hw_overrides": {}}
    key, parts = point_key(point)
    assert key and set(parts) == {"options", "chip", "model", "trace"}
    # an override that sets the value the YAML already has resolves to the same chip
    same = point_key({**point, "hw_overrides": {"digital": {"simd": {"energy_pj_per_vector_op": 1.0}}}})[1]
    assert same["chip"] == parts["chip"] and same["options"] != parts["options"]
    # an unreadable input gives no key (the point is computed, and fails on its own)
    assert point_key({**point, "hw": str(tmp_path / "missing.yaml")}) == (None, None)
    # a zip is hashed by its members, not its time stamps
    for name, when in (("a.zip", (2000, 1, 1, 0, 0, 0)), ("b.zip", (2020, 6, 1, 12, 0, 0))):
        with zipfile.ZipFile(tmp_path / name, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(zipfile.ZipInfo("experts.npy", date_time=when), b"same bytes")
    assert (tmp_path / "a.zip").read_bytes() != (tmp_path / "b.zip").read_bytes()
    assert file_digest(tmp_path / "a.zip") == file_digest(tmp_path / "b.zip")


# ----------------------------------------------------------------------------- the folder lock

@pytest.mark.parametrize("command", ["compare", "whatif", "sweep", "plot"])
def test_a_folder_another_command_holds_is_refused_in_one_line(tiny, tmp_path, capsys, command):
    chip, model = tiny
    out = tmp_path / "out"
    spec = tmp_path / "sweep.yaml"
    spec.write_text(f"hw: {chip}\nmodel: {model}\ntokens: 32\nbatch: 8\npolicies: [all-digital]\n")
    args = {"compare": ["compare", "--hw", str(chip), "--model", str(model), "--tokens", "32", "--out", str(out)],
            "whatif": ["whatif", "--hw", str(chip), "--model", str(model), "--tokens", "32", "--out", str(out)],
            "sweep": ["sweep", str(spec), "--out", str(out)],
            "plot": ["plot", str(out)]}[command]
    lock = acquire(out, "hetmoe compare --out elsewhere")
    try:
        assert main(args) == 2
    finally:
        lock.release()
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"{out} is being written by another hetmoe command (pid {os.getpid()}: hetmoe compare" in err
    assert "wait for it to end, or write to another folder" in err
    assert sorted(p.name for p in out.iterdir()) == []            # nothing written, the lock file removed


def test_a_lock_left_by_a_process_that_is_gone_is_taken_over(tiny, tmp_path, capsys):
    chip, model = tiny
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).write_text("pid 999999999: hetmoe sweep (killed)\n")     # no one holds it
    spec = tmp_path / "sweep.yaml"
    spec.write_text(f"hw: {chip}\nmodel: {model}\ntokens: 32\nbatch: 8\npolicies: [all-digital]\n")
    assert "1 points: 1 run" in _main(["sweep", str(spec), "--out", str(out), "--quiet", "--jobs", "1"])
    assert "hetmoe:" not in capsys.readouterr().err
    assert not (out / LOCK_NAME).exists()


def test_the_lock_lives_with_the_command_not_with_its_forked_workers(tmp_path):
    lock = acquire(tmp_path / "out")
    try:
        child = os.fork()
        if child == 0:                                   # the child's copy of the lock is closed at fork
            try:
                os.fstat(lock.fd)
            except OSError:
                os._exit(0)
            os._exit(1)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # and the lock is still held here
        with pytest.raises(Exception, match="is being written by another hetmoe command"):
            acquire(tmp_path / "out")
    finally:
        lock.release()
    acquire(tmp_path / "out").release()


def test_a_sweep_whose_folder_is_deleted_midway_says_so(tiny, tmp_path, capsys, monkeypatch):
    import sim.sweep

    chip, model = tiny
    out = tmp_path / "out"
    spec = tmp_path / "sweep.yaml"
    spec.write_text(f"hw: {chip}\nmodel: {model}\ntokens: 32\nbatch: 8\n"
                    "policies: [all-analog, all-digital, maxnn]\nfractions: [0.25, 0.5]\n")
    real = sim.sweep.run_points

    def deleted_midway(points, out_dir, **kw):
        first = real(points[:2], out_dir, **kw)
        shutil.rmtree(out_dir)                           # someone deletes the folder; the sweep goes on
        return first + real(points[2:], out_dir, **kw)

    monkeypatch.setattr(sim.sweep, "run_points", deleted_midway)
    assert main(["sweep", str(spec), "--out", str(out), "--quiet", "--jobs", "1"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "was deleted or changed while this command wrote it: 2 of the 4" \
        in captured.err, captured.err
    assert " run, " not in captured.out and not (out / "summary.csv").exists()
