"""What-if analysis: one parameter at a time over its values, and break-even points by bisection.

A parameter is a hardware YAML key path (``memory.sram.capacity_mib``) or a run option (``batch``,
``context_tokens``). Every evaluation is a set of ordinary sweep points (``sim.sweep``), so results are
cached in the output folder and re-running reuses them.

Break-even: ``f(v) = metric(maxnn at v) / target(v) - 1`` with ``target`` either ``reach`` x all-analog's
metric at the same ``v`` or the baseline's metric. :func:`bisect` returns the smallest ``v`` in ``[lo, hi]``
with ``f(v) >= 0``, assuming ``f`` does not decrease with ``v`` (more SRAM, bandwidth or batch never makes
maxnn worse relative to its target); it checks both ends first and says "not reached" when ``f(hi) < 0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

RUN_KEYS = {"batch": int, "context_tokens": int}

# The knobs ``hetmoe whatif`` varies when no --vary is given: (key, values). A value given as a string
# "xF" is F times the chip's own value of the key; ``{mac}`` is the chip's precision.digital_mac. The two
# unit energies the headline ratio rests on most (one digital MAC, one ADC conversion) are among them.
DEFAULT_VARY: tuple[tuple[str, tuple[Any, ...]], ...] = (
    ("memory.sram.capacity_mib", (32, 512, 8192)),
    ("memory.dram.bandwidth_gbps", (1024, 16384)),
    ("batch", (16, 256)),
    ("digital.simd.energy_pj_per_mac.{mac}", ("x0.25", "x4")),
    ("analog.adc.energy_pj_per_conversion", ("x0.25", "x4")),
    ("memory.dram.energy_pj_per_bit", ("x0.5", "x2")),
)


def default_vary(chip: Any) -> list[tuple[str, list[Any]]]:
    """:data:`DEFAULT_VARY` resolved on ``chip``: ``{mac}`` filled in, relative values multiplied out (to 4
    significant digits); a key the chip lacks, or a relative one whose value is 0 (the ADC of a digital-only
    chip), is left out."""
    out = []
    for key, values in DEFAULT_VARY:
        key = key.format(mac=chip.precision.digital_mac)
        own = None if key in RUN_KEYS else value_of(chip, key)
        relative = any(isinstance(v, str) for v in values)
        if key not in RUN_KEYS and (own is None or (relative and not own)):
            continue
        vals = [float(f"{own * float(v[1:]):.4g}") if isinstance(v, str) else v for v in values]
        out.append((key, vals))
    return out


def value_of(chip: Any, key: str) -> Any:
    """The chip's value at a YAML key path (attributes, then mapping keys such as a precision name)."""
    node = chip
    for part in key.split("."):
        if node is None:
            return None
        node = node.get(part) if hasattr(node, "get") and not hasattr(node, part) else getattr(node, part, None)
    return node


@dataclass(frozen=True)
class BreakEven:
    key: str
    lo: float
    hi: float
    reached: bool
    value: float | None              # smallest value found to reach the target (None: not reached)
    below: float | None              # largest value found not to reach it (None: reached at lo)
    evaluations: list[tuple[float, float]] = field(default_factory=list)   # (v, f(v)) in evaluation order

    def sentence(self, what: str) -> str:
        if not self.reached:
            return f"{what}: not reached in [{_num(self.lo)}, {_num(self.hi)}] of {self.key}."
        if self.below is None:
            return f"{what}: already reached at the low end, {self.key} = {_num(self.lo)}."
        return (f"{what}: at {self.key} = {_num(self.value)} (not at {_num(self.below)}; "
                f"{len(self.evaluations)} evaluations).")


def _num(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:,.0f}" if abs(v) >= 100 or float(v).is_integer() else f"{v:.4g}"


def bisect(f: Callable[[float], float], lo: float, hi: float, *, key: str = "x", integer: bool = False,
           log: bool | None = None, rel_tol: float = 0.02) -> BreakEven:
    """Smallest ``v`` in ``[lo, hi]`` with ``f(v) >= 0`` for a non-decreasing ``f``, to relative width
    ``rel_tol`` (integers: to adjacent values). ``log`` (default: ``lo > 0`` and ``hi / lo >= 8``) bisects
    geometrically, which suits SRAM sizes and bandwidths spanning decades."""
    if not lo < hi:
        raise ValueError(f"break-even range [{lo}, {hi}]: needs lo < hi")
    if log is None:
        log = lo > 0 and hi / lo >= 8
    evals: list[tuple[float, float]] = []

    def g(v: float) -> float:
        y = f(v)
        evals.append((v, y))
        return y

    if g(lo) >= 0:
        return BreakEven(key, lo, hi, True, lo, None, evals)
    if g(hi) < 0:
        return BreakEven(key, lo, hi, False, None, hi, evals)
    a, b = lo, hi
    while True:
        if integer and b - a <= 1:
            break
        if not integer and (b - a) <= rel_tol * b:
            break
        mid = math.sqrt(a * b) if log else (a + b) / 2
        if integer:
            mid = int(round(mid))
            mid = min(max(mid, int(a) + 1), int(b) - 1)
        if g(mid) >= 0:
            b = mid
        else:
            a = mid
    return BreakEven(key, lo, hi, True, b, a, evals)


def parse_vary(text: str) -> tuple[str, list[Any]]:
    """``KEY=V1,V2,...`` -> (key, values parsed as YAML scalars)."""
    import yaml

    if "=" not in text:
        raise ValueError(f"--vary {text!r}: expected KEY=V1,V2,... e.g. memory.sram.capacity_mib=32,128,512")
    key, values = text.split("=", 1)
    vals = [yaml.safe_load(v) for v in values.split(",") if v.strip()]
    if len(vals) < 2:
        raise ValueError(f"--vary {text!r}: give at least two values")
    for v in vals:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"--vary {text!r}: {v!r} is not a number")
    return key.strip(), vals


def parse_range(text: str) -> tuple[str, float, float]:
    """``KEY=LO:HI`` -> (key, lo, hi)."""
    try:
        key, rng = text.split("=", 1)
        lo, hi = (float(x) for x in rng.split(":"))
    except ValueError:
        raise ValueError(f"--break-even {text!r}: expected KEY=LO:HI, e.g. memory.sram.capacity_mib=32:4096") from None
    if not lo < hi:
        raise ValueError(f"--break-even {text!r}: needs LO < HI")
    return key.strip(), lo, hi


def with_value(point: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """The point with ``key`` set: a run option directly, a YAML key path into ``hw_overrides``."""
    if key in RUN_KEYS:
        return {**point, key: RUN_KEYS[key](value)}
    over = _deep_copy(point.get("hw_overrides") or {})
    node = over
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return {**point, "hw_overrides": over}


def _deep_copy(d: dict) -> dict:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in d.items()}


def is_integer_key(chip: Any, key: str) -> bool:
    """Whether ``key`` takes integers (run options, or an ``int`` field of the hardware spec)."""
    if key in RUN_KEYS:
        return True
    node = chip
    for part in key.split("."):
        node = getattr(node, part, None)
    return isinstance(node, int) and not isinstance(node, bool)
