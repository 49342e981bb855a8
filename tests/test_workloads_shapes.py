"""Model shapes: parameter counts computed from the shape; presets against shared/data/README.md."""

import json

import pytest

from arch.errors import HetmoeError

from workloads.shapes import ATTENTION, DENSE, EXPERT, LM_HEAD, ROUTER, SHARED, ModelError, from_hf_config, load_model

# hidden, expert width, dense FFN, shared width, experts, top-k, layers, heads, kv heads, head_dim, vocab
README_TABLE = {
    "olmoe-1b-7b": (2048, 1024, 0, 0, 64, 8, 16, 16, 16, 128, 50304),
    "deepseek-moe-16b": (2048, 1408, 10944, 2 * 1408, 64, 6, 28, 16, 16, 128, 102400),
    "qwen1.5-moe-a2.7b": (2048, 1408, 0, 5632, 60, 4, 24, 16, 16, 128, 151936),
    "mixtral-8x7b": (4096, 14336, 0, 0, 8, 2, 32, 32, 8, 128, 32000),
    "deepseek-v2-lite": (2048, 1408, 10944, 2 * 1408, 64, 6, 27, 16, 16, 128, 102400),
    "qwen3-30b-a3b": (2048, 768, 0, 0, 128, 8, 48, 32, 4, 128, 151936),
}


@pytest.mark.parametrize("name", sorted(README_TABLE))
def test_presets_match_readme(name):
    h, w, dense, shared, E, k, L, heads, kv, hd, vocab = README_TABLE[name]
    m = load_model(name)
    assert (m.hidden_size, m.expert_width, m.dense_ffn_width, m.shared_expert_width) == (h, w, dense, shared)
    assert (m.num_experts, m.top_k, m.num_layers, m.num_heads, m.vocab_size) == (E, k, L, heads, vocab)
    if not m.mla:
        assert (m.num_kv_heads, m.head_dim) == (kv, hd)
    dense_layers = [0] if dense else []
    assert list(m.moe_layers) == [i for i in range(L) if i not in dense_layers]
    params = m.params_by_module()
    assert params[EXPERT] == 3 * h * w * E * len(m.moe_layers)
    assert params[ROUTER] == E * h * len(m.moe_layers)
    assert params[LM_HEAD] == vocab * h
    assert params[DENSE] == 3 * h * dense * len(dense_layers)
    gate = h * len(m.moe_layers) if name.startswith("qwen1.5") else 0
    assert params[SHARED] == 3 * h * shared * len(m.moe_layers) + gate


def test_olmoe_routed_expert_parameters():
    m = load_model("olmoe-1b-7b")
    assert m.params_by_module()[EXPERT] == 3 * 2048 * 1024 * 64 * 16
    assert m.macs_per_token_by_module()[EXPERT] == 3 * 2048 * 1024 * 8 * 16
    assert m.params_by_module()[ATTENTION] == 4 * 2048 * 2048 * 16
    assert m.weight_bytes_by_module(4)[EXPERT] == 3 * 2048 * 1024 * 64 * 16 / 2


def test_gqa_and_mla_attention():
    mix = load_model("mixtral-8x7b")
    assert dict((n, (o, i)) for n, o, i in mix.attention_shapes())["k_proj"] == (8 * 128, 4096)
    assert mix.kv_elements_per_token() == 2 * 8 * 128
    q3 = load_model("qwen3-30b-a3b")
    assert dict((n, (o, i)) for n, o, i in q3.attention_shapes())["q_proj"] == (32 * 128, 2048)
    v2 = load_model("deepseek-v2-lite")
    shapes = dict((n, (o, i)) for n, o, i in v2.attention_shapes())
    assert shapes["q_proj"] == (16 * (128 + 64), 2048)
    assert shapes["kv_a_proj"] == (512 + 64, 2048)
    assert shapes["kv_b_proj"] == (16 * (128 + 128), 512)
    assert shapes["o_proj"] == (2048, 16 * 128)
    assert v2.kv_elements_per_token() == 512 + 64
    # absorbed MLA reads the latent cache: heads * (2 * kv_lora_rank + rope) MACs per attended position
    assert v2.attention_macs_per_context() == 16 * (2 * 512 + 64) == 17408


def test_layer_rules_from_raw_config(tmp_path):
    cfg = {"hidden_size": 64, "num_hidden_layers": 6, "num_attention_heads": 4, "vocab_size": 100,
           "n_routed_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 16, "intermediate_size": 128,
           "first_k_dense_replace": 1, "moe_layer_freq": 2}
    assert from_hf_config(cfg).moe_layers == (2, 4)
    qwen = {"hidden_size": 64, "num_hidden_layers": 6, "num_attention_heads": 4, "vocab_size": 100,
            "num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 16, "intermediate_size": 128,
            "decoder_sparse_step": 2, "mlp_only_layers": [3]}
    assert from_hf_config(qwen).moe_layers == (1, 5)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(qwen))
    assert load_model(tmp_path).moe_layers == (1, 5)


def test_bad_configs(tmp_path):
    with pytest.raises(ModelError, match="not a Mixture-of-Experts"):
        from_hf_config({"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1, "vocab_size": 4})
    bad = tmp_path / "config.json"
    bad.write_text("{\n  \"hidden_size\": 8,\n")
    with pytest.raises(HetmoeError, match=r"config.json:3: not valid JSON"):
        load_model(bad)
    with pytest.raises(ModelError, match="presets: deepseek-moe-16b"):
        load_model("gpt-9")


# Published parameter counts (total, active per token), and whether the active figure counts the input embedding.
PUBLISHED = {
    # Muennighoff et al., "OLMoE: Open Mixture-of-Experts Language Models", 2024: 6.9 B total, 1.3 B active
    "olmoe-1b-7b": (6.92e9, 1.28e9, True),
    # Qwen team, "Qwen1.5-MoE: Matching 7B Model Performance with 1/3 Activated Parameters", 2024: 14.3 B, 2.7 B
    "qwen1.5-moe-a2.7b": (14.3e9, 2.7e9, True),
    # Dai et al., "DeepSeekMoE", 2024 (Table 1, DeepSeekMoE 16B): 16.4 B total, 2.8 B activated
    "deepseek-moe-16b": (16.4e9, 2.8e9, True),
    # Mistral AI, "Mixtral of experts" (Jiang et al. 2024): 46.7 B total, 12.9 B active
    "mixtral-8x7b": (46.7e9, 12.9e9, True),
    # DeepSeek-AI, "DeepSeek-V2" (2024), V2-Lite: 15.7 B total, 2.4 B activated (embedding excluded). The
    # active figure is truncated, not rounded: dense layer 67 M + shared 450 M + routed 1,350 M + attention
    # 372 M + router 3 M + lm_head 210 M = 2.45 B, so its precision is one unit of the last digit
    "deepseek-v2-lite": (15.7e9, 2.4e9, False, 0.1e9),
    # Qwen team, Qwen3-30B-A3B model card: 30.5 B total, 3.3 B activated
    "qwen3-30b-a3b": (30.5e9, 3.3e9, True),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_counts_match_the_published_figures(name):
    total, active, with_embedding, *precision = PUBLISHED[name]
    m = load_model(name)
    assert m.total_params() == pytest.approx(total, rel=0.01)
    # active within 2 %, or within the precision of the published figure (half a unit of its last digit)
    rounding = (precision[0] if precision else 0.05e9) / active
    assert m.active_params(include_embedding=with_embedding) == pytest.approx(active, rel=max(0.02, rounding))
    assert m.macs_per_token_by_module()["embedding"] == 0


def test_tied_embeddings_are_counted_once():
    base = load_model("olmoe-1b-7b")
    tied = from_hf_config({**_olmoe_cfg(), "tie_word_embeddings": True})
    assert base.total_params() - tied.total_params() == base.vocab_size * base.hidden_size


def _olmoe_cfg():
    import yaml

    from workloads.shapes import PRESET_DIR

    return yaml.safe_load((PRESET_DIR / "olmoe-1b-7b.yaml").read_text())


def test_qwen2_moe_without_shared_width_takes_the_transformers_default():
    cfg = {"model_type": "qwen2_moe", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 16, "intermediate_size": 32,
           "vocab_size": 100}
    assert from_hf_config(cfg).shared_expert_width == 5632
    assert from_hf_config({**cfg, "model_type": "qwen3_moe"}).shared_expert_width == 0


def test_a_checkpoint_folder_names_its_model(tmp_path):
    """A model read from a folder called "checkpoint" is named after the folder above it, or after the hub id a
    saved config carries (issue 29, item 7)."""
    import json

    from tests.moe_checkpoints import write_olmoe
    from workloads.shapes import load_model

    d = write_olmoe(tmp_path / "tiny-moe" / "checkpoint")
    assert load_model(d).name == "tiny-moe-checkpoint"
    plain = write_olmoe(tmp_path / "my-moe")
    assert load_model(plain).name == "my-moe"
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "_name_or_path": "allenai/OLMoE-1B-7B-0924"}))
    assert load_model(d).name == "OLMoE-1B-7B-0924"
