"""Evaluation data for the accuracy side: token ids ``int64[sequences, length]``.

Accepted inputs:
- ``.npy`` holding a 2-D integer array, or ``.npz`` with one such array (the key ``input_ids`` or
  the only array);
- JSONL, one ``{"input_ids": [...]}`` object per line (all lines the same length, or cut to the
  shortest with ``seq_len``);
- a text file with ``tokenizer``: ``bytes`` (UTF-8 bytes as ids 0-255, for byte-level models) or a
  Hugging Face ``tokenizer.json`` (the ``tokenizers`` package, offline), cut into windows of
  ``seq_len + 1`` tokens.
Each sequence predicts its positions 1..L-1 from 0..L-2. Ids are checked against the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arch.errors import HetmoeError
from arch.safeio import MAX_TEXT_BYTES, check_file, iter_lines, loads_json, open_binary, read_npy, read_npz, read_text


class EvalDataError(HetmoeError):
    """Evaluation data that cannot be read or does not fit the model."""


@dataclass(frozen=True, eq=False)
class EvalData:
    ids: np.ndarray          # int64 [sequences, length]
    source: str
    selection: str = "all sequences"   # which rows of the file were kept (max_sequences)

    @property
    def sequences(self) -> int:
        return int(self.ids.shape[0])

    @property
    def predicted_tokens(self) -> int:
        return int(self.ids.shape[0] * (self.ids.shape[1] - 1))


def load_eval(path: str | Path, vocab_size: int, *, tokenizer: str | None = None, seq_len: int | None = None,
              max_sequences: int | None = None) -> EvalData:
    """Read evaluation ids from ``path`` (see the module docs) and check them against ``vocab_size``."""
    for option, value in (("--seq-len", seq_len), ("--max-sequences", max_sequences)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise EvalDataError(f"{option} {value}: allowed an integer >= 1")
    path = check_file(path, "evaluation data")
    suffix = path.suffix.lower()
    if tokenizer is not None:
        ids = _tokenize(path, tokenizer, seq_len)
    elif suffix == ".npy":
        ids = _npy(path)
    elif suffix == ".npz":
        ids = _npz(path)
    elif suffix in (".jsonl", ".json"):
        ids = _jsonl(path, seq_len, vocab_size)
    else:
        raise EvalDataError(f"{path}: unknown evaluation format {suffix!r}; give .npy, .npz or .jsonl token "
                            "ids, or a text file with --tokenizer bytes|tokenizer.json")
    if ids.ndim != 2 or ids.shape[0] < 1 or ids.shape[1] < 2:
        raise EvalDataError(f"{path}: expected token ids [sequences, length >= 2], got shape {tuple(ids.shape)}")
    if seq_len is not None and tokenizer is None:
        if seq_len + 1 > ids.shape[1]:
            raise EvalDataError(f"{path}: --seq-len {seq_len} needs {seq_len + 1} ids per sequence, "
                                f"the file has {ids.shape[1]}")
        ids = ids[:, : seq_len + 1]
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= vocab_size:
        bad = np.argwhere((ids < 0) | (ids >= vocab_size))[0]
        raise EvalDataError(f"{path}: sequence {bad[0]}, position {bad[1]}: id {int(ids[tuple(bad)])} outside the "
                            f"model's vocabulary [0, {vocab_size - 1}]")
    ids, selection = spread_subset(ids, max_sequences)
    return EvalData(np.ascontiguousarray(ids, np.int64), str(path), selection)


def spread_subset(ids: np.ndarray, n: int | None) -> tuple[np.ndarray, str]:
    """``n`` of the ``S`` rows spread evenly over the file: rows ``floor(i * S / n)``, ``i = 0 .. n - 1``
    (an eval file is often ordered by source, so its first rows are one source); all rows when ``n`` is
    None or at least ``S``. Returns the rows and a sentence saying which were kept."""
    total = ids.shape[0]
    if n is None or n >= total:
        return ids, "all sequences"
    rows = (np.arange(n, dtype=np.int64) * total) // n
    return ids[rows], f"{n} of {total} sequences, evenly spread (rows floor(i x {total} / {n}))"


def _as_ids(a: np.ndarray, path: Path) -> np.ndarray:
    if not np.issubdtype(a.dtype, np.integer):
        raise EvalDataError(f"{path}: token ids must be integers, got dtype {a.dtype}")
    return a.astype(np.int64)


def _npy(path: Path) -> np.ndarray:
    return _as_ids(read_npy(path, "evaluation ids .npy"), path)


def _npz(path: Path) -> np.ndarray:
    z = read_npz(path, "evaluation ids .npz")
    keys = list(z)
    key = "input_ids" if "input_ids" in keys else (keys[0] if len(keys) == 1 else None)
    if key is None:
        raise EvalDataError(f"{path}: .npz holds {keys}; name the ids array 'input_ids'")
    return _as_ids(z[key], path)


def _jsonl(path: Path, seq_len: int | None, vocab_size: int) -> np.ndarray:
    rows = []
    for lineno, line in iter_lines(path, "evaluation ids JSONL"):
        if not line.strip():
            continue
        obj = loads_json(line, path, lineno)
        ids = obj.get("input_ids") if isinstance(obj, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise EvalDataError(f"{path}:{lineno}: expected {{\"input_ids\": [integers]}}")
        bad = (next(j for j, i in enumerate(ids) if not 0 <= i < vocab_size)
               if ids and (min(ids) < 0 or max(ids) >= vocab_size) else None)
        if bad is not None:         # before numpy sees it: an id past 64 bits would not even convert
            raise EvalDataError(f"{path}:{lineno}: input_ids[{bad}] = {ids[bad]} outside the model's vocabulary "
                                f"[0, {vocab_size - 1}]")
        rows.append(ids)
    if not rows:
        raise EvalDataError(f"{path}: no sequences")
    length = min(len(r) for r in rows) if seq_len is None else seq_len + 1
    if seq_len is None and len({len(r) for r in rows}) > 1:
        raise EvalDataError(f"{path}: sequences differ in length ({min(len(r) for r in rows)}.."
                            f"{max(len(r) for r in rows)}); give --seq-len to cut them")
    short = [i for i, r in enumerate(rows) if len(r) < length]
    if short:
        raise EvalDataError(f"{path}:{short[0] + 1}: sequence of {len(rows[short[0]])} ids, --seq-len needs {length}")
    return np.asarray([r[:length] for r in rows], np.int64)


def _tokenize(path: Path, tokenizer: str, seq_len: int | None) -> np.ndarray:
    if seq_len is None or seq_len < 1:
        raise EvalDataError("a text evaluation file needs --seq-len (tokens per window, >= 1)")
    if tokenizer == "bytes":
        with open_binary(path, "evaluation text") as fh:
            raw = fh.read(MAX_TEXT_BYTES + 1)
        if len(raw) > MAX_TEXT_BYTES:
            raise EvalDataError(f"{path}: larger than {MAX_TEXT_BYTES // 2**20} MiB of evaluation text")
        ids = np.frombuffer(raw, np.uint8).astype(np.int64)
    else:
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise EvalDataError("--tokenizer FILE needs the 'tokenizers' package (pip install tokenizers)") from None
        try:
            tok = Tokenizer.from_file(str(tokenizer))
        except Exception as exc:  # the tokenizers package raises its own exception types
            raise EvalDataError(f"{tokenizer}: not a tokenizer.json ({exc})") from None
        text = read_text(path, "evaluation text", MAX_TEXT_BYTES)
        ids = np.asarray(tok.encode(text).ids, np.int64)
    window = seq_len + 1
    n = ids.size // window
    if n < 1:
        raise EvalDataError(f"{path}: {ids.size} tokens, fewer than one window of {window}")
    return ids[: n * window].reshape(n, window)
