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

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from arch.errors import HetmoeError
from arch.safeio import MAX_ARRAY_BYTES, atomic_open, dumps_json, loads_json, read_npz

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
    """Write ``trace`` as a compressed ``.npz`` (atomically: a reader never sees half a file)."""
    with atomic_open(path, "wb") as fh:
        np.savez_compressed(fh, experts=trace.experts, weights=trace.weights, request=trace.request,
                            position=trace.position, phase=trace.phase, observed=trace.observed,
                            num_experts=np.int32(trace.num_experts), meta=np.array(dumps_json(trace.meta)))


# array -> (allowed dtype kinds, number of dimensions)
_NPZ_ARRAYS = {"experts": ("iu", 3), "weights": ("fiu", 3), "request": ("iu", 1), "position": ("iu", 1),
               "phase": ("iu", 1), "observed": ("biu", 1), "num_experts": ("iu", 0)}


def _declared_bytes(path: str | Path) -> tuple[int, int]:
    """(bytes, members) an archive's directory declares its members expand to; (0, 0) when it cannot be read
    (:func:`arch.safeio.read_npz` then says why)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError):
        return 0, 0
    return sum(i.file_size for i in infos), len(infos)


def load_npz(path: str | Path, guard: Any = None) -> RoutingTrace:
    """Read and check a hetmoe ``.npz`` trace: dtypes, shapes that agree, ids in range, finite weights, at least
    one token. ``guard`` (``sim.resources.ReadGuard``): refuse, before any member is inflated, an archive whose
    members declare more than the memory limit (twice: read, then converted), and stop reading members at it."""
    budget = MAX_ARRAY_BYTES
    if guard is not None:
        declared, members = _declared_bytes(path)
        guard.arrays(path, 2 * declared, f"2 x {declared / 2**20:,.1f} MiB of arrays as its {members} members declare "
                                         "them: read, then converted")
        budget = min(budget, guard.array_bytes)
    z = read_npz(path, "hetmoe .npz trace", budget)
    missing = set(_NPZ_ARRAYS) - set(z)
    if missing:
        raise TraceError(f"{path}: not a hetmoe trace archive (missing arrays: {', '.join(sorted(missing))})")
    for name, (kinds, ndim) in _NPZ_ARRAYS.items():
        a = z[name]
        if a.dtype.kind not in kinds or a.ndim != ndim:
            raise TraceError(f"{path}: array {name}: {a.dtype} with {a.ndim} dimensions; expected "
                             f"{ndim} dimensions of {'integers' if 'f' not in kinds else 'numbers'}")
    experts, weights = z["experts"], z["weights"]
    tokens, layers, k = experts.shape
    if not tokens or not layers or not k:
        raise TraceError(f"{path}: array experts has shape {experts.shape}: the trace holds no "
                         f"{'tokens' if not tokens else 'layers' if not layers else 'routed experts'}; expected "
                         "[tokens >= 1, layers, top_k]")
    for name, want in (("weights", experts.shape), ("request", (tokens,)), ("position", (tokens,)),
                       ("phase", (tokens,)), ("observed", (layers,))):
        if z[name].shape != want:
            raise TraceError(f"{path}: array {name}: shape {z[name].shape}, expected {want} to match experts "
                             f"{experts.shape}")
    num_experts = int(z["num_experts"])
    if not 1 <= num_experts <= 32767:
        raise TraceError(f"{path}: num_experts {num_experts} out of range (1..32767)")
    bad = (experts < -1) | (experts >= num_experts)
    if bad.any():
        t, layer, j = np.argwhere(bad)[0]
        raise TraceError(f"{path}: experts[{t}, {layer}, {j}] = {experts[t, layer, j]} out of range "
                         f"(-1 = not observed, else 0..{num_experts - 1})")
    if not np.isfinite(weights).all():
        t, layer, j = np.argwhere(~np.isfinite(weights))[0]
        raise TraceError(f"{path}: weights[{t}, {layer}, {j}] is not a finite number")
    bad_phase = ~np.isin(z["phase"], list(PHASES.values()))
    if bad_phase.any():
        raise TraceError(f"{path}: phase[{int(np.argmax(bad_phase))}] = {z['phase'][bad_phase][0]}; allowed "
                         + ", ".join(f"{v} ({k})" for k, v in PHASES.items()))
    meta: Any = {}
    if "meta" in z:
        meta = loads_json(str(z["meta"]), path) if z["meta"].dtype.kind == "U" else None
        if not isinstance(meta, dict):
            raise TraceError(f"{path}: array meta: expected a JSON object string")
    return RoutingTrace(experts.astype(np.int16), weights.astype(np.float32), z["request"].astype(np.int32),
                        z["position"].astype(np.int32), z["phase"].astype(np.int8), z["observed"].astype(bool),
                        num_experts, meta)


# ----------------------------------------------------------------------------- own JSONL

def save_jsonl(trace: RoutingTrace, path: str | Path) -> None:
    names = {v: k for k, v in PHASES.items()}
    with atomic_open(path, "w") as fh:
        fh.write(dumps_json({"format": "hetmoe-trace", "num_layers": trace.num_layers, "top_k": trace.top_k,
                             "num_experts": trace.num_experts, "meta": trace.meta}) + "\n")
        for t in range(trace.tokens):
            ex = [row.tolist() if trace.observed[i] else None for i, row in enumerate(trace.experts[t])]
            wt = [[round(float(w), 6) for w in row] if trace.observed[i] else None
                  for i, row in enumerate(trace.weights[t])]
            fh.write(dumps_json({"request": int(trace.request[t]), "position": int(trace.position[t]),
                                 "phase": names[int(trace.phase[t])], "experts": ex, "weights": wt}) + "\n")
