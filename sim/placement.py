"""Placement policies: which weight-static matrices run on analog tiles and which on the SIMD core.

All policies share one signature ``policy(ctx) -> Placement`` and live in :data:`POLICIES`.
Routed experts are placed per (layer, expert); the dense modules (attention, router, shared
experts, dense FFNs, lm_head) are placed per module kind. The budget policies (``maxnn``,
``maxnn-lowest``, ``random``, ``frequency``) put ``round(fraction * experts)`` routed experts of
each MoE layer on digital (or that fraction of all routed experts with ``scope: global``) and keep
every dense module digital.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import floor
from pathlib import Path
from typing import Any, Callable

import numpy as np

from arch.errors import HetmoeError
from arch.safeio import loads_json, read_json, read_text
from arch.yamlsource import load_plain
from workloads.checkpoints.stats import SCOPES, VARIANTS, ExpertStats
from workloads.shapes import ATTENTION, DENSE, LM_HEAD, ROUTER, SHARED, Matrix, ModelShape
from workloads.traces.format import RoutingTrace

DENSE_MODULES = frozenset({ATTENTION, ROUTER, SHARED, DENSE, LM_HEAD})


class PlacementError(HetmoeError):
    pass


@dataclass(frozen=True)
class PlacementContext:
    model: ModelShape
    trace: RoutingTrace
    stats: ExpertStats
    fraction: float = 0.125
    score: str = "gate_rows"
    scope: str = "layer"
    seed: int = 0
    explicit_file: str | None = None


@dataclass(frozen=True, eq=False)
class Placement:
    policy: str
    params: dict[str, Any]
    digital_experts: np.ndarray          # bool [layers, experts]
    digital_modules: frozenset[str]      # dense module kinds on digital
    notes: tuple[str, ...] = field(default=())

    def is_digital(self, m: Matrix) -> bool:
        if m.expert >= 0:
            return bool(self.digital_experts[m.layer, m.expert])
        return m.module in self.digital_modules

    def summary(self, model: ModelShape) -> dict[str, Any]:
        layers = {int(layer): np.flatnonzero(self.digital_experts[layer]).tolist() for layer in model.moe_layers}
        n_moe = max(len(model.moe_layers), 1)
        return {"policy": self.policy, **self.params, "digital_modules": sorted(self.digital_modules),
                "digital_experts_per_layer": layers,
                "digital_expert_share": float(self.digital_experts[list(model.moe_layers)].sum()
                                              / (n_moe * model.num_experts)),
                "notes": list(self.notes)}


def _count(fraction: float, n: int) -> int:
    return int(floor(fraction * n + 0.5))


def _check_fraction(ctx: PlacementContext) -> None:
    if not 0.0 <= ctx.fraction <= 1.0:
        raise PlacementError(f"--fraction {ctx.fraction} outside [0, 1]")
    if ctx.scope not in SCOPES:
        raise PlacementError(f"scope {ctx.scope!r}; allowed: {', '.join(SCOPES)}")


def _top_by(ctx: PlacementContext, key: np.ndarray, name: str, params: dict[str, Any]) -> Placement:
    """Digital = the ``fraction`` of routed experts with the largest ``key`` (per layer or global)."""
    _check_fraction(ctx)
    model = ctx.model
    moe = list(model.moe_layers)
    digital = np.zeros((model.num_layers, model.num_experts), bool)
    key = np.where(np.isnan(key), -np.inf, key)
    if ctx.scope == "layer":
        n = _count(ctx.fraction, model.num_experts)
        for layer in moe:
            order = np.argsort(-key[layer], kind="stable")
            digital[layer, order[:n]] = True
    else:
        n = _count(ctx.fraction, model.num_experts * len(moe))
        flat = key[moe].ravel()
        order = np.argsort(-flat, kind="stable")[:n]
        sub = np.zeros(flat.size, bool)
        sub[order] = True
        digital[moe] = sub.reshape(len(moe), model.num_experts)
    return Placement(name, {"fraction": ctx.fraction, "scope": ctx.scope, **params}, digital, DENSE_MODULES)


def all_digital(ctx: PlacementContext) -> Placement:
    m = ctx.model
    return Placement("all-digital", {}, np.ones((m.num_layers, m.num_experts), bool), DENSE_MODULES)


def all_analog(ctx: PlacementContext) -> Placement:
    m = ctx.model
    return Placement("all-analog", {}, np.zeros((m.num_layers, m.num_experts), bool), frozenset(),
                     ("attention score/context products, softmax, norms and activations stay digital",))


def maxnn(ctx: PlacementContext) -> Placement:
    """Top ``fraction`` of routed experts by MaxNNScore on digital, with every dense module."""
    return _top_by(ctx, ctx.stats.score(_variant(ctx)), "maxnn", _score_params(ctx))


def maxnn_lowest(ctx: PlacementContext) -> Placement:
    """Control: the ``fraction`` with the *lowest* MaxNNScore on digital."""
    return _top_by(ctx, -ctx.stats.score(_variant(ctx)), "maxnn-lowest", _score_params(ctx))


def random_policy(ctx: PlacementContext) -> Placement:
    """A seeded random choice of the same number of experts."""
    rng = np.random.default_rng(ctx.seed)
    key = rng.random((ctx.model.num_layers, ctx.model.num_experts))
    return _top_by(ctx, key, "random", {"seed": ctx.seed})


def frequency(ctx: PlacementContext) -> Placement:
    """The most-routed experts of the trace on digital (ties: lower expert id first)."""
    counts = np.stack([np.bincount(ctx.trace.experts[:, layer].ravel().clip(0), minlength=ctx.model.num_experts)
                       if ctx.trace.observed[layer] else np.zeros(ctx.model.num_experts, np.int64)
                       for layer in range(ctx.model.num_layers)]).astype(float)
    return _top_by(ctx, counts, "frequency", {})


def explicit(ctx: PlacementContext) -> Placement:
    """A YAML/JSON file: ``{digital_modules: [attention, ...], digital_experts: {LAYER: [ids]}}``."""
    if not ctx.explicit_file:
        raise PlacementError("policy 'explicit' needs --placement-file FILE")
    path = Path(ctx.explicit_file)
    text = read_text(path, "placement")
    data = loads_json(text, path) if path.suffix == ".json" else load_plain(text, str(path))
    if not isinstance(data, dict) or set(data) - {"digital_modules", "digital_experts"}:
        raise PlacementError(f"{path}: expected keys digital_modules and digital_experts")
    modules = frozenset(data.get("digital_modules") or [])
    if modules - DENSE_MODULES:
        raise PlacementError(f"{path}: digital_modules: unknown {sorted(modules - DENSE_MODULES)}; "
                             f"allowed: {', '.join(sorted(DENSE_MODULES))}")
    m = ctx.model
    digital = np.zeros((m.num_layers, m.num_experts), bool)
    for layer, ids in (data.get("digital_experts") or {}).items():
        layer = int(layer)
        if layer not in m.moe_layers:
            raise PlacementError(f"{path}: digital_experts: {layer} is not a MoE layer of {m.name}")
        for e in ids:
            if not 0 <= int(e) < m.num_experts:
                raise PlacementError(f"{path}: digital_experts[{layer}]: expert {e} outside 0..{m.num_experts - 1}")
            digital[layer, int(e)] = True
    return Placement("explicit", {"file": str(path)}, digital, modules)


SENSITIVITY_KIND = "hetmoe-expert-sensitivity"


def read_sensitivity(path: str | Path, layers: int, experts: int) -> np.ndarray:
    """The ``sensitivity`` array ``[layers, experts]`` of a file written by ``hetmoe sensitivity``."""
    path = Path(path)
    data = read_json(path, "sensitivity scores")
    if not isinstance(data, dict) or data.get("kind") != SENSITIVITY_KIND:
        raise PlacementError(f"{path}: not a sensitivity scores file (write one with hetmoe sensitivity)")
    try:
        a = np.array([[np.nan if v is None else v for v in row] for row in data["sensitivity"]], float)
    except (KeyError, TypeError, ValueError) as exc:
        raise PlacementError(f"{path}: malformed sensitivity array ({exc})") from None
    if a.shape != (layers, experts):
        raise PlacementError(f"{path}: scores for {a.shape[0] if a.ndim else 0} layers x "
                             f"{a.shape[1] if a.ndim > 1 else 0} experts; the model has {layers} x {experts}")
    return a


def sensitivity(ctx: PlacementContext) -> Placement:
    """The ``fraction`` of routed experts whose measured damage when alone on analog is largest (a
    ``hetmoe sensitivity`` scores file given as the placement file): the measured upper reference."""
    if not ctx.explicit_file:
        raise PlacementError("policy 'sensitivity' needs --placement-file SCORES.json (from hetmoe sensitivity)")
    key = read_sensitivity(ctx.explicit_file, ctx.model.num_layers, ctx.model.num_experts)
    return _top_by(ctx, key, "sensitivity", {"scores_file": str(ctx.explicit_file)})


def _variant(ctx: PlacementContext) -> str:
    if ctx.score not in VARIANTS:
        raise PlacementError(f"unknown score variant {ctx.score!r}; allowed: {', '.join(VARIANTS)}")
    return ctx.score


def _score_params(ctx: PlacementContext) -> dict[str, Any]:
    return {"score": ctx.score, "scores_synthetic": ctx.stats.synthetic, "scores_source": ctx.stats.source}


POLICIES: dict[str, Callable[[PlacementContext], Placement]] = {
    "all-digital": all_digital, "all-analog": all_analog, "maxnn": maxnn, "maxnn-lowest": maxnn_lowest,
    "random": random_policy, "frequency": frequency, "explicit": explicit, "sensitivity": sensitivity,
}


def place(name: str, ctx: PlacementContext) -> Placement:
    try:
        policy = POLICIES[name]
    except KeyError:
        raise PlacementError(f"unknown policy {name!r}; valid policies: {', '.join(POLICIES)}") from None
    return policy(ctx)
