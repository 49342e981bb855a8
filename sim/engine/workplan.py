"""Split a routing trace into the micro-batches the engine runs (timing-independent).

- ``prefill``: each request's tokens, in trace order, are cut into micro-batches of ``batch``
  tokens (a micro-batch never mixes requests); chunk j of a request attends to the KV cache of
  chunks < j.
- ``decode``: ``batch`` sequences decode step by step with continuous batching: a slot that
  finishes its sequence takes the next waiting one. Sequences are the trace's requests; a trace
  with fewer requests than ``batch`` is cut into ``batch`` contiguous sequences. One step is one
  micro-batch with one token per active slot; step t+1 starts after step t.

Positions (for KV-cache length) come from the trace when it records them (then ``context_tokens``
is not used, and the plan says so), otherwise ``context_tokens`` + the token's index in its
sequence (decode) or its index in its request (prefill: a prompt is processed from its first token;
``context_tokens`` applies to decode). ``WorkPlan.context_source`` states which rule was used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arch.errors import HetmoeError
from workloads.shapes import ModelShape
from workloads.traces.format import RoutingTrace

MODES = ("prefill", "decode")


@dataclass(frozen=True, eq=False)
class WorkPlan:
    mode: str
    batch: int
    token_order: np.ndarray     # int64 [T]: trace token ids in execution order
    mb_start: np.ndarray        # int64 [n_mb + 1]: micro-batch b holds token_order[mb_start[b]:mb_start[b+1]]
    mb_prev: np.ndarray         # int64 [n_mb]: micro-batch this one waits for at each layer (-1 none)
    counts: np.ndarray          # int32 [n_mb, layers, experts]: tokens routed to each expert
    context_sum: np.ndarray     # int64 [n_mb]: sum over tokens of attended positions (pos + 1)
    kv_prior: np.ndarray        # int64 [n_mb]: KV positions read from the cache (before the micro-batch)
    lm_head_tokens: np.ndarray  # int64 [n_mb]
    first_token_of_seq: np.ndarray  # bool [T] in execution order: first decode token of a sequence
    mb_of_token: np.ndarray     # int64 [T] in execution order
    experts: np.ndarray         # int16 [T, layers, k]: routes in execution order
    context_source: str = ""    # how positions were set (trace, or --context-tokens in decode)

    @property
    def n_mb(self) -> int:
        return int(self.mb_start.size - 1)

    @property
    def mb_tokens(self) -> np.ndarray:
        return np.diff(self.mb_start)


def _sequences(trace: RoutingTrace, mode: str, batch: int) -> list[np.ndarray]:
    req = trace.request
    order = np.argsort(req, kind="stable")
    bounds = np.flatnonzero(np.r_[True, req[order][1:] != req[order][:-1], True])
    seqs = [order[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    if mode == "decode" and len(seqs) < batch:
        seqs = [s for s in np.array_split(np.arange(trace.tokens), batch) if s.size]
    return seqs


def build_plan(trace: RoutingTrace, model: ModelShape, mode: str, batch: int, context_tokens: int = 0) -> WorkPlan:
    if mode not in MODES:
        raise HetmoeError(f"--mode {mode!r}; allowed: {', '.join(MODES)}")
    if batch < 1:
        raise HetmoeError(f"--batch {batch} must be >= 1")
    if context_tokens < 0:
        raise HetmoeError(f"--context-tokens {context_tokens} must be >= 0")
    seqs = _sequences(trace, mode, batch)
    known = bool((trace.position >= 0).all())
    pos_of = np.empty(trace.tokens, np.int64)
    for s in seqs:
        pos_of[s] = trace.position[s] if known else np.arange(s.size) + (context_tokens if mode == "decode" else 0)

    groups: list[np.ndarray] = []   # token ids per micro-batch
    prev: list[int] = []
    lm: list[int] = []
    first: list[np.ndarray] = []
    if mode == "prefill":
        for s in seqs:
            for j, a in enumerate(range(0, s.size, batch)):
                groups.append(s[a:a + batch])
                prev.append(len(groups) - 2 if j > 0 else -1)
                lm.append(1 if a + batch >= s.size else 0)
                first.append(np.zeros(min(batch, s.size - a), bool))
    else:
        waiting = list(range(len(seqs)))[::-1]
        slots: list[list[int]] = []   # [sequence, next index]
        while waiting or slots:
            while len(slots) < batch and waiting:
                slots.append([waiting.pop(), 0])
            toks = np.array([seqs[q][i] for q, i in slots], np.int64)
            groups.append(toks)
            first.append(np.array([i == 0 for _, i in slots], bool))
            prev.append(len(groups) - 2)
            lm.append(toks.size)
            for slot in slots:
                slot[1] += 1
            slots = [s for s in slots if s[1] < seqs[s[0]].size]
    sizes = np.array([g.size for g in groups], np.int64)
    mb_start = np.r_[0, np.cumsum(sizes)]
    token_order = np.concatenate(groups)
    mb_of_token = np.repeat(np.arange(len(groups)), sizes)
    E, L = model.num_experts, model.num_layers
    routes = trace.experts[token_order]                          # int16 [T, L, k]
    counts = np.zeros((len(groups), L, E), np.int32)
    for layer in range(L):                                      # per layer: temporaries of [T, k] only
        ex = routes[:, layer, :]
        valid = ex >= 0
        if valid.any():
            flat = (np.broadcast_to(mb_of_token[:, None], ex.shape)[valid] * E + ex[valid])
            counts[:, layer, :] = np.bincount(flat, minlength=len(groups) * E).reshape(len(groups), E)
    pos = pos_of[token_order]
    context_sum = np.bincount(mb_of_token, weights=pos + 1, minlength=len(groups)).astype(np.int64)
    if mode == "prefill":
        kv_prior = np.array([pos_of[g].min() for g in groups], np.int64)
    else:
        kv_prior = np.bincount(mb_of_token, weights=pos, minlength=len(groups)).astype(np.int64)
    if known:
        source = "positions recorded in the trace (--context-tokens not used)"
    elif mode == "decode":
        source = f"--context-tokens {context_tokens}: decode token i of a sequence attends to {context_tokens} + i + 1"
    else:
        source = "prefill: positions from each request's first token (--context-tokens applies to decode)"
    return WorkPlan(mode, batch, token_order, mb_start, np.array(prev, np.int64), counts, context_sum, kv_prior,
                    np.array(lm, np.int64), np.concatenate(first), mb_of_token, routes, source)
