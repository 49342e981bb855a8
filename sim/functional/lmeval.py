"""hetmoe's noisy model inside EleutherAI's lm-evaluation-harness (``lm-eval``): benchmark accuracy per placement.

:class:`HetmoeLM` is an lm-eval model registered as ``hetmoe``: one checkpoint, one placement, one noise
seed, run through hetmoe's own forward pass (:class:`~sim.functional.forward.ForwardRun`, the noise model
of ``arch.noise``, placements of ``sim.placement``). Its ``model_args``::

    checkpoint=DIR        Hugging Face MoE checkpoint (config.json, *.safetensors)          (required)
    hw=NAME|FILE          hardware preset or YAML: analog.noise, converter bits, tile size   (hermes-64)
    set=K.P=V;K.P=V       hardware YAML overrides, ';'-separated, e.g. set=analog.adc.bits=6
    policy=NAME           placement policy (all-digital, all-analog, maxnn, random, ...)    (all-digital)
    fraction=F            digital share of routed experts for the budget policies           (0.125)
    score, scope, placement_file, trace   as ``hetmoe accuracy`` (gate_rows, layer)
    noise_seed=N          the noise seed: the same N gives the same chip as ``hetmoe accuracy`` (0)
    seed=N                base seed of the noise draws and of the random policy             (0)
    digital_weight_bits=4|8|16   digital matrices' weights (the hardware's precision.digital_weight_bits)
    backend=numpy|cpu|cuda       array backend (torch for cpu/cuda)                         (numpy)
    tokenizer=bytes|FILE  tokenizer.json (default: the checkpoint's tokenizer.json; without one, the UTF-8
                          bytes as ids 0-255, for a byte-level model, as ``hetmoe accuracy --tokenizer bytes``)
    max_length=N          context window (default: config.json's max_position_embeddings, else 2048)
    prefix_token_id=N     token that conditions empty contexts and rolling windows (default: config.json's
                          bos_token_id, else eos_token_id, else the tokenizer's, else '\\n' for bytes)
    chunk_tokens=N        tokens per forward call (rows x longest row; default 2048): results depend on it
    batch_sequences=N     sequences per layer step inside a forward call                    (8)

lm-eval's own ``batch_size`` and ``device`` are accepted and ignored (use ``backend=`` and ``chunk_tokens=``).

Scope: log-likelihood requests, i.e. multiple-choice and loglikelihood tasks (HellaSwag, ARC, PIQA,
WinoGrande, MMLU, LAMBADA, ...) and rolling perplexity tasks (wikitext). ``generate_until`` tasks (GSM8K,
...) raise :class:`NotImplementedError`: the noisy pass has no KV cache, so greedy decoding would rerun the
whole prefix once per generated token.

Scoring follows lm-eval's Hugging Face backend (``hf``) token for token: lm-eval's context/continuation split
(``TemplateLM._encode_pair``); the model sees ``(context + continuation)[-(max_length + 1):][:-1]``; the
result is the sum of the continuation tokens' log-probabilities and whether every one of them is the
arg-max; rolling requests use lm-eval's disjoint rolling windows of ``max_length`` behind the prefix token.

Batching and noise: the unique token sequences of one lm-eval call are sorted (longest first, then by
tokens) and cut into chunks of at most ``chunk_tokens`` tokens; each chunk is one ``ForwardRun.run``,
right-padded (causal attention and per-token routing keep padding out of every scored position). The
programming draws depend on ``(seed, noise seed, matrix)`` alone, so every chunk runs on the same
programmed chip; the per-MVM read-noise draws restart with each chunk. A variant's numbers depend only
on its own placement and seed and on the requests scored together, never on which other placements or
seeds run beside it: ``hetmoe accuracy --tasks`` (every placement x seed at once) and ``lm-eval --model
hetmoe`` (one of them) give the same numbers for the same tasks.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from arch import load_chip
from arch.errors import HetmoeError
from arch.noise import slot_physics
from arch.spec import ChipSpec
from arch.yamlsource import nested_overrides
from workloads.checkpoints.stats import compute_stats
from workloads.traces.readers import read_trace
from workloads.traces.synthetic import SyntheticSpec, synthesize

from ..placement import POLICIES, Placement, PlacementContext, place
from .architecture import read_architecture
from .backend import backend
from .evaluate import PlacementRequest
from .forward import ForwardRun, Variant

INSTALL_HINT = ("lm-eval is an optional extra of hetmoe: pip install 'hetmoe[lmeval]' "
                "(or: pip install lm-eval tokenizers)")

try:
    import lm_eval
    from lm_eval import utils as lm_utils
    from lm_eval.api.model import TemplateLM
    from lm_eval.api.registry import register_model
except ImportError as exc:       # pragma: no cover - the caller checks first
    raise ImportError(INSTALL_HINT) from exc

BYTES = "bytes"
DEFAULT_MAX_LENGTH = 2048
DEFAULT_CHUNK_TOKENS = 2048
LOGITS_BUDGET_BYTES = 2 << 30      # kept logits per forward call (variants are split into groups to fit)
CLEAN: tuple[None, None] = (None, None)
GENERATION_SCOPE = ("hetmoe's lm-eval model scores log-likelihoods (multiple-choice, loglikelihood and rolling "
                    "perplexity tasks); generate_until tasks are not supported: the noisy forward pass has no KV "
                    "cache, so greedy decoding would rerun the whole prefix for every generated token")

Key = tuple[Any, Any]       # CLEAN, or (placement index, noise seed)


class LMEvalError(HetmoeError):
    """A model argument, tokenizer or task that hetmoe's lm-eval model cannot use."""


# ----------------------------------------------------------------------------- tokenisation

@dataclass(frozen=True, eq=False)
class TextTokenizer:
    """UTF-8 bytes (``tok`` None) or a Hugging Face ``tokenizer.json`` (the ``tokenizers`` package)."""

    name: str
    tok: Any = None
    bos_id: int | None = None
    eos_id: int | None = None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if self.tok is None:
            return list(text.encode("utf-8"))
        return list(self.tok.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        if self.tok is None:
            return bytes(int(i) for i in ids).decode("utf-8", errors="replace")
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _first_int(v: Any) -> int | None:
    if isinstance(v, list):
        v = v[0] if v else None
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def load_tokenizer(spec: str | None, checkpoint: str | Path, vocab_size: int) -> TextTokenizer:
    """``spec``: ``bytes``, a tokenizer.json path, or None (the checkpoint's tokenizer.json, else bytes)."""
    ckpt = Path(checkpoint)
    if spec is None:
        spec = str(ckpt / "tokenizer.json") if (ckpt / "tokenizer.json").is_file() else BYTES
    tok = None
    if spec == BYTES:
        if vocab_size < 256:
            raise LMEvalError(f"{ckpt}: no tokenizer.json, and byte-level ids need a vocabulary of 256, the config "
                              f"has {vocab_size}; give tokenizer=FILE")
    else:
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise LMEvalError(f"tokenizer {spec} needs the 'tokenizers' package: {INSTALL_HINT}") from None
        try:
            tok = Tokenizer.from_file(str(spec))
        except Exception as exc:  # noqa: BLE001 - the tokenizers package raises its own exception types
            raise LMEvalError(f"{spec}: not a tokenizer.json ({exc})") from None
    cfg = {**_read_json(ckpt / "generation_config.json"), **{k: v for k, v in _read_json(ckpt / "config.json").items()
                                                            if v is not None}}
    bos, eos = _first_int(cfg.get("bos_token_id")), _first_int(cfg.get("eos_token_id"))
    if tok is not None and (bos is None or eos is None):
        tcfg = _read_json(ckpt / "tokenizer_config.json")

        def special(name: str) -> int | None:
            v = tcfg.get(name)
            v = v.get("content") if isinstance(v, dict) else v
            return tok.token_to_id(v) if isinstance(v, str) else None

        bos = bos if bos is not None else special("bos_token")
        eos = eos if eos is not None else special("eos_token")
    return TextTokenizer(spec, tok, bos, eos)


def context_length(checkpoint: str | Path) -> int:
    """The model's context window as lm-eval's ``hf`` backend reads it from config.json (else 2048)."""
    cfg = _read_json(Path(checkpoint) / "config.json")
    for source in (cfg.get("text_config") or {}, cfg):
        for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
            if isinstance(source.get(attr), int):
                return int(source[attr])
    return DEFAULT_MAX_LENGTH


def parse_set(text: str | None) -> dict[str, Any]:
    """``a.b=1;c.d=x`` (the ``set`` model argument) into the nested overrides dict of ``load_chip``."""
    items = [s for s in str(text or "").split(";") if s.strip()]
    return nested_overrides(items, "set", "several separated by ';'")


# ----------------------------------------------------------------------------- scoring

class TokenScorer:
    """Log-likelihoods of token continuations under the clean model and every (placement, noise seed).

    ``score`` takes ``(sequence, n)`` pairs: the model reads ``sequence[:-1]`` and the result is the sum
    of the log-probabilities of the last ``n`` tokens and whether each of them is the arg-max. Results
    are cached per (sequence, n), for every variant at once."""

    def __init__(self, checkpoint: str | Path, chip: ChipSpec, placements: list[Placement], noise_seeds: list[int], *,
                 seed: int = 0, device: str = "numpy", digital_weight_bits: int | None = None,
                 batch_sequences: int = 8, chunk_tokens: int = DEFAULT_CHUNK_TOKENS, progress: bool = False) -> None:
        if chunk_tokens < 1 or batch_sequences < 1:
            raise LMEvalError(f"chunk_tokens {chunk_tokens} and batch_sequences {batch_sequences}: allowed >= 1")
        self.checkpoint = Path(checkpoint)
        self.arch = read_architecture(self.checkpoint)
        self.phys = slot_physics(chip)
        self.be = backend(device)
        self.bits = chip.precision.digital_weight_bits if digital_weight_bits is None else int(digital_weight_bits)
        if self.bits not in (4, 8, 16):
            raise LMEvalError(f"digital_weight_bits {self.bits}: allowed 4, 8, 16")
        self.seed, self.noise_seeds = int(seed), [int(s) for s in noise_seeds]
        self.batch_sequences, self.chunk_tokens, self.progress = int(batch_sequences), int(chunk_tokens), progress
        # placements with the same digital set run once (their numbers are the same)
        keys = [(p.digital_experts.tobytes(), tuple(sorted(p.digital_modules))) for p in placements]
        distinct = list(dict.fromkeys(keys))
        self.slot = [distinct.index(k) for k in keys]
        self.distinct = [placements[keys.index(k)] for k in distinct]
        # each forward call keeps [rows, length, vocab] float32 logits per variant: group the variants to fit
        per_variant = self.chunk_tokens * self.arch.shape.vocab_size * 4
        size = max(1, LOGITS_BUDGET_BYTES // per_variant - 1)
        self.groups = [(list(range(i, min(i + size, len(self.distinct)))), s)
                       for s in self.noise_seeds for i in range(0, len(self.distinct), size)]
        self.runs: dict[int, ForwardRun] = {}
        self.progress_file: Any = None      # where the progress bar goes (None: sys.stderr when it starts)
        self.cache: dict[tuple[tuple[int, ...], int], dict[Key, tuple[float, bool]]] = {}
        self.quant_error_ratio = 0.0

    def variant_keys(self) -> list[Key]:
        return [CLEAN] + [(p, s) for s in self.noise_seeds for p in range(len(self.slot))]

    def _run(self, g: int) -> ForwardRun:
        if g not in self.runs:
            idx, s = self.groups[g]
            self.runs[g] = ForwardRun(self.arch, self.checkpoint, self.phys, [self.distinct[i] for i in idx], [s],
                                      self.be, seed=self.seed, digital_weight_bits=self.bits,
                                      batch_sequences=self.batch_sequences, keep_logits=True)
        return self.runs[g]

    def chunks(self, seqs: Iterable[tuple[int, ...]]) -> list[list[tuple[int, ...]]]:
        """Unique sequences, longest first (then by tokens), cut into chunks of <= chunk_tokens tokens."""
        out: list[list[tuple[int, ...]]] = []
        for s in sorted(set(seqs), key=lambda s: (-len(s), s)):
            if out and (len(out[-1]) + 1) * len(out[-1][0]) <= self.chunk_tokens:
                out[-1].append(s)
            else:
                out.append([s])
        return out

    def score(self, items: list[tuple[tuple[int, ...], int]]) -> list[dict[Key, tuple[float, bool]]]:
        vocab = self.arch.shape.vocab_size
        wanted: dict[tuple[int, ...], set[int]] = {}
        for seq, n in items:
            if len(seq) < 2 or not 1 <= n < len(seq):
                raise LMEvalError(f"a scored sequence needs >= 1 context and >= 1 continuation token "
                                  f"(got {len(seq)} tokens, {n} continuation)")
            if (seq, n) not in self.cache:
                wanted.setdefault(seq, set()).add(n)
        bad = [t for seq in wanted for t in seq if not 0 <= t < vocab]
        if bad:
            raise LMEvalError(f"token id {bad[0]} outside the model's vocabulary [0, {vocab - 1}]: the tokenizer does "
                              f"not belong to this checkpoint (give tokenizer=FILE)")
        chunks = self.chunks(wanted)
        bar = _progress(len(chunks) * len(self.groups), self.progress and bool(chunks), self.progress_file)
        for chunk in chunks:
            ids = np.zeros((len(chunk), len(chunk[0])), np.int64)
            for r, seq in enumerate(chunk):
                ids[r, : len(seq)] = seq
            results = {(seq, n): {} for seq in chunk for n in wanted[seq]}
            for g, (idx, s) in enumerate(self.groups):
                run = self._run(g)
                run.run(ids)
                self.quant_error_ratio = max(self.quant_error_ratio, run.quant_error_ratio)
                variants = [(CLEAN, Variant(None, None))] if g == 0 else []
                variants += [((p, s), Variant(idx.index(self.slot[p]), 0))
                             for p in range(len(self.slot)) if self.slot[p] in idx]
                for key, v in variants:
                    logits = np.concatenate(run.logits[v])           # [rows, length - 1, vocab]
                    for r, seq in enumerate(chunk):
                        lp, greedy = _continuation(logits[r], seq, max(wanted[seq]))
                        for n in wanted[seq]:
                            results[(seq, n)][key] = (float(lp[-n:].sum()), bool(greedy[-n:].all()))
                run.logits = {}
                bar.update(1)
            self.cache.update(results)
        bar.close()
        return [self.cache[(seq, n)] for seq, n in items]


def _continuation(logits: np.ndarray, seq: tuple[int, ...], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Log-probabilities of the last ``n`` tokens of ``seq`` (float64) and whether each is the arg-max."""
    L = len(seq)
    z = logits[L - 1 - n: L - 1].astype(np.float64)                 # positions predicting seq[L-n:]
    target = np.asarray(seq[L - n:], np.int64)
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    return z[np.arange(n), target] - lse, z.argmax(axis=1) == target


# ----------------------------------------------------------------------------- the model of one run

class HetmoeModel:
    """A checkpoint on a chip, its tokenizer and every (placement, noise seed) to score, sharing one scorer."""

    def __init__(self, checkpoint: str | Path, chip: ChipSpec, wanted: list[PlacementRequest], noise_seeds: list[int],
                 *, seed: int = 0, score: str = "gate_rows", scope: str = "layer", placement_file: str | None = None,
                 trace: str | None = None, device: str = "numpy", digital_weight_bits: int | None = None,
                 batch_sequences: int = 8, chunk_tokens: int = DEFAULT_CHUNK_TOKENS, tokenizer: str | None = None,
                 max_length: int | None = None, prefix_token_id: int | None = None, progress: bool = False,
                 stats: Any = None, routes: Any = None) -> None:
        self.checkpoint, self.chip, self.wanted = Path(checkpoint), chip, list(wanted)
        arch = read_architecture(self.checkpoint)
        shape = arch.shape
        for r in self.wanted:
            if r.policy not in POLICIES:
                raise LMEvalError(f"unknown policy {r.policy!r}; valid policies: {', '.join(POLICIES)}")
        self.tokenizer = load_tokenizer(tokenizer, self.checkpoint, shape.vocab_size)
        self.max_length = int(max_length) if max_length else context_length(self.checkpoint)
        if self.max_length < 1:
            raise LMEvalError(f"max_length {self.max_length}: allowed >= 1")
        self._prefix = None if prefix_token_id is None else int(prefix_token_id)
        # the scores and routing trace the budget policies rank by, as hetmoe accuracy reads them
        stats = stats if stats is not None else compute_stats(self.checkpoint, shape, progress=progress)
        if routes is None:
            routes = read_trace(trace, shape) if trace else synthesize(SyntheticSpec(tokens=1024, seed=seed), shape)
        self.placements = [place(r.policy, PlacementContext(shape, routes, stats, r.fraction, r.score or score, scope,
                                                            seed, placement_file)) for r in self.wanted]
        self.scorer = TokenScorer(self.checkpoint, chip, self.placements, noise_seeds, seed=seed, device=device,
                                  digital_weight_bits=digital_weight_bits, batch_sequences=batch_sequences,
                                  chunk_tokens=chunk_tokens, progress=progress)
        self.arch = arch

    @property
    def prefix_token_id(self) -> int:
        """As lm-eval's ``hf``: the given one, else BOS, else EOS; '\\n' for a byte-level model without either."""
        t = self.tokenizer
        for v in (self._prefix, t.bos_id, t.eos_id):
            if v is not None:
                return v
        if t.tok is None:
            return ord("\n")
        raise LMEvalError(f"{t.name} names no BOS or EOS token; give prefix_token_id=N (needed for empty contexts "
                          "and rolling log-likelihoods)")

    def label(self, key: Key) -> str:
        return "clean" if key == CLEAN else f"{self.wanted[key[0]].label}, noise seed {key[1]}"

    def lm(self, key: Key) -> HetmoeLM:
        """An lm-eval model answering as variant ``key`` (every variant is scored by the first call)."""
        return HetmoeLM.view(self, key)


# ----------------------------------------------------------------------------- the lm-eval model

@register_model("hetmoe")
class HetmoeLM(TemplateLM):
    """hetmoe's noisy forward pass as an lm-eval model; see the module docs for ``model_args``."""

    def __init__(self, checkpoint: str | None = None, hw: str = "hermes-64", set: str | None = None,
                 policy: str = "all-digital", fraction: float = 0.125, score: str = "gate_rows", scope: str = "layer",
                 placement_file: str | None = None, trace: str | None = None, noise_seed: int = 0, seed: int = 0,
                 digital_weight_bits: int | None = None, backend: str = "numpy", batch_sequences: int = 8,
                 chunk_tokens: int = DEFAULT_CHUNK_TOKENS, tokenizer: str | None = None, max_length: int | None = None,
                 prefix_token_id: int | None = None, progress: bool = True, batch_size: Any = None,
                 max_batch_size: Any = None, device: Any = None) -> None:
        super().__init__()
        if not checkpoint:
            raise LMEvalError("the hetmoe model needs model_args checkpoint=DIR (a Hugging Face MoE checkpoint)")
        req = PlacementRequest(str(policy), float(fraction))
        chip = load_chip(str(hw), parse_set(set))
        model = HetmoeModel(checkpoint, chip, [req], [int(noise_seed)], seed=int(seed), score=str(score),
                            scope=str(scope), placement_file=placement_file, trace=trace, device=str(backend),
                            digital_weight_bits=None if digital_weight_bits is None else int(digital_weight_bits),
                            batch_sequences=int(batch_sequences), chunk_tokens=int(chunk_tokens), tokenizer=tokenizer,
                            max_length=max_length, prefix_token_id=prefix_token_id, progress=bool(progress))
        self._bind(model, (0, int(noise_seed)))
        print(f"hetmoe: {checkpoint} on {chip.name}: {req.label}, noise seed {int(noise_seed)} "
              f"(base seed {int(seed)}), digital weights {model.scorer.bits}-bit, tokenizer {model.tokenizer.name}, max_length "
              f"{model.max_length}", file=sys.stderr)

    @classmethod
    def view(cls, model: HetmoeModel, key: Key) -> HetmoeLM:
        obj = cls.__new__(cls)
        TemplateLM.__init__(obj)
        obj._bind(model, key)
        return obj

    def _bind(self, model: HetmoeModel, key: Key) -> None:
        self.hetmoe, self.key = model, key

    # -- tokenisation (lm-eval's TemplateLM splits context and continuation with these)
    @property
    def eot_token_id(self) -> int:
        t = self.hetmoe.tokenizer
        return t.eos_id if t.eos_id is not None else self.hetmoe.prefix_token_id

    @property
    def prefix_token_id(self) -> int:
        return self.hetmoe.prefix_token_id

    @property
    def max_length(self) -> int:
        return self.hetmoe.max_length

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, left_truncate_len: int | None = None,
                   **kwargs: Any) -> list[int]:
        t = self.hetmoe.tokenizer
        if add_special_tokens is None:      # as the hf backend: no second BOS when the text starts with one
            add_special_tokens = True
            if t.tok is not None:
                prefix = _maybe_prefix(self.hetmoe)
                if prefix is not None and string.startswith(t.decode([prefix])):
                    add_special_tokens = False
        ids = t.encode(string, add_special_tokens=add_special_tokens)
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def tok_decode(self, tokens: Iterable[int], skip_special_tokens: bool = True) -> str:
        return self.hetmoe.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    # -- requests
    def _loglikelihood_tokens(self, requests: list, disable_tqdm: bool = False,
                              **kwargs: Any) -> list[tuple[float, bool]]:
        items, empty = [], set()
        for i, (_, context_enc, continuation_enc) in enumerate(requests):
            if not continuation_enc:
                empty.add(i)
                continue
            if len(continuation_enc) > self.max_length:
                raise LMEvalError(f"a continuation of {len(continuation_enc)} tokens exceeds max_length "
                                  f"{self.max_length}")
            whole = (list(context_enc) + list(continuation_enc))[-(self.max_length + 1):]
            items.append((tuple(int(t) for t in whole), len(continuation_enc)))
        scored = iter(self.hetmoe.scorer.score(items))
        out = []
        for i, (args, _, _) in enumerate(requests):
            answer = (0.0, True) if i in empty else next(scored)[self.key]
            if args is not None:
                self.cache_hook.add_partial("loglikelihood", args, answer)
            out.append(answer)
        return out

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        windows, owner = [], []
        for i, (string,) in enumerate(req.args for req in requests):
            for context, continuation in map(lm_utils.make_disjoint_window, lm_utils.get_rolling_token_windows(
                    token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append((None, context, continuation))
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, (ll, _) in zip(owner, self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)):
            totals[i] += ll
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        raise NotImplementedError(GENERATION_SCOPE)

    def get_model_info(self) -> dict[str, Any]:
        m = self.hetmoe
        return {"model_name": f"hetmoe {m.checkpoint.name} [{m.label(self.key)}] on {m.chip.name}",
                "model_num_parameters": sum(x.params for x in m.arch.shape.matrices)}


# ----------------------------------------------------------------------------- every placement x seed

def task_manager(tasks: list[str], include_path: str | None = None) -> Any:
    """lm-eval's TaskManager; without lm-eval's own ~15,000 task configs when ``include_path`` holds every task."""
    from lm_eval.tasks import TaskManager

    if include_path:
        local = TaskManager(include_path=include_path, include_defaults=False)
        if all(t in local.all_tasks for t in tasks):
            return local
    tm = TaskManager(include_path=include_path)
    missing = [t for t in tasks if t not in tm.all_tasks]
    if missing:
        where = f" nor in {include_path}" if include_path else " (a local task's folder: --include-path DIR)"
        raise LMEvalError(f"task {missing[0]!r} is not one of lm-eval's {len(tm.all_tasks)} tasks{where}")
    return tm


def check_tasks(tasks: list[str], tm: Any) -> None:
    """Refuse generation tasks before any forward pass runs (this loads the tasks' datasets once)."""
    if hasattr(tm, "load"):                         # lm-eval >= 0.4.10: flat {name: Task}
        leaves = tm.load(list(tasks))["tasks"].items()
    else:                                           # pragma: no cover - older releases: nested dicts
        from lm_eval.tasks import get_task_dict

        def walk(d: Any) -> Iterable[tuple[str, Any]]:
            for k, v in d.items():
                yield from walk(v) if isinstance(v, dict) else [(getattr(k, "group_name", str(k)), v)]

        leaves = walk(get_task_dict(tasks, tm))
    for name, task in leaves:
        kind = getattr(task, "OUTPUT_TYPE", None) or getattr(getattr(task, "config", None), "output_type", None)
        if kind == "generate_until":
            raise LMEvalError(f"task {name} generates text (generate_until): {GENERATION_SCOPE}")


def task_metrics(results: dict[str, Any], tasks: list[str]) -> dict[str, dict[str, float]]:
    """``{task: {metric: value}}`` from lm-eval's ``results`` (the named tasks or groups when present)."""
    res = results["results"]
    names = [t for t in tasks if t in res] or list(res)
    out: dict[str, dict[str, float]] = {}
    for name in names:
        row = {}
        for k, v in res[name].items():
            if "," not in k or "_stderr" in k or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            metric, filt = k.split(",", 1)
            row[metric if filt == "none" else f"{metric}[{filt}]"] = float(v)
        out[name] = row
    return out


def task_stderr(results: dict[str, Any], tasks: list[str]) -> dict[str, dict[str, float]]:
    """lm-eval's own standard error over the examples, per task and metric (where it gives one)."""
    res = results["results"]
    out: dict[str, dict[str, float]] = {}
    for name in [t for t in tasks if t in res] or list(res):
        for k, v in res[name].items():
            if "_stderr," in k and isinstance(v, (int, float)) and not isinstance(v, bool):
                metric, filt = k.split(",", 1)
                metric = metric.replace("_stderr", "")
                out.setdefault(name, {})[metric if filt == "none" else f"{metric}[{filt}]"] = float(v)
    return out


def evaluate_tasks(model: HetmoeModel, tasks: list[str], *, include_path: str | None = None,
                   limit: float | None = None, num_fewshot: int | None = None, reference: int | None = None,
                   bootstrap_iters: int = 1000, tm: Any = None) -> dict[str, Any]:
    """Every (placement, noise seed) of ``model`` through lm-eval's ``simple_evaluate`` on ``tasks``.

    Per placement, task and metric: mean and sample std (ddof 1) over the noise seeds, and the paired
    difference from placement ``reference`` (the all-digital one) on the same seeds, with its std and
    standard error (std / sqrt(seeds)). The clean model (exact weights, no noise) is reported too."""
    from lm_eval.evaluator import simple_evaluate

    if tm is None:
        tm = task_manager(tasks, include_path)
        check_tasks(tasks, tm)
    seeds = model.scorer.noise_seeds
    runs: dict[Key, dict] = {}
    model.scorer.progress_file = sys.stderr
    for key in model.scorer.variant_keys():
        # lm-eval draws three progress bars per run and logs each task's setup: kept out of the terminal, shown
        # only when the run fails (hetmoe's own progress bar still goes to the terminal)
        with contextlib.redirect_stderr(io.StringIO()) as chatter:
            try:
                runs[key] = simple_evaluate(model=model.lm(key), tasks=list(tasks), task_manager=tm, limit=limit,
                                            num_fewshot=num_fewshot, bootstrap_iters=bootstrap_iters,
                                            log_samples=False)
            except BaseException:
                print(chatter.getvalue()[-4000:], file=model.scorer.progress_file)
                raise
    clean = task_metrics(runs[CLEAN], tasks)
    names = list(clean)
    metrics = [(t, m) for t in names for m in clean[t]]
    rows = []
    for p, (req, placement) in enumerate(zip(model.wanted, model.placements)):
        per = {k: task_metrics(runs[(p, s)], tasks) for k, s in enumerate(seeds)}
        ref = {k: task_metrics(runs[(reference, s)], tasks) for k, s in enumerate(seeds)} if reference is not None \
            else None
        row: dict[str, Any] = {"label": req.label, "policy": req.policy, "fraction": req.fraction,
                               "digital_expert_share": placement.summary(model.arch.shape)["digital_expert_share"],
                               "per_seed": {}, "mean": {}, "std": {}, "delta": {}, "examples_stderr": {}}
        for t, m in metrics:
            vals = np.array([per[k][t][m] for k in range(len(seeds))])
            row["per_seed"].setdefault(t, {})[m] = vals.tolist()
            row["mean"].setdefault(t, {})[m] = float(vals.mean())
            row["std"].setdefault(t, {})[m] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
            errs = [task_stderr(runs[(p, s)], tasks).get(t, {}).get(m) for s in seeds]
            if all(e is not None for e in errs):
                row["examples_stderr"].setdefault(t, {})[m] = float(np.mean(errs))
            if ref is not None:
                d = vals - np.array([ref[k][t][m] for k in range(len(seeds))])
                sd = float(d.std(ddof=1)) if len(d) > 1 else 0.0
                row["delta"].setdefault(t, {})[m] = {"mean": float(d.mean()), "std": sd,
                                                     "se": sd / math.sqrt(len(d)) if len(d) > 1 else None,
                                                     "per_seed": d.tolist()}
        rows.append(row)
    return {
        "lm_eval_version": getattr(lm_eval, "__version__", "?"),
        "tasks": names, "include_path": include_path, "limit": limit, "num_fewshot": num_fewshot,
        "tokenizer": model.tokenizer.name, "max_length": model.max_length, "prefix_token_id": _maybe_prefix(model),
        "chunk_tokens": model.scorer.chunk_tokens, "scored_sequences": len(model.scorer.cache),
        "noise_seeds": seeds, "seed": model.scorer.seed, "digital_weight_bits": model.scorer.bits,
        "reference": None if reference is None else model.wanted[reference].label,
        "metrics": [list(x) for x in metrics],
        "clean": clean, "clean_examples_stderr": task_stderr(runs[CLEAN], tasks),
        "placements": rows,
        "notes": [("metric values are lm-eval's (acc: share of examples whose highest log-likelihood choice is "
                   "the answer; acc_norm: the same with log-likelihood per byte of the choice)"),
                  ("std: sample std over the noise seeds; delta: the paired difference from the reference placement "
                   "on the same noise seeds (common random numbers), with its std and standard error "
                   "std / sqrt(seeds)"),
                  "examples_stderr: lm-eval's standard error over the task's examples (mean over seeds)"],
    }


def finite(x: Any) -> Any:
    """``x`` with every NaN or infinite float replaced by None (strict JSON has neither)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    return x


def _maybe_prefix(model: HetmoeModel) -> int | None:
    try:
        return model.prefix_token_id
    except LMEvalError:
        return None


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, show: bool, file: Any = None) -> Any:
    if not show:
        return _NoBar()
    from arch.progress import progress

    return progress(total, "forward (chunk x variant group)", "calls", stream=file, leave=True)
