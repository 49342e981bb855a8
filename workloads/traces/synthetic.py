"""Seeded synthetic routing traces (DESIGN §3).

Per MoE layer a target selection share ``pi`` (each expert's share of all top-k selections) is
drawn from a Zipf law (exponent ``zipf_s``, ranks shuffled per layer), a Dirichlet
(concentration ``dirichlet_alpha``), uniform, or taken from published per-expert counts. Top-k
sets are drawn without replacement by the Gumbel-top-k trick (in its exponential-race form) from
Plackett-Luce weights that are
calibrated (fixed-point iteration on Monte-Carlo inclusion rates) so that each expert's selection
share matches ``pi``. Then, token by token within a request:
- with probability ``locality`` a token reuses the previous token's experts at that layer;
- otherwise, with probability ``layer_correlation``, it maps its own experts at the previous MoE
  layer through a fixed rank-to-rank map (the previous layer's i-th most popular expert goes to
  this layer's i-th most popular), which keeps Zipf marginals intact;
- otherwise a fresh draw.
Gate weights are the softmax of the drawn keys (the perturbed logits) over all experts, restricted
to the chosen k (``norm_topk_prob: false``), or renormalised over the chosen k (``true``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from arch.safeio import read_json

from ..shapes import ModelShape
from .format import FILL_RULES, PHASES, RoutingTrace, TraceError, empty_arrays

POPULARITY = ("zipf", "dirichlet", "uniform", "counts")


@dataclass(frozen=True)
class SyntheticSpec:
    tokens: int = 4096
    requests: int = 8
    popularity: str = "zipf"
    zipf_s: float = 1.0
    dirichlet_alpha: float = 1.0
    locality: float = 0.0
    layer_correlation: float = 0.0
    seed: int = 0
    counts_file: str | None = None
    counts_model: str | None = None
    counts_domain: str | None = None
    positions: bool = False     # record each token's position in its request (else -1: the run's
                                # --context-tokens then sets decode positions)

    def check(self) -> None:
        if self.tokens < 1 or self.requests < 1 or self.requests > self.tokens:
            raise TraceError(f"synthetic trace: need tokens >= requests >= 1 (tokens={self.tokens}, "
                             f"requests={self.requests})")
        if self.seed < 0:
            raise TraceError(f"synthetic trace: seed {self.seed}: allowed an integer >= 0")
        if self.popularity not in POPULARITY:
            raise TraceError(f"synthetic trace: popularity {self.popularity!r}; allowed: {', '.join(POPULARITY)}")
        for name in ("locality", "layer_correlation"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise TraceError(f"synthetic trace: {name} = {getattr(self, name)} outside [0, 1]")
        if self.zipf_s < 0 or self.dirichlet_alpha <= 0:
            raise TraceError("synthetic trace: zipf_s must be >= 0 and dirichlet_alpha > 0")
        if self.popularity == "counts" and not self.counts_file:
            raise TraceError("synthetic trace: popularity 'counts' needs a counts file")


def load_counts(path: str | Path, model: str | None, domain: str | None) -> dict[int, np.ndarray]:
    """Per-layer selection counts from ``expert_counts.json``-style files.

    Accepts ``{"models": {M: {"domains": {D: {"layer": [counts]}}}}}`` (``model``/``domain`` pick
    one; the first is used when omitted) or a plain ``{"layer": [counts]}``.
    """
    data = read_json(path, "expert counts JSON")
    if not isinstance(data, dict):
        raise TraceError(f"{path}: expected a JSON object of per-layer counts")
    if "models" in data:
        models = data["models"]
        model = model or next(iter(models))
        if model not in models:
            raise TraceError(f"{path}: no model {model!r}; allowed: {', '.join(models)}")
        domains = models[model]["domains"]
        domain = domain or next(iter(domains))
        if domain not in domains:
            raise TraceError(f"{path}: no domain {domain!r}; allowed: {', '.join(domains)}")
        data = domains[domain]
    return {int(k): np.asarray(v, np.float64) for k, v in data.items()}


def capped_experts(p: np.ndarray, k: int) -> int:
    """How many experts' raw shares exceed the 1/k cap (an expert is in a token's top-k at most once, so
    its share of selections cannot pass 1/k; a capped expert is then in *every* token's top-k)."""
    return int((p / p.sum() > 1.0 / k + 1e-12).sum())


def target_shares(spec: SyntheticSpec, model: ModelShape, rng: np.random.Generator,
                  capped: dict[int, int] | None = None) -> dict[int, np.ndarray]:
    """Target selection share per MoE layer (each sums to 1), capped at 1/k (``capped`` collects, per
    layer, how many experts the cap bound)."""
    E, k, out = model.num_experts, model.top_k, {}
    counts = load_counts(spec.counts_file, spec.counts_model, spec.counts_domain) if spec.popularity == "counts" else {}
    for layer in model.moe_layers:
        if spec.popularity == "zipf":
            p = 1.0 / np.arange(1, E + 1) ** spec.zipf_s
            p = p[rng.permutation(E)]
        elif spec.popularity == "dirichlet":
            p = rng.dirichlet(np.full(E, spec.dirichlet_alpha))
        elif spec.popularity == "uniform":
            p = np.ones(E)
        else:
            nearest = min(counts, key=lambda c: (abs(c - layer), c))
            p = counts[nearest].copy()
            if p.size != E:
                raise TraceError(f"{spec.counts_file}: layer {nearest} has {p.size} experts, {model.name} has {E}")
            if nearest != layer:  # seeded relabelling for layers without published counts
                p = p[rng.permutation(E)]
        p = p / p.sum()
        if capped is not None:
            capped[layer] = capped_experts(p, k)
        out[layer] = _feasible(p, k)
    return out


def _feasible(p: np.ndarray, k: int) -> np.ndarray:
    """Cap shares at 1/k (an expert is chosen at most once per token) and renormalise."""
    for _ in range(64):
        over = p > 1.0 / k
        if not over.any():
            break
        excess = (p[over] - 1.0 / k).sum()
        p = p.copy()
        p[over] = 1.0 / k
        p[~over] += excess * p[~over] / p[~over].sum()
    return p


ROW_CHUNK = 8192    # tokens per block in the [tokens, experts] steps (bounds their temporaries, same results)


def _race(rng: np.random.Generator, logw: np.ndarray, n: int) -> np.ndarray:
    """Exponential-race keys ``w_i / X_i`` for ``n`` tokens, float32 [n, E]: ``w = exp(logw - max logw)``,
    ``X_i ~ Exp(1)`` drawn as ``-log(u)``. Their logarithm ``logw_i + G_i - const`` (``G = -log X`` is standard
    Gumbel) is the Gumbel-perturbed log-weight, so their top k is a Plackett-Luce draw without replacement
    and their normalised values are the softmax of the perturbed logits (:func:`gate_weights`). One log and
    one division per key (the Gumbel form needs two logs, and an exp for the weights)."""
    w = np.exp(logw - logw.max()).astype(np.float32)
    x = rng.random((n, logw.size), dtype=np.float32)
    np.maximum(x, np.float32(1e-30), out=x)      # u = 0 would give X = inf (a key of 0 is fine, the log is not)
    np.log(x, out=x)                             # log u = -X
    np.divide(-w[None, :], x, out=x)             # w / X
    return x


def _race_topk(logw: np.ndarray, k: int, n: int, rng: np.random.Generator,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of the exponential-race keys (:func:`_race`), best first; returns (ids [n, k], all keys [n, E]).
    ``allowed`` (bool [n, E]) restricts the choice (group-limited routing)."""
    keys = _race(rng, logw, n)
    ids = np.empty((n, k), np.int64)
    for a in range(0, n, ROW_CHUNK):         # row blocks keep the [n, E] temporaries small
        pick = keys[a:a + ROW_CHUNK] if allowed is None else np.where(allowed[a:a + ROW_CHUNK], keys[a:a + ROW_CHUNK],
                                                                       np.float32(-1.0))
        # a whole-row sort (numpy's vectorised float32 argsort) beats argpartition + ordering the k
        ids[a:a + ROW_CHUNK] = np.argsort(pick, axis=1)[:, ::-1][:, :k]
    return ids, keys


def race_weights(keys: np.ndarray, ids: np.ndarray, normalise: bool) -> np.ndarray:
    """:func:`gate_weights` of ``log(keys)`` computed from the race keys themselves (no log, no exp): the
    chosen keys over the sum of all keys, or over the chosen ones when ``normalise``."""
    chosen = np.take_along_axis(keys, ids, axis=1)
    total = chosen.sum(axis=1, keepdims=True) if normalise else keys.sum(axis=1, keepdims=True)
    return chosen / total


def gate_weights(logits: np.ndarray, ids: np.ndarray, normalise: bool) -> np.ndarray:
    """Router weights of the chosen experts: the softmax over *all* experts' logits restricted to ``ids``
    (``norm_topk_prob: false``: they sum to less than 1, as OLMoE, Qwen1.5-MoE and DeepSeek emit them), or
    renormalised over the chosen k (``true``, Mixtral and Qwen3-MoE)."""
    out = np.empty(ids.shape, np.result_type(logits.dtype, np.float32))
    for a in range(0, len(ids), ROW_CHUNK):
        z = logits[a:a + ROW_CHUNK] - logits[a:a + ROW_CHUNK].max(axis=1, keepdims=True)
        chosen = np.exp(np.take_along_axis(z, ids[a:a + ROW_CHUNK], axis=1))
        out[a:a + ROW_CHUNK] = chosen / (chosen.sum(axis=1, keepdims=True) if normalise
                                         else np.exp(z).sum(axis=1, keepdims=True))
    return out


def calibrate_weights(pi: np.ndarray, k: int, rng: np.random.Generator, samples: int = 8000,
                      iterations: int = 4) -> np.ndarray:
    """Plackett-Luce log-weights whose top-k inclusion rate approximates ``k * pi``.

    Start from the exponential-race approximation (expert i is in the top k with probability
    ``1 - exp(-w_i * tau)``, so ``w_i = -ln(1 - k * pi_i)``), then refine by a few fixed-point
    steps on Monte-Carlo inclusion rates.
    """
    if k == 1:
        return np.log(np.maximum(pi, 1e-12))
    q = np.clip(k * pi, 1e-12, 1 - 1e-9)
    logw = np.log(-np.log1p(-q))
    for _ in range(iterations):
        ids, _ = _race_topk(logw, k, samples, rng)
        rate = np.bincount(ids.ravel(), minlength=pi.size) / (samples * k)
        logw += np.log(np.maximum(pi, 1e-12) / np.maximum(rate, 0.5 / (samples * k)))
        logw -= logw.max()
    return logw


def _calibrated(pi: np.ndarray, k: int, rng: np.random.Generator, cache: dict) -> np.ndarray:
    """Calibration is permutation-equivariant: calibrate the sorted shares once, then permute."""
    order = np.argsort(-pi, kind="stable")
    key = pi[order].round(12).tobytes()
    if key not in cache:
        cache[key] = calibrate_weights(pi[order], k, rng)
    out = np.empty_like(pi)
    out[order] = cache[key]
    return out


def _group_mask(model: ModelShape, logw: np.ndarray, T: int, rng: np.random.Generator) -> np.ndarray | None:
    """Group-limited routing (DeepSeek-V2/V3 ``n_group``/``topk_group``): per token, the ``topk_group``
    groups of consecutive experts whose best (Gumbel-perturbed) expert scores highest; experts outside them
    cannot be chosen. None when the model routes over all experts."""
    G, keep = model.n_group, model.topk_group
    if G <= 1 or keep >= G:
        return None
    E = model.num_experts
    scores = _race(rng, logw, T).reshape(T, G, E // G).max(axis=2)
    chosen = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
    groups = np.zeros((T, G), bool)
    np.put_along_axis(groups, chosen, True, axis=1)
    return np.repeat(groups, E // G, axis=1)


def synthesize(spec: SyntheticSpec, model: ModelShape) -> RoutingTrace:
    """Generate a trace for every MoE layer of ``model`` (deterministic for a given spec)."""
    spec.check()
    rng = np.random.default_rng(spec.seed)
    T, k = spec.tokens, model.top_k
    capped: dict[int, int] = {}
    shares = target_shares(spec, model, rng, capped)
    experts, weights = empty_arrays(T, model.num_layers, k)
    request = np.repeat(np.arange(spec.requests, dtype=np.int32), -(-T // spec.requests))[:T]
    first_of_request = np.r_[True, request[1:] != request[:-1]]
    position = ((np.arange(T) - np.flatnonzero(first_of_request)[request]).astype(np.int32) if spec.positions
                else np.full(T, -1, np.int32))
    prev_layer = None
    cache: dict = {}
    for layer in model.moe_layers:
        logw = _calibrated(shares[layer], k, rng, cache)
        ids, keys = _race_topk(logw, k, T, rng, allowed=_group_mask(model, logw, T, rng))
        gates = race_weights(keys, ids, model.norm_topk_prob)
        if prev_layer is not None and spec.layer_correlation > 0:
            rank_map = np.empty(model.num_experts, np.int64)
            rank_map[np.argsort(-shares[prev_layer], kind="stable")] = np.argsort(-shares[layer], kind="stable")
            corr = rng.random(T) < spec.layer_correlation
            ids[corr] = rank_map[experts[corr, prev_layer].astype(np.int64)]
            gates[corr] = weights[corr, prev_layer]
        if spec.locality > 0:
            reuse = (rng.random(T) < spec.locality) & ~first_of_request
            # a run of reuses copies from the last fresh token: index of the latest non-reused token
            src = np.where(reuse, 0, np.arange(T))
            src = np.maximum.accumulate(src)
            ids, gates = ids[src], gates[src]
        experts[:, layer] = ids
        weights[:, layer] = gates
        prev_layer = layer
    observed = np.zeros(model.num_layers, bool)
    observed[list(model.moe_layers)] = True
    warnings = []
    most = max(capped.values(), default=0)
    if most > 1:
        warnings.append(f"the 1/k share cap binds for up to {most} experts per layer (zipf_s {spec.zipf_s:g}, "
                        f"top-{k}): each of them is in every token's top-k, so the head of the popularity law "
                        "is flattened")
    if spec.layer_correlation > 0 and spec.popularity != "zipf":
        warnings.append("layer_correlation copies ranks between layers, which keeps Zipf marginals but distorts "
                        f"{spec.popularity} marginals")
    meta = {"format": "synthetic", "synthetic": asdict(spec), "weights_normalised": bool(model.norm_topk_prob),
            "capped_experts_per_layer": {str(layer): n for layer, n in capped.items()}, "warnings": warnings,
            "group_limited": ({"n_group": model.n_group, "topk_group": model.topk_group}
                              if model.n_group > 1 and model.topk_group < model.n_group else None),
            "unmodelled_routing": list(model.unmodelled_routing),
            "rows_read": 0, "warmup_rows_dropped": 0, "source": f"synthetic(seed={spec.seed})"}
    return RoutingTrace(experts, weights, request, position, np.full(T, PHASES["unknown"], np.int8),
                        observed, model.num_experts, meta)


def fill_layers(trace: RoutingTrace, model: ModelShape, rule: str, seed: int) -> RoutingTrace:
    """Fill unobserved MoE layers by ``replicate`` or ``synthetic`` (see the module docs).

    - ``replicate``: copy the nearest observed layer (lower on ties), experts relabelled by a
      seeded permutation per filled layer;
    - ``synthetic``: fresh Gumbel-top-k draws from the pooled popularity of the observed layers,
      relabelled per filled layer by a seeded permutation.
    Filled layers are listed in ``meta["filled_layers"]``; ``observed`` stays as read.
    """
    if rule not in FILL_RULES:
        raise TraceError(f"fill rule {rule!r}; allowed: {', '.join(FILL_RULES)}")
    seen = [layer for layer in model.moe_layers if trace.observed[layer]]
    if not seen:
        raise TraceError("cannot fill: no MoE layer was observed")
    rng = np.random.default_rng(seed)
    experts, weights = trace.experts.copy(), trace.weights.copy()
    pooled = sum(trace.popularity(layer) for layer in seen) / len(seen)
    filled = []
    for layer in model.moe_layers:
        if trace.observed[layer]:
            continue
        perm = rng.permutation(model.num_experts).astype(np.int16)
        if rule == "replicate":
            src = min(seen, key=lambda s: (abs(s - layer), s))
            experts[:, layer] = perm[experts[:, src]]
            weights[:, layer] = weights[:, src]
        else:
            logw = calibrate_weights(_feasible(pooled, model.top_k), model.top_k, rng)
            ids, keys = _race_topk(logw, model.top_k, trace.tokens, rng)
            experts[:, layer] = perm[ids]
            weights[:, layer] = race_weights(keys, ids, model.norm_topk_prob)
        filled.append(layer)
    meta = {**trace.meta, "fill_rule": rule, "fill_seed": seed, "filled_layers": filled}
    observed = trace.observed.copy()
    observed[filled] = True
    return replace(trace, experts=experts, weights=weights, observed=observed, meta=meta)
