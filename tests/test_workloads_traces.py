"""Trace readers (real logs when present), warm-up removal, bad input, synthetic popularity."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import shared_data_or_skip
from workloads.traces.readers import read_trace, require_complete
from workloads.shapes import load_model
from workloads.traces.synthetic import SyntheticSpec, _feasible, synthesize
from workloads.traces.format import TraceError, load_npz, save_jsonl, save_npz

QWEN = "qwen1.5-moe-a2.7b"


def _qwen_rows(batches):
    """vllm-moe-logger lines: a meta line, then each batch's rows with token_idx restarting at 0."""
    lines = [{"type": "meta", "layers_logged": [0], "top_k": 4}]
    for batch in batches:
        for i, (ids, w) in enumerate(batch):
            lines.append({"type": "route", "req_id": "r1", "token_idx": i, "layer": 0, "topk_ids": ids,
                          "topk_weights": w})
    return "\n".join(json.dumps(x) for x in lines) + "\n"


def test_warmup_batches_detected_and_dropped(tmp_path):
    dummy = [([1, 2, 3, 4], [0.4, 0.3, 0.2, 0.1])] * 6
    uniform = [([5, 6, 7, 8], [0.25] * 4), ([9, 10, 11, 12], [0.25] * 4)]
    real = [([1, 2, 3, 4], [0.4, 0.3, 0.2, 0.1]), ([4, 3, 2, 1], [0.5, 0.2, 0.2, 0.1]),
            ([7, 8, 9, 10], [0.3, 0.3, 0.2, 0.1])]
    path = tmp_path / "log.jsonl"
    path.write_text(_qwen_rows([dummy, uniform, real]))
    model = load_model(QWEN)
    trace = read_trace(path, model)
    assert trace.meta["warmup_rows_dropped"] == 6 + 2
    assert trace.tokens == 3
    assert trace.experts[:, 0].tolist() == [ids for ids, _ in real]
    kept = read_trace(path, model, keep_warmup=True)
    assert kept.tokens == 11 and kept.meta["warmup_rows_dropped"] == 0


def test_fill_rules(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text(_qwen_rows([[([1, 2, 3, 4], [0.4, 0.3, 0.2, 0.1]), ([4, 3, 2, 1], [0.5, 0.2, 0.2, 0.1])]]))
    model = load_model(QWEN)
    trace = read_trace(path, model)
    with pytest.raises(TraceError, match="--fill replicate or --fill synthetic"):
        require_complete(trace, model)
    rep = read_trace(path, model, fill="replicate", seed=3)
    require_complete(rep, model)
    assert rep.meta["filled_layers"] == list(range(1, 24))
    # replicate: same multiset structure, experts relabelled by a permutation
    a, b = rep.experts[:, 0], rep.experts[:, 5]
    mapping = dict(zip(a.ravel().tolist(), b.ravel().tolist()))
    assert len(set(mapping.values())) == len(mapping)
    assert np.array_equal(rep.weights[:, 5], rep.weights[:, 0])
    syn = read_trace(path, model, fill="synthetic", seed=3)
    assert (syn.experts[:, 1:] >= 0).all()
    assert np.allclose(syn.weights[:, 7].sum(axis=1), 1.0, atol=1e-5)


BAD_LOGS = [
    ("truncated", '{"type": "route", "req_id": "r1", "token_idx": 0, "layer": 0, "topk_ids": [1, 2', 1,
     "not valid JSON"),
    ("id-out-of-range", json.dumps({"type": "route", "token_idx": 0, "layer": 0, "topk_ids": [1, 2, 3, 60],
                                    "topk_weights": [0.1] * 4}), 1, "topk_ids: expert id 60 out of range"),
    ("wrong-k", json.dumps({"type": "route", "token_idx": 0, "layer": 0, "topk_ids": [1, 2],
                            "topk_weights": [0.1] * 2}), 1, "topk_ids: 2 experts but .* routes top-4"),
    ("bad-layer", json.dumps({"type": "route", "token_idx": 0, "layer": 40, "topk_ids": [1, 2, 3, 4],
                              "topk_weights": [0.1] * 4}), 1, "layer: 40 is not a layer"),
    ("unknown-format", json.dumps({"foo": 1}), 1, "unknown trace format"),
]


@pytest.mark.parametrize("case,text,line,fragment", BAD_LOGS, ids=[b[0] for b in BAD_LOGS])
def test_bad_logs(tmp_path, case, text, line, fragment):
    path = tmp_path / "bad.jsonl"
    ok = json.dumps({"type": "route", "token_idx": 0, "layer": 0, "topk_ids": [1, 2, 3, 4], "topk_weights": [0.1] * 4})
    path.write_text(ok + "\n" + text + "\n" if case not in ("unknown-format", "truncated") else text + "\n")
    want_line = line + (1 if case not in ("unknown-format", "truncated") else 0)
    with pytest.raises(TraceError, match=f"{path}:{want_line}: .*{fragment}"):
        read_trace(path, load_model(QWEN))
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "trace", "inspect", str(path), "--model", QWEN],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with pytest.raises(TraceError, match="empty"):
        read_trace(path, load_model(QWEN))
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "trace", "inspect", str(path), "--model", QWEN],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip() == f"hetmoe: error: {path}: the file is empty; " \
        "expected JSON lines of routing records"


def test_own_formats_round_trip(tmp_path):
    model = load_model("olmoe-1b-7b")
    trace = synthesize(SyntheticSpec(tokens=50, requests=2, seed=4), model)
    save_npz(trace, tmp_path / "t.npz")
    back = read_trace(tmp_path / "t.npz", model)
    assert np.array_equal(back.experts, trace.experts) and np.array_equal(back.request, trace.request)
    save_jsonl(trace, tmp_path / "t.jsonl")
    again = read_trace(tmp_path / "t.jsonl", model)
    assert np.array_equal(again.experts, trace.experts)
    assert np.allclose(again.weights, trace.weights, atol=1e-6)
    assert load_npz(tmp_path / "t.npz").meta["format"] == "synthetic"


def test_routed_experts_replay_format(tmp_path):
    model = load_model("mixtral-8x7b")
    rng = np.random.default_rng(0)
    rows = [{"request_id": f"q{r}", "routed_experts": [[sorted(rng.choice(8, 2, replace=False).tolist())
                                                        for _ in range(32)] for _ in range(5)]} for r in range(3)]
    path = tmp_path / "replay.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    trace = read_trace(path, model)
    assert trace.meta["format"] == "vllm-routed-experts"
    assert trace.tokens == 15 and trace.observed.all()
    assert trace.request.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert trace.experts[6, 3].tolist() == rows[1]["routed_experts"][1][3]


@pytest.mark.parametrize("k_model,zipf_s", [("mixtral-8x7b", 1.0), ("olmoe-1b-7b", 0.8)])
def test_synthetic_popularity_matches_request(k_model, zipf_s):
    model = load_model(k_model)
    spec = SyntheticSpec(tokens=20000, requests=4, zipf_s=zipf_s, seed=7)
    trace = synthesize(spec, model)
    k, n, E = model.top_k, spec.tokens, model.num_experts
    law = zipf_law(E, k, zipf_s)
    assert law.sum() == pytest.approx(1.0) and law.max() <= 1 / k + 1e-12
    # binomial standard error of an inclusion rate over n tokens, in share units (/k), plus the documented
    # Monte-Carlo calibration error (8000 samples per step); ranks are shuffled per layer, and sorting is
    # 1-Lipschitz in the max norm, so the sorted shares lie within the largest per-expert tolerance
    sigma = np.sqrt(k * law * (1 - k * law) / n) / k
    calib = np.sqrt(k * law * (1 - k * law) / 8000) / k
    tol = (5 * sigma + 3 * calib).max() + 1e-4
    for layer in model.moe_layers[:4]:
        got = np.sort(trace.popularity(layer))[::-1]
        assert got.sum() == pytest.approx(1.0)
        assert np.all(np.abs(got - law) <= tol), (layer, np.abs(got - law).max(), tol)
    # the check tells exponents apart: s +- 0.25 moves some share by more than the tolerance
    for other in (zipf_s - 0.25, zipf_s + 0.25):
        assert np.abs(zipf_law(E, k, other) - law).max() > tol


def zipf_law(E: int, k: int, s: float) -> np.ndarray:
    """The spec's law, computed here: p_i = i^-s / sum_j j^-s over ranks 1..E (descending), capped at 1/k (an
    expert is picked at most once per token) with the excess spread over the uncapped ranks in proportion."""
    law = 1.0 / np.arange(1, E + 1) ** s
    law /= law.sum()
    while (law > 1 / k + 1e-15).any():
        over = law >= 1 / k
        law = np.where(over, 1 / k, law * (1 - over.sum() / k) / law[~over].sum())
    return law


def test_synthetic_locality_and_determinism():
    model = load_model("olmoe-1b-7b")
    a = synthesize(SyntheticSpec(tokens=2000, locality=0.5, seed=1), model)
    b = synthesize(SyntheticSpec(tokens=2000, locality=0.5, seed=1), model)
    assert np.array_equal(a.experts, b.experts)
    same = (a.experts[1:, 0] == a.experts[:-1, 0]).all(axis=1)
    first = a.position[1:] == 0
    rate = same[~first].mean()
    assert abs(rate - 0.5) < 5 * np.sqrt(0.25 / same.size) + 0.01  # fresh draws rarely repeat a whole set
    c = synthesize(SyntheticSpec(tokens=2000, layer_correlation=1.0, seed=1), model)
    # with full correlation, the layer-1 set is a fixed relabelling of the layer-0 set
    pairs = {tuple(x): tuple(y) for x, y in zip(c.experts[:, 0].tolist(), c.experts[:, 1].tolist())}
    assert all(len(set(v)) == model.top_k for v in pairs.values())
    assert len(set(np.unique(c.experts[:, 0]).tolist())) == len(set(np.unique(c.experts[:, 1]).tolist()))


def test_feasible_caps_shares():
    p = _feasible(np.array([0.9, 0.05, 0.03, 0.02]), 2)
    assert p.max() <= 0.5 + 1e-12 and abs(p.sum() - 1) < 1e-12


def test_counts_popularity(tmp_path):
    counts = {"0": [50, 30, 10, 10, 0, 0, 0, 0]}
    path = tmp_path / "counts.json"
    path.write_text(json.dumps(counts))
    model = load_model("mixtral-8x7b")
    trace = synthesize(SyntheticSpec(tokens=4000, popularity="counts", counts_file=str(path), seed=2), model)
    p0 = trace.popularity(0)
    assert p0[4:].sum() < 0.01 and abs(p0[0] - 0.5) < 0.03


# ----------------------------------------------------------------------------- real logs

def test_real_logs_parse():
    data = shared_data_or_skip() / "routing-logs"
    mix = read_trace(data / "mixtral-8x7b_gsm8k_vllm.jsonl", load_model("mixtral-8x7b"))
    assert int(mix.observed.sum()) == 32
    assert mix.meta["rows_read"] == 7889
    model = load_model(QWEN)
    for layer in (0, 8, 12, 18, 23):
        path = data / f"qwen1.5-moe-a2.7b_gsm8k_vllm_layer{layer}.jsonl"
        trace = read_trace(path, model)
        # shared/data/README.md: the first 8,192 rows are one dummy batch, the next 256 another
        assert trace.meta["warmup_rows_dropped"] == 8192 + 256
        assert trace.meta["warmup_groups_dropped"] == 2
        assert trace.observed.tolist() == [i == layer for i in range(24)]
        assert trace.tokens == trace.meta["rows_read"] - 8448


def test_expert_counts_file_is_usable():
    path = shared_data_or_skip() / "expert_counts.json"
    model = load_model("olmoe-1b-7b")
    trace = synthesize(SyntheticSpec(tokens=3000, popularity="counts", counts_file=str(path),
                                     counts_model="OLMoE-1B-7B", counts_domain="arxiv", seed=0), model)
    raw = np.asarray(json.loads(path.read_text())["models"]["OLMoE-1B-7B"]["domains"]["arxiv"]["0"], float)
    want = _feasible(raw / raw.sum(), 8)
    assert np.argmax(trace.popularity(0)) == np.argmax(want)


def test_gate_weights_restricted_softmax_or_renormalised():
    from workloads.traces.synthetic import gate_weights

    logits = np.array([[2.0, 1.0, 0.0, -1.0]])
    ids = np.array([[0, 1]])
    full = np.exp(logits[0]) / np.exp(logits[0]).sum()
    assert np.allclose(gate_weights(logits, ids, False), [[full[0], full[1]]])
    assert np.allclose(gate_weights(logits, ids, True), [[full[0], full[1]]] / (full[0] + full[1]))


def test_race_keys_are_gumbel_perturbed_logits():
    """The exponential-race keys w / X (X = -log u) are exp(logw + G) up to one constant (G = -log X, standard
    Gumbel): their top k is the Gumbel-top-k of the perturbed logits and their weights are the softmax of them."""
    from workloads.traces.synthetic import _race, _race_topk, gate_weights, race_weights

    logw = np.log(np.array([0.5, 0.2, 0.1, 0.1, 0.05, 0.05]))
    keys = _race(np.random.default_rng(3), logw, 500)
    u = np.maximum(np.random.default_rng(3).random((500, 6), dtype=np.float32), np.float32(1e-30)).astype(np.float64)
    perturbed = logw[None, :] - np.log(-np.log(u))
    assert np.allclose(np.log(keys), perturbed - logw.max(), atol=1e-5)
    ids, keys = _race_topk(logw, 2, 500, np.random.default_rng(3))
    assert (ids == np.argsort(-perturbed, axis=1, kind="stable")[:, :2]).mean() > 0.999
    for normalise in (False, True):
        assert np.allclose(race_weights(keys, ids, normalise), gate_weights(perturbed, ids, normalise), rtol=1e-5)


@pytest.mark.parametrize("name,normalised", [("olmoe-1b-7b", False), ("mixtral-8x7b", True)])
def test_synthetic_weights_follow_norm_topk_prob(name, normalised):
    model = load_model(name)
    trace = synthesize(SyntheticSpec(tokens=256, seed=1), model)
    sums = trace.weights[:, list(model.moe_layers)].sum(axis=2)
    assert trace.meta["weights_normalised"] is normalised
    if normalised:
        assert np.allclose(sums, 1.0, atol=1e-6)
    else:
        assert (sums < 1.0 - 1e-6).all()


def test_group_limited_routing_stays_in_the_chosen_groups():
    from workloads.shapes import from_hf_config

    cfg = {"model_type": "deepseek_v3", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
           "n_routed_experts": 32, "num_experts_per_tok": 4, "moe_intermediate_size": 16, "vocab_size": 100,
           "n_group": 8, "topk_group": 2, "topk_method": "noaux_tc", "scoring_func": "sigmoid",
           "routed_scaling_factor": 2.5, "kv_lora_rank": 16, "qk_rope_head_dim": 4, "qk_nope_head_dim": 8,
           "v_head_dim": 8}
    model = from_hf_config(cfg)
    trace = synthesize(SyntheticSpec(tokens=2000, seed=3), model)
    groups = trace.experts[:, list(model.moe_layers)] // (32 // 8)     # group of every chosen expert
    distinct = np.array([[len(set(g)) for g in layer_rows] for layer_rows in groups])
    assert distinct.max() <= 2 and trace.meta["group_limited"] == {"n_group": 8, "topk_group": 2}
    assert any("scoring_func" in u for u in model.unmodelled_routing)
    assert any("routed_scaling_factor" in u for u in model.unmodelled_routing)


def test_the_zipf_cap_is_stated_when_it_binds():
    model = load_model("olmoe-1b-7b")
    mild = synthesize(SyntheticSpec(tokens=64, seed=0, zipf_s=1.0), model)
    steep = synthesize(SyntheticSpec(tokens=64, seed=0, zipf_s=2.0), model)
    assert max(mild.meta["capped_experts_per_layer"].values()) == 1 and not mild.meta["warnings"]
    assert max(steep.meta["capped_experts_per_layer"].values()) > 1
    assert "1/k share cap binds" in steep.meta["warnings"][0]
