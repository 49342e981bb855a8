"""The forward pass: a whole evaluation set through the model, layer by layer, for many variants at once.

A *variant* is the clean model or one (placement, noise seed) pair. All variants advance through
the model in lockstep: a layer's weights are read once from the checkpoint, each noise seed's
analog matrices are programmed once and shared by every placement that puts them on tiles, and
then every variant's hidden states pass through the layer. Memory therefore stays near one layer's
weights (clean plus one seed's programmed copy) plus the hidden states ``[sequences, length,
hidden]`` of each variant.

Common random numbers: the programming draw of a matrix comes from a stream
(:class:`arch.noise.NormalStream`) seeded by ``(seed, noise seed, matrix index, 0)`` and its per-MVM
draws from ``(seed, noise seed, matrix index, 1)``, whatever the placement; so two placements differ
only in which matrices are analog. A matrix is programmed once per noise seed, and that copy serves
every placement that puts it on tiles and every batch.

Weight-static matrices run as the placement says: digital ones exact (or ``digital_weight_bits``
wide, per output channel), analog ones through :mod:`arch.noise` per crossbar slot. Embedding
lookup, norms, RoPE, attention products, softmax, routing top-k and activations are exact.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache
from math import sqrt
from pathlib import Path
from typing import Any, Callable

import numpy as np

from arch.noise import NormalStream, SlotPhysics
from workloads.checkpoints.tensors import CheckpointError, TensorRef, check_tied_head, index_checkpoint, load_tensor
from workloads.hfconfig import check_tensors
from workloads.shapes import ATTENTION, LM_HEAD, Matrix
from workloads.traces.format import PHASES, RoutingTrace, empty_arrays

from ..placement import Placement
from .architecture import Architecture
from .backend import Backend
from .operators import AnalogMatrix, analog_apply, lowbit, program_matrix

Op = Callable[[Any], Any]
HEAD_CHUNK_ELEMENTS = 1 << 22     # logits per lm_head chunk (16 MiB in float32)


@dataclass(frozen=True)
class Variant:
    """The clean model (``placement is None``) or one placement under one noise seed."""

    placement: int | None
    noise_seed: int | None


@dataclass
class Tally:
    """Sums over predicted tokens, per variant (see :mod:`sim.functional.metrics`)."""

    ce_nats: float = 0.0
    kl_nats: float = 0.0
    agree: int = 0
    tokens: int = 0
    routes_changed: int = 0
    routed_tokens: int = 0
    per_layer_changed: dict[int, int] = field(default_factory=dict)


@dataclass
class ForwardRun:
    arch: Architecture
    checkpoint: Path
    phys: SlotPhysics
    placements: list[Placement]
    noise_seeds: list[int]
    be: Backend
    seed: int = 0
    digital_weight_bits: int = 16
    batch_sequences: int = 8
    progress: bool = False
    keep_logits: bool = False          # keep every variant's logits (tests, small runs): [S, T, vocab] each
    capture_expert_inputs: int = 0     # keep up to this many clean inputs per routed expert (sensitivity)
    refs: dict[str, TensorRef] = field(init=False)

    def __post_init__(self) -> None:
        self.checkpoint = Path(self.checkpoint)
        self.quant_error_ratio = 0.0
        # wall and CPU seconds of the clean pass, of programming, and of the noisy variants' passes
        self.seconds = {"clean": 0.0, "program": 0.0, "noisy": 0.0}
        self.cpu_seconds = dict(self.seconds)
        self._attended: list[tuple[Any, Any]] = []
        self.refs = index_checkpoint(self.checkpoint)
        # the config must describe these tensors (layers, experts, vocabulary, tied head): workloads.hfconfig
        check_tensors(self.arch.shape, self.refs, str(self.checkpoint))
        check_tied_head(self.arch.shape.tie_word_embeddings, self.refs, str(self.checkpoint))
        self.index = {m.name: i for i, m in enumerate(self.arch.shape.matrices)}
        for m in self.arch.shape.matrices:
            self._ref(self.arch.tensor(m), (m.out_features, m.in_features))

    # ------------------------------------------------------------------ weights
    def _ref(self, name: str, shape: tuple[int, ...] | None = None) -> TensorRef:
        ref = self.refs.get(name)
        if ref is None:
            raise CheckpointError(f"{self.checkpoint}: missing tensor {name} "
                                  f"({self.arch.family} layout, config {self.arch.shape.source})")
        if shape is not None and tuple(ref.shape) != shape:
            raise CheckpointError(f"{self.checkpoint}: tensor {name} has shape {tuple(ref.shape)}, "
                                  f"the config implies {shape}")
        return ref

    def _load(self, name: str) -> np.ndarray:
        return load_tensor(self._ref(name))

    load = _load

    # ------------------------------------------------------------------ the run
    def run(self, ids: np.ndarray) -> dict[Variant, Tally]:
        """Evaluate ``ids`` ``[sequences, length]``: positions 1.. predicted from 0.."""
        be, shape = self.be, self.arch.shape
        variants = [Variant(None, None)] + [Variant(p, s) for s in range(len(self.noise_seeds))
                                            for p in range(len(self.placements))]
        inputs = ids[:, :-1]
        embed = self._load("model.embed_tokens.weight")
        states = {v: be.asarray(embed[inputs]) for v in variants}
        del embed
        # variants whose every matrix so far was digital and exact share the clean states (no recompute)
        self._aliased = set(variants[1:]) if self.digital_weight_bits >= 16 else set()
        self.expert_inputs: dict[tuple[int, int], np.ndarray] = {}
        self._current = variants[0]
        self.routes: dict[Variant, dict[int, np.ndarray]] = {v: {} for v in variants}
        steps = shape.num_layers * len(variants) + len(variants)
        bar = _progress(steps, self.progress)
        for layer in range(shape.num_layers):
            mats = [m for m in shape.matrices if m.layer == layer]
            self._layer(layer, mats, variants, states, bar)
        tallies = self._head(ids, variants, states, bar)
        bar.close()
        self.length = inputs.shape[1]
        for v in variants[1:]:
            t = tallies[v]
            for layer, (noisy, _) in self.routes[v].items():
                clean = self.routes[variants[0]][layer][0]
                changed = int(np.any(np.sort(noisy, axis=1) != np.sort(clean, axis=1), axis=1).sum())
                t.per_layer_changed[layer] = changed
                t.routes_changed += changed
                t.routed_tokens += clean.shape[0]
        return tallies

    def trace(self, v: Variant, source: str) -> RoutingTrace:
        """The routes variant ``v`` took, as a hetmoe trace (one request per sequence, prefill)."""
        shape = self.arch.shape
        routes = self.routes[v]
        T = next(iter(routes.values()))[0].shape[0] if routes else 0
        experts, weights = empty_arrays(T, shape.num_layers, shape.top_k)
        observed = np.zeros(shape.num_layers, bool)
        for layer, (ids, w) in routes.items():
            experts[:, layer], weights[:, layer] = ids, w
            observed[layer] = True
        seqs = T // self.length
        request = np.repeat(np.arange(seqs, dtype=np.int32), self.length)
        position = np.tile(np.arange(self.length, dtype=np.int32), seqs)
        meta = {"format": "hetmoe-forward", "source": source, "weights_normalised": bool(shape.norm_topk_prob),
                "rows_read": 0, "warmup_rows_dropped": 0}
        return RoutingTrace(experts, weights, request, position, np.full(T, PHASES["prefill"], np.int8),
                            observed, shape.num_experts, meta)

    def _layer(self, layer: int, mats: list[Matrix], variants: list[Variant], states: dict, bar: Any) -> None:
        be = self.be
        weights = {m.name: self._load(self.arch.tensor(m)) for m in mats}
        exact = {name: be.asarray(w) for name, w in weights.items()}
        digital = {m.name for m in mats for p in self.placements if p.is_digital(m)}
        low = ({name: be.asarray(self._lowbit(w)) for name, w in weights.items() if name in digital}
               if self.digital_weight_bits < 16 else exact)
        prefix = f"model.layers.{layer}."
        extra = {name[len(prefix):]: be.asarray(load_tensor(ref)) for name, ref in self.refs.items()
                 if name.startswith(prefix) and name.endswith(("norm.weight", ".bias"))}
        # a variant whose states are still the clean ones and whose attention matrices are exact digital
        # gets this layer's attention output from the clean pass (only its feed-forward half differs)
        attention = [m for m in mats if m.module == ATTENTION]

        def shares(v: Variant) -> bool:
            return (v in self._aliased and self.digital_weight_bits >= 16
                    and all(self.placements[v.placement].is_digital(m) for m in attention))
        keep = any(shares(Variant(p, k)) for k in range(len(self.noise_seeds)) for p in range(len(self.placements)))
        t0 = _clock()
        self._advance(Variant(None, None), layer, {m.name: _dense(exact[m.name]) for m in mats}, states, extra,
                      keep=keep)
        self._add("clean", t0)
        bar.update(1)
        for k, noise_seed in enumerate(self.noise_seeds):
            needed = {m.name for m in mats for p in self.placements if not p.is_digital(m)}
            t0 = _clock()
            programmed = {m.name: self._program(m, weights[m.name], noise_seed) for m in mats if m.name in needed}
            t1 = self._add("program", t0)
            for p, placement in enumerate(self.placements):
                v = Variant(p, k)
                if v in self._aliased and all(placement.is_digital(m) for m in mats):
                    states[v] = states[Variant(None, None)]
                    if layer in self.routes[Variant(None, None)]:
                        self.routes[v][layer] = self.routes[Variant(None, None)][layer]
                    bar.update(1)
                    continue
                reuse = shares(v)
                self._aliased.discard(v)
                ops = {}
                for m in mats:
                    if placement.is_digital(m):
                        ops[m.name] = _dense(low[m.name])
                    else:
                        rng = NormalStream([self.seed, noise_seed, self.index[m.name], 1])
                        ops[m.name] = _analog(programmed[m.name], self.phys, be.normal(rng), be)
                self._advance(Variant(p, k), layer, ops, states, extra, reuse=reuse)
                bar.update(1)
            self._add("noisy", t1)
            del programmed
        self._attended = []

    def _add(self, key: str, since: tuple[float, float]) -> tuple[float, float]:
        now = _clock()
        self.seconds[key] += now[0] - since[0]
        self.cpu_seconds[key] += now[1] - since[1]
        return now

    def _lowbit(self, w: np.ndarray) -> np.ndarray:
        """Per-channel integer weights; records the worst |W - Q(W)| over its bound (<= 1 by construction;
        computed in float64, before the weights are rounded to float32 for use)."""
        w64 = w.astype(np.float64)
        q = lowbit(w64, self.digital_weight_bits)
        bound = np.abs(w64).max(axis=1, keepdims=True) / (2 * (2 ** (self.digital_weight_bits - 1) - 1))
        ratio = np.abs(w64 - q)[bound[:, 0] > 0] / bound[bound[:, 0] > 0]
        self.quant_error_ratio = max(self.quant_error_ratio, float(ratio.max()) if ratio.size else 0.0)
        return q.astype(np.float32)

    def _program(self, m: Matrix, w: np.ndarray, noise_seed: int) -> AnalogMatrix:
        rng = NormalStream([self.seed, noise_seed, self.index[m.name], 0])
        return program_matrix(w, self.phys, rng, self.be)

    def _advance(self, v: Variant, layer: int, ops: dict[str, Op], states: dict, extra: dict,
                 keep: bool = False, reuse: bool = False) -> None:
        """One layer for variant ``v``, batch by batch. ``keep``: remember each batch's attention output
        (the clean pass, for variants that share it); ``reuse``: take it from there instead."""
        self._current = v
        h = states[v]
        b = self.batch_sequences
        parts, routes = [], []
        if keep:
            self._attended = []
        for i, start in enumerate(range(0, h.shape[0], b)):
            attended = self._attended[i] if reuse else self._attend(h[start:start + b], layer, ops, extra)
            if keep:
                self._attended.append(attended)
            out, route = self._feed_forward(*attended, layer, ops)
            parts.append(out)
            if route is not None:
                routes.append(route)
        states[v] = parts[0] if len(parts) == 1 else self.be.xp.concat(parts, axis=0)
        if routes:
            self.routes[v][layer] = (np.concatenate([r[0] for r in routes]), np.concatenate([r[1] for r in routes]))

    # ------------------------------------------------------------------ one decoder layer
    def _block(self, h: Any, layer: int, ops: dict[str, Op], extra: dict) -> tuple[Any, tuple | None]:
        return self._feed_forward(*self._attend(h, layer, ops, extra), layer, ops)

    def _attend(self, h: Any, layer: int, ops: dict[str, Op], extra: dict) -> tuple[Any, Any]:
        """The attention half of a decoder layer: the residual stream after it, and the normalised input
        of the feed-forward half ``[b * T, H]``."""
        xp, a, shape = self.be.xp, self.arch, self.arch.shape
        b, T, H = h.shape
        L = f"L{layer}"
        x = _rms(h, extra["input_layernorm.weight"], a.rms_norm_eps, xp)
        x2 = xp.reshape(x, (b * T, H))
        qkv = []
        for name in ("q_proj", "k_proj", "v_proj"):
            y = ops[f"{L}.attn.{name}"](x2)
            bias = extra.get(f"self_attn.{name}.bias")
            qkv.append(y + bias if bias is not None else y)
        q, k, v = qkv
        if a.qk_norm == "full":
            q = _rms(q, extra["self_attn.q_norm.weight"], a.rms_norm_eps, xp)
            k = _rms(k, extra["self_attn.k_norm.weight"], a.rms_norm_eps, xp)
        if a.clip_qkv is not None:
            q, k, v = (xp.clip(t, -a.clip_qkv, a.clip_qkv) for t in (q, k, v))
        nh, nkv, hd = shape.num_heads, shape.num_kv_heads, shape.head_dim
        q = xp.reshape(q, (b, T, nh, hd))
        k = xp.reshape(k, (b, T, nkv, hd))
        v = xp.reshape(v, (b, T, nkv, hd))
        if a.qk_norm == "head":
            q = _rms(q, extra["self_attn.q_norm.weight"], a.rms_norm_eps, xp)
            k = _rms(k, extra["self_attn.k_norm.weight"], a.rms_norm_eps, xp)
        cos, sin = self._rope(T, hd)
        q, k = _rotate(q, cos, sin, xp), _rotate(k, cos, sin, xp)
        ctx = _attention(q, k, v, xp)                                   # [b, T, nh * hd]
        o = ops[f"{L}.attn.o_proj"](xp.reshape(ctx, (b * T, nh * hd)))
        h = h + xp.reshape(o, (b, T, H))
        x2 = xp.reshape(_rms(h, extra["post_attention_layernorm.weight"], a.rms_norm_eps, xp), (b * T, H))
        return h, x2

    def _feed_forward(self, h: Any, x2: Any, layer: int, ops: dict[str, Op]) -> tuple[Any, tuple | None]:
        xp, shape = self.be.xp, self.arch.shape
        b, T, H = h.shape
        L = f"L{layer}"
        route = None
        if layer in shape.moe_layers:
            y, route = self._moe(x2, L, ops)
        else:
            y = _swiglu(x2, ops, f"{L}.mlp", xp)
        return h + xp.reshape(y, (b, T, H)), route

    def _moe(self, x2: Any, L: str, ops: dict[str, Op]) -> tuple[Any, tuple[np.ndarray, np.ndarray]]:
        xp, be, shape = self.be.xp, self.be, self.arch.shape
        logits = ops[f"{L}.router"](x2)
        probs = _softmax(logits, xp)
        top = _top_k(probs, shape.top_k, xp)
        w = xp.take_along_axis(probs, top, axis=1)
        if shape.norm_topk_prob:
            w = w / xp.sum(w, axis=1, keepdims=True)
        w = w * self.arch.routed_scaling_factor
        top_np = be.numpy(top)
        out = xp.zeros(x2.shape, dtype=x2.dtype, **({} if be.device is None else {"device": be.device}))
        # tokens grouped by expert (ascending token order within each, as np.nonzero(top == e) gives)
        order = np.argsort(top_np.reshape(-1), kind="stable")
        bounds = np.concatenate([[0], np.cumsum(np.bincount(top_np.reshape(-1), minlength=shape.num_experts))])
        for e in range(shape.num_experts):
            pos = order[bounds[e]:bounds[e + 1]]
            if pos.size == 0:
                continue
            tok, slot = np.divmod(pos, shape.top_k)
            ti = tok if be.device is None else xp.asarray(tok, device=be.device)
            si = slot if be.device is None else xp.asarray(slot, device=be.device)
            if self.capture_expert_inputs and self._current.placement is None:
                key = (int(L[1:]), e)
                have = self.expert_inputs.get(key)
                room = self.capture_expert_inputs - (0 if have is None else have.shape[0])
                if room > 0:
                    got = be.numpy(x2[ti][:room])
                    self.expert_inputs[key] = got if have is None else np.concatenate([have, got])
            ye = _swiglu(x2[ti], ops, f"{L}.E{e}", xp)
            out[ti] = out[ti] + ye * w[ti, si][:, None]
        if shape.shared_expert_width:
            s = _swiglu(x2, ops, f"{L}.shared", xp)
            if shape.shared_expert_gate:
                s = s * _sigmoid(ops[f"{L}.shared.gate"](x2), xp)
            out = out + s
        return out, (top_np.astype(np.int16), be.numpy(w).astype(np.float32))

    def _rope(self, T: int, hd: int) -> tuple[Any, Any]:
        inv = (1.0 / (self.arch.rope_theta ** (np.arange(0, hd, 2, dtype=np.int64).astype(np.float32) / hd)))
        freqs = np.outer(np.arange(T, dtype=np.float32), inv.astype(np.float32)).astype(np.float32)
        emb = np.concatenate([freqs, freqs], axis=1)
        return self.be.asarray(np.cos(emb)), self.be.asarray(np.sin(emb))

    # ------------------------------------------------------------------ final norm, lm_head, metrics
    def _head(self, ids: np.ndarray, variants: list[Variant], states: dict, bar: Any) -> dict[Variant, Tally]:
        be, xp, shape = self.be, self.be.xp, self.arch.shape
        norm = be.asarray(self._load("model.norm.weight"))
        lm = next(m for m in shape.matrices if m.module == LM_HEAD)
        w = self._load(self.arch.tensor(lm))
        exact = be.asarray(w)
        low = be.asarray(self._lowbit(w)) if self.digital_weight_bits < 16 else exact
        ops: dict[Variant, Op] = {variants[0]: _dense(exact)}
        for k, noise_seed in enumerate(self.noise_seeds):
            t0 = _clock()
            am = (self._program(lm, w, noise_seed)
                  if any(not p.is_digital(lm) for p in self.placements) else None)
            self._add("program", t0)
            for p, placement in enumerate(self.placements):
                rng = NormalStream([self.seed, noise_seed, self.index[lm.name], 1])
                ops[Variant(p, k)] = (_dense(low) if placement.is_digital(lm)
                                      else _analog(am, self.phys, be.normal(rng), be))
        tallies = {v: Tally() for v in variants}
        self.logits: dict[Variant, list[np.ndarray]] = {v: [] for v in variants}
        target = ids[:, 1:]
        S, T = target.shape
        # logits are [sequences x length x vocab]: take as many sequences as keep one chunk near 16 MiB
        per = max(1, min(self.batch_sequences, HEAD_CHUNK_ELEMENTS // (T * shape.vocab_size)))
        for start in range(0, S, per):
            tgt = target[start:start + per].reshape(-1)
            tgt_b = tgt if be.device is None else xp.asarray(tgt, device=be.device)
            rows = xp.arange(tgt.size, **({} if be.device is None else {"device": be.device}))
            clean_lp = None
            for v in variants:
                t0 = _clock()
                h = states[v][start:start + per]
                x = xp.reshape(_rms(h, norm, self.arch.rms_norm_eps, xp), (-1, shape.hidden_size))
                logits = ops[v](x)
                if self.keep_logits:
                    self.logits[v].append(be.numpy(logits).reshape(h.shape[0], h.shape[1], -1))
                lp = _log_softmax(logits, xp)
                t = tallies[v]
                t.ce_nats += -float(xp.sum(lp[rows, tgt_b]))
                t.tokens += int(tgt.size)
                if clean_lp is None:
                    clean_lp, clean_arg, clean_p = lp, xp.argmax(lp, axis=1), xp.exp(lp)
                    t.agree += int(tgt.size)
                    self._add("clean", t0)
                    continue
                t.kl_nats += float(xp.sum(clean_p * (clean_lp - lp)))
                t.agree += int(xp.sum(xp.astype(xp.argmax(lp, axis=1) == clean_arg, xp.int64)))
                self._add("noisy", t0)
        bar.update(len(variants))
        return tallies


# ----------------------------------------------------------------------------- exact building blocks

def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _dense(w: Any) -> Op:
    return lambda x: x @ w.T


def _analog(m: AnalogMatrix, phys: SlotPhysics, normal: Callable, be: Backend) -> Op:
    return lambda x: analog_apply(x, m, phys, normal, be)


def _top_k(probs: Any, k: int, xp: Any) -> Any:
    """Indices of each row's ``k`` largest probabilities, largest first, ties to the lower index (a
    stable descending sort's first ``k``). On numpy: ``k`` arg-max passes, each masking its pick
    (probabilities are >= 0, so -1 masks), which is the same selection and order."""
    if not isinstance(probs, np.ndarray):
        return xp.argsort(-probs, axis=1, stable=True)[:, :k]
    p = probs.copy()
    rows = np.arange(p.shape[0])
    top = np.empty((p.shape[0], k), np.int64)
    for j in range(k):
        top[:, j] = a = np.argmax(p, axis=1)
        p[rows, a] = -1.0
    return top


def _rms(x: Any, weight: Any, eps: float, xp: Any) -> Any:
    if isinstance(x, np.ndarray):
        ms = np.einsum("...i,...i->...", x, x)[..., None] / np.float32(x.shape[-1])
        out = x / np.sqrt(ms + np.float32(eps))
        out *= weight
        return out
    var = xp.mean(x * x, axis=-1, keepdims=True)
    return weight * (x / xp.sqrt(var + eps))


def _rotate(x: Any, cos: Any, sin: Any, xp: Any) -> Any:
    """RoPE on ``x [b, T, heads, hd]`` (Hugging Face ``rotate_half`` convention)."""
    half = x.shape[-1] // 2
    if isinstance(x, np.ndarray) and x.dtype == np.float32:
        out = np.empty_like(x)
        _rope_kernel()(np.ascontiguousarray(x), np.ascontiguousarray(cos, np.float32),
                       np.ascontiguousarray(sin, np.float32), out)
        return out
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    rot = xp.concat([-x[..., half:], x[..., :half]], axis=-1)
    return x * c + rot * s


def _rope_loop(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, out: np.ndarray) -> None:
    """:func:`_rotate` in one pass: ``out = x * cos + rotate_half(x) * sin``, the same float32 products
    and sums (``rotate_half(x) * sin`` is ``-x2 * sin`` in the first half, exactly)."""
    b, T, nh, hd = x.shape
    half = hd // 2
    for i in range(b):
        for t in range(T):
            c, s = cos[t], sin[t]
            for h in range(nh):
                xi, oi = x[i, t, h], out[i, t, h]
                for j in range(half):
                    oi[j] = xi[j] * c[j] + (-xi[j + half]) * s[j]
                    oi[j + half] = xi[j + half] * c[j + half] + xi[j] * s[j + half]


@lru_cache(maxsize=None)
def _rope_kernel() -> Callable:
    import numba

    return numba.njit(cache=True, error_model="numpy")(_rope_loop)


ATTENTION_SCORES = 1 << 20      # scores per block of the causal attention (4 MiB in float32: cache-sized)


def _attention(q: Any, k: Any, v: Any, xp: Any) -> Any:
    """Causal grouped-query attention; ``q [b, T, nh, hd]``, ``k, v [b, T, nkv, hd]`` -> ``[b, T, nh*hd]``.

    Queries go in blocks of rows (as many as keep a block's scores near :data:`ATTENTION_SCORES`, at
    least 16), each against the keys up to its last row (the causal triangle, about half of the
    ``T x T`` scores, is never computed); the scale ``1/sqrt(hd)`` is applied to the queries, the mask
    only to each block's diagonal square."""
    b, T, nh, hd = q.shape
    rows = max(16, ATTENTION_SCORES // max(1, b * nh * T) // 16 * 16)
    nkv = k.shape[2]
    g = nh // nkv
    qh = xp.reshape(xp.permute_dims(q, (0, 2, 1, 3)), (b, nkv, g, T, hd)) * (1.0 / sqrt(hd))
    kt = xp.permute_dims(k, (0, 2, 3, 1))[:, :, None]                   # [b, nkv, 1, hd, T]
    vh = xp.permute_dims(v, (0, 2, 1, 3))[:, :, None]                   # [b, nkv, 1, T, hd]
    numpy = isinstance(q, np.ndarray)
    parts = []
    for c0 in range(0, T, rows):
        c1 = min(T, c0 + rows)
        scores = qh[..., c0:c1, :] @ kt[..., :c1]                       # [b, nkv, g, c1 - c0, c1]
        keep = np.arange(c1)[None, :] <= np.arange(c0, c1)[:, None]
        if numpy:
            diag = scores[..., c0:c1]
            diag += np.where(keep[:, c0:c1], np.float32(0.0), np.float32(-np.inf))
            p = _softmax_inplace(scores)
        else:
            scores = xp.where(xp.asarray(keep, **_dev(scores)), scores,
                              xp.asarray(-np.inf, dtype=scores.dtype, **_dev(scores)))
            p = _softmax(scores, xp)
        parts.append(p @ vh[..., :c1, :])
    ctx = parts[0] if len(parts) == 1 else xp.concat(parts, axis=3)
    ctx = xp.reshape(ctx, (b, nh, T, hd))
    return xp.reshape(xp.permute_dims(ctx, (0, 2, 1, 3)), (b, T, nh * hd))


def _softmax_inplace(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis of a numpy array, overwriting it."""
    np.subtract(x, x.max(axis=-1, keepdims=True), out=x)
    np.exp(x, out=x)
    x *= np.float32(1.0) / x.sum(axis=-1, keepdims=True)
    return x


def _dev(a: Any) -> dict:
    return {} if isinstance(a, np.ndarray) else {"device": a.device}


def _softmax(x: Any, xp: Any) -> Any:
    e = xp.exp(x - xp.max(x, axis=-1, keepdims=True))
    return e / xp.sum(e, axis=-1, keepdims=True)


def _log_softmax(x: Any, xp: Any) -> Any:
    z = x - xp.max(x, axis=-1, keepdims=True)
    return z - xp.log(xp.sum(xp.exp(z), axis=-1, keepdims=True))


def _sigmoid(x: Any, xp: Any) -> Any:
    return 1.0 / (1.0 + xp.exp(-x))


def _swiglu(x: Any, ops: dict[str, Op], prefix: str, xp: Any) -> Any:
    g = ops[f"{prefix}.gate_proj"](x)
    return ops[f"{prefix}.down_proj"](g * _sigmoid(g, xp) * ops[f"{prefix}.up_proj"](x))


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, show: bool) -> Any:
    if not show:
        return _NoBar()
    from arch.progress import progress

    return progress(total, "forward (layer x variant)", "steps", leave=True)

