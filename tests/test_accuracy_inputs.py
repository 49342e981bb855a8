"""Checkpoints that would give meaningless numbers are refused: one line naming the tensor and shard, exit 2,
no accuracy.json (issue 28, item 4; issue 30, item 2's duplicated tensor)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from tests.moe_checkpoints import olmoe_config, write_olmoe
from workloads.checkpoints.tensors import CheckpointError, index_checkpoint, load_tensor

BAD = "model.layers.1.mlp.experts.3.up_proj.weight"


def _accuracy(ckpt, tmp_path):
    np.save(tmp_path / "ids.npy", np.random.default_rng(0).integers(0, 64, (2, 17)))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "accuracy", "--checkpoint", str(ckpt), "--eval",
                           str(tmp_path / "ids.npy"), "--hw", "hermes-64", "--noise-seeds", "1", "--quiet",
                           "--out", str(out)], capture_output=True, text=True)
    return proc, out


def _shard_of(ckpt, tensor):
    return json.loads((ckpt / "model.safetensors.index.json").read_text())["weight_map"][tensor]


def test_a_nan_in_one_expert_is_refused_with_its_tensor_and_shard(tmp_path):
    ckpt = write_olmoe(tmp_path / "ckpt", olmoe_config(), shards=2)
    shard = ckpt / _shard_of(ckpt, BAD)
    tensors = load_file(str(shard))
    tensors[BAD][2, 5] = np.nan
    save_file(tensors, str(shard))
    ref = index_checkpoint(ckpt)[BAD]
    with pytest.raises(CheckpointError, match=r"tensor .*experts\.3\.up_proj\.weight holds 1 non-finite value .* \[2, 5\]"):
        load_tensor(ref)
    proc, out = _accuracy(ckpt, tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and BAD in lines[0] and shard.name in lines[0] and "Traceback" not in proc.stderr
    assert not (out / "accuracy.json").exists()


def test_an_index_that_names_the_wrong_shard_is_refused(tmp_path):
    ckpt = write_olmoe(tmp_path / "ckpt", olmoe_config(), shards=2)
    index = ckpt / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    right = data["weight_map"][BAD]
    wrong = next(f for f in set(data["weight_map"].values()) if f != right)
    data["weight_map"][BAD] = wrong
    index.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=f"puts tensor {BAD} in {wrong}, which does not hold it \\(it is in {right}\\)"):
        index_checkpoint(ckpt)
    proc, out = _accuracy(ckpt, tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and BAD in proc.stderr
    assert not (out / "accuracy.json").exists()


def test_a_tensor_in_two_shards_is_refused(tmp_path):
    ckpt = write_olmoe(tmp_path / "ckpt", olmoe_config(), shards=2)
    right = _shard_of(ckpt, BAD)
    other = next(p for p in ckpt.glob("*.safetensors") if p.name != right)
    tensors = load_file(str(other))
    tensors[BAD] = load_file(str(ckpt / right))[BAD] * 2
    save_file(tensors, str(other))
    with pytest.raises(CheckpointError, match=f"tensor {BAD} is in two shards"):
        index_checkpoint(ckpt)


def test_max_sequences_takes_an_evenly_spread_subset(tmp_path):
    from workloads.evaldata import load_eval

    ids = np.arange(10 * 5).reshape(10, 5) % 64          # row r starts with 5r: rows are recognisable
    np.save(tmp_path / "ids.npy", ids)
    data = load_eval(tmp_path / "ids.npy", 64, max_sequences=4)
    assert data.ids[:, 0].tolist() == [ids[(i * 10) // 4, 0] for i in range(4)]     # rows 0, 2, 5, 7
    assert data.selection == "4 of 10 sequences, evenly spread (rows floor(i x 10 / 4))"
    assert load_eval(tmp_path / "ids.npy", 64, max_sequences=20).selection == "all sequences"


def test_compare_excludes_placements_that_do_not_fit_before_any_run(tmp_path):
    """OLMoE on hermes-64 (64 slots of 256x256): every placement with analog experts is excluded up front with
    the slot count the mapping would need, computed here from the model's matrices."""
    from math import ceil

    from workloads.shapes import load_model

    model = load_model("olmoe-1b-7b")
    maxnn0 = sum(ceil(m.in_features / 256) * ceil(m.out_features / 256) for m in model.matrices
                 if m.module == "expert")                # maxnn 0 %: every routed expert analog, the rest digital
    out = tmp_path / "cmp"
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "compare", "--hw", "hermes-64", "--tokens", "128",
                           "--baseline", "none", "--quiet", "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stderr.splitlines() if "maxnn 0% excluded" in x)
    assert f"need {maxnn0:,} crossbar slots, the chip has 64" in line
    report = (out / "report.md").read_text()
    assert "**Not in the table**: 15 placements" in report and "maxnn 0% excluded before any run" in report
    assert sorted(json.loads((out / "results.json").read_text())[i]["placement"]["policy"]
                  for i in range(2)) == ["all-digital", "maxnn"]


def test_an_interrupted_result_write_leaves_no_tables(tmp_path, monkeypatch):
    """Ctrl-C while `hetmoe run` writes: no summary.csv or energy.csv without result.json, no temporaries."""
    from sim import result as result_mod
    from sim.api import simulate
    from workloads.traces.synthetic import SyntheticSpec

    r = simulate("aimc-3d-moe", "olmoe-1b-7b", SyntheticSpec(tokens=32, seed=0), "maxnn", batch=32)
    real = result_mod.write_csv

    def interrupted(path, rows):
        if "energy" in path.name:
            raise KeyboardInterrupt
        real(path, rows)

    monkeypatch.setattr(result_mod, "write_csv", interrupted)
    with pytest.raises(KeyboardInterrupt):
        r.write(tmp_path / "run")
    assert list((tmp_path / "run").iterdir()) == []
    monkeypatch.setattr(result_mod, "write_csv", real)
    r.write(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["energy.csv", "result.json", "summary.csv",
                                                                    "utilisation.csv"]
