"""Reading tensors from local safetensors checkpoints, one tensor at a time.

The header is parsed here and every tensor is checked to lie inside its file; data comes through
``numpy.memmap``, so memory stays near the tensor being read. fp32, fp16, bf16 and fp64 are
supported (numpy has no bf16, so bf16 is widened to fp32 bit-exactly). The safetensors package's
numpy loader is not used because it cannot return bf16. A checkpoint is one ``*.safetensors``
file, a folder of them, or shards listed in ``model.safetensors.index.json``.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arch.errors import HetmoeError

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


def read_header(path: Path) -> dict[str, TensorRef]:
    """Parse a safetensors header and check every tensor lies inside the file."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise CheckpointError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
            (n,) = struct.unpack("<Q", raw)
            if n > size - 8 or n > 100_000_000:
                raise CheckpointError(f"{path}: not a safetensors file (header length {n} exceeds the file)")
            header = json.loads(fh.read(n))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not a safetensors file ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (header is not a JSON object)")
    refs = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = info.get("dtype")
        if dtype not in _DTYPES:
            raise CheckpointError(f"{path}: tensor {name}: dtype {dtype!r} not supported; "
                                  f"allowed: {', '.join(_DTYPES)}")
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(_DTYPES[dtype]).itemsize
        if end - begin != expected:
            raise CheckpointError(f"{path}: tensor {name}: {end - begin} bytes for shape {shape} {dtype}")
        if 8 + n + end > size:
            raise CheckpointError(f"{path}: truncated: tensor {name} ends at byte {8 + n + end} of {size}")
        refs[name] = TensorRef(path, dtype, shape, 8 + n + begin, end - begin)
    return refs


def load_tensor(ref: TensorRef) -> np.ndarray:
    """One tensor as float32 (bf16 widened bit-exactly)."""
    raw = np.memmap(ref.file, dtype=_DTYPES[ref.dtype], mode="r", offset=ref.offset, shape=ref.shape)
    if ref.dtype == "BF16":
        return (np.asarray(raw, np.uint32) << 16).view(np.float32)
    return np.asarray(raw, np.float32)


def index_checkpoint(directory: Path) -> dict[str, TensorRef]:
    """All tensors of a checkpoint folder (one file, or shards listed in model.safetensors.index.json)."""
    if directory.is_file():
        return read_header(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such checkpoint folder")
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise CheckpointError(f"{index}: not a safetensors index ({exc})") from None
        files = sorted(set(weight_map.values()))
    else:
        files = sorted(p.name for p in directory.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{directory}: no *.safetensors files")
    refs: dict[str, TensorRef] = {}
    for name in files:
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory / name}: listed in the index but missing")
        refs.update(read_header(directory / name))
    return refs


