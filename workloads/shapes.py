"""Model shapes from Hugging Face ``config.json`` files or shipped presets (DESIGN §3).

A :class:`ModelShape` lists every weight-static matrix (``W[out, in]``, ``y = W x``) by layer and
module, so that placement, mapping and the engine all work from one enumeration. Presets in
``workloads/presets/*.yaml`` are the raw HF config keys of each model (with their source in a
comment) and go through the same :func:`from_hf_config` as a user's ``config.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

import yaml

from arch.errors import HetmoeError
from arch.safeio import read_json

from .hfconfig import validate_config

PRESET_DIR = Path(__file__).resolve().parent / "presets"
QWEN2_MOE_SHARED_DEFAULT = 5632   # transformers Qwen2MoeConfig(shared_expert_intermediate_size=5632)

# Module kinds: the unit of placement. Routed experts are placed per (layer, expert).
ATTENTION, ROUTER, EXPERT, SHARED, DENSE, LM_HEAD = "attention", "router", "expert", "shared", "dense", "lm_head"
MODULES = (ATTENTION, ROUTER, EXPERT, SHARED, DENSE, LM_HEAD)
EMBEDDING = "embedding"          # not a weight-static matrix: a lookup, never placed on tiles


class ModelError(HetmoeError):
    """A model config or preset is unusable."""


@dataclass(frozen=True)
class Matrix:
    """One weight-static matrix ``W[out_features, in_features]``."""

    name: str
    module: str          # one of MODULES
    layer: int           # decoder layer, -1 for lm_head
    expert: int          # routed expert id, -1 otherwise
    out_features: int
    in_features: int

    @property
    def params(self) -> int:
        return self.out_features * self.in_features


@dataclass(frozen=True)
class ModelShape:
    """Shape of a decoder-only MoE transformer. All sizes in elements."""

    name: str
    source: str
    hidden_size: int
    num_layers: int
    vocab_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    num_experts: int
    top_k: int
    expert_width: int
    moe_layers: tuple[int, ...]
    dense_ffn_width: int = 0
    shared_expert_width: int = 0
    shared_expert_gate: bool = False
    norm_topk_prob: bool = False
    tie_word_embeddings: bool = False
    # group-limited routing (DeepSeek-V2/V3): experts in n_group groups, a token picks topk_group of them
    n_group: int = 1
    topk_group: int = 1
    # routing keys of the config that no part of hetmoe models (reported, never silently dropped)
    unmodelled_routing: tuple[str, ...] = ()
    # DeepSeek-V2 multi-head latent attention (kv_lora_rank > 0 switches it on)
    kv_lora_rank: int = 0
    q_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    qk_nope_head_dim: int = 0
    v_head_dim: int = 0
    # sliding-window attention (gpt-oss: 128 keys on every other layer; Mistral-style configs: every layer):
    # the layers in sliding_window_layers attend over at most sliding_window positions. Carried for the
    # cost model; the engine does not use it yet (it costs attention over the whole context on every layer)
    sliding_window: int = 0
    sliding_window_layers: tuple[int, ...] = ()
    # vectors that are not weight-static matrices (counted in total_params, never placed on tiles):
    attention_sinks: bool = False   # gpt-oss: one learned sink logit per head per layer in the softmax
    attention_bias: bool = False    # config attention_bias: biases on the attention projections
    router_bias: bool = False       # gpt-oss: the router Linear has a bias
    expert_bias: bool = False       # gpt-oss: every routed expert's gate/up and down matrices have biases
    qk_norm_params: int = 0         # per-layer q/k RMSNorm weights (Qwen3: 2 x head_dim; OLMoE: q and k widths)
    # multi-token-prediction modules (DeepSeek-V3 num_nextn_predict_layers): stated, never simulated
    mtp_layers: int = 0

    # ----------------------------------------------------------------------- matrices
    @property
    def mla(self) -> bool:
        return self.kv_lora_rank > 0

    def attention_shapes(self) -> list[tuple[str, int, int]]:
        """``(name, out, in)`` of one layer's attention projections."""
        h = self.hidden_size
        if self.mla:
            qk = self.qk_nope_head_dim + self.qk_rope_head_dim
            q = ([("q_a_proj", self.q_lora_rank, h), ("q_b_proj", self.num_heads * qk, self.q_lora_rank)]
                 if self.q_lora_rank else [("q_proj", self.num_heads * qk, h)])
            return q + [("kv_a_proj", self.kv_lora_rank + self.qk_rope_head_dim, h),
                        ("kv_b_proj", self.num_heads * (self.qk_nope_head_dim + self.v_head_dim), self.kv_lora_rank),
                        ("o_proj", h, self.num_heads * self.v_head_dim)]
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        return [("q_proj", q, h), ("k_proj", kv, h), ("v_proj", kv, h), ("o_proj", h, q)]

    @staticmethod
    def ffn_shapes(width: int, hidden: int) -> list[tuple[str, int, int]]:
        """SwiGLU FFN: gate and up ``[width, hidden]``, down ``[hidden, width]``."""
        return [("gate_proj", width, hidden), ("up_proj", width, hidden), ("down_proj", hidden, width)]

    @cached_property
    def matrices(self) -> tuple[Matrix, ...]:
        """Every weight-static matrix, layer by layer, then lm_head."""
        h, out = self.hidden_size, []
        moe = set(self.moe_layers)
        for layer in range(self.num_layers):
            for name, o, i in self.attention_shapes():
                out.append(Matrix(f"L{layer}.attn.{name}", ATTENTION, layer, -1, o, i))
            if layer not in moe:
                for name, o, i in self.ffn_shapes(self.dense_ffn_width, h):
                    out.append(Matrix(f"L{layer}.mlp.{name}", DENSE, layer, -1, o, i))
                continue
            out.append(Matrix(f"L{layer}.router", ROUTER, layer, -1, self.num_experts, h))
            if self.shared_expert_width:
                for name, o, i in self.ffn_shapes(self.shared_expert_width, h):
                    out.append(Matrix(f"L{layer}.shared.{name}", SHARED, layer, -1, o, i))
                if self.shared_expert_gate:
                    out.append(Matrix(f"L{layer}.shared.gate", SHARED, layer, -1, 1, h))
            for e in range(self.num_experts):
                for name, o, i in self.ffn_shapes(self.expert_width, h):
                    out.append(Matrix(f"L{layer}.E{e}.{name}", EXPERT, layer, e, o, i))
        out.append(Matrix("lm_head", LM_HEAD, -1, -1, self.vocab_size, h))
        return tuple(out)

    # ----------------------------------------------------------------------- derived sizes
    @property
    def embedding_params(self) -> int:
        """Input-embedding table ``[vocab, hidden]``: a lookup (memory and capacity, no MACs); 0 extra
        when ``tie_word_embeddings`` shares it with lm_head, which is then counted once."""
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    def params_by_module(self) -> dict[str, int]:
        """Parameters per module kind: every weight-static matrix (lm_head included) plus the input
        embedding under ``embedding``."""
        out = dict.fromkeys(MODULES, 0)
        for m in self.matrices:
            out[m.module] += m.params
        out[EMBEDDING] = self.embedding_params
        return out

    def macs_per_token_by_module(self) -> dict[str, int]:
        """Weight MACs of one token through the whole model (routed experts: top_k of them; the
        embedding is a lookup: 0)."""
        out = self.params_by_module()
        out[EXPERT] = out[EXPERT] * self.top_k // self.num_experts if self.num_experts else 0
        out[EMBEDDING] = 0
        return out

    def vector_params_by_kind(self, active: bool = False) -> dict[str, int]:
        """Parameters that are vectors, not weight-static matrices (never placed on tiles; a bias add or a
        scale in the digital periphery): ``norm`` (two RMSNorms of hidden_size per decoder layer, the final
        norm, MLA's latent norms, q/k norms), ``bias`` (attention, router and routed-expert biases where the
        model has them) and ``sink`` (gpt-oss's per-head attention sinks). ``active``: the share one token
        uses (routed-expert biases of top_k experts of num_experts)."""
        h, L, n_moe = self.hidden_size, self.num_layers, len(self.moe_layers)
        norm = (2 * h + self.qk_norm_params) * L + h
        if self.mla:
            norm += (self.q_lora_rank + self.kv_lora_rank) * L
        bias = 0
        if self.attention_bias:
            # MLA (DeepSeek's modelling code): only q_a_proj, kv_a_proj and o_proj take attention_bias
            skip = {"q_b_proj", "kv_b_proj", "q_proj"} if self.mla else set()
            bias += L * sum(o for name, o, _ in self.attention_shapes() if name not in skip)
        if self.router_bias:
            bias += n_moe * self.num_experts
        if self.expert_bias:
            experts = self.top_k if active else self.num_experts
            bias += n_moe * experts * sum(o for _, o, _ in self.ffn_shapes(self.expert_width, h))
        sink = L * self.num_heads if self.attention_sinks else 0
        return {"norm": norm, "bias": bias, "sink": sink}

    def total_params(self) -> int:
        """Every parameter of the simulated model: the weight-static matrices, the input embedding (once if
        tied) and the vectors of :meth:`vector_params_by_kind`; MTP modules excluded (:meth:`mtp_params`)."""
        return sum(self.params_by_module().values()) + sum(self.vector_params_by_kind().values())

    def active_params(self, include_embedding: bool = True) -> int:
        """Parameters one token uses: every matrix it multiplies (top_k routed experts), the vectors it
        uses and, unless told otherwise, the embedding row it reads (counted as the whole table, as
        published figures do)."""
        emb = self.vocab_size * self.hidden_size if include_embedding else 0
        return (sum(self.macs_per_token_by_module().values()) + sum(self.vector_params_by_kind(active=True).values())
                + (emb if not self.tie_word_embeddings else 0))

    def mtp_params(self) -> int:
        """Parameters of the multi-token-prediction modules the config states (``num_nextn_predict_layers``)
        and hetmoe does not simulate, in DeepSeek-V3's layout: per module ``eh_proj [hidden, 2 * hidden]``,
        three norms (enorm, hnorm, the shared head's norm) and one decoder layer shaped like a MoE layer
        (attention, router, shared and routed experts, their norms); embedding and output head are shared
        with the main model and not counted again."""
        if not self.mtp_layers:
            return 0
        h = self.hidden_size
        layer = sum(o * i for _, o, i in self.attention_shapes()) + self.num_experts * h
        layer += self.num_experts * sum(o * i for _, o, i in self.ffn_shapes(self.expert_width, h))
        if self.shared_expert_width:
            layer += sum(o * i for _, o, i in self.ffn_shapes(self.shared_expert_width, h))
        layer += 2 * h + self.qk_norm_params + ((self.q_lora_rank + self.kv_lora_rank) if self.mla else 0)
        return self.mtp_layers * (2 * h * h + 3 * h + layer)

    def weight_bytes_by_module(self, weight_bits: int) -> dict[str, float]:
        return {k: v * weight_bits / 8 for k, v in self.params_by_module().items()}

    def kv_elements_per_token(self) -> int:
        """KV-cache elements written per token per layer (MLA: the compressed latent + rope key)."""
        if self.mla:
            return self.kv_lora_rank + self.qk_rope_head_dim
        return 2 * self.num_kv_heads * self.head_dim

    def attention_macs_per_context(self) -> int:
        """Score and context MACs per token per attended position (QK^T and AV over all heads).

        MLA (DeepSeek-V2/V3) reads the compressed latent cache, so it runs in the absorbed form:
        per head, scores against the latent (kv_lora_rank) plus the rope key, and the context over the
        latent: ``heads * (2 * kv_lora_rank + qk_rope_head_dim)`` (DeepSeek-V2 paper, appendix on
        weight absorption); the up-projections are absorbed into the query and output projections."""
        if self.mla:
            return self.num_heads * (2 * self.kv_lora_rank + self.qk_rope_head_dim)
        return 2 * self.num_heads * self.head_dim

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "layers": self.num_layers, "moe_layers": len(self.moe_layers),
                "hidden_size": self.hidden_size, "experts": self.num_experts, "top_k": self.top_k,
                "expert_width": self.expert_width, "params_by_module": self.params_by_module(),
                "unmodelled_routing": list(self.unmodelled_routing)} | self._stated_not_simulated()

    def _stated_not_simulated(self) -> dict[str, Any]:
        """What the config states that the simulation leaves out (only the keys a model has)."""
        out: dict[str, Any] = {}
        if self.sliding_window_layers:
            out["sliding_window"] = {"window": self.sliding_window, "layers": len(self.sliding_window_layers),
                                     "note": "attention is costed over the whole context on every layer"}
        if self.mtp_layers:
            out["mtp_layers_excluded"] = {"modules": self.mtp_layers, "params": self.mtp_params()}
        return out


# ----------------------------------------------------------------------------- config reading

def _first(cfg: Mapping[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if cfg.get(key) is not None:
            return cfg[key]
    return default


def from_hf_config(cfg: Mapping[str, Any], name: str = "", source: str = "") -> ModelShape:
    """Map a raw HF ``config.json`` (OLMoE, DeepSeekMoE, DeepSeek-V2/V3 and Kimi-K2, Qwen1.5/Qwen3-MoE,
    Mixtral, gpt-oss, Granite-MoE synonyms) onto a :class:`ModelShape`. Every field is checked first
    (type, range, the rules between fields) by :func:`workloads.hfconfig.validate_config`."""
    validate_config(cfg, source or name)

    def need(*keys: str) -> Any:
        value = _first(cfg, *keys)
        if value is None:
            raise ModelError(f"{source or name}: config has none of the keys {', '.join(keys)}")
        return value

    hidden = int(need("hidden_size", "d_model"))
    layers = int(need("num_hidden_layers", "n_layer", "num_layers"))
    heads = int(need("num_attention_heads", "n_head"))
    kv_heads = int(_first(cfg, "num_key_value_heads", default=heads))
    head_dim = int(_first(cfg, "head_dim", default=hidden // heads))
    experts = int(_first(cfg, "num_experts", "n_routed_experts", "num_local_experts", default=0))
    if experts <= 0:
        raise ModelError(f"{source or name}: not a Mixture-of-Experts config (no num_experts / "
                         "n_routed_experts / num_local_experts)")
    top_k = int(need("num_experts_per_tok", "experts_per_token", "moe_topk", "top_k"))  # gpt-oss: experts_per_token
    dense_width = int(_first(cfg, "intermediate_size", default=0))
    expert_width = int(_first(cfg, "moe_intermediate_size", "intermediate_size", default=0))
    if expert_width <= 0:
        raise ModelError(f"{source or name}: no moe_intermediate_size or intermediate_size")
    shared_width = int(_first(cfg, "shared_expert_intermediate_size", default=0))
    if str(cfg.get("model_type", "")) == "qwen2_moe" and cfg.get("shared_expert_intermediate_size") is None:
        shared_width = QWEN2_MOE_SHARED_DEFAULT   # transformers' Qwen2MoeConfig default, used when the key is absent
    shared_gate = shared_width > 0  # Qwen's shared expert has a sigmoid gate [1, hidden]
    if not shared_width and cfg.get("n_shared_experts"):
        shared_width = int(cfg["n_shared_experts"]) * expert_width

    first_dense = int(_first(cfg, "first_k_dense_replace", default=0))
    freq = int(_first(cfg, "moe_layer_freq", default=1))
    step = int(_first(cfg, "decoder_sparse_step", default=1))
    mlp_only = set(_first(cfg, "mlp_only_layers", default=[]) or [])
    moe_layers = tuple(i for i in range(layers)
                       if i >= first_dense and i % freq == 0 and (i + 1) % step == 0 and i not in mlp_only)
    if len(moe_layers) < layers and dense_width <= 0:
        raise ModelError(f"{source or name}: dense layers need intermediate_size")
    model_type = str(cfg.get("model_type", ""))
    gpt_oss = model_type == "gpt_oss"
    # Mixtral and gpt-oss soften only the top_k chosen logits: the same weights as norm_topk_prob
    mixtral_like = model_type.startswith("mixtral") or gpt_oss
    n_group = int(_first(cfg, "n_group", default=1) or 1)
    topk_group = int(_first(cfg, "topk_group", default=n_group) or n_group)
    unmodelled = []
    if str(cfg.get("scoring_func", "softmax")) != "softmax":
        unmodelled.append(f"scoring_func: {cfg['scoring_func']} (synthetic weights use softmax)")
    if cfg.get("topk_method") not in (None, "greedy", "group_limited_greedy"):
        unmodelled.append(f"topk_method: {cfg['topk_method']} (groups are chosen by their best expert)")
    if float(cfg.get("routed_scaling_factor") or 1.0) != 1.0:
        unmodelled.append(f"routed_scaling_factor: {cfg['routed_scaling_factor']} (trace weights are unscaled; "
                          "the forward pass applies it)")
    return ModelShape(
        name=name or str(cfg.get("_name_or_path") or cfg.get("model_type") or "model"), source=source,
        hidden_size=hidden, num_layers=layers, vocab_size=int(need("vocab_size")),
        num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim,
        num_experts=experts, top_k=top_k, expert_width=expert_width, moe_layers=moe_layers,
        dense_ffn_width=dense_width if len(moe_layers) < layers else 0,
        shared_expert_width=shared_width, shared_expert_gate=shared_gate,
        norm_topk_prob=bool(cfg.get("norm_topk_prob", mixtral_like)),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        n_group=n_group, topk_group=topk_group, unmodelled_routing=tuple(unmodelled),
        kv_lora_rank=int(_first(cfg, "kv_lora_rank", default=0)),
        q_lora_rank=int(_first(cfg, "q_lora_rank", default=0)),
        qk_rope_head_dim=int(_first(cfg, "qk_rope_head_dim", default=0)),
        qk_nope_head_dim=int(_first(cfg, "qk_nope_head_dim", default=0)),
        v_head_dim=int(_first(cfg, "v_head_dim", default=0)),
        **_attention_extras(cfg, model_type, layers, heads, kv_heads, head_dim, source or name),
    )


def _attention_extras(cfg: Mapping[str, Any], model_type: str, layers: int, heads: int, kv_heads: int,
                      head_dim: int, where: str) -> dict[str, Any]:
    """Sliding windows, sinks, biases, q/k norms and MTP modules of a config (the ModelShape fields; their
    types and ranges are checked by validate_config)."""
    def count(key: str) -> int:
        return int(cfg.get(key) or 0)

    window = count("sliding_window")
    types = cfg.get("layer_types")
    if types is not None:   # per-layer attention kinds (gpt-oss, newer transformers configs)
        if not isinstance(types, list) or len(types) != layers:
            raise ModelError(f"{where}: layer_types must list one attention kind per layer ({layers})")
        unknown = sorted({str(t) for t in types} - {"sliding_attention", "full_attention"})
        if unknown:
            raise ModelError(f"{where}: layer_types {', '.join(unknown)} not modelled "
                             "(only full_attention and sliding_attention)")
        sliding = tuple(i for i, t in enumerate(types) if t == "sliding_attention")
    elif window > 0 and cfg.get("use_sliding_window", True) is not False:
        # Qwen2-style: use_sliding_window with the first max_window_layers on full attention; else
        # (Mistral/Mixtral) every layer
        first = count("max_window_layers") if cfg.get("use_sliding_window") else 0
        sliding = tuple(range(min(first, layers), layers))
    else:
        sliding = ()
    if sliding and window <= 0:
        raise ModelError(f"{where}: layer_types has sliding_attention layers but sliding_window is not set")
    qk_norm = {"qwen3_moe": 2 * head_dim, "olmoe": (heads + kv_heads) * head_dim}.get(model_type, 0)
    return {"sliding_window": window if sliding else 0, "sliding_window_layers": sliding,
            "attention_sinks": model_type == "gpt_oss", "attention_bias": bool(cfg.get("attention_bias") or False),
            "router_bias": model_type == "gpt_oss", "expert_bias": model_type == "gpt_oss",
            "qk_norm_params": qk_norm,
            "mtp_layers": count("num_nextn_predict_layers")}


def list_model_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


GENERIC_FOLDERS = {"checkpoint", "checkpoints", "model", "models", "weights", "hf", "snapshot", "main", "."}


def config_model_name(cfg: dict, config_path: Path) -> str:
    """A model's name from its config file: the last part of ``_name_or_path`` (written by Hugging Face's
    save_pretrained), else the folder's name unless it is a generic one ("checkpoint", "model", ...), then
    the folder above it joined to it ("tiny-moe/checkpoint" -> "tiny-moe-checkpoint")."""
    hub = cfg.get("_name_or_path")
    if isinstance(hub, str) and hub.strip("/ "):
        return Path(hub.rstrip("/")).name
    folder = config_path.parent.resolve()
    if folder.name.lower() in GENERIC_FOLDERS and folder.parent.name:
        return f"{folder.parent.name}-{folder.name}"
    return folder.name or config_path.stem


def load_model(name_or_path: str | Path) -> ModelShape:
    """A preset name (``olmoe-1b-7b``, ...), a ``config.json`` path, or a directory holding one."""
    text = str(name_or_path)
    preset = PRESET_DIR / f"{text}.yaml"
    if preset.is_file():
        cfg = yaml.safe_load(preset.read_text())
        return from_hf_config(cfg, name=text, source=cfg.get("_source", str(preset)))
    path = Path(text)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ModelError(f"{text}: no such model preset or config.json "
                         f"(presets: {', '.join(list_model_presets())})")
    cfg = read_json(path, "Hugging Face config.json")
    if not isinstance(cfg, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return from_hf_config(cfg, name=config_model_name(cfg, path), source=str(path))
