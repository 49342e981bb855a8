"""The iteration-level scheduler: requests that arrive, iterations that mix them (DESIGN §9).

It follows vLLM's scheduler with chunked prefill (its option names in brackets) and knows no physics:
each iteration's micro-batch goes to an *executor*, a SimPy process body ``executor.run(iteration)``
that returns when the iteration's tokens are out.

A request of prompt length P and output length O is a sequence whose known length is ``P + generated``.
``scheduled`` tokens of it have been handed to iterations (vLLM's ``num_computed_tokens``, advanced at
schedule time). A step processes tokens ``[scheduled, min(known, scheduled + share))`` and *emits* the
next output token when it reaches the known length: the last prompt chunk emits token 1, each decode
step (one token: the last one generated) emits the next. A request finishes when it has emitted O
tokens: P + O - 1 tokens processed, O emitted.

Rules of one iteration (decided when a pipeline slot is free and there is work; budget =
``max_num_batched_tokens``):

1. **Running decodes first**, in admission order: every running request whose next step is one token
   and that has no step in flight takes one token.
2. **Running partial prefills**, in admission order: the rest of the prompt, up to the budget left
   (chunked prefill). A request whose earlier, non-final chunk is still in the pipeline may take its
   next chunk (the executor makes the new chunk wait, layer by layer, for the earlier one: a chunk
   attends to the KV the earlier chunk writes).
3. **Admission** of waiting requests, first come first served, while the budget lasts and fewer than
   ``max_num_seqs`` requests run; the head of the queue waiting for KV space blocks those behind it.

**KV cache** in blocks of ``block_size`` tokens (``block_size``; vLLM's default 16): a step allocates
the blocks its tokens need when it is scheduled, a finished request frees its blocks. When a running
request cannot get a block, the **last-admitted** running request that has no step in flight and none
in this iteration is **preempted** (vLLM's recompute mode): its blocks are freed, its ``scheduled``
reset to 0 and it goes back to the head of the queue; when re-admitted it recomputes its prompt and the
tokens generated so far as one prefill, which emits its next token. With no such victim the request
waits for the next iteration.

**Pipeline**: up to ``max_inflight`` iterations are in flight (the engine's layer pipeline); a new one
is formed whenever a slot frees or a request arrives to a free slot. ``max_inflight = 1`` is vLLM
without pipeline parallelism: one iteration at a time.

**Ties**: events at one picosecond run in SimPy's order (scheduling order); requests arriving at the
same picosecond are all queued before the scheduler looks (so a closed batch at t = 0 is one queue).

State is bounded: the queue, the running list (<= ``max_num_seqs``) and the in-flight iterations;
a finished request leaves only its summary row (arrival, first scheduling, first token, finish,
preemptions, the longest gap between its tokens).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import simpy

from arch.errors import HetmoeError
from workloads.requests import RequestStream

NOT_YET = -1


@dataclass(frozen=True)
class SchedulerConfig:
    """vLLM's names: ``max_num_batched_tokens`` (token budget per iteration), ``max_num_seqs`` (running
    requests), ``block_size`` (KV block, tokens); ``kv_capacity_tokens`` (None: unbounded);
    ``max_inflight`` (iterations in the pipeline at once)."""

    max_num_batched_tokens: int = 512
    max_num_seqs: int = 256
    block_size: int = 16
    kv_capacity_tokens: int | None = None
    max_inflight: int = 4

    def __post_init__(self) -> None:
        for name, lo in (("max_num_batched_tokens", 1), ("max_num_seqs", 1), ("block_size", 1), ("max_inflight", 1)):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < lo:
                raise HetmoeError(f"--{name.replace('_', '-')} {v}: allowed an integer >= {lo}")
        if self.kv_capacity_tokens is not None and self.kv_capacity_tokens < self.block_size:
            raise HetmoeError(f"KV capacity {self.kv_capacity_tokens} tokens is less than one block "
                              f"({self.block_size} tokens)")

    @property
    def kv_blocks(self) -> int | None:
        return None if self.kv_capacity_tokens is None else self.kv_capacity_tokens // self.block_size


@dataclass(frozen=True, eq=False)
class Iteration:
    """One micro-batch: per sequence its request, first position, token count and whether it emits a
    token; ``after``: in-flight iterations holding earlier chunks of these requests."""

    index: int
    start_ps: int
    req: np.ndarray      # int64 [s]
    start: np.ndarray    # int64 [s]: position of the chunk's first token
    n: np.ndarray        # int64 [s]
    emits: np.ndarray    # bool [s]
    after: tuple[int, ...]

    @property
    def tokens(self) -> int:
        return int(self.n.sum())

    @property
    def open(self) -> bool:
        """Whether a later chunk of one of its requests may follow it while it is in flight."""
        return bool((~self.emits).any())


class Executor(Protocol):
    def run(self, it: Iteration) -> Generator[Any, Any, None]: ...


class Scheduler:
    """Runs ``stream`` on ``env`` through ``executor``; call :meth:`start`, then ``env.run()``."""

    def __init__(self, env: simpy.Environment, stream: RequestStream, cfg: SchedulerConfig, executor: Executor) -> None:
        self.env, self.stream, self.cfg, self.ex = env, stream, cfg, executor
        N = stream.requests
        need = stream.prompt_tokens + stream.output_tokens - 1
        if cfg.kv_blocks is not None:
            blocks = -(-need // cfg.block_size)
            worst = int(np.argmax(blocks))
            if blocks[worst] > cfg.kv_blocks:
                raise HetmoeError(
                    f"request {worst} needs {int(need[worst]):,} KV tokens ({int(blocks[worst]):,} blocks of "
                    f"{cfg.block_size}) but the KV cache holds {cfg.kv_capacity_tokens:,} tokens: it could never run; "
                    "shorten the requests or give the chip more memory (memory.dram.capacity_gib)")
        self.arrival_ps = np.rint(stream.arrival_s * 1e12).astype(np.int64)
        self.prompt = stream.prompt_tokens.astype(np.int64)
        self.output = stream.output_tokens.astype(np.int64)
        # per-request state (small integers) and summary rows
        self.scheduled = np.zeros(N, np.int64)
        self.generated = np.zeros(N, np.int64)
        self.blocks = np.zeros(N, np.int64)
        self.busy = np.zeros(N, bool)            # a step that emits is in flight
        self.open_chunk = np.full(N, NOT_YET, np.int64)   # in-flight iteration holding its latest open chunk
        self.first_sched_ps = np.full(N, NOT_YET, np.int64)
        self.first_token_ps = np.full(N, NOT_YET, np.int64)
        self.last_token_ps = np.full(N, NOT_YET, np.int64)
        self.finish_ps = np.full(N, NOT_YET, np.int64)
        self.max_gap_ps = np.zeros(N, np.int64)
        self.preemptions = np.zeros(N, np.int64)
        self.waiting: deque[int] = deque()
        self.running: list[int] = []
        self.free_blocks = cfg.kv_blocks
        self.used_blocks = 0
        self.in_flight = 0
        self.iterations = 0
        self.finished = 0
        self.processed_tokens = 0       # tokens of finished iterations
        self.emitted_tokens = 0
        self.peak_blocks = 0
        self.peak_waiting = 0
        self.peak_seqs = 0
        self.peak_tokens = 0
        self.log: list[tuple[int, int, int, int, int, int, int, int]] = []   # see log_array

    # ------------------------------------------------------------------------------------ processes
    def start(self) -> None:
        self.env.process(self._arrivals())

    def _arrivals(self):
        env, t = self.env, self.arrival_ps
        N = t.size
        i = 0
        while i < N:
            if t[i] > env.now:
                yield env.timeout(int(t[i]) - env.now)
            while i < N and t[i] <= env.now:
                self.waiting.append(i)
                i += 1
            self.peak_waiting = max(self.peak_waiting, len(self.waiting))
            self._dispatch()

    def _dispatch(self) -> None:
        while self.in_flight < self.cfg.max_inflight:
            it = self._schedule()
            if it is None:
                return
            self.in_flight += 1
            self.env.process(self._run(it))

    def _run(self, it: Iteration):
        yield from self.ex.run(it)
        self._complete(it)
        self.in_flight -= 1
        self._dispatch()

    # ------------------------------------------------------------------------------------ KV blocks
    def _grow(self, r: int, tokens: int) -> bool:
        """Allocate the blocks request ``r`` needs to hold ``tokens`` positions; False when none are free."""
        need = -(-tokens // self.cfg.block_size) - int(self.blocks[r])
        if need <= 0:
            return True
        if self.free_blocks is not None:
            if need > self.free_blocks:
                return False
            self.free_blocks -= need
        self.blocks[r] += need
        self.used_blocks += need
        self.peak_blocks = max(self.peak_blocks, self.used_blocks)
        return True

    def _release(self, r: int) -> None:
        if self.free_blocks is not None:
            self.free_blocks += int(self.blocks[r])
        self.used_blocks -= int(self.blocks[r])
        self.blocks[r] = 0

    def _preempt_for(self, r: int, chosen: set[int]) -> bool:
        """Preempt the last-admitted running request that has nothing in flight and is not in this
        iteration (and is not ``r``); False when there is none."""
        for v in reversed(self.running):
            if v != r and v not in chosen and not self.busy[v] and self.open_chunk[v] == NOT_YET:
                self.running.remove(v)
                self._release(v)
                self.scheduled[v] = 0
                self.preemptions[v] += 1
                self.waiting.appendleft(v)
                self.peak_waiting = max(self.peak_waiting, len(self.waiting))
                return True
        return False

    # ------------------------------------------------------------------------------------ one iteration
    def _take(self, r: int, share: int, chosen: set[int], seqs: list, preempt: bool) -> int:
        """Schedule up to ``share`` tokens of request ``r``; returns the tokens taken (0: none)."""
        known = int(self.prompt[r] + self.generated[r])
        s = int(self.scheduled[r])
        n = min(known - s, share)
        if n <= 0:
            return 0
        while not self._grow(r, s + n):
            if not (preempt and self._preempt_for(r, chosen)):
                return 0
        emits = s + n == known
        seqs.append((r, s, n, emits, int(self.open_chunk[r])))
        chosen.add(r)
        self.scheduled[r] = s + n
        return n

    def _schedule(self) -> Iteration | None:
        budget = self.cfg.max_num_batched_tokens
        chosen: set[int] = set()
        seqs: list[tuple[int, int, int, bool, int]] = []
        for decode_pass in (True, False):
            for r in list(self.running):
                if budget == 0:
                    break
                if self.busy[r] or r in chosen or r not in self.running:
                    continue
                left = int(self.prompt[r] + self.generated[r] - self.scheduled[r])
                if (left == 1) != decode_pass:
                    continue
                budget -= self._take(r, budget, chosen, seqs, preempt=True)
        while self.waiting and budget > 0 and len(self.running) < self.cfg.max_num_seqs:
            r = self.waiting[0]
            taken = self._take(r, budget, chosen, seqs, preempt=False)
            if taken == 0:
                break                                   # head of line waits for KV space
            self.waiting.popleft()
            self.running.append(r)
            if self.first_sched_ps[r] == NOT_YET:
                self.first_sched_ps[r] = self.env.now
            budget -= taken
        if not seqs:
            return None
        idx = self.iterations
        self.iterations += 1
        req = np.array([q[0] for q in seqs], np.int64)
        emits = np.array([q[3] for q in seqs], bool)
        after = tuple(sorted({q[4] for q in seqs if q[4] != NOT_YET}))
        for r, _, _, e, _ in seqs:
            if e:
                self.busy[r] = True
                self.open_chunk[r] = NOT_YET
            else:
                self.open_chunk[r] = idx
        it = Iteration(idx, self.env.now, req, np.array([q[1] for q in seqs], np.int64),
                       np.array([q[2] for q in seqs], np.int64), emits, after)
        tokens = it.tokens
        self.peak_seqs = max(self.peak_seqs, len(seqs))
        self.peak_tokens = max(self.peak_tokens, tokens)
        n_dec = int(sum(1 for q in seqs if q[2] == 1 and q[3] and q[1] > 0))
        self.log.append((idx, self.env.now, tokens, len(seqs), n_dec, len(self.waiting), len(self.running),
                         self.used_blocks))
        return it

    def _complete(self, it: Iteration) -> None:
        now = self.env.now
        self.processed_tokens += it.tokens
        for r, e in zip(it.req.tolist(), it.emits.tolist()):
            if self.open_chunk[r] == it.index:
                self.open_chunk[r] = NOT_YET
            if not e:
                continue
            self.busy[r] = False                         # (a victim of preemption never has a step in flight)
            self.generated[r] += 1
            self.emitted_tokens += 1
            if self.first_token_ps[r] == NOT_YET:
                self.first_token_ps[r] = now
            else:
                self.max_gap_ps[r] = max(self.max_gap_ps[r], now - self.last_token_ps[r])
            self.last_token_ps[r] = now
            if self.generated[r] == self.output[r]:
                self.finish_ps[r] = now
                self.finished += 1
                self.running.remove(r)
                self._release(r)

    # ------------------------------------------------------------------------------------ records
    LOG_COLUMNS = ("iteration", "start_ps", "tokens", "seqs", "decodes", "waiting", "running", "kv_blocks")

    def log_array(self) -> np.ndarray:
        """int64 [iterations, 8]: :data:`LOG_COLUMNS` as each iteration was formed."""
        return np.array(self.log, np.int64).reshape(-1, len(self.LOG_COLUMNS))

    def records(self) -> dict[str, np.ndarray]:
        """Per-request summary rows (ps; -1 where it never happened)."""
        return {"arrival_ps": self.arrival_ps, "first_scheduled_ps": self.first_sched_ps,
                "first_token_ps": self.first_token_ps, "finish_ps": self.finish_ps, "prompt_tokens": self.prompt,
                "output_tokens": self.output, "generated": self.generated, "max_gap_ps": self.max_gap_ps,
                "preemptions": self.preemptions}
