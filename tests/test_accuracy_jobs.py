"""The accuracy pass split over worker processes gives the numbers of one process (each noise seed's
draws depend only on the seed and the matrix, so seeds can run anywhere)."""

from __future__ import annotations

import json

import numpy as np

from sim.cli import main
from tests.moe_checkpoints import olmoe_config, write_olmoe


def test_noise_seeds_over_two_processes_equal_one_process(tmp_path):
    ckpt = write_olmoe(tmp_path / "ckpt", olmoe_config(hidden=64, layers=2, experts=8, top_k=2, width=32, vocab=128),
                       seed=3)
    ids = np.random.default_rng(0).integers(0, 128, size=(4, 17))
    np.save(tmp_path / "ids.npy", ids)
    runs = {}
    for jobs in (1, 2):
        out = tmp_path / f"j{jobs}"
        assert main(["accuracy", "--checkpoint", str(ckpt), "--eval", str(tmp_path / "ids.npy"), "--hw", "hermes-64",
                     "--policy", "all-analog", "--policy", "maxnn", "--fraction", "0.25", "--noise-seeds", "3",
                     "--jobs", str(jobs), "--out", str(out), "--quiet"]) == 0
        runs[jobs] = json.loads((out / "accuracy.json").read_text())
    one, two = runs[1], runs[2]
    assert one["clean"] == two["clean"]
    for a, b in zip(one["placements"], two["placements"]):
        assert a["label"] == b["label"]
        assert a["per_seed"] == b["per_seed"]                       # bit for bit, every seed and metric
        assert a["routes_changed_per_layer"] == b["routes_changed_per_layer"]
    seeds = one["placements"][0]["per_seed"]["ce_nats"]
    assert len(set(seeds)) == 3                                     # three seeds, three chips
    for name in ("clean.npz", "all-analog.npz"):
        x, y = (np.load(tmp_path / f"j{j}" / "routes" / name) for j in (1, 2))
        assert all(np.array_equal(x[k], y[k]) for k in x.files)
