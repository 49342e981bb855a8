"""Accuracy beside cost: the Pareto front and answer from the table, routes as traces, compare end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from sim.functional.forward import Variant
from sim.report.tradeoff import answer, front, table
from tests.moe_checkpoints import olmoe_config, write_olmoe
from tests.test_functional import chip, forward, ids_for
from workloads.traces.format import load_npz, save_npz


def row(label, policy, fraction, eff, loss, std=0.001):
    return {"label": label, "policy": policy, "fraction": fraction, "tokens_per_s": 1.0, "energy_per_token_uj": 1.0,
            "tokens_per_s_per_w": eff, "loss": loss, "loss_std": std, "delta_bits": loss, "delta_bits_std": std,
            "kl": loss, "kl_std": std, "top1": 1 - loss, "routes_changed": 0.0}


TABLE = [row("all-analog", "all-analog", 0.0, 1000.0, 0.050),
         row("maxnn 12.5%", "maxnn", 0.125, 800.0, 0.020),
         row("random 12.5%", "random", 0.125, 790.0, 0.030),        # dominated by maxnn 12.5%
         row("maxnn 25%", "maxnn", 0.25, 600.0, 0.008),
         row("maxnn-lowest 25%", "maxnn-lowest", 0.25, 650.0, 0.012),
         row("all-digital", "all-digital", 1.0, 100.0, 0.0)]
ACC = {"max_loss_rel_perplexity": 0.01, "clean": {"perplexity": 3.7}, "noise_seeds": 3,
       "eval": {"predicted_tokens": 1000, "source": "ids.npy"}}


def test_pareto_front_is_computed_from_the_table():
    # lower loss and higher tokens/s/W are better; random 12.5% is beaten by maxnn 12.5% on both
    assert sorted(TABLE[i]["label"] for i in front(TABLE)) == sorted(
        ["all-analog", "maxnn 12.5%", "maxnn 25%", "maxnn-lowest 25%", "all-digital"])
    starred = [line.split("|")[1].strip() for line in table(TABLE)[2:] if "★" in line]
    assert "random 12.5% ★" not in starred and "maxnn 25% ★" in starred


def test_answer_names_the_best_placement_within_the_budget():
    text = " ".join(answer(TABLE, ACC))
    # within 1 %: maxnn 25% (0.8 %) and all-digital; the more efficient is maxnn 25%
    assert "**maxnn 25%**" in text
    assert f"{600 / 1000:.3g}× all-analog's efficiency" in text and f"{600 / 100:.3g}× all-digital's" in text
    assert "+5 % (± 0.1) perplexity" in text         # all-analog's loss, in percent
    tight = {**ACC, "max_loss_rel_perplexity": 0.0}
    assert "**all-digital**" in " ".join(answer(TABLE, tight))


def test_noisy_routes_round_trip_and_equal_clean_routes_without_noise(tmp_path):
    ckpt = write_olmoe(tmp_path / "c", olmoe_config(), seed=5)
    ids = ids_for(64, n=3, length=12)
    noisy = forward(ckpt, ["all-analog"], chip({"out_noise": 0.2, "programming": {"model": "relative",
                                                                                  "sigma_relative": 0.2}}, 8), ids)
    trace = noisy.trace(Variant(0, 0), "test")
    save_npz(trace, tmp_path / "noisy.npz")
    back = load_npz(tmp_path / "noisy.npz")
    for layer, (ids_taken, weights) in noisy.routes[Variant(0, 0)].items():
        assert np.array_equal(back.experts[:, layer], ids_taken)
        assert np.allclose(back.weights[:, layer], weights)
    assert back.tokens == 3 * 11 and back.request.max() == 2 and back.position.max() == 10
    clean_routes = noisy.routes[Variant(None, None)]
    assert any(not np.array_equal(clean_routes[l][0], noisy.routes[Variant(0, 0)][l][0]) for l in clean_routes)
    quiet = forward(ckpt, ["all-analog"], chip(), ids)             # noise off, 16-bit converters
    for layer, (ids_taken, _) in quiet.routes[Variant(0, 0)].items():
        assert np.array_equal(ids_taken, quiet.routes[Variant(None, None)][layer][0])


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """``hetmoe compare`` with accuracy on a planted checkpoint (expert 0 of every layer: one neuron 10x)."""
    root = tmp_path_factory.mktemp("cmp")
    ckpt = write_olmoe(root / "ckpt", olmoe_config(experts=8, top_k=2), seed=11, planted=10.0)
    np.save(root / "ids.npy", ids_for(64, n=6, length=33, seed=2))
    hw = root / "chip.yaml"
    hw.write_text("extends: aimc-3d-moe\nanalog:\n  noise:\n    out_noise: 0.0\n    programming:\n"
                  "      model: relative\n      sigma_relative: 0.05\n")
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "compare", "--checkpoint", str(ckpt), "--eval",
                           str(root / "ids.npy"), "--hw", str(hw), "--noise-seeds", "3", "--tokens", "512",
                           "--quiet", "--out", str(root / "out")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return root / "out"


def test_compare_puts_maxnn_below_maxnn_lowest_in_loss(compared):
    result = json.loads((compared / "accuracy.json").read_text())
    acc = {p["label"]: p for p in result["placements"]}
    assert acc["maxnn 12.5%"]["mean"]["kl_nats"] < acc["maxnn-lowest 12.5%"]["mean"]["kl_nats"]
    # (the cross-entropy change is not compared: on this random checkpoint it is within the seed error at 3 seeds,
    # e.g. -0.02 +- 0.02 nats for maxnn-lowest; KL, which does not average signs away, separates the two)
    # the preset's digital matrices are INT8 (precision.digital_weight_bits: 8) on both sides: all-digital
    # is not exact, but its weight error stays within the per-channel bound and its damage is small
    assert result["digital_weight_bits"] == 8
    assert 0 < result["digital_quantisation"]["max_weight_error_over_bound"] <= 1.0
    assert 0 < acc["all-digital"]["mean"]["kl_nats"] < acc["maxnn 12.5%"]["mean"]["kl_nats"] / 10
    header = (compared / "tradeoff.csv").read_text().splitlines()[0].split(",")
    assert {"tokens_per_s_per_w", "rel_perplexity_increase_mean", "kl_nats_mean", "top1_agreement_mean"} <= set(header)
    report = (compared / "report.md").read_text()
    assert report.index("## Answer") < report.index("## Assumptions") and "**Noise model**" in report


def test_plot_redraws_the_accuracy_figure_from_files(compared):
    import matplotlib.image as mpimg

    path = compared / "accuracy_vs_efficiency.png"
    before = mpimg.imread(path)
    path.unlink()
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "plot", str(compared)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(mpimg.imread(path), before)


# ----------------------------------------------------------------------------- expert sensitivity

@pytest.mark.parametrize("method", ["output", "kl"])
def test_sensitivity_and_maxnn_rank_the_planted_expert_first(tmp_path, method):
    from sim.functional.architecture import read_architecture
    from sim.functional.sensitivity import measure
    from sim.placement import POLICIES, PlacementContext
    from workloads.checkpoints.stats import compute_stats
    from workloads.evaldata import EvalData

    ckpt = write_olmoe(tmp_path / "c", olmoe_config(experts=8, top_k=2), seed=11, planted=10.0)
    arch = read_architecture(ckpt)
    stats = compute_stats(ckpt, arch.shape, cache=False)
    hw = chip({"out_noise": 0.0, "programming": {"model": "relative", "sigma_relative": 0.05}}, 16)
    data = EvalData(ids_for(64, n=6, length=33, seed=2), "ids")
    result = measure(arch, ckpt, data, hw, stats, method=method, noise_seeds=2)
    sens = np.array(result["sensitivity"], float)
    assert all(int(np.argmax(sens[layer])) == 0 for layer in arch.shape.moe_layers), sens
    scores = tmp_path / "sensitivity.json"
    scores.write_text(json.dumps(result))
    for policy in ("sensitivity", "maxnn"):
        p = POLICIES[policy](PlacementContext(arch.shape, None, stats, 1 / 8, explicit_file=str(scores)))
        assert [list(np.flatnonzero(p.digital_experts[layer])) for layer in arch.shape.moe_layers] == [[0], [0]]
    assert result["spearman"]["maxnn_gate_rows"]["0"] > 0


def test_sensitivity_policy_refuses_a_wrong_file(tmp_path):
    from sim.placement import POLICIES, PlacementContext, PlacementError
    from workloads.shapes import load_model

    model = load_model("olmoe-1b-7b")
    bad = tmp_path / "s.json"
    bad.write_text(json.dumps({"kind": "hetmoe-expert-sensitivity", "sensitivity": [[0.0] * 4] * 2}))
    with pytest.raises(PlacementError, match=r"scores for 2 layers x 4 experts; the model has 16 x 64"):
        POLICIES["sensitivity"](PlacementContext(model, None, None, 0.125, explicit_file=str(bad)))


def test_sweep_points_carry_their_accuracy_and_resume(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from sim.report.tradeoff import join, load_accuracy
    from sim.sweep import collect, load_sweep_spec, run_points

    ckpt = write_olmoe(tmp_path / "ckpt", olmoe_config(experts=8, top_k=2), seed=11, planted=10.0)
    np.save(tmp_path / "ids.npy", ids_for(64, n=4, length=17, seed=2))
    spec = tmp_path / "sweep.yaml"
    spec.write_text(f"checkpoint: {ckpt}\neval: {tmp_path / 'ids.npy'}\nnoise_seeds: 2\ntokens: 256\n"
                    "policies: [maxnn, maxnn-lowest]\nfractions: [0.125]\n")
    points = load_sweep_spec(spec)
    with ThreadPoolExecutor(1) as ex:
        statuses = run_points(points, tmp_path / "out", executor=ex, quiet=True)
    assert all(s["ok"] for s in statuses), statuses
    runs = collect(tmp_path / "out")
    assert all(len(r["accuracy"]["placement"]["per_seed"]["kl_nats"]) == 2 for r in runs)
    rows = join(runs, load_accuracy(tmp_path / "out", runs))
    assert sorted(r["label"] for r in rows) == ["maxnn 12.5%", "maxnn-lowest 12.5%"]
    with ThreadPoolExecutor(1) as ex:
        again = run_points(points, tmp_path / "out", executor=ex, quiet=True)
    assert all(s.get("skipped") for s in again)


def test_noisy_routing_prices_each_placement_on_its_own_routes(tmp_path):
    ckpt = write_olmoe(tmp_path / "ckpt", olmoe_config(experts=8, top_k=2), seed=11, planted=10.0)
    np.save(tmp_path / "ids.npy", ids_for(64, n=4, length=17, seed=2))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "compare", "--checkpoint", str(ckpt), "--eval",
                           str(tmp_path / "ids.npy"), "--noise-seeds", "1", "--tokens", "256", "--noisy-routing",
                           "--quiet", "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    runs = json.loads((out / "results.json").read_text())
    acc = json.loads((out / "accuracy.json").read_text())
    for r in runs:
        label = r["placement"]["policy"] if r["placement"]["policy"] in ("all-analog", "all-digital") else \
            f"{r['placement']['policy']} {100 * r['placement']['fraction']:g}%"
        assert r["config"]["trace"].startswith(f"{label} routes, noise seed 0"), (label, r["config"]["trace"])
        assert r["metrics"]["tokens"] == 4 * 16
        row = next(p for p in acc["placements"] if p["label"] == label)
        digital = {int(k): v for k, v in r["placement"]["digital_experts_per_layer"].items()}
        assert digital == {int(k): v for k, v in row["digital_experts_per_layer"].items()}, label
    assert "**Noisy routing**" in (out / "report.md").read_text()
