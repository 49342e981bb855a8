"""Every Hugging Face ``config.json`` field hetmoe reads, checked in one place (as the hardware YAML is).

:data:`FIELDS` is the schema: for each key its type, its allowed range and what it means. A boolean
must be a JSON ``true``/``false`` (the string ``"false"`` is refused, not read as true); an integer
must be a JSON integer (``2048.0``, ``"2048"`` and ``1e400`` are refused); a number must be finite.
``null`` means absent (the default applies), as in Hugging Face's own config classes. Keys hetmoe
does not read are ignored.

:func:`validate_config` checks types and ranges, then the rules that tie fields together (heads
that divide the hidden size, top-k within the experts, layer rules that leave a MoE layer, the
number of weight matrices hetmoe would enumerate). :func:`check_tensors` checks a config against
the tensors of a checkpoint (decoder layers, routed experts, vocabulary, hidden size, tied
embeddings), so that a config that lies about a checkpoint is refused instead of evaluating part of
the model. Every error is one :class:`ConfigError` line naming the file, the field and what is
allowed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from arch.errors import HetmoeError

from .checkpoints.tensors import CheckpointError

MAX_LAYERS = 10_000               # the largest published decoder stacks have ~130 layers
MAX_EXPERTS = 32_767              # expert ids are 16-bit integers in traces (-1 = not observed)
MAX_WIDTH = 2**24                 # hidden, FFN and head widths
MAX_VOCAB = 2**24                 # 64 x the largest published vocabulary (262,144)
MAX_MATRICES = 4_000_000          # weight-static matrices enumerated (DeepSeek-V3 has ~45,000)


class ConfigError(HetmoeError):
    """A model config field has the wrong type, is out of range, or disagrees with the checkpoint."""


class TensorMismatch(ConfigError, CheckpointError):
    """A config that disagrees with the tensors of its checkpoint (a config error and a checkpoint error)."""


@dataclass(frozen=True)
class Field:
    kind: str                 # int | number | bool | str | object | int_list | str_list | token_ids
    lo: float | None = None   # inclusive lower bound (numbers: exclusive when lo_open)
    hi: float | None = None
    lo_open: bool = False
    meaning: str = ""

    def allowed(self) -> str:
        if self.kind in ("int", "number"):
            what = "an integer" if self.kind == "int" else "a finite number"
            lo = "" if self.lo is None else f"{'>' if self.lo_open else '>='} {_num(self.lo)}"
            hi = "" if self.hi is None else f"<= {_num(self.hi)}"
            return f"{what} {' and '.join(b for b in (lo, hi) if b)}".strip()
        return {"bool": "true or false (a JSON boolean, not a string)", "str": "a string",
                "object": "a JSON object", "int_list": "a list of integers",
                "str_list": "a list of strings",
                "token_ids": "a token id (an integer >= 0) or a list of them"}[self.kind]


def _num(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _int(lo: int, hi: int, meaning: str) -> Field:
    return Field("int", lo, hi, meaning=meaning)


# every key hetmoe reads (workloads.shapes, sim.functional.architecture, sim.functional.lmeval); synonyms
# of one quantity (Mixtral, GPT-2, DeepSeek, Qwen, gpt-oss spellings) are listed each under its own name
FIELDS: dict[str, Field] = {
    "model_type": Field("str", meaning="model family"),
    "_name_or_path": Field("str", meaning="hub id, names the model"),
    "_source": Field("str", meaning="preset: where its values come from"),
    "hidden_size": _int(1, MAX_WIDTH, "residual width"),
    "d_model": _int(1, MAX_WIDTH, "residual width"),
    "num_hidden_layers": _int(1, MAX_LAYERS, "decoder layers"),
    "n_layer": _int(1, MAX_LAYERS, "decoder layers"),
    "num_layers": _int(1, MAX_LAYERS, "decoder layers"),
    "num_attention_heads": _int(1, 2**16, "query heads"),
    "n_head": _int(1, 2**16, "query heads"),
    "num_key_value_heads": _int(1, 2**16, "key/value heads"),
    "head_dim": _int(1, 2**16, "width of one head"),
    "num_experts": _int(0, MAX_EXPERTS, "routed experts per MoE layer"),
    "n_routed_experts": _int(0, MAX_EXPERTS, "routed experts per MoE layer"),
    "num_local_experts": _int(0, MAX_EXPERTS, "routed experts per MoE layer"),
    "num_experts_per_tok": _int(1, MAX_EXPERTS, "experts each token is routed to"),
    "experts_per_token": _int(1, MAX_EXPERTS, "experts each token is routed to"),
    "moe_topk": _int(1, MAX_EXPERTS, "experts each token is routed to"),
    "top_k": _int(1, MAX_EXPERTS, "experts each token is routed to"),
    "intermediate_size": _int(1, MAX_WIDTH, "dense FFN width (and expert width without moe_intermediate_size)"),
    "moe_intermediate_size": _int(1, MAX_WIDTH, "routed expert width"),
    "shared_expert_intermediate_size": _int(0, MAX_WIDTH, "shared expert width"),
    "n_shared_experts": _int(0, MAX_EXPERTS, "shared experts"),
    "first_k_dense_replace": _int(0, MAX_LAYERS, "leading dense layers"),
    "moe_layer_freq": _int(1, MAX_LAYERS, "every n-th layer is a MoE layer"),
    "decoder_sparse_step": _int(1, MAX_LAYERS, "every n-th layer is a MoE layer"),
    "mlp_only_layers": Field("int_list", meaning="layers with a dense FFN"),
    "n_group": _int(0, MAX_EXPERTS, "expert groups (group-limited routing)"),
    "topk_group": _int(0, MAX_EXPERTS, "groups each token may use"),
    "kv_lora_rank": _int(0, MAX_WIDTH, "MLA latent width"),
    "q_lora_rank": _int(0, MAX_WIDTH, "MLA query latent width"),
    "qk_rope_head_dim": _int(0, 2**16, "MLA rotary key width per head"),
    "qk_nope_head_dim": _int(0, 2**16, "MLA non-rotary key width per head"),
    "v_head_dim": _int(0, 2**16, "MLA value width per head"),
    "vocab_size": _int(1, MAX_VOCAB, "vocabulary"),
    "norm_topk_prob": Field("bool", meaning="renormalise the top-k gate weights"),
    "tie_word_embeddings": Field("bool", meaning="lm_head shares the input embedding"),
    "use_sliding_window": Field("bool", meaning="sliding-window attention"),
    "attention_bias": Field("bool", meaning="biases on the attention projections"),
    "sliding_window": _int(0, 2**31 - 1, "sliding-window length"),
    "max_window_layers": _int(0, MAX_LAYERS, "leading layers on full attention"),
    "layer_types": Field("str_list", meaning="attention kind of each layer"),
    "num_nextn_predict_layers": _int(0, MAX_LAYERS, "multi-token-prediction modules"),
    "rms_norm_eps": Field("number", 0.0, 1.0, lo_open=True, meaning="RMSNorm epsilon"),
    "rope_theta": Field("number", 0.0, 1e30, lo_open=True, meaning="RoPE base"),
    "rope_scaling": Field("object", meaning="RoPE scaling (only the default is supported)"),
    "rope_parameters": Field("object", meaning="RoPE parameters (newer transformers)"),
    "routed_scaling_factor": Field("number", 0.0, 1e3, lo_open=True, meaning="scale of the routed experts' sum"),
    "clip_qkv": Field("number", 0.0, 1e30, lo_open=True, meaning="clip of q, k and v (OLMoE)"),
    "hidden_act": Field("str", meaning="FFN activation"),
    "scoring_func": Field("str", meaning="router scoring"),
    "topk_method": Field("str", meaning="router top-k method"),
    "max_position_embeddings": _int(1, 2**31 - 1, "context window"),
    "n_positions": _int(1, 2**31 - 1, "context window"),
    "n_ctx": _int(1, 2**31 - 1, "context window"),
    "bos_token_id": Field("token_ids", meaning="beginning-of-sequence token"),
    "eos_token_id": Field("token_ids", meaning="end-of-sequence token"),
    "text_config": Field("object", meaning="nested text-model config"),
}

# fields of the nested rope_scaling / rope_parameters objects
ROPE_FIELDS: dict[str, Field] = {
    "rope_type": Field("str", meaning="RoPE kind"),
    "type": Field("str", meaning="RoPE kind (older spelling)"),
    "rope_theta": Field("number", 0.0, 1e30, lo_open=True, meaning="RoPE base"),
    "factor": Field("number", 0.0, 1e30, lo_open=True, meaning="RoPE scaling factor"),
}


def _show(value: Any) -> str:
    text = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_field(key: str, value: Any, spec: Field, where: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` (not None) has the type and range ``spec`` allows."""
    def fail(problem: str) -> None:
        raise ConfigError(f"{where}: {key}: {_show(value)} {problem}; allowed: {spec.allowed()}")

    kind = spec.kind
    if kind == "bool":
        if not isinstance(value, bool):
            fail("is not a JSON boolean")
        return
    if kind == "str":
        if not isinstance(value, str):
            fail("is not a string")
        return
    if kind == "object":
        if not isinstance(value, Mapping):
            fail("is not a JSON object")
        return
    if kind in ("int_list", "str_list"):
        item = int if kind == "int_list" else str
        if not isinstance(value, list) or not all(isinstance(v, item) and not isinstance(v, bool) for v in value):
            fail("is not " + spec.allowed())
        return
    if kind == "token_ids":
        ids = value if isinstance(value, list) else [value]
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63 for v in ids):
            fail("is not " + spec.allowed())
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail("is not " + ("an integer" if kind == "int" else "a number"))
    if kind == "int" and not isinstance(value, int):
        fail("is not an integer")
    if kind == "number":
        try:
            finite = math.isfinite(float(value))
        except OverflowError:
            finite = False
        if not finite:
            fail("is not a finite number")
    lo_bad = spec.lo is not None and (value <= spec.lo if spec.lo_open else value < spec.lo)
    if lo_bad or (spec.hi is not None and value > spec.hi):
        fail("is out of range")


def _get(cfg: Mapping[str, Any], *keys: str, default: Any = None) -> tuple[str, Any]:
    """The first of ``keys`` that is set (not null) and its value; else the first key and ``default``."""
    for key in keys:
        if cfg.get(key) is not None:
            return key, cfg[key]
    return keys[0], default


def validate_config(cfg: Mapping[str, Any], path: str = "config.json") -> None:
    """Check every field hetmoe reads (type and range, :data:`FIELDS`) and the rules between them; raise
    :class:`ConfigError` naming ``path`` and the field."""
    where = path or "config.json"
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{where}: expected a JSON object of config fields, got {type(cfg).__name__}")
    for key, spec in FIELDS.items():
        value = cfg.get(key)
        if value is not None:
            check_field(key, value, spec, where)
    for outer in ("rope_scaling", "rope_parameters"):
        nested = cfg.get(outer)
        for key, spec in ROPE_FIELDS.items():
            if isinstance(nested, Mapping) and nested.get(key) is not None:
                check_field(f"{outer}.{key}", nested[key], spec, where)

    def fail(key: str, problem: str) -> None:
        raise ConfigError(f"{where}: {key}: {problem}")

    hkey, hidden = _get(cfg, "hidden_size", "d_model")
    lkey, layers = _get(cfg, "num_hidden_layers", "n_layer", "num_layers")
    akey, heads = _get(cfg, "num_attention_heads", "n_head")
    if heads is not None and hidden is not None and cfg.get("head_dim") is None and not cfg.get("kv_lora_rank") \
            and heads > hidden:
        fail(akey, f"{heads:,} heads do not fit {hkey} {hidden:,} (each head would be {hidden // heads} wide); "
                   f"allowed: <= {hkey}, or give head_dim")
    kv = cfg.get("num_key_value_heads")
    if kv is not None and heads is not None and not cfg.get("kv_lora_rank") and (kv > heads or heads % kv):
        fail("num_key_value_heads", f"{kv:,} does not divide {akey} {heads:,}; allowed: a divisor of {akey}")
    ekey, experts = _get(cfg, "num_experts", "n_routed_experts", "num_local_experts", default=0)
    kkey, top_k = _get(cfg, "num_experts_per_tok", "experts_per_token", "moe_topk", "top_k")
    if experts and top_k is not None and top_k > experts:
        fail(kkey, f"{top_k:,} is more than the {experts:,} experts ({ekey}); allowed: 1 to {ekey}")
    n_group = cfg.get("n_group") or 1
    if experts and n_group > 1:
        topk_group = cfg.get("topk_group") or n_group
        if experts % n_group:
            fail("n_group", f"{n_group:,} does not divide {ekey} {experts:,}")
        if topk_group > n_group:
            fail("topk_group", f"{topk_group:,} is more than n_group {n_group:,}")
        if top_k is not None and top_k > topk_group * experts // n_group:
            fail(kkey, f"top-{top_k} cannot be chosen from {topk_group} of {n_group} groups of "
                       f"{experts // n_group} experts")
    if cfg.get("kv_lora_rank"):
        for key in ("qk_rope_head_dim", "v_head_dim"):
            if not cfg.get(key):
                fail(key, f"missing or 0, but kv_lora_rank {cfg['kv_lora_rank']} switches on multi-head latent "
                          "attention, which needs it >= 1")
    if layers is None:
        return
    mlp_only = cfg.get("mlp_only_layers") or []
    outside = [i for i in mlp_only if not 0 <= i < layers]
    if outside:
        fail("mlp_only_layers", f"layer {outside[0]} is not a layer of the model (0 to {layers - 1}, {lkey})")
    first = cfg.get("first_k_dense_replace") or 0
    freq, step = cfg.get("moe_layer_freq") or 1, cfg.get("decoder_sparse_step") or 1
    dense = set(mlp_only)
    moe = sum(1 for i in range(layers) if i >= first and i % freq == 0 and (i + 1) % step == 0 and i not in dense)
    if experts and not moe:
        fail(lkey, f"no layer of {layers:,} is a MoE layer under first_k_dense_replace {first}, moe_layer_freq "
                   f"{freq}, decoder_sparse_step {step} and mlp_only_layers")
    matrices = layers * 5 + moe * 3 * (experts or 0)
    if matrices > MAX_MATRICES:
        fail(ekey if experts else lkey,
             f"{layers:,} layers x {experts or 0:,} experts are about {matrices:,} weight matrices, more than the "
             f"{MAX_MATRICES:,} hetmoe enumerates (DeepSeek-V3 has about 45,000)")


# ----------------------------------------------------------------------------- config vs checkpoint

_LAYER = re.compile(r"^model\.layers\.(\d+)\.")
_EXPERT = re.compile(r"^model\.layers\.(\d+)\.(?:mlp|block_sparse_moe)\.experts\.(\d+)\.")
EMBED = "model.embed_tokens.weight"
LM_HEAD = "lm_head.weight"


def check_tensors(shape: Any, refs: Mapping[str, Any], where: str) -> None:
    """Check a model shape (:class:`workloads.shapes.ModelShape`) against a checkpoint's tensors (name ->
    anything with ``.shape``): decoder layers, routed experts, vocabulary and hidden size of the embedding,
    an ``lm_head.weight`` where ``tie_word_embeddings`` is false, the expert width and the attention heads
    (the first layer's projections). ``where`` names the checkpoint."""
    source = shape.source or "config.json"
    layers: dict[int, str] = {}
    experts: dict[int, str] = {}
    for name in refs:
        m = _LAYER.match(name)
        if m:
            layers.setdefault(int(m.group(1)), name)
        m = _EXPERT.match(name)
        if m:
            e = int(m.group(2))
            if e not in experts:
                experts[e] = name
    allowed_layers = shape.num_layers + int(getattr(shape, "mtp_layers", 0) or 0)
    if layers:
        held = max(layers) + 1
        if held > allowed_layers:
            raise TensorMismatch(f"{source}: num_hidden_layers: {shape.num_layers:,}, but the checkpoint {where} holds "
                              f"{held:,} decoder layers (tensor {layers[max(layers)]}); hetmoe would evaluate only "
                              "part of the model")
        missing = next((i for i in range(shape.num_layers) if i not in layers), None)
        if missing is not None:
            raise TensorMismatch(f"{source}: num_hidden_layers: {shape.num_layers:,}, but the checkpoint {where} holds "
                              f"no tensor of decoder layer {missing} (model.layers.{missing}.*)")
    if experts:
        held = max(experts) + 1
        if held != shape.num_experts:
            shown = experts[max(experts)] if held > shape.num_experts else f"none of expert {shape.num_experts - 1}"
            raise TensorMismatch(f"{source}: num_experts: {shape.num_experts:,}, but the checkpoint {where} holds "
                              f"{held:,} routed experts per layer (tensor {shown})")
    embed = refs.get(EMBED)
    if embed is not None and len(embed.shape) == 2:
        rows, cols = embed.shape
        if rows != shape.vocab_size:
            raise TensorMismatch(f"{source}: vocab_size: {shape.vocab_size:,}, but the checkpoint {where} has tensor "
                              f"{EMBED} of shape {tuple(embed.shape)} ({rows:,} token rows)")
        if cols != shape.hidden_size:
            raise TensorMismatch(f"{source}: hidden_size: {shape.hidden_size:,}, but the checkpoint {where} has tensor "
                              f"{EMBED} of shape {tuple(embed.shape)} ({cols:,} wide)")
        if not shape.tie_word_embeddings and LM_HEAD not in refs:
            raise TensorMismatch(f"{source}: tie_word_embeddings: false, but the checkpoint {where} has no tensor "
                              f"{LM_HEAD} (a tied checkpoint says true)")
    for key, tensor, rows, what in _width_checks(shape, refs):
        held = tuple(refs[tensor].shape)
        if len(held) == 2 and held[0] != rows:
            raise TensorMismatch(f"{source}: {key}, but in the checkpoint {where} tensor {tensor} has shape {held}, "
                                 f"expected {(rows, held[1])} ({rows:,} {what})")


def _width_checks(shape: Any, refs: Mapping[str, Any]) -> list[tuple[str, str, int, str]]:
    """(fields and values, tensor, rows the config implies, what they are) for the first MoE layer's expert and
    the first layer's attention projections that the checkpoint holds."""
    out = []
    if shape.moe_layers:
        layer = shape.moe_layers[0]
        for name in (f"model.layers.{layer}.mlp.experts.0.gate_proj.weight",
                     f"model.layers.{layer}.block_sparse_moe.experts.0.w1.weight"):
            if name in refs:
                out.append((f"moe_intermediate_size (or intermediate_size): {shape.expert_width:,}", name,
                            shape.expert_width, "expert neurons"))
    if not getattr(shape, "kv_lora_rank", 0):
        q, kv = shape.num_heads * shape.head_dim, shape.num_kv_heads * shape.head_dim
        heads = f"num_attention_heads {shape.num_heads:,} x head_dim {shape.head_dim:,}"
        for proj, rows, key in (("q_proj", q, heads),
                                ("k_proj", kv, f"num_key_value_heads {shape.num_kv_heads:,} x head_dim "
                                               f"{shape.head_dim:,}")):
            name = f"model.layers.0.self_attn.{proj}.weight"
            if name in refs:
                out.append((key, name, rows, "outputs"))
    return out
