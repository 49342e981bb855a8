"""What a point was computed from: a key of its *resolved* inputs, stored in its ``result.json``.

A sweep point (:mod:`sim.sweep`) names its inputs by argument: a hardware preset or YAML path, a trace
file, a checkpoint folder. Its run folder is named after those arguments, so the same arguments give
the same folder. Whether the result in that folder still holds is decided by :func:`point_inputs`: a
digest of each input's content, never of its path alone:

- ``chip``: the hardware spec after ``extends`` and every override (``--set``, swept keys), as
  canonical JSON (editing the YAML, or a file it extends, changes it);
- ``model``: the model shape read from the preset or config.json;
- ``trace`` / ``placement_trace``: a trace file's content (a ``.npz`` by its decompressed members, so
  the same arrays rewritten later give the same digest), or the synthetic trace's parameters (and the
  content of a ``counts_file``);
- ``checkpoint``: the checkpoint's identity (:func:`workloads.checkpoints.stats._identity`: shard
  sizes and modification times, config.json and index bytes, and the model shape);
- ``eval`` and ``placement_file``: the files' bytes;
- ``options``: every other entry of the point (policy, fraction, tokens, batch, mode, seeds, noise
  settings, overrides ...), as given.

The key is the digest of all of these. A finished point is reused only when its stored key equals the
key its inputs give now (and the code is the same: :mod:`sim.provenance`); :func:`changed` names the
inputs that differ. An input that cannot be read gives no key (``None``): the point is computed again
and fails, or not, on its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

KEY = "inputs_key"          # result.json: the key of the inputs the result was computed from
PARTS = "inputs"            # result.json: the digest of each input, to say which one changed

CHUNK = 1 << 20
MAX_HASHED_BYTES = 16 * 2**30      # a .npz whose members expand beyond this gets no key (its run refuses it)


class _Unreadable(Exception):
    """An input cannot be read: the point gets no key."""


def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class InputsCache:
    """Digests already computed during one command (inputs do not change while its folder is locked)."""

    def __init__(self) -> None:
        self._memo: dict[tuple, Any] = {}

    def get(self, key: tuple, make: Any) -> Any:
        if key not in self._memo:
            try:
                self._memo[key] = ("ok", make())
            except Exception as exc:  # noqa: BLE001 - an unreadable input: the point gets no key
                self._memo[key] = ("bad", exc)
        state, value = self._memo[key]
        if state == "bad":
            raise _Unreadable(str(value))
        return value


def point_inputs(point: dict[str, Any], cache: InputsCache | None = None) -> dict[str, str] | None:
    """The digest of each resolved input of ``point`` (a dict of :func:`sim.api.simulate` keyword
    arguments as :mod:`sim.sweep` runs them), or None when one cannot be read."""
    cache = cache or InputsCache()
    try:
        return _parts(point, cache)
    except _Unreadable:
        return None


def inputs_key(parts: dict[str, str] | None) -> str | None:
    """The key of a point's inputs (see :func:`point_inputs`); None without them."""
    return None if parts is None else _digest(parts)


def point_key(point: dict[str, Any], cache: InputsCache | None = None) -> tuple[str | None, dict[str, str] | None]:
    """``(key, parts)`` of ``point``: :func:`inputs_key` and :func:`point_inputs`."""
    parts = point_inputs(point, cache)
    return inputs_key(parts), parts


def changed(stored: dict[str, Any] | None, parts: dict[str, str] | None) -> list[str]:
    """The names of the inputs whose digest differs between a stored result and now."""
    if not isinstance(stored, dict) or parts is None:
        return ["inputs"]
    return sorted(k for k in set(stored) | set(parts) if stored.get(k) != parts.get(k)) or ["inputs"]


def _parts(point: dict[str, Any], cache: InputsCache) -> dict[str, str]:
    from workloads.shapes import load_model

    overrides = point.get("hw_overrides") or {}
    hw = point.get("hw", "aimc-3d-moe")
    model_name = point.get("model") or point.get("checkpoint") or "olmoe-1b-7b"
    parts = {
        "options": _digest(point),
        "chip": cache.get(("chip", str(hw), _digest(overrides)), lambda: _chip_digest(hw, overrides)),
        "model": cache.get(("model", str(model_name)), lambda: _digest(repr(load_model(model_name)))),
        "trace": _trace_digest(point.get("trace"), cache),
    }
    if point.get("placement_trace"):
        parts["placement_trace"] = _trace_digest(point["placement_trace"], cache)
    if point.get("checkpoint"):
        ckpt = str(point["checkpoint"])
        parts["checkpoint"] = cache.get(("checkpoint", ckpt, str(model_name)),
                                        lambda: _checkpoint_identity(ckpt, model_name))
    for name in ("eval", "placement_file"):
        if point.get(name):
            parts[name] = cache.get(("file", str(point[name])), lambda p=point[name]: file_digest(p))
    return parts


def _chip_digest(hw: Any, overrides: dict[str, Any]) -> str:
    """The chip spec after ``extends`` and ``overrides``, as canonical JSON (its file path left out)."""
    from arch import load_chip

    data = _plain(load_chip(hw, overrides))
    data.pop("source", None)
    return _digest(data)


def _plain(obj: Any) -> Any:
    """Dataclasses, mappings and sequences as JSON-able dicts and lists (every field, by name)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)


def _checkpoint_identity(checkpoint: str, model_name: Any) -> str:
    from workloads.checkpoints.stats import _identity
    from workloads.checkpoints.tensors import index_checkpoint
    from workloads.shapes import load_model

    folder = Path(checkpoint)
    return _identity(index_checkpoint(folder), folder, load_model(model_name))


def _trace_digest(trace: Any, cache: InputsCache) -> str:
    if trace is None or trace == "synthetic":
        return _digest("synthetic")
    if isinstance(trace, dict):               # a synthetic trace's parameters (sim.sweep)
        spec = dict(trace)
        counts = spec.get("counts_file")
        if counts:
            spec["counts_file_content"] = cache.get(("file", str(counts)), lambda: file_digest(counts))
        return _digest({"synthetic": spec})
    if dataclasses.is_dataclass(trace) and not isinstance(trace, type):     # a SyntheticSpec
        return _trace_digest(_plain(trace), cache)
    return cache.get(("file", str(trace)), lambda: file_digest(trace))


def file_digest(path: str | Path) -> str:
    """A digest of a file's content: a ``.npz`` (zip) by its members' names and decompressed bytes, in
    name order (so the same arrays written again, with new time stamps, give the same digest); any
    other file by its bytes."""
    path = Path(path)
    h = hashlib.sha256()
    if zipfile.is_zipfile(path):
        total = 0
        with zipfile.ZipFile(path) as z:
            for info in sorted(z.infolist(), key=lambda i: i.filename):
                h.update(info.filename.encode() + b"\0")
                with z.open(info) as fh:
                    while chunk := fh.read(CHUNK):
                        total += len(chunk)
                        if total > MAX_HASHED_BYTES:
                            raise _Unreadable(f"{path}: expands beyond {MAX_HASHED_BYTES} bytes")
                        h.update(chunk)
                h.update(b"\0")
        return "npz:" + h.hexdigest()[:16]
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()[:16]
