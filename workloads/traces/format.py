"""Routing traces as compact numpy arrays (DESIGN §3) and the project's own file formats.

``experts[t, l, j]`` is the j-th routed expert of token ``t`` at decoder layer ``l`` (``-1`` where
the layer was not observed or is not a MoE layer); ``weights`` the matching gate weights.
Layers are indexed by their decoder-layer number, so dense layers simply stay unobserved.

Own formats:
- ``.npz`` (``numpy.savez_compressed``, no pickles): arrays ``experts``, ``weights``, ``request``,
  ``position``, ``phase``, ``observed`` and a JSON string ``meta``.
- JSONL for hand-written cases: a header line ``{"format": "hetmoe-trace", "num_layers": L,
  "top_k": k, "num_experts": E}`` then one line per token ``{"request": 0, "position": 5,
  "phase": "decode", "experts": [[...k ids] or null per layer], "weights": [[...] or null]}``
  (``weights`` optional: uniform 1/k).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from arch.errors import HetmoeError

# rules for filling MoE layers a log did not observe (workloads.traces.synthetic.fill_layers)
FILL_RULES = ("replicate", "synthetic")

PHASES = {"prefill": 0, "decode": 1, "unknown": -1}


class TraceError(HetmoeError):
    """A routing trace is malformed; the message names file, line and field."""


@dataclass(frozen=True, eq=False)
class RoutingTrace:
    experts: np.ndarray    # int16 [T, L, k], -1 = not observed
    weights: np.ndarray    # float32 [T, L, k]
    request: np.ndarray    # int32 [T]
    position: np.ndarray   # int32 [T], -1 = unknown
    phase: np.ndarray      # int8 [T]: 0 prefill, 1 decode, -1 unknown
    observed: np.ndarray   # bool [L]: the layer carries routes for every token
    num_experts: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return int(self.experts.shape[0])

    @property
    def num_layers(self) -> int:
        return int(self.experts.shape[1])

    @property
    def top_k(self) -> int:
        return int(self.experts.shape[2])

    def head(self, tokens: int) -> "RoutingTrace":
        """The first ``tokens`` tokens."""
        return replace(self, experts=self.experts[:tokens], weights=self.weights[:tokens],
                       request=self.request[:tokens], position=self.position[:tokens],
                       phase=self.phase[:tokens], meta={**self.meta, "truncated_to_tokens": tokens})

    def tile(self, repeats: int) -> "RoutingTrace":
        """The trace repeated ``repeats`` times, requests renumbered (for scaling benchmarks)."""
        n_req = int(self.request.max()) + 1 if self.tokens else 0
        req = np.concatenate([self.request + i * n_req for i in range(repeats)])
        return replace(self, experts=np.tile(self.experts, (repeats, 1, 1)),
                       weights=np.tile(self.weights, (repeats, 1, 1)), request=req.astype(np.int32),
                       position=np.tile(self.position, repeats), phase=np.tile(self.phase, repeats))

    def popularity(self, layer: int) -> np.ndarray:
        """Share of selections of each expert at ``layer`` (sums to 1 when observed)."""
        ids = self.experts[:, layer, :].ravel()
        ids = ids[ids >= 0]
        counts = np.bincount(ids, minlength=self.num_experts).astype(np.float64)
        return counts / counts.sum() if counts.sum() else counts

    def summary(self) -> dict[str, Any]:
        """Per observed layer: largest and smallest expert share and normalised entropy."""
        layers = {}
        for layer in np.flatnonzero(self.observed):
            p = self.popularity(int(layer))
            nz = p[p > 0]
            entropy = float(-(nz * np.log(nz)).sum() / np.log(self.num_experts)) if self.num_experts > 1 else 0.0
            layers[int(layer)] = {"max_share": float(p.max()), "min_share": float(p.min()),
                                  "normalised_entropy": entropy}
        return layers


def empty_arrays(tokens: int, layers: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((tokens, layers, k), -1, np.int16), np.zeros((tokens, layers, k), np.float32)


# ----------------------------------------------------------------------------- npz

def save_npz(trace: RoutingTrace, path: str | Path) -> None:
    np.savez_compressed(path, experts=trace.experts, weights=trace.weights, request=trace.request,
                        position=trace.position, phase=trace.phase, observed=trace.observed,
                        num_experts=np.int32(trace.num_experts), meta=np.array(json.dumps(trace.meta)))


def load_npz(path: str | Path) -> RoutingTrace:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = {"experts", "weights", "request", "position", "phase", "observed", "num_experts"} - set(z.files)
            if missing:
                raise TraceError(f"{path}: not a hetmoe trace archive (missing arrays: {', '.join(sorted(missing))})")
            return RoutingTrace(z["experts"].astype(np.int16), z["weights"].astype(np.float32),
                                z["request"].astype(np.int32), z["position"].astype(np.int32),
                                z["phase"].astype(np.int8), z["observed"].astype(bool), int(z["num_experts"]),
                                json.loads(str(z["meta"])) if "meta" in z.files else {})
    except (OSError, ValueError) as exc:
        raise TraceError(f"{path}: cannot read as .npz: {exc}") from None


# ----------------------------------------------------------------------------- own JSONL

def save_jsonl(trace: RoutingTrace, path: str | Path) -> None:
    names = {v: k for k, v in PHASES.items()}
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps({"format": "hetmoe-trace", "num_layers": trace.num_layers, "top_k": trace.top_k,
                             "num_experts": trace.num_experts, "meta": trace.meta}) + "\n")
        for t in range(trace.tokens):
            ex = [row.tolist() if trace.observed[i] else None for i, row in enumerate(trace.experts[t])]
            wt = [[round(float(w), 6) for w in row] if trace.observed[i] else None
                  for i, row in enumerate(trace.weights[t])]
            fh.write(json.dumps({"request": int(trace.request[t]), "position": int(trace.position[t]),
                                 "phase": names[int(trace.phase[t])], "experts": ex, "weights": wt}) + "\n")
