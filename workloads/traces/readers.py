"""Streaming readers for routing logs, with format detection, validation and warm-up removal.

Formats (detected from the first line, or the ``.npz`` suffix):
- ``vllm-moe-logger``: a ``{"type": "meta"}`` line, then ``{"type": "route", "req_id", "token_idx",
  "layer", "topk_ids", "topk_weights"}`` rows. ``token_idx`` is the row inside one forward batch and
  restarts with every batch; weights are raw softmax probabilities.
- ``speculative-moe``: ``{"problem_id", "layer", "token_idx", "experts", "gating_probs"}`` rows, one
  per (problem, layer, generated token); decode tokens; weights renormalised over the top-k.
- ``vllm-routed-experts``: ``{"request_id", "routed_experts": [[[k ids] per MoE layer] per token]}``
  per request (vLLM's routed-experts replay output); no gate weights (uniform 1/k is recorded).
- ``hetmoe-jsonl`` and ``hetmoe-npz``: the project's own formats (:mod:`workloads.trace`).

Warm-up rules (both drop rows unless ``keep_warmup``; the trace's metadata says what was dropped and where:
``warmup_runs_dropped`` lists every dropped group and run with its lines and rows, which add up to
``warmup_rows_dropped``):

- by group: rows are grouped (a forward batch in ``vllm-moe-logger``, a problem or request
  otherwise); a group of two or more rows in which every row carries the same route (ids and
  weights), or in which every row has uniform recorded weights, is a start-up profiling or warm-up
  batch.
- by content: inside one group, a run of at least ``WARMUP_RUN_TOKENS`` (16) consecutive tokens that
  all carry the same route at every observed layer (the same expert ids, with identical or uniform
  weights) is a warm-up batch wherever it sits, whether or not ``token_idx`` restarts around it.
  Real decoding does not repeat a full top-k route with identical gate weights 16 times in a row
  (the shared logs' real tokens never do so twice in a row at more than one layer).

Gate weights are reported as normalised (``weights_normalised``) when every row's recorded weights
sum to 1 within ``NORMALISED_TOL``, from the data rather than the format's documentation. Tokens missing a route at some observed layer (loggers drop rows) are dropped
and counted. Unobserved MoE layers are filled only on request (``fill``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from arch.errors import HetmoeError
from arch.safeio import InputError, check_file, iter_lines, loads_json, open_binary

from ..shapes import ModelShape
from .format import FILL_RULES, PHASES, RoutingTrace, TraceError, empty_arrays, load_npz, save_npz
from .synthetic import fill_layers

WARMUP_RUN_TOKENS = 16
NORMALISED_TOL = 1e-3

FORMATS = ("vllm-moe-logger", "speculative-moe", "vllm-routed-experts", "hetmoe-jsonl", "hetmoe-npz")


def detect_format(path: Path) -> str:
    """The trace format, from the ``.npz`` suffix or zip signature, else from the first non-blank JSON line.

    gzip-compressed files are read through whatever their name (:mod:`arch.safeio`)."""
    if path.suffix == ".npz":
        return "hetmoe-npz"
    with open_binary(path, "routing trace") as fh:
        if fh.read(2) == b"PK":
            return "hetmoe-npz"
    first = next(((n, line) for n, line in iter_lines(path, "routing trace") if line.strip()), None)
    if first is None:
        raise TraceError(f"{path}: the file is empty; expected JSON lines of routing records")
    row = _parse_row(path, *first)
    if row.get("format") == "hetmoe-trace":
        return "hetmoe-jsonl"
    if row.get("type") in ("meta", "route") or "topk_ids" in row:
        return "vllm-moe-logger"
    if "gating_probs" in row and "experts" in row:
        return "speculative-moe"
    if "routed_experts" in row:
        return "vllm-routed-experts"
    raise TraceError(f"{path}:{first[0]}: unknown trace format (keys: {', '.join(sorted(row))}); "
                     f"known formats: {', '.join(FORMATS)}")


class _Collector:
    """Accumulates validated (token key, layer, ids, weights) rows and group membership."""

    def __init__(self, path: Path, model: ModelShape) -> None:
        self.path, self.model = path, model
        self.moe = set(model.moe_layers)
        self.token_of: dict[Any, int] = {}
        self.group_of_token: list[Any] = []
        self.request_of_token: list[int] = []
        self.line_of_token: list[int] = []
        self.cells: list[tuple[int, int, list[int], list[float]]] = []
        self.groups: dict[Any, dict[str, Any]] = {}
        self.rows = 0

    def fail(self, line: int, fieldname: str, problem: str) -> None:
        raise TraceError(f"{self.path}:{line}: {fieldname}: {problem}")

    def add(self, line: int, key: Any, group: Any, request: int, layer: Any, ids: Any, weights: Any,
            id_field: str, weight_field: str) -> None:
        m = self.model
        if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < m.num_layers:
            self.fail(line, "layer", f"{layer!r} is not a layer of {m.name} (0..{m.num_layers - 1})")
        if layer not in self.moe:
            self.fail(line, "layer", f"layer {layer} of {m.name} is not a MoE layer")
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            self.fail(line, id_field, f"expected a list of integer expert ids, got {ids!r}")
        if len(ids) != m.top_k:
            self.fail(line, id_field, f"{len(ids)} experts but {m.name} routes top-{m.top_k}")
        bad = [i for i in ids if not 0 <= i < m.num_experts]
        if bad:
            self.fail(line, id_field, f"expert id {bad[0]} out of range; {m.name} has experts 0..{m.num_experts - 1}")
        weights_known = weights is not None
        if not weights_known:
            weights = [1.0 / m.top_k] * m.top_k
        elif (not isinstance(weights, list) or len(weights) != len(ids)
              or not all(type(w) in (int, float) and -1e308 < w < 1e308 for w in weights)):     # finite, not bool
            self.fail(line, weight_field, f"expected {len(ids)} finite numbers, got {weights!r}")
        token = self.token_of.get(key)
        if token is None:
            token = self.token_of[key] = len(self.group_of_token)
            self.group_of_token.append(group)
            self.request_of_token.append(request)
            self.line_of_token.append(line)
        self.cells.append((token, layer, ids, weights, weights_known))
        self.rows += 1
        g = self.groups.setdefault(group, {"rows": 0, "route": (ids, weights), "same": True, "uniform": True,
                                           "first_line": line, "last_line": line, "tokens": set()})
        g["rows"] += 1
        g["last_line"] = max(g["last_line"], line)
        g["tokens"].add(token)
        if g["same"] and (ids, weights) != g["route"]:
            g["same"] = False
        if g["uniform"] and (not weights_known or max(weights) - min(weights) > 1e-9):
            g["uniform"] = False

    def _repeated_runs(self, experts: np.ndarray, weights: np.ndarray, keep: np.ndarray) -> list[tuple[int, int]]:
        """``(first, last)`` token ranges, inside one group and not already dropped, of at least
        ``WARMUP_RUN_TOKENS`` tokens that repeat the previous token's route at every layer."""
        if len(experts) < WARMUP_RUN_TOKENS:
            return []
        dense: dict[Any, int] = {}
        groups = np.asarray([dense.setdefault(g, len(dense)) for g in self.group_of_token], np.int64)
        uniform = (np.abs(weights - weights[:, :, :1]) <= 1e-9).all(axis=2) & (experts[:, :, 0] >= 0)
        same_ids = (experts[1:] == experts[:-1]).all(axis=(1, 2))
        same_w = ((weights[1:] == weights[:-1]).all(axis=2) | (uniform[1:] & uniform[:-1])).all(axis=1)
        repeat = same_ids & same_w & (groups[1:] == groups[:-1]) & keep[1:] & keep[:-1]
        edges = np.diff(np.concatenate([[0], repeat.astype(np.int8), [0]]))
        starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)   # repeat[a:b] True: tokens a..b
        runs = [(int(a), int(b)) for a, b in zip(starts, stops) if b - a + 1 >= WARMUP_RUN_TOKENS]
        return runs

    def _dropped_list(self, warm: set, runs: list[tuple[int, int]], rows_of_token: np.ndarray
                      ) -> list[dict[str, Any]]:
        """Every dropped warm-up stretch with its rows (their ``rows`` add up to ``warmup_rows_dropped``): whole
        groups (``rule`` ``group``: a batch, problem or request whose rows all carry one route, or all uniform
        weights; ``group`` names it) and content-detected runs (``rule`` ``run``), in file order."""
        out = []
        for g in warm:
            s = self.groups[g]
            reason = "every row the same route" if s["same"] else "every row uniform weights"
            out.append({"rule": "group", "group": " ".join(map(str, g)) if isinstance(g, tuple) else str(g),
                        "reason": reason, "first_line": s["first_line"], "last_line": s["last_line"],
                        "tokens": len(s["tokens"]), "rows": s["rows"]})
        for a, b in runs:
            out.append({"rule": "run", "reason": f"{b - a + 1} consecutive tokens repeat one route at every layer",
                        "first_line": self.line_of_token[a], "last_line": self.line_of_token[b],
                        "tokens": b - a + 1, "rows": int(rows_of_token[a:b + 1].sum())})
        return sorted(out, key=lambda d: d["first_line"])

    def build(self, keep_warmup: bool, phase: int, meta: dict[str, Any]) -> RoutingTrace:
        if not self.rows:
            raise TraceError(f"{self.path}: no routing rows found")
        warm = set() if keep_warmup else {g for g, s in self.groups.items()
                                          if s["rows"] >= 2 and (s["same"] or s["uniform"])}
        warm_rows = sum(self.groups[g]["rows"] for g in warm)
        m = self.model
        n_tokens = len(self.group_of_token)
        experts, weights = empty_arrays(n_tokens, m.num_layers, m.top_k)
        rows_of_token = np.zeros(n_tokens, np.int64)
        sums = []
        for token, layer, ids, wts, known in self.cells:
            experts[token, layer] = ids
            weights[token, layer] = wts
            rows_of_token[token] += 1
            if known:
                sums.append(sum(wts))
        keep_tokens = np.array([g not in warm for g in self.group_of_token], bool)
        runs = [] if keep_warmup else self._repeated_runs(experts, weights, keep_tokens)
        for first, last in runs:
            keep_tokens[first:last + 1] = False
            warm_rows += int(rows_of_token[first:last + 1].sum())
        experts, weights = experts[keep_tokens], weights[keep_tokens]
        request = np.asarray(self.request_of_token, np.int32)[keep_tokens]
        observed = (experts[:, :, 0] >= 0).any(axis=0)
        complete = (experts[:, observed, 0] >= 0).all(axis=1)
        incomplete = int((~complete).sum())
        experts, weights, request = experts[complete], weights[complete], request[complete]
        if not len(experts):
            raise TraceError(f"{self.path}: no tokens left after dropping {warm_rows} warm-up rows and "
                             f"{incomplete} incomplete tokens")
        # renumber requests densely in order of appearance
        _, first = np.unique(request, return_index=True)
        order = np.argsort(first)
        remap = np.empty(order.size, np.int32)
        remap[order] = np.arange(order.size, dtype=np.int32)
        request = remap[np.searchsorted(np.unique(request), request)]
        meta = {**meta, "rows_read": self.rows, "warmup_rows_dropped": warm_rows,
                "warmup_groups_dropped": len(warm), "incomplete_tokens_dropped": incomplete,
                "warmup_runs_dropped": self._dropped_list(warm, runs, rows_of_token),
                "source": str(self.path)}
        if sums:
            row_sums = np.asarray(sums)
            meta["weights_normalised"] = bool(np.all(np.abs(row_sums - 1.0) <= NORMALISED_TOL))
            meta["weights_row_sum_range"] = [round(float(row_sums.min()), 6), round(float(row_sums.max()), 6)]
        n = len(experts)
        return RoutingTrace(experts, weights, request, np.full(n, -1, np.int32), np.full(n, phase, np.int8),
                            observed, m.num_experts, meta)


def _parse_row(path: Path, line_no: int, text: str) -> dict:
    try:
        row = loads_json(text, path, line_no)
    except InputError as exc:
        raise TraceError(f"{exc}; the line may be truncated" if "not valid JSON" in str(exc) else str(exc)) from None
    if not isinstance(row, dict):
        raise TraceError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
    return row


TEXT_CHECK_BYTES = 1 << 16       # the memory guard is asked again after each 64 KiB of text


def _json_lines(path: Path, guard: Any = None) -> Iterator[tuple[int, dict]]:
    """The JSON rows of a log; with ``guard`` (``sim.resources.ReadGuard``), the text read so far is counted
    as it is decompressed and the guard refuses once it would not fit (a gzip trailer can understate it)."""
    seen, next_check = 0, TEXT_CHECK_BYTES
    for line_no, text in iter_lines(path, "routing trace"):
        if guard is not None:
            seen += len(text)
            if seen >= next_check:
                guard.text(path, seen)
                next_check = seen + TEXT_CHECK_BYTES
        if text.strip():
            yield line_no, _parse_row(path, line_no, text)


def _ident(path: Path, line: int, row: dict, key: str, default: Any = None) -> Any:
    """An identifier field (request, problem, token index): a string or an integer."""
    value = row.get(key, default)
    if not (isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))):
        raise TraceError(f"{path}:{line}: {key}: {value!r:.40} is not an identifier (a string or an integer)")
    return value


def _require(path: Path, line: int, row: dict, *keys: str) -> None:
    for key in keys:
        if key not in row:
            raise TraceError(f"{path}:{line}: {key}: missing field (row has: {', '.join(sorted(row))})")


def _read_vllm_logger(path: Path, model: ModelShape, keep_warmup: bool, guard: Any = None) -> RoutingTrace:
    col = _Collector(path, model)
    batch: dict[int, int] = {}
    last_idx: dict[int, int] = {}
    meta_line: dict[str, Any] = {}
    for line, row in _json_lines(path, guard):
        if row.get("type") == "meta":
            meta_line = row
            if "top_k" in row and row["top_k"] != model.top_k:
                col.fail(line, "top_k", f"the log routes top-{row['top_k']} but {model.name} routes top-{model.top_k}")
            if "num_experts" in row and row["num_experts"] != model.num_experts:
                col.fail(line, "num_experts", f"{row['num_experts']} experts but {model.name} has {model.num_experts}")
            continue
        _require(path, line, row, "token_idx", "layer", "topk_ids")
        layer, idx = row["layer"], row["token_idx"]
        if not isinstance(idx, int) or isinstance(idx, bool):
            col.fail(line, "token_idx", f"{idx!r} is not an integer")
        if not isinstance(layer, int) or isinstance(layer, bool):     # the collector checks the range
            col.fail(line, "layer", f"{layer!r} is not a layer of {model.name} (0..{model.num_layers - 1})")
        if idx <= last_idx.get(layer, -1):
            batch[layer] = batch.get(layer, 0) + 1
        last_idx[layer] = idx
        b = batch.get(layer, 0)
        col.add(line, (b, idx), ("batch", b), 0, layer, row["topk_ids"], row.get("topk_weights"),
                "topk_ids", "topk_weights")
    meta = {"format": "vllm-moe-logger", "model_id": meta_line.get("model_id"),
            "weights_normalised": False, "token_idx_meaning": "row index inside one forward batch",
            "forward_batches": sum(1 for g in col.groups if g[0] == "batch")}
    return col.build(keep_warmup, PHASES["unknown"], meta)


def _read_speculative(path: Path, model: ModelShape, keep_warmup: bool, guard: Any = None) -> RoutingTrace:
    col = _Collector(path, model)
    problems: dict[Any, int] = {}
    for line, row in _json_lines(path, guard):
        _require(path, line, row, "problem_id", "layer", "token_idx", "experts")
        pid = _ident(path, line, row, "problem_id")
        req = problems.setdefault(pid, len(problems))
        col.add(line, (pid, _ident(path, line, row, "token_idx")), ("problem", pid), req, row["layer"], row["experts"],
                row.get("gating_probs"), "experts", "gating_probs")
    meta = {"format": "speculative-moe", "dataset": None, "weights_normalised": True,
            "token_idx_meaning": "generated-token index within a problem (rows with weights [0.5, 0.5] "
                                 "were dropped by the logger, so it can drift between layers)"}
    return col.build(keep_warmup, PHASES["decode"], meta)


def _read_routed_experts(path: Path, model: ModelShape, keep_warmup: bool, guard: Any = None) -> RoutingTrace:
    col = _Collector(path, model)
    layers = list(model.moe_layers)
    for req, (line, row) in enumerate(_json_lines(path, guard)):
        _require(path, line, row, "routed_experts")
        rid = _ident(path, line, row, "request_id", line)
        tokens = row["routed_experts"]
        if not isinstance(tokens, list):
            col.fail(line, "routed_experts", "expected [tokens][moe_layers][top_k] integers")
        for t, per_layer in enumerate(tokens):
            if not isinstance(per_layer, list) or len(per_layer) != len(layers):
                col.fail(line, f"routed_experts[{t}]", f"expected {len(layers)} MoE layers of {model.name}, got "
                         f"{len(per_layer) if isinstance(per_layer, list) else per_layer!r}")
            for j, ids in enumerate(per_layer):
                col.add(line, (rid, t), ("request", rid), req, layers[j], ids, None,
                        f"routed_experts[{t}][{j}]", "weights")
    meta = {"format": "vllm-routed-experts", "weights_normalised": None,
            "weights": "not recorded; uniform 1/k assumed"}
    return col.build(keep_warmup, PHASES["unknown"], meta)


def _read_hetmoe_jsonl(path: Path, model: ModelShape, keep_warmup: bool, guard: Any = None) -> RoutingTrace:
    col = _Collector(path, model)
    rows = _json_lines(path, guard)
    _, header = next(rows)
    for key, want in (("num_layers", model.num_layers), ("top_k", model.top_k), ("num_experts", model.num_experts)):
        if header.get(key) != want:
            raise TraceError(f"{path}:1: {key}: {header.get(key)!r} but {model.name} has {want}")
    phases = []
    for line, row in rows:
        _require(path, line, row, "experts")
        t = len(phases)
        req = _ident(path, line, row, "request", 0)
        if not isinstance(req, int) or req < 0:
            col.fail(line, "request", f"{req!r} is not a request number (an integer >= 0)")
        phase = row.get("phase", "unknown")
        if not isinstance(phase, str) or phase not in PHASES:
            col.fail(line, "phase", f"{phase!r}; allowed: {', '.join(PHASES)}")
        phases.append(PHASES[phase])
        ex, wt = row["experts"], row.get("weights")
        if not isinstance(ex, list) or len(ex) != model.num_layers:
            col.fail(line, "experts", f"expected one entry (or null) per layer, {model.num_layers} in all")
        for layer, ids in enumerate(ex):
            if ids is not None:
                w = wt[layer] if isinstance(wt, list) and len(wt) == len(ex) else None
                col.add(line, t, ("request", req), req, layer, ids, w, f"experts[{layer}]", f"weights[{layer}]")
    trace = col.build(True, PHASES["unknown"], {"format": "hetmoe-jsonl", **(header.get("meta") if isinstance(header.get("meta"), dict) else {})})
    return replace(trace, phase=np.asarray(phases, np.int8)[: trace.tokens])


_READERS = {"vllm-moe-logger": _read_vllm_logger, "speculative-moe": _read_speculative,
            "vllm-routed-experts": _read_routed_experts, "hetmoe-jsonl": _read_hetmoe_jsonl}


def _cache_path(path: Path, model: ModelShape, keep_warmup: bool) -> Path | None:
    from arch.userdirs import cache_dir

    st = path.stat()
    key = json.dumps([str(path.resolve()), st.st_size, st.st_mtime_ns, keep_warmup, model.name,
                      model.num_layers, model.num_experts, model.top_k])
    root = cache_dir()                      # None: no writable cache folder (said once); the log is parsed
    return None if root is None else root / f"trace-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def read_trace(path: str | Path, model: ModelShape, *, keep_warmup: bool = False, fill: str | None = None,
               seed: int = 0, cache: bool = False, guard: Any = None) -> RoutingTrace:
    """Read any supported trace for ``model``; optionally fill unobserved MoE layers. ``guard``
    (``sim.resources.ReadGuard``, from ``--max-memory-gib``) bounds what reading may take: JSON text as it is
    decompressed, ``.npz`` arrays as declared and as read."""
    path = check_file(path, "routing trace")
    fmt = detect_format(path)
    if fmt == "hetmoe-npz":
        trace = load_npz(path, guard)
        if trace.experts.shape[1:] != (model.num_layers, model.top_k) or trace.num_experts != model.num_experts:
            raise TraceError(f"{path}: trace shape {trace.experts.shape[1:]} with {trace.num_experts} experts does "
                             f"not match {model.name} ({model.num_layers} layers, top-{model.top_k}, "
                             f"{model.num_experts} experts)")
    else:
        cached = _cache_path(path, model, keep_warmup) if cache else None
        trace = None
        if cached is not None and cached.is_file():
            try:
                trace = load_npz(cached)
            except HetmoeError:
                trace = None                # a damaged cache is read again from the log, never trusted
        if trace is None:
            trace = _READERS[fmt](path, model, keep_warmup, guard)
            if cached is not None:
                try:
                    save_npz(trace, cached)
                except (HetmoeError, OSError):
                    pass                    # an unwritable cache folder only costs the next run the parse
    if fill is not None:
        trace = fill_layers(trace, model, fill, seed)
    return trace


def require_complete(trace: RoutingTrace, model: ModelShape) -> None:
    """Raise unless every MoE layer of ``model`` is observed (the engine needs all of them)."""
    missing = [layer for layer in model.moe_layers if not trace.observed[layer]]
    if missing:
        shown = ", ".join(map(str, missing[:8])) + (" ..." if len(missing) > 8 else "")
        raise TraceError(f"{trace.meta.get('source', 'trace')}: MoE layers {shown} were not observed "
                         f"({len(missing)} of {len(model.moe_layers)}); fill them explicitly with "
                         f"--fill {' or --fill '.join(FILL_RULES)}")
