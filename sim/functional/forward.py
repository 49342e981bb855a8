"""The forward pass: a whole evaluation set through the model, layer by layer, for many variants at once.

A *variant* is the clean model or one (placement, noise seed) pair. All variants advance through
the model in lockstep: a layer's weights are read once from the checkpoint, each noise seed's
analog matrices are programmed once and shared by every placement that puts them on tiles, and
then every variant's hidden states pass through the layer. Memory therefore stays near one layer's
weights (clean plus one seed's programmed copy) plus the hidden states ``[sequences, length,
hidden]`` of each variant.

Common random numbers: the programming draw of a matrix comes from a generator seeded by
``(seed, noise seed, matrix index, 0)`` and its per-MVM draws from ``(seed, noise seed, matrix
index, 1)``, whatever the placement; so two placements differ only in which matrices are analog.

Weight-static matrices run as the placement says: digital ones exact (or ``digital_weight_bits``
wide, per output channel), analog ones through :mod:`arch.noise` per crossbar slot. Embedding
lookup, norms, RoPE, attention products, softmax, routing top-k and activations are exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import sqrt
from pathlib import Path
from typing import Any, Callable

import numpy as np

from arch.noise import SlotPhysics
from workloads.checkpoints.tensors import CheckpointError, TensorRef, index_checkpoint, load_tensor
from workloads.shapes import LM_HEAD, Matrix
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
        self.refs = index_checkpoint(self.checkpoint)
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
        low = ({name: be.asarray(self._lowbit(w)) for name, w in weights.items()}
               if self.digital_weight_bits < 16 else exact)
        prefix = f"model.layers.{layer}."
        extra = {name[len(prefix):]: be.asarray(load_tensor(ref)) for name, ref in self.refs.items()
                 if name.startswith(prefix) and name.endswith(("norm.weight", ".bias"))}
        self._advance(Variant(None, None), layer, {m.name: _dense(exact[m.name]) for m in mats}, states, extra)
        bar.update(1)
        for k, noise_seed in enumerate(self.noise_seeds):
            needed = {m.name for m in mats for p in self.placements if not p.is_digital(m)}
            programmed = {m.name: self._program(m, weights[m.name], noise_seed) for m in mats if m.name in needed}
            for p, placement in enumerate(self.placements):
                v = Variant(p, k)
                if v in self._aliased and all(placement.is_digital(m) for m in mats):
                    states[v] = states[Variant(None, None)]
                    if layer in self.routes[Variant(None, None)]:
                        self.routes[v][layer] = self.routes[Variant(None, None)][layer]
                    bar.update(1)
                    continue
                self._aliased.discard(v)
                ops = {}
                for m in mats:
                    if placement.is_digital(m):
                        ops[m.name] = _dense(low[m.name])
                    else:
                        rng = np.random.default_rng([self.seed, noise_seed, self.index[m.name], 1])
                        ops[m.name] = _analog(programmed[m.name], self.phys, be.normal(rng), be)
                self._advance(Variant(p, k), layer, ops, states, extra)
                bar.update(1)
            del programmed

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
        rng = np.random.default_rng([self.seed, noise_seed, self.index[m.name], 0])
        return program_matrix(w, self.phys, rng, self.be)

    def _advance(self, v: Variant, layer: int, ops: dict[str, Op], states: dict, extra: dict) -> None:
        self._current = v
        h = states[v]
        b = self.batch_sequences
        parts, routes = [], []
        for start in range(0, h.shape[0], b):
            out, route = self._block(h[start:start + b], layer, ops, extra)
            parts.append(out)
            if route is not None:
                routes.append(route)
        states[v] = parts[0] if len(parts) == 1 else self.be.xp.concat(parts, axis=0)
        if routes:
            self.routes[v][layer] = (np.concatenate([r[0] for r in routes]), np.concatenate([r[1] for r in routes]))

    # ------------------------------------------------------------------ one decoder layer
    def _block(self, h: Any, layer: int, ops: dict[str, Op], extra: dict) -> tuple[Any, tuple | None]:
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
        top = xp.argsort(-probs, axis=1, stable=True)[:, : shape.top_k]
        w = xp.take_along_axis(probs, top, axis=1)
        if shape.norm_topk_prob:
            w = w / xp.sum(w, axis=1, keepdims=True)
        w = w * self.arch.routed_scaling_factor
        top_np = be.numpy(top)
        out = xp.zeros(x2.shape, dtype=x2.dtype, **({} if be.device is None else {"device": be.device}))
        for e in range(shape.num_experts):
            tok, slot = np.nonzero(top_np == e)
            if tok.size == 0:
                continue
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
            am = (self._program(lm, w, noise_seed)
                  if any(not p.is_digital(lm) for p in self.placements) else None)
            for p, placement in enumerate(self.placements):
                rng = np.random.default_rng([self.seed, noise_seed, self.index[lm.name], 1])
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
                    clean_lp, clean_arg = lp, xp.argmax(lp, axis=1)
                    t.agree += int(tgt.size)
                    continue
                t.kl_nats += float(xp.sum(xp.exp(clean_lp) * (clean_lp - lp)))
                t.agree += int(xp.sum(xp.astype(xp.argmax(lp, axis=1) == clean_arg, xp.int64)))
        bar.update(len(variants))
        return tallies


# ----------------------------------------------------------------------------- exact building blocks

def _dense(w: Any) -> Op:
    return lambda x: x @ w.T


def _analog(m: AnalogMatrix, phys: SlotPhysics, normal: Callable, be: Backend) -> Op:
    return lambda x: analog_apply(x, m, phys, normal, be)


def _rms(x: Any, weight: Any, eps: float, xp: Any) -> Any:
    var = xp.mean(x * x, axis=-1, keepdims=True)
    return weight * (x / xp.sqrt(var + eps))


def _rotate(x: Any, cos: Any, sin: Any, xp: Any) -> Any:
    """RoPE on ``x [b, T, heads, hd]`` (Hugging Face ``rotate_half`` convention)."""
    half = x.shape[-1] // 2
    rot = xp.concat([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[None, :, None, :] + rot * sin[None, :, None, :]


def _attention(q: Any, k: Any, v: Any, xp: Any) -> Any:
    """Causal grouped-query attention; ``q [b, T, nh, hd]``, ``k, v [b, T, nkv, hd]`` -> ``[b, T, nh*hd]``."""
    b, T, nh, hd = q.shape
    nkv = k.shape[2]
    g = nh // nkv
    qh = xp.reshape(xp.permute_dims(q, (0, 2, 1, 3)), (b, nkv, g, T, hd))
    kh = xp.permute_dims(k, (0, 2, 1, 3))[:, :, None]
    vh = xp.permute_dims(v, (0, 2, 1, 3))[:, :, None]
    scores = (qh @ xp.matrix_transpose(kh)) * (1.0 / sqrt(hd))
    mask = xp.asarray(np.tril(np.ones((T, T), bool)), **_dev(scores))
    scores = xp.where(mask, scores, xp.asarray(-np.inf, dtype=scores.dtype, **_dev(scores)))
    p = _softmax(scores, xp)
    ctx = xp.reshape(p @ vh, (b, nh, T, hd))
    return xp.reshape(xp.permute_dims(ctx, (0, 2, 1, 3)), (b, T, nh * hd))


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
    from tqdm import tqdm

    return tqdm(total=total, desc="forward (layer x variant)", unit="step")

