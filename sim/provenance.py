"""Which code produced a result: a fingerprint of the modelling source (``arch``, ``workloads`` and
``sim`` less its reports and command line), stored in every ``result.json`` so that a finished sweep
point is reused only when the code that would recompute it is the same (and its inputs are: the key of
:mod:`sim.inputs_key`, stored beside it)."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = ("sim/report", "sim/cli")


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """SHA-256 (first 12 hex digits) over the modelling ``.py`` and preset ``.yaml`` files, in path order."""
    h = hashlib.sha256()
    for pkg in ("arch", "workloads", "sim"):
        for path in sorted((ROOT / pkg).rglob("*")):
            rel = path.relative_to(ROOT).as_posix()
            if path.suffix not in (".py", ".yaml") or rel.startswith(SKIP) or "__pycache__" in rel:
                continue
            h.update(rel.encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]
