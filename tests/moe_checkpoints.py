"""Small random Hugging Face MoE checkpoints written with numpy and safetensors (no torch needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file


def olmoe_config(hidden: int = 32, layers: int = 2, heads: int = 4, experts: int = 8, top_k: int = 2,
                 width: int = 16, vocab: int = 64, norm_topk_prob: bool = True) -> dict:
    return {"architectures": ["OlmoeForCausalLM"], "model_type": "olmoe", "hidden_size": hidden,
            "intermediate_size": width, "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": heads, "num_experts": experts, "num_experts_per_tok": top_k,
            "vocab_size": vocab, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "norm_topk_prob": norm_topk_prob,
            "tie_word_embeddings": False, "hidden_act": "silu", "clip_qkv": None,
            "max_position_embeddings": 256}


def write_olmoe(directory: Path, cfg: dict | None = None, *, seed: int = 0, planted: float = 0.0,
                shards: int = 1, dtype: str = "float32") -> Path:
    """A random OLMoE checkpoint. ``planted > 0``: expert 0 of every layer gets one gate/up neuron
    row ``planted`` times larger than any other row, so its MaxNNScore is the layer's largest."""
    cfg = cfg or olmoe_config()
    rng = np.random.default_rng(seed)
    H, W, E, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_experts"], cfg["vocab_size"]
    s = 1 / np.sqrt(H)
    t: dict[str, np.ndarray] = {"model.embed_tokens.weight": rng.normal(0, 1, (V, H)),
                                "model.norm.weight": 1 + 0.1 * rng.normal(size=H),
                                "lm_head.weight": rng.normal(0, s, (V, H))}
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            t[p + f"self_attn.{n}.weight"] = rng.normal(0, s, (H, H))
        t[p + "self_attn.q_norm.weight"] = 1 + 0.1 * rng.normal(size=H)
        t[p + "self_attn.k_norm.weight"] = 1 + 0.1 * rng.normal(size=H)
        t[p + "input_layernorm.weight"] = 1 + 0.1 * rng.normal(size=H)
        t[p + "post_attention_layernorm.weight"] = 1 + 0.1 * rng.normal(size=H)
        t[p + "mlp.gate.weight"] = rng.normal(0, s, (E, H))
        for e in range(E):
            q = p + f"mlp.experts.{e}."
            gate, up = rng.normal(0, s, (W, H)), rng.normal(0, s, (W, H))
            if planted and e == 0:
                row = np.abs(gate).sum(axis=1).argmax()
                gate[row] *= planted
                up[row] *= planted
            t[q + "gate_proj.weight"], t[q + "up_proj.weight"] = gate, up
            t[q + "down_proj.weight"] = rng.normal(0, 1 / np.sqrt(W), (H, W))
    return write_checkpoint(directory, cfg, t, shards=shards, dtype=dtype)


def write_checkpoint(directory: Path, cfg: dict, tensors: dict[str, np.ndarray], *, shards: int = 1,
                     dtype: str = "float32") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(cfg))
    names = sorted(tensors)
    cast = {k: np.ascontiguousarray(v, dtype) for k, v in tensors.items()}
    if shards == 1:
        save_file(cast, str(directory / "model.safetensors"))
        return directory
    weight_map = {}
    for i, part in enumerate(np.array_split(np.array(names), shards)):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: cast[k] for k in part}, str(directory / fname))
        weight_map.update({k: fname for k in part})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return directory
