"""One serving iteration on the engine: a micro-batch that mixes requests, prefill chunks and decodes.

The serving scheduler (:mod:`sim.serving.scheduler`) decides *which* tokens run; this runner turns
them into the engine's per-micro-batch plan and runs them through the layer pipeline, the same stage
kernels as a static plan. It knows no queue.

For one iteration of sequences (request r, first position s, n tokens):

- routes: request r's token j uses trace row ``(offset[r] + j) mod trace_tokens``
  (:func:`workloads.requests.trace_rows`), so a recomputed (preempted) request takes the same routes;
- attention: the chunk attends to positions ``0 .. s + i`` for its i-th token, so the micro-batch's
  ``context_sum`` is ``sum(n s + n (n + 1) / 2)`` and the KV cache read before it, ``kv_prior``, is
  ``sum(s)`` positions (decode tokens: their sequence so far; prefill chunks: the earlier chunks);
- lm_head runs on the sequences that emit a token (final prompt chunks and decodes);
- a chunk whose earlier chunk is still in the pipeline starts each layer's attention only after that
  chunk's attention of the same layer (the KV it reads), as a static plan's chained micro-batches do.
"""

from __future__ import annotations

import numpy as np

from workloads.traces.format import RoutingTrace

from .simulator import Engine, Plan


class IterationRunner:
    """Executor for the serving scheduler: ``run(iteration)`` is a SimPy process body on ``engine.env``."""

    def __init__(self, engine: Engine, trace: RoutingTrace, offset: np.ndarray) -> None:
        self.engine = engine
        self.experts = trace.experts
        self.T = trace.tokens
        self.offset = np.asarray(offset, np.int64)
        L, E = engine.model.num_layers, max(engine.model.num_experts, 1)
        self.L, self.E = L, E
        k = trace.experts.shape[2]
        self.layer_base = (np.arange(L, dtype=np.int64) * E)[None, :, None].repeat(k, axis=2)
        self.open: dict[int, tuple[list, list]] = {}   # in-flight iterations a later chunk may wait on
        self.micro_batches = 0
        self.tokens = 0
        self.layer_visits = 0

    def plan(self, req: np.ndarray, start: np.ndarray, n: np.ndarray) -> Plan:
        """The one-micro-batch plan of an iteration (micro-batch index 0)."""
        total = int(n.sum())
        seq = np.repeat(np.arange(n.size), n)
        j = np.arange(total) - np.repeat(np.cumsum(n) - n, n)            # token index inside its chunk
        rows = (self.offset[req][seq] + start[seq] + j) % self.T
        ex = self.experts[rows]                                            # int16 [tokens, L, k]
        valid = ex >= 0
        flat = (ex.astype(np.int64) + self.layer_base)[valid]
        counts = np.bincount(flat, minlength=self.L * self.E).astype(np.int32).reshape(1, self.L, self.E)
        ctx = int((n * start + n * (n + 1) // 2).sum())
        return Plan(counts, ex, np.array([0, total], np.int64), np.array([ctx], np.int64),
                    np.array([int(start.sum())], np.int64))

    def run(self, it):
        eng = self.engine
        pl = self.plan(it.req, it.start, it.n)
        own = None
        if it.open:
            own = ([eng.env.event() for _ in range(self.L)], [0] * self.L)
            self.open[it.index] = own
        preds = [self.open[j] for j in it.after if j in self.open]
        visits = yield from eng._layers(pl, 0, it.tokens, int(it.emits.sum()), own, preds)
        self.open.pop(it.index, None)
        self.micro_batches += 1
        self.tokens += it.tokens
        self.layer_visits += visits
