"""Model shapes: parameter counts computed from the shape; presets against shared/data/README.md."""

import json

import pytest

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
    with pytest.raises(ModelError, match=r"config.json:3: not valid JSON"):
        load_model(bad)
    with pytest.raises(ModelError, match="presets: deepseek-moe-16b"):
        load_model("gpt-9")
