"""Reading tensors from local safetensors checkpoints, one tensor at a time.

The header is parsed here and every tensor is checked to lie inside its file; data comes through
``numpy.memmap``, so memory stays near the tensor being read. fp32, fp16, bf16 and fp64 are
supported (numpy has no bf16, so bf16 is widened to fp32 bit-exactly). The safetensors package's
numpy loader is not used because it cannot return bf16. A checkpoint is one ``*.safetensors``
file, a folder of them, or shards listed in ``model.safetensors.index.json``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arch.errors import HetmoeError
from arch.safeio import InputError, loads_json, read_json

_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64}


class CheckpointError(HetmoeError):
    """A checkpoint is missing, truncated or not in the expected layout."""


@dataclass(frozen=True)
class TensorRef:
    file: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int      # absolute byte offset in the file
    nbytes: int
    name: str = ""   # the tensor's name in the file (for errors)


MAX_HEADER_BYTES = 100_000_000     # the safetensors format's own limit on the JSON header


def read_header(path: Path) -> dict[str, TensorRef]:
    """Parse a safetensors header and check every tensor: a known dtype, a shape of non-negative integers,
    ``data_offsets`` that hold exactly its bytes, lie inside the file and do not overlap another tensor."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise CheckpointError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
            (n,) = struct.unpack("<Q", raw)
            if n > size - 8 or n > MAX_HEADER_BYTES:
                raise CheckpointError(f"{path}: not a safetensors file (header length {n:,} bytes exceeds the "
                                      f"file's {size:,} bytes or the format's limit)")
            text = fh.read(n)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        header = loads_json(text.decode("utf-8"), path)
    except (UnicodeDecodeError, InputError) as exc:
        raise CheckpointError(f"{path}: not a safetensors file (header: {exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (header is not a JSON object)")
    data_bytes = size - 8 - n
    refs = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        where = f"{path}: tensor {name}"
        if not isinstance(info, dict):
            raise CheckpointError(f"{where}: expected {{dtype, shape, data_offsets}}, got {info!r:.60}")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in _DTYPES:
            raise CheckpointError(f"{where}: dtype {dtype!r} not supported; allowed: {', '.join(_DTYPES)}")
        if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
            raise CheckpointError(f"{where}: shape {shape!r} is not a list of non-negative integers")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets)
                or offsets[0] > offsets[1]):
            raise CheckpointError(f"{where}: data_offsets {offsets!r} is not [begin, end] with 0 <= begin <= end")
        begin, end = offsets
        expected = int(np.prod(shape, dtype=object)) * np.dtype(_DTYPES[dtype]).itemsize
        if end - begin != expected:
            raise CheckpointError(f"{where}: {end - begin:,} bytes for shape {tuple(shape)} {dtype} "
                                  f"(which needs {expected:,})")
        if end > data_bytes:
            raise CheckpointError(f"{path}: truncated: tensor {name} ends at byte {8 + n + end:,} of {size:,}")
        refs[name] = TensorRef(path, dtype, tuple(shape), 8 + n + begin, end - begin, name)
    spans = sorted((r.offset, r.offset + r.nbytes, k) for k, r in refs.items() if r.nbytes)
    for (_, end_a, a), (begin_b, _, b) in zip(spans, spans[1:]):
        if begin_b < end_a:
            raise CheckpointError(f"{path}: tensors {a} and {b} overlap in the file")
    return refs


def _is_count(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def load_tensor(ref: TensorRef) -> np.ndarray:
    """One tensor as float32 (bf16 widened bit-exactly); a tensor holding NaN or infinity is refused with
    its name, shard and the first bad position (nothing downstream could give a meaningful number)."""
    raw = np.memmap(ref.file, dtype=_DTYPES[ref.dtype], mode="r", offset=ref.offset, shape=ref.shape)
    if ref.dtype == "BF16":
        arr = (np.asarray(raw, np.uint32) << 16).view(np.float32)
    else:
        arr = np.asarray(raw, np.float32)
    finite = np.isfinite(arr)
    if not finite.all():
        bad = int(arr.size - np.count_nonzero(finite))
        where = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise CheckpointError(f"{ref.file}: tensor {ref.name or '?'} holds {bad:,} non-finite value"
                              f"{'s' if bad > 1 else ''} (NaN or infinity), the first at index {list(where)}")
    return arr


def index_checkpoint(directory: Path) -> dict[str, TensorRef]:
    """All tensors of a checkpoint folder (one file, or shards listed in model.safetensors.index.json)."""
    if directory.is_file():
        return read_header(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such checkpoint folder")
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        data = read_json(index, "safetensors index")
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise CheckpointError(f"{index}: not a safetensors index (expected {{\"weight_map\": {{tensor: file}}}})")
        files = sorted(set(weight_map.values()))
        escaping = [f for f in files if Path(f).name != f]
        if escaping:
            raise CheckpointError(f"{index}: weight_map names {escaping[0]!r}; shards must be file names in the folder")
    else:
        files = sorted(p.name for p in directory.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{directory}: no *.safetensors files")
    refs: dict[str, TensorRef] = {}
    for name in files:
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory / name}: listed in the index but missing")
        for tensor, ref in read_header(directory / name).items():
            if tensor in refs:
                raise CheckpointError(f"{directory}: tensor {tensor} is in two shards, {refs[tensor].file.name} and "
                                      f"{name}; a checkpoint holds each tensor once")
            refs[tensor] = ref
    if index.is_file():
        for tensor, shard in weight_map.items():
            if tensor not in refs or refs[tensor].file.name != shard:
                held = f" (it is in {refs[tensor].file.name})" if tensor in refs else ""
                raise CheckpointError(f"{index}: weight_map puts tensor {tensor} in {shard}, which does not hold "
                                      f"it{held}")
    return refs




def check_tied_head(tied: bool, refs: dict[str, TensorRef], where: str) -> None:
    """With ``tie_word_embeddings`` true the forward pass uses the input embedding as the output head; a
    checkpoint that also holds an ``lm_head.weight`` of other values was not tied, and is refused."""
    head, embed = refs.get("lm_head.weight"), refs.get("model.embed_tokens.weight")
    if not tied or head is None or embed is None:
        return
    if head.shape != embed.shape or not np.array_equal(load_tensor(head), load_tensor(embed)):
        raise CheckpointError(f"{where}: tie_word_embeddings is true, but tensor lm_head.weight {head.shape} differs "
                              f"from model.embed_tokens.weight {embed.shape}; the config says the head is the "
                              "embedding (set tie_word_embeddings to false if the checkpoint's head is its own)")
