"""The frontier MoE presets (issue #31 item 1): DeepSeek-V3, Qwen3-235B-A22B, Kimi-K2 and gpt-oss-120b.

Parameter totals against the published figures (the expected numbers are the publishers', written here,
never taken from the program), per-layer counts computed by hand from the config dimensions, and the
config keys these models add: MLA with a query low-rank path, group-limited routing, MTP modules stated
and left out, gpt-oss's names, biases, attention sinks and sliding windows.
"""

from __future__ import annotations

import pytest

from arch.errors import HetmoeError
from sim.cli import main
from workloads.shapes import ATTENTION, EXPERT, ModelError, from_hf_config, list_model_presets, load_model
from workloads.traces.synthetic import SyntheticSpec, synthesize

FRONTIER = ("deepseek-v3", "qwen3-235b-a22b", "kimi-k2", "gpt-oss-120b")

# (published total, its source)
PUBLISHED_TOTAL = {
    # DeepSeek-AI, "DeepSeek-V3 Technical Report" (arXiv 2412.19437), and README_WEIGHTS.md: 671 B main model,
    # the 11.5 B multi-token-prediction module excluded
    "deepseek-v3": 671e9,
    # Qwen team, Qwen3-235B-A22B model card and Qwen3 technical report (arXiv 2505.09388): 235 B total
    "qwen3-235b-a22b": 235e9,
    # OpenAI, gpt-oss model card (2025): 116.83 B total (MLP 114.71 B, attention 0.96 B, embeddings 1.16 B)
    "gpt-oss-120b": 116.83e9,
    # Kimi-K2-Instruct's checkpoint as the Hugging Face hub counts its safetensors: 1,026.5 B parameters
    # ("1.03T"; the FP8 block scales, 0.006 % of it, included). The model card says "1T"; the Kimi K2
    # technical report (arXiv 2507.20534) 1.04 T, 1.3 % above the checkpoint (see test_kimi_k2_report_figure)
    "kimi-k2": 1026.5e9,
}

# (published activated parameters, whether the figure counts the input embedding, tolerance)
PUBLISHED_ACTIVE = {
    # README_WEIGHTS.md: 36.6 B activated, "including 0.9B for the output Head" (the embedding lookup not counted)
    "deepseek-v3": (36.6e9, False, 0.01),
    # gpt-oss model card: 5.13 B active = attention + unembedding + 4 of 128 experts (embedding not counted)
    "gpt-oss-120b": (5.13e9, False, 0.01),
    # model card: 22 B activated, two significant digits: within 2 % (as tests/test_workloads_shapes.py)
    "qwen3-235b-a22b": (22e9, True, 0.02),
    # Kimi K2 technical report: 32.6 B activated; the model card's "32B" rounds it
    "kimi-k2": (32.6e9, True, 0.02),
}


def test_presets_are_listed():
    assert set(FRONTIER) <= set(list_model_presets())


@pytest.mark.parametrize("name", FRONTIER)
def test_total_parameters_match_the_published_figure(name):
    assert load_model(name).total_params() == pytest.approx(PUBLISHED_TOTAL[name], rel=0.01)


@pytest.mark.parametrize("name", FRONTIER)
def test_active_parameters_match_the_published_figure(name):
    active, with_embedding, rel = PUBLISHED_ACTIVE[name]
    assert load_model(name).active_params(include_embedding=with_embedding) == pytest.approx(active, rel=rel)


def test_deepseek_v3_headline_figures():
    """The technical report's rounded headline: 671 B total, 37 B activated."""
    m = load_model("deepseek-v3")
    assert round(m.total_params() / 1e9) == 671
    assert round(m.active_params(include_embedding=False) / 1e9) == 37


def test_qwen3_non_embedding_parameters():
    """Model card: 234 B parameters without the embedding and the output head."""
    m = load_model("qwen3-235b-a22b")
    non_embedding = m.total_params() - 2 * m.vocab_size * m.hidden_size
    assert non_embedding == pytest.approx(234e9, rel=0.01)


def test_kimi_k2_report_figure():
    """The Kimi K2 report's 1.04 T is not what the published config and checkpoint hold (1,026.5 B): the
    count stays with the checkpoint, 1.3 % below the report, inside the model card's '1T' (half a unit)."""
    total = load_model("kimi-k2").total_params()
    assert 1.0e12 - 0.5e12 <= total < 1.0e12 + 0.5e12
    assert total == pytest.approx(1.04e12, rel=0.015) and total < 1.04e12 * 0.99


def test_gpt_oss_model_card_breakdown():
    """gpt-oss model card, per component: MLP (routers and experts, biases included) 114.71 B, attention
    (sinks and biases included) 0.96 B, embedding + unembedding 1.16 B."""
    m = load_model("gpt-oss-120b")
    p, v = m.params_by_module(), m.vector_params_by_kind()
    E, h, w, L = 128, 2880, 2880, 36
    expert_bias = L * E * (2 * w + h)
    router_bias = L * E
    assert v["bias"] - expert_bias - router_bias == L * (64 * 64 + 2 * 8 * 64 + h)   # q, k, v, o biases
    assert p[EXPERT] + p["router"] + expert_bias + router_bias == pytest.approx(114.71e9, abs=0.005e9)
    assert p[ATTENTION] + (v["bias"] - expert_bias - router_bias) + v["sink"] == pytest.approx(0.96e9, abs=0.005e9)
    assert p["embedding"] + p["lm_head"] == pytest.approx(1.16e9, abs=0.005e9)


def test_deepseek_v3_mla_attention_per_layer_by_hand():
    """One layer's MLA projections from the config's dimensions (hidden 7168, 128 heads, q_lora_rank 1536,
    kv_lora_rank 512, rope 64, nope 128, v 128)."""
    h, heads, q_rank, kv_rank, rope, nope, v = 7168, 128, 1536, 512, 64, 128, 128
    q_a = q_rank * h                              # q_a_proj: hidden -> query latent
    q_b = heads * (nope + rope) * q_rank          # q_b_proj: latent -> per-head query (nope + rope)
    kv_a = (kv_rank + rope) * h                   # kv_a_proj: hidden -> KV latent + the shared rope key
    kv_b = heads * (nope + v) * kv_rank           # kv_b_proj: latent -> per-head key (nope) and value
    o = h * heads * v                             # o_proj
    by_hand = q_a + q_b + kv_a + kv_b + o
    assert by_hand == 187_105_280
    m = load_model("deepseek-v3")
    layer0 = [x for x in m.matrices if x.layer == 0 and x.module == ATTENTION]
    assert sum(x.params for x in layer0) == by_hand
    assert {x.name.split(".")[-1] for x in layer0} == {"q_a_proj", "q_b_proj", "kv_a_proj", "kv_b_proj", "o_proj"}
    assert m.kv_elements_per_token() == kv_rank + rope


def test_gpt_oss_layer_by_hand():
    """One gpt-oss layer: GQA attention with biases and 64 sinks; 128 experts with biased gate/up/down; a
    biased router; two RMSNorms."""
    h, heads, kv, hd, E, w = 2880, 64, 8, 64, 128, 2880
    attention = (heads * hd * h + heads * hd) + 2 * (kv * hd * h + kv * hd) + (h * heads * hd + h) + heads
    experts = E * (2 * (w * h + w) + (h * w + h))
    router = E * h + E
    norms = 2 * h
    m = load_model("gpt-oss-120b")
    assert m.total_params() == 36 * (attention + experts + router + norms) + h + 2 * 201088 * h


@pytest.mark.parametrize("name, dense, experts, top_k, shared, groups, mtp", [
    ("deepseek-v3", 3, 256, 8, 2048, (8, 4), 1),
    ("kimi-k2", 1, 384, 8, 2048, (1, 1), 0),
    ("qwen3-235b-a22b", 0, 128, 8, 0, (1, 1), 0),
    ("gpt-oss-120b", 0, 128, 4, 0, (1, 1), 0),
])
def test_preset_structure(name, dense, experts, top_k, shared, groups, mtp):
    m = load_model(name)
    assert m.moe_layers == tuple(range(dense, m.num_layers))
    assert (m.num_experts, m.top_k, m.shared_expert_width) == (experts, top_k, shared)
    assert (m.n_group, m.topk_group) == groups
    assert m.mtp_layers == mtp
    assert max(x.layer for x in m.matrices) == m.num_layers - 1     # no MTP layer among the simulated ones


def test_deepseek_v3_mtp_is_stated_and_excluded():
    m = load_model("deepseek-v3")
    assert m.num_layers == 61 and m.mtp_layers == 1
    # README_WEIGHTS.md: the MTP module has 11.5 B unique parameters (embedding and head shared)
    assert m.mtp_params() == pytest.approx(11.5e9, rel=0.01)
    assert m.summary()["mtp_layers_excluded"] == {"modules": 1, "params": m.mtp_params()}
    assert "mtp_layers_excluded" not in load_model("kimi-k2").summary()


def test_deepseek_v3_group_limited_routing():
    """n_group 8, topk_group 4: every token's 8 experts fall in at most 4 of the 8 groups of 32."""
    m = load_model("deepseek-v3")
    trace = synthesize(SyntheticSpec(tokens=64, seed=1), m)
    groups = trace.experts[:, list(m.moe_layers)] // 32
    assert max(len(set(row)) for layer in groups for row in layer) <= 4
    assert trace.meta["group_limited"] == {"n_group": 8, "topk_group": 4}


def test_gpt_oss_sliding_window_and_names():
    m = load_model("gpt-oss-120b")
    assert m.sliding_window == 128
    assert m.sliding_window_layers == tuple(range(0, 36, 2))
    assert m.attention_sinks and m.attention_bias and m.router_bias and m.expert_bias
    assert m.norm_topk_prob     # softmax over the 4 chosen logits
    assert m.summary()["sliding_window"]["layers"] == 18
    assert dict((n, (o, i)) for n, o, i in m.attention_shapes())["q_proj"] == (64 * 64, 2880)
    assert "sliding_window" not in load_model("qwen3-235b-a22b").summary()   # use_sliding_window: false


def _tiny(**extra):
    return {"model_type": "gpt_oss", "hidden_size": 8, "num_hidden_layers": 4, "num_attention_heads": 2,
            "num_key_value_heads": 1, "head_dim": 4, "num_local_experts": 4, "experts_per_token": 2,
            "intermediate_size": 8, "vocab_size": 16, **extra}


def test_sliding_window_parsing():
    types = ["sliding_attention", "full_attention"] * 2
    m = from_hf_config(_tiny(sliding_window=16, layer_types=types))
    assert (m.sliding_window, m.sliding_window_layers) == (16, (0, 2))
    assert from_hf_config(_tiny(sliding_window=16)).sliding_window_layers == (0, 1, 2, 3)   # Mistral-style
    assert from_hf_config(_tiny(sliding_window=16, use_sliding_window=False)).sliding_window_layers == ()
    qwen2 = from_hf_config(_tiny(sliding_window=16, use_sliding_window=True, max_window_layers=3))
    assert qwen2.sliding_window_layers == (3,)
    with pytest.raises(ModelError, match="one attention kind per layer"):
        from_hf_config(_tiny(sliding_window=16, layer_types=types[:3]))
    with pytest.raises(ModelError, match="linear_attention not modelled"):
        from_hf_config(_tiny(sliding_window=16, layer_types=["linear_attention"] * 4))
    with pytest.raises(ModelError, match="sliding_window is not set"):
        from_hf_config(_tiny(layer_types=types))
    for bad in ({"sliding_window": "128"}, {"num_nextn_predict_layers": [1]}, {"attention_bias": "yes"}):
        with pytest.raises(HetmoeError, match=next(iter(bad))):     # one clean line naming the field
            from_hf_config(_tiny(**bad))


def test_older_presets_gain_only_their_vectors():
    """The presets without biases or sinks count only norms beyond their matrices and embedding."""
    m = load_model("mixtral-8x7b")
    vectors = m.vector_params_by_kind()
    assert vectors == {"norm": (2 * 32 + 1) * 4096, "bias": 0, "sink": 0}
    assert m.total_params() == sum(m.params_by_module().values()) + vectors["norm"]


def test_run_on_a_too_small_chip_is_the_clean_capacity_error(tmp_path, capsys):
    rc = main(["run", "--model", "qwen3-235b-a22b", "--hw", "aimc-3d-moe", "--tokens", "16",
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "crossbar slots" in err[0] and "chips of this kind" in err[0]


def test_counts_equal_transformers_modelling_code():
    """Cross-check with Hugging Face's own modules (instantiated on the meta device, no memory): the same
    totals to the parameter, norms, biases and sinks included."""
    torch = pytest.importorskip("torch", reason="the reference extra (torch, transformers) is not installed")
    transformers = pytest.importorskip("transformers", reason="the reference extra is not installed")
    if not all(hasattr(transformers, c) for c in ("GptOssConfig", "DeepseekV3Config", "Qwen3MoeConfig")):
        pytest.skip("this transformers has no gpt-oss / DeepSeek-V3 / Qwen3-MoE modelling code")
    import yaml

    from workloads.shapes import PRESET_DIR

    classes = {"deepseek-v3": "DeepseekV3Config", "kimi-k2": "DeepseekV3Config",
               "qwen3-235b-a22b": "Qwen3MoeConfig", "gpt-oss-120b": "GptOssConfig"}
    for name, cls in classes.items():
        raw = yaml.safe_load((PRESET_DIR / f"{name}.yaml").read_text())
        keys = {k: v for k, v in raw.items() if not k.startswith("_") and k != "model_type"}
        config = getattr(transformers, cls)(**keys)
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(config)
        reference = sum(p.numel() for p in model.parameters())
        assert load_model(name).total_params() == reference, name
