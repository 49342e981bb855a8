"""Per-expert statistics from a local safetensors checkpoint (DESIGN §3).

Tensors are read one at a time straight from the file (header parsed here, data through
``numpy.memmap``), so memory stays near twice the largest tensor; fp32, fp16 and bf16 are
supported (numpy has no bf16, so bf16 is widened to fp32 bit-exactly). The safetensors package's
numpy loader is not used because it cannot return bf16.

MaxNNScore variants of a routed expert (``W[out, in]``, ``y = W x``; a neuron is a row of gate/up):
- ``gate_rows`` (default): max over neurons of ||gate_proj[i, :]||_2 (Mixtral ``w1``);
- ``up_rows``: the same on ``up_proj`` (``w3``);
- ``gate_up_rows``: max over i of ||[gate_proj[i, :], up_proj[i, :]]||_2;
- ``down_cols``: max over i of ||down_proj[:, i]||_2 (``w2``);
- ``product``: gate_rows * up_rows * down_cols.
Also the Frobenius norm of the whole expert and the router row norm ||router[e, :]||_2.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from arch.errors import HetmoeError
from arch.safeio import atomic_open, read_npz

from ..hfconfig import check_tensors
from ..shapes import ModelShape
from .tensors import CheckpointError, TensorRef, index_checkpoint, load_tensor

VARIANTS = ("gate_rows", "up_rows", "gate_up_rows", "down_cols", "product")
SCOPES = ("layer", "global")


@dataclass(frozen=True, eq=False)
class ExpertStats:
    """Scores per (layer, expert); NaN for layers without routed experts."""

    variants: dict[str, np.ndarray]     # name -> float64 [layers, experts]
    frobenius: np.ndarray
    router_row_norm: np.ndarray
    synthetic: bool
    source: str
    meta: dict[str, Any] = field(default_factory=dict)

    def score(self, variant: str = "gate_rows") -> np.ndarray:
        if variant not in self.variants:
            raise HetmoeError(f"unknown score variant {variant!r}; allowed: {', '.join(VARIANTS)}")
        return self.variants[variant]

    def ranking(self, variant: str = "gate_rows", scope: str = "layer") -> np.ndarray:
        """Rank of each expert (0 = highest score) per layer, or across all layers with ``global``."""
        s = self.score(variant)
        if scope not in SCOPES:
            raise HetmoeError(f"unknown ranking scope {scope!r}; allowed: {', '.join(SCOPES)}")
        filled = np.where(np.isnan(s), -np.inf, s)
        if scope == "layer":
            order = np.argsort(-filled, axis=1, kind="stable")
            ranks = np.empty_like(order)
            np.put_along_axis(ranks, order, np.arange(s.shape[1])[None, :].repeat(s.shape[0], 0), axis=1)
            return ranks
        flat = np.argsort(-filled.ravel(), kind="stable")
        ranks = np.empty(flat.size, np.int64)
        ranks[flat] = np.arange(flat.size)
        return ranks.reshape(s.shape)


def _names(refs: dict[str, TensorRef], layer: int, expert: int) -> tuple[str, str, str]:
    base = f"model.layers.{layer}"
    if f"{base}.block_sparse_moe.experts.{expert}.w1.weight" in refs:
        e = f"{base}.block_sparse_moe.experts.{expert}"
        return f"{e}.w1.weight", f"{e}.w3.weight", f"{e}.w2.weight"
    e = f"{base}.mlp.experts.{expert}"
    return f"{e}.gate_proj.weight", f"{e}.up_proj.weight", f"{e}.down_proj.weight"


def _router_name(refs: dict[str, TensorRef], layer: int) -> str:
    mixtral = f"model.layers.{layer}.block_sparse_moe.gate.weight"
    return mixtral if mixtral in refs else f"model.layers.{layer}.mlp.gate.weight"


def _identity(refs: dict[str, TensorRef], directory: Path, model: ModelShape) -> str:
    """Cache key from content: every shard's path, size and modification time, the index file's and
    config.json's bytes, and the full model shape the scores are computed for (not its name)."""
    files = sorted({r.file for r in refs.values()})
    parts: list = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    folder = directory if directory.is_dir() else directory.parent
    for name in ("config.json", "model.safetensors.index.json"):
        f = folder / name
        parts.append(hashlib.sha256(f.read_bytes()).hexdigest() if f.is_file() else None)
    parts.append(repr(model))
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


FUSED_LAYOUTS = ("experts.gate_up_proj", "input_linear", "experts.down_proj")


def compute_stats(directory: str | Path, model: ModelShape, *, cache: bool = True,
                  progress: bool = False) -> ExpertStats:
    """Every score variant for every routed expert, reading one tensor at a time."""
    directory = Path(directory)
    refs = index_checkpoint(directory)
    check_tensors(model, refs, str(directory))      # the config describes these tensors (layers, experts, vocab)
    cache_file = None
    if cache:
        from arch.userdirs import cache_dir

        root = cache_dir()                  # None: no writable cache folder (said once); scores are computed
        cache_file = None if root is None else root / f"stats-{_identity(refs, directory, model)}.npz"
        if cache_file is not None and cache_file.is_file():
            try:
                z = read_npz(cache_file, "score cache")
                shapes_ok = all(z[v].shape == (model.num_layers, model.num_experts)
                                for v in (*VARIANTS, "frobenius", "router_row_norm"))
            except (HetmoeError, KeyError):
                shapes_ok = False           # a damaged cache is recomputed, never trusted
            if shapes_ok:
                return ExpertStats({v: np.array(z[v]) for v in VARIANTS}, np.array(z["frobenius"]),
                                   np.array(z["router_row_norm"]), False, str(directory),
                                   {"cache": str(cache_file), "cached": True})
    fused = sorted(n for n in refs if any(f in n for f in FUSED_LAYOUTS))
    if fused:
        raise CheckpointError(f"{directory}: fused expert tensors ({fused[0]}, ...) are not supported; supported "
                              "layouts: one tensor per expert matrix, mlp.experts.E.{gate,up,down}_proj.weight "
                              "(OLMoE, Qwen, DeepSeek) or block_sparse_moe.experts.E.{w1,w3,w2}.weight (Mixtral)")
    L, E, H, W = model.num_layers, model.num_experts, model.hidden_size, model.expert_width
    out = {v: np.full((L, E), np.nan) for v in VARIANTS}
    frob, router = np.full((L, E), np.nan), np.full((L, E), np.nan)
    items = [(layer, e) for layer in model.moe_layers for e in range(E)]
    from arch.progress import progress as reporter

    bar = reporter(len(items), "checkpoint scores", "experts", quiet=not progress)
    for layer, e in _counted(items, bar):
        g_name, u_name, d_name = _names(refs, layer, e)
        mats = []
        for name, shape in ((g_name, (W, H)), (u_name, (W, H)), (d_name, (H, W))):
            if name not in refs:
                raise CheckpointError(f"{directory}: missing tensor {name} (layer {layer}, expert {e})")
            if refs[name].shape != shape:
                raise CheckpointError(f"{directory}: tensor {name} has shape {refs[name].shape}, "
                                      f"expected {shape} for {model.name}")
            mats.append(load_tensor(refs[name]))
        g2 = np.einsum("ij,ij->i", mats[0], mats[0], dtype=np.float64)
        u2 = np.einsum("ij,ij->i", mats[1], mats[1], dtype=np.float64)
        d2 = np.einsum("ij,ij->j", mats[2], mats[2], dtype=np.float64)
        out["gate_rows"][layer, e] = np.sqrt(g2.max())
        out["up_rows"][layer, e] = np.sqrt(u2.max())
        out["gate_up_rows"][layer, e] = np.sqrt((g2 + u2).max())
        out["down_cols"][layer, e] = np.sqrt(d2.max())
        frob[layer, e] = np.sqrt(g2.sum() + u2.sum() + d2.sum())
        del mats
    out["product"] = out["gate_rows"] * out["up_rows"] * out["down_cols"]
    for layer in model.moe_layers:
        name = _router_name(refs, layer)
        if name in refs:
            r = load_tensor(refs[name])
            if r.shape != (E, H):
                raise CheckpointError(f"{directory}: tensor {name} has shape {r.shape}, expected {(E, H)}")
            router[layer] = np.sqrt(np.einsum("ij,ij->i", r, r, dtype=np.float64))
    stats = ExpertStats(out, frob, router, False, str(directory), {"cached": False})
    bar.close()
    if cache_file is not None:
        try:
            with atomic_open(cache_file, "wb") as fh:
                np.savez(fh, frobenius=frob, router_row_norm=router, **out)
        except (HetmoeError, OSError):
            pass                            # an unwritable cache folder only costs the next run the recompute
    return stats


def _counted(items: list, bar: Any):
    """``items``, advancing ``bar`` once per item."""
    for item in items:
        yield item
        bar.update(1)


def synthetic_stats(model: ModelShape, seed: int = 0) -> ExpertStats:
    """Seeded stand-in scores (log-normal, sigma 0.25), clearly labelled synthetic."""
    rng = np.random.default_rng(seed)
    L, E = model.num_layers, model.num_experts
    base = np.full((L, E), np.nan)
    moe = list(model.moe_layers)
    gate = base.copy()
    gate[moe] = rng.lognormal(0.0, 0.25, (len(moe), E))
    up, down = base.copy(), base.copy()
    up[moe] = gate[moe] * rng.lognormal(0.0, 0.05, (len(moe), E))
    down[moe] = rng.lognormal(0.0, 0.25, (len(moe), E))
    variants = {"gate_rows": gate, "up_rows": up, "gate_up_rows": np.sqrt(gate ** 2 + up ** 2),
                "down_cols": down, "product": gate * up * down}
    return ExpertStats(variants, base.copy(), base.copy(), True, f"synthetic(seed={seed})",
                       {"note": "synthetic scores: log-normal stand-ins, not from a checkpoint"})
