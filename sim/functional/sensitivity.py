"""Expert sensitivity: how much damage each routed expert does when it alone is analog.

Two measures, both mean over noise seeds with the common random numbers of the forward pass:
- ``kl`` (default): the mean KL(clean || noisy) of the next-token distributions (nats/token) when only
  expert (layer, e) runs through the noise model and everything else is exact: the direct measure,
  one forward pass per expert per seed (layers before the expert's are shared with the clean run);
- ``loss``: the same passes, scored by the cross-entropy increase (nats/token); on a trained model
  close to ``kl``, on an untrained one mere noise (it can be negative);
- ``output``: the error of the expert's own output on the tokens the clean model routed to it (at
  most ``max_tokens`` per expert), relative to its input: ``||y_noisy - y_clean|| / ||x||`` (the
  input is the normalised residual stream, on one scale for every expert of a layer, so the ranking
  within a layer follows the absolute damage; dividing by ``||y_clean||`` would reward an expert for
  having large outputs). One clean pass, then each expert alone: far cheaper, but blind to how the
  error propagates.

Each layer's measured sensitivities are rank-correlated (Spearman) with every MaxNNScore variant,
the router row norm and the routing frequency on the evaluation data; the scores file this writes
is what the ``sensitivity`` placement policy reads (the measured upper reference for a score rule).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from arch.errors import HetmoeError
from arch.noise import slot_physics
from arch.spec import ChipSpec
from workloads.checkpoints.stats import VARIANTS, ExpertStats
from workloads.evaldata import EvalData

from ..placement import DENSE_MODULES, SENSITIVITY_KIND, Placement
from .architecture import Architecture
from .backend import backend
from .forward import ForwardRun, Variant
from .operators import analog_apply, program_matrix

METHODS = ("kl", "loss", "output")
KIND = SENSITIVITY_KIND
UNITS = {"kl": "nats/token (KL clean || noisy)", "loss": "nats/token (cross-entropy increase)",
         "output": "output error / input norm"}


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant."""
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    for v in np.unique(x):                      # average the ranks of ties
        tie = x == v
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return ranks


def only_expert_analog(shape, layer: int, expert: int) -> Placement:
    digital = np.ones((shape.num_layers, shape.num_experts), bool)
    digital[layer, expert] = False
    return Placement("only-expert-analog", {"layer": layer, "expert": expert}, digital, DENSE_MODULES)


def measure(arch: Architecture, checkpoint: str | Path, data: EvalData, chip: ChipSpec, stats: ExpertStats, *,
            method: str = "kl", noise_seeds: int = 2, seed: int = 0, device: str = "numpy",
            max_tokens: int = 2048, progress: bool = False) -> dict[str, Any]:
    if method not in METHODS:
        raise HetmoeError(f"--method {method!r}; allowed: {', '.join(METHODS)}")
    shape = arch.shape
    L, E = shape.num_layers, shape.num_experts
    pairs = [(layer, e) for layer in shape.moe_layers for e in range(E)]
    be = backend(device)
    phys = slot_physics(chip)
    sens = np.full((L, E), np.nan)
    per_seed = np.full((noise_seeds, L, E), np.nan)
    if method in ("kl", "loss"):
        run = ForwardRun(arch, Path(checkpoint), phys, [only_expert_analog(shape, *p) for p in pairs],
                         list(range(noise_seeds)), be, seed=seed, progress=progress)
        tallies = run.run(data.ids)
        clean = tallies[Variant(None, None)]
        for i, (layer, e) in enumerate(pairs):
            for k in range(noise_seeds):
                t = tallies[Variant(i, k)]
                per_seed[k, layer, e] = (t.kl_nats if method == "kl" else t.ce_nats - clean.ce_nats) / t.tokens
        routes = run.routes[Variant(None, None)]
    else:
        run = ForwardRun(arch, Path(checkpoint), phys, [], [], be, seed=seed, progress=progress,
                         capture_expert_inputs=max_tokens)
        run.run(data.ids)
        routes = run.routes[Variant(None, None)]
        index = {m.name: i for i, m in enumerate(shape.matrices)}
        for layer, e in pairs:
            x = run.expert_inputs.get((layer, e))
            if x is None or x.shape[0] == 0:
                continue
            names = [f"L{layer}.E{e}.{n}" for n in ("gate_proj", "up_proj", "down_proj")]
            weights = {n: run.load(arch.tensor(shape.matrices[index[n]])) for n in names}
            xb = be.asarray(x)
            clean = _ffn(xb, {n: (lambda w: lambda v: v @ w.T)(be.asarray(weights[n])) for n in names}, names, be)
            xn = float(be.xp.sqrt(be.xp.sum(xb * xb)))
            for k in range(noise_seeds):
                ops = {}
                for n in names:
                    am = program_matrix(weights[n], phys, np.random.default_rng([seed, k, index[n], 0]), be)
                    normal = be.normal(np.random.default_rng([seed, k, index[n], 1]))
                    ops[n] = (lambda am_, nm: lambda v: analog_apply(v, am_, phys, nm, be))(am, normal)
                d = _ffn(xb, ops, names, be) - clean
                per_seed[k, layer, e] = float(be.xp.sqrt(be.xp.sum(d * d))) / max(xn, 1e-30)
    sens = per_seed.mean(axis=0)
    freq = np.full((L, E), np.nan)
    for layer, (ids, _) in routes.items():
        freq[layer] = np.bincount(ids.ravel(), minlength=E) / ids.size
    keys = {f"maxnn_{v}": stats.score(v) for v in VARIANTS}
    keys["router_row_norm"] = stats.router_row_norm
    keys["routing_frequency"] = freq
    corr = {name: {str(layer): spearman(sens[layer], key[layer]) for layer in shape.moe_layers}
            for name, key in keys.items()}
    return {"kind": KIND, "method": method, "checkpoint": str(checkpoint), "model": shape.name, "layers": L,
            "experts": E, "moe_layers": list(shape.moe_layers), "hw": chip.name, "noise_seeds": noise_seeds,
            "seed": seed, "eval": {"source": data.source, "predicted_tokens": data.predicted_tokens},
            "unit": UNITS[method],
            "sensitivity": _nan_to_none(sens), "sensitivity_std": _nan_to_none(per_seed.std(axis=0, ddof=1)
                                                                               if noise_seeds > 1 else sens * 0),
            "scores": {name: _nan_to_none(v) for name, v in keys.items()},
            "spearman": corr,
            "spearman_mean": {name: float(np.nanmean(list(c.values()))) if any(np.isfinite(list(c.values())))
                              else float("nan") for name, c in corr.items()}}


def _ffn(x: Any, ops: dict, names: list[str], be) -> Any:
    g = ops[names[0]](x)
    return ops[names[2]](g * (1.0 / (1.0 + be.xp.exp(-g))) * ops[names[1]](x))


def _nan_to_none(a: np.ndarray) -> list:
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in np.asarray(a)]
