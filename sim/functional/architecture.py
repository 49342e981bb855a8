"""What the forward pass needs beyond the shape: model family, norms, RoPE, tensor names.

Supported families (``model_type`` of the checkpoint's ``config.json``): ``olmoe`` (q/k RMSNorm
over the whole projection, optional ``clip_qkv``), ``mixtral``, ``qwen2_moe`` (Qwen1.5-MoE: q/k/v
biases, a shared expert with a sigmoid gate), ``qwen3_moe`` (per-head q/k RMSNorm) and ``deepseek``
(DeepSeekMoE: shared experts, dense first layers). DeepSeek-V2/V3 multi-head latent attention is
not supported and says so. RoPE is the default (unscaled) rotary embedding of Hugging Face's
``rotate_half`` convention; a ``rope_scaling`` entry is refused rather than ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arch.errors import HetmoeError
from arch.safeio import read_json
from workloads.hfconfig import validate_config
from workloads.shapes import ATTENTION, DENSE, EXPERT, LM_HEAD, ROUTER, SHARED, Matrix, ModelShape, from_hf_config

FAMILIES = ("olmoe", "mixtral", "qwen2_moe", "qwen3_moe", "deepseek")


class ArchitectureError(HetmoeError):
    """A checkpoint the forward pass cannot run."""


@dataclass(frozen=True)
class Architecture:
    family: str
    shape: ModelShape
    rms_norm_eps: float
    rope_theta: float
    qk_norm: str                 # "none" | "full" (OLMoE) | "head" (Qwen3)
    clip_qkv: float | None
    routed_scaling_factor: float

    def tensor(self, m: Matrix) -> str:
        """The checkpoint tensor name of a weight-static matrix of :attr:`shape`."""
        if m.module == LM_HEAD:
            return "model.embed_tokens.weight" if self.shape.tie_word_embeddings else "lm_head.weight"
        base = f"model.layers.{m.layer}"
        name = m.name.rsplit(".", 1)[-1]
        if m.module == ATTENTION:
            return f"{base}.self_attn.{name}.weight"
        if m.module == DENSE:
            return f"{base}.mlp.{name}.weight"
        moe = f"{base}.block_sparse_moe" if self.family == "mixtral" else f"{base}.mlp"
        if m.module == ROUTER:
            return f"{moe}.gate.weight"
        if m.module == SHARED:
            if m.name.endswith("shared.gate"):
                return f"{base}.mlp.shared_expert_gate.weight"
            folder = "shared_expert" if self.family == "qwen2_moe" else "shared_experts"
            return f"{base}.mlp.{folder}.{name}.weight"
        if m.module == EXPERT:
            if self.family == "mixtral":
                name = {"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"}[name]
            return f"{moe}.experts.{m.expert}.{name}.weight"
        raise ArchitectureError(f"no tensor for matrix {m.name}")


def read_architecture(directory: str | Path) -> Architecture:
    """The architecture of a local Hugging Face checkpoint folder (its ``config.json``)."""
    directory = Path(directory)
    path = directory / "config.json" if directory.is_dir() else directory
    if not path.is_file():
        raise ArchitectureError(f"{directory}: no config.json (a checkpoint folder holds config.json and "
                                "*.safetensors)")
    cfg = read_json(path, "Hugging Face config.json")
    if not isinstance(cfg, dict):
        raise ArchitectureError(f"{path}: expected a JSON object")
    return architecture_from_config(cfg, str(path), name=path.parent.name)


def architecture_from_config(cfg: dict[str, Any], source: str, name: str = "") -> Architecture:
    validate_config(cfg, source)       # every field's type and range (workloads.hfconfig), before any is read
    family = str(cfg.get("model_type") or "")
    if family in ("deepseek_v2", "deepseek_v3") or cfg.get("kv_lora_rank"):
        raise ArchitectureError(f"{source}: DeepSeek-V2/V3 multi-head latent attention (MLA) is not supported "
                                f"by the forward pass; supported model_type: {', '.join(FAMILIES)}")
    if family not in FAMILIES:
        raise ArchitectureError(f"{source}: model_type {family!r} is not supported by the forward pass; "
                                f"supported: {', '.join(FAMILIES)}")
    act = cfg.get("hidden_act") or "silu"
    if act != "silu":
        raise ArchitectureError(f"{source}: hidden_act {act!r} is not supported; the forward pass implements silu")
    rope = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling")
    if (scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default")) or \
            (rope.get("rope_type") or "default") != "default":
        raise ArchitectureError(f"{source}: rope scaling {scaling or rope} is not supported (default RoPE only)")
    if cfg.get("use_sliding_window"):
        raise ArchitectureError(f"{source}: sliding-window attention is not supported")
    if (cfg.get("scoring_func") or "softmax") != "softmax" or (cfg.get("topk_method") or "greedy") != "greedy":
        raise ArchitectureError(f"{source}: routing {cfg.get('scoring_func')}/{cfg.get('topk_method')} is not "
                                "supported (softmax scoring with greedy top-k only)")
    theta = float(cfg.get("rope_theta") or rope.get("rope_theta") or 10000.0)
    shape = from_hf_config(cfg, name=name or family, source=source)
    qk = {"olmoe": "full", "qwen3_moe": "head"}.get(family, "none")
    eps = cfg.get("rms_norm_eps")
    clip = cfg.get("clip_qkv")
    return Architecture(family, shape, float(1e-6 if eps is None else eps), theta, qk,
                        None if clip is None else float(clip), float(cfg.get("routed_scaling_factor") or 1.0))
