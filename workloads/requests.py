"""Request streams for serving runs: when requests arrive and how long their prompts and outputs are.

A :class:`RequestStream` is data made before time runs (DESIGN §9): arrival times (s, sorted, the
first at its own offset), prompt tokens and output tokens per request. The routes of every token still
come from a routing trace (:func:`trace_rows`), so placement effects stay real.

Arrival processes (``--arrival``):

- ``poisson``: exponential inter-arrival times at ``rate_per_s``;
- ``gamma``: gamma inter-arrival times with mean ``1 / rate_per_s`` and coefficient of variation ``cv``
  (shape ``1 / cv^2``; ``cv > 1`` is burstier than Poisson, ``cv = 1`` is Poisson);
- ``fixed``: one request every ``1 / rate_per_s`` seconds;
- ``closed``: every request at t = 0 (a closed batch: a microbenchmark, not a load).

Length distributions (``--prompt-tokens`` / ``--output-tokens``), written ``N`` (fixed),
``uniform:LO:HI`` (integers, both ends included) or ``lognormal:MEAN:P99`` (a lognormal with that mean
and 99th percentile: ``sigma = z99 - sqrt(z99^2 - 2 ln(P99 / MEAN))``, ``mu = ln MEAN - sigma^2 / 2``,
rounded to integers >= 1).

Arrivals files (``--arrivals FILE``): CSV with a header or JSON lines, one request per row, with an
arrival time and the two lengths. Column names: ``arrival_s`` (seconds) or ``TIMESTAMP`` (seconds, or
an ISO date-time as in the public Azure LLM inference traces); ``prompt_tokens`` or ``ContextTokens``;
``output_tokens`` or ``GeneratedTokens``. Times are taken relative to the first arrival; rows need not
be sorted (they are sorted by time, ties kept in file order).
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from arch.errors import HetmoeError
from arch.safeio import InputError, iter_lines, loads_json, read_text

ARRIVALS = ("poisson", "gamma", "fixed", "closed")
Z99 = 2.3263478740408408      # standard normal 99th percentile
TIME_KEYS = ("arrival_s", "TIMESTAMP")
PROMPT_KEYS = ("prompt_tokens", "ContextTokens")
OUTPUT_KEYS = ("output_tokens", "GeneratedTokens")
MAX_LENGTH = 1 << 20          # tokens per prompt or output: past this a file is surely malformed


@dataclass(frozen=True, eq=False)
class RequestStream:
    """``arrival_s`` float64 [N] sorted; ``prompt_tokens`` and ``output_tokens`` int64 [N], each >= 1."""

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return int(self.arrival_s.size)

    @property
    def tokens(self) -> int:
        """Tokens the stream runs through the model: each request's prompt and every output token but the
        last (which is emitted, never fed back)."""
        return int((self.prompt_tokens + self.output_tokens - 1).sum())

    def head(self, n: int) -> RequestStream:
        return RequestStream(self.arrival_s[:n], self.prompt_tokens[:n], self.output_tokens[:n], dict(self.meta))


@dataclass(frozen=True)
class LengthSpec:
    """A length distribution: ``kind`` fixed | uniform | lognormal with its parameters (tokens)."""

    kind: str
    a: float
    b: float = 0.0

    def describe(self) -> str:
        if self.kind == "fixed":
            return f"{self.a:g}"
        if self.kind == "uniform":
            return f"uniform [{self.a:g}, {self.b:g}]"
        return f"lognormal, mean {self.a:g}, p99 {self.b:g}"

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.kind == "fixed":
            return np.full(n, int(self.a), np.int64)
        if self.kind == "uniform":
            return rng.integers(int(self.a), int(self.b) + 1, size=n).astype(np.int64)
        sigma = Z99 - math.sqrt(Z99 ** 2 - 2.0 * math.log(self.b / self.a))
        mu = math.log(self.a) - sigma ** 2 / 2.0
        return np.maximum(1, np.rint(rng.lognormal(mu, sigma, size=n))).astype(np.int64)


def parse_length(text: str, option: str) -> LengthSpec:
    """``N``, ``uniform:LO:HI`` or ``lognormal:MEAN:P99`` -> :class:`LengthSpec` (an error names the option)."""
    parts = str(text).strip().split(":")
    usage = f"{option} {text!r}: allowed N (tokens), uniform:LO:HI or lognormal:MEAN:P99 (tokens, >= 1)"
    try:
        nums = [float(p) for p in parts[1:]] if len(parts) > 1 else [float(parts[0])]
    except ValueError:
        raise HetmoeError(usage) from None
    if any(not math.isfinite(x) or x < 1 for x in nums):
        raise HetmoeError(usage)
    if len(parts) == 1:
        if nums[0] != int(nums[0]):
            raise HetmoeError(usage)
        return LengthSpec("fixed", nums[0])
    if parts[0] == "uniform" and len(nums) == 2:
        if nums[0] > nums[1] or any(x != int(x) for x in nums):
            raise HetmoeError(f"{usage}; LO <= HI, integers")
        return LengthSpec("uniform", nums[0], nums[1])
    if parts[0] == "lognormal" and len(nums) == 2:
        mean, p99 = nums
        if not p99 > mean or Z99 ** 2 < 2.0 * math.log(p99 / mean):
            raise HetmoeError(f"{usage}; a lognormal needs MEAN < P99 <= MEAN x {math.exp(Z99 ** 2 / 2):.1f}")
        return LengthSpec("lognormal", mean, p99)
    raise HetmoeError(usage)


@dataclass(frozen=True)
class ArrivalSpec:
    """An arrival process: ``process`` in :data:`ARRIVALS`, ``rate_per_s`` (requests/s), ``cv`` (gamma)."""

    process: str = "poisson"
    rate_per_s: float = 1.0
    cv: float = 1.0

    def __post_init__(self) -> None:
        if self.process not in ARRIVALS:
            raise HetmoeError(f"--arrival {self.process!r}; allowed: {', '.join(ARRIVALS)}")
        if self.process != "closed" and not (math.isfinite(self.rate_per_s) and self.rate_per_s > 0):
            raise HetmoeError(f"--rate {self.rate_per_s}: allowed a number > 0 (requests/s)")
        if not (math.isfinite(self.cv) and self.cv > 0):
            raise HetmoeError(f"--cv {self.cv}: allowed a number > 0 (coefficient of variation of inter-arrival times)")

    def describe(self) -> str:
        if self.process == "closed":
            return "closed batch: every request at t = 0"
        extra = f", cv {self.cv:g}" if self.process == "gamma" else ""
        return f"{self.process} at {self.rate_per_s:g} requests/s{extra}"

    def times(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Arrival times (s) of ``n`` requests; the first arrives after one inter-arrival time (0 when closed)."""
        if self.process == "closed":
            return np.zeros(n)
        mean = 1.0 / self.rate_per_s
        if self.process == "poisson":
            gaps = rng.exponential(mean, size=n)
        elif self.process == "gamma":
            shape = 1.0 / self.cv ** 2
            gaps = rng.gamma(shape, mean / shape, size=n)
        else:
            gaps = np.full(n, mean)
        return np.cumsum(gaps)


def synthesize_requests(n: int, arrival: ArrivalSpec, prompt: LengthSpec, output: LengthSpec,
                        seed: int = 0) -> RequestStream:
    """``n`` requests: arrival times, then prompt lengths, then output lengths, each from its own
    stream of one seeded generator (so changing the rate leaves the lengths as they were)."""
    if n < 1:
        raise HetmoeError(f"--requests {n}: allowed an integer >= 1")
    root = np.random.SeedSequence([seed, 0x5E7E])
    ra, rp, ro = (np.random.default_rng(s) for s in root.spawn(3))
    meta = {"source": "synthetic", "arrival": arrival.describe(), "prompt_tokens": prompt.describe(),
            "output_tokens": output.describe(), "seed": seed, "rate_per_s": arrival.rate_per_s
            if arrival.process != "closed" else None}
    return RequestStream(arrival.times(n, ra), prompt.sample(n, rp), output.sample(n, ro), meta)


def with_rate(stream: RequestStream, arrival: ArrivalSpec, seed: int = 0) -> RequestStream:
    """The same requests (lengths) arriving by another process (the rate search's re-draw)."""
    root = np.random.SeedSequence([seed, 0x5E7E])
    ra = np.random.default_rng(root.spawn(3)[0])
    return RequestStream(arrival.times(stream.requests, ra), stream.prompt_tokens, stream.output_tokens,
                         {**stream.meta, "arrival": arrival.describe(),
                          "rate_per_s": arrival.rate_per_s if arrival.process != "closed" else None})


# --------------------------------------------------------------------------------------------- files
def _pick(row: dict[str, Any], keys: tuple[str, ...], where: str) -> Any:
    for k in keys:
        if k in row:
            return row[k]
    raise InputError(f"{where}: no {' or '.join(keys)} field; found {', '.join(map(str, row)) or 'none'}")


def _seconds(value: Any, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        t = float(value)
    else:
        text = str(value).strip()
        try:
            t = float(text)
        except ValueError:
            date, _, frac = text.partition(".")         # Azure writes 7 fractional digits; Python reads 6
            digits, zone = re.match(r"(\d*)(.*)", frac).groups()
            try:
                base = datetime.fromisoformat(date.replace("T", " ") + zone.strip())
            except ValueError:
                raise InputError(f"{where}: arrival time {text!r} is neither seconds nor an ISO date-time") from None
            if base.tzinfo is None:                     # a time without a zone is UTC, whatever this machine's zone
                base = base.replace(tzinfo=timezone.utc)
            t = base.timestamp() + (float("0." + digits) if digits else 0.0)
    if not math.isfinite(t):
        raise InputError(f"{where}: arrival time {value!r} is not finite")
    return t


def _length(value: Any, where: str, name: str, lo: int) -> int:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: {name} {value!r} is not a number") from None
    if not math.isfinite(x) or x != int(x) or not lo <= x <= MAX_LENGTH:
        raise InputError(f"{where}: {name} {value!r}: allowed an integer in [{lo}, {MAX_LENGTH}]")
    return int(x)


def read_requests(path: str | Path) -> RequestStream:
    """Read an arrivals file (CSV with a header, or JSON lines; see the module docstring).

    Rows with 0 generated tokens (the Azure traces hold a few) are dropped and counted: a request
    must produce at least its first token."""
    path = Path(path)
    rows: list[tuple[float, int, int]] = []
    dropped = 0
    first_line = next((line for _, line in iter_lines(path, "arrivals file") if line.strip()), "")
    if first_line.lstrip().startswith("{"):
        items = ((n, loads_json(line, path, n)) for n, line in iter_lines(path, "arrivals file") if line.strip())
    else:
        text = read_text(path, "arrivals file")
        reader = csv.DictReader(io.StringIO(text))
        items = ((reader.line_num, {k.strip(): v for k, v in r.items() if k is not None}) for r in reader)
    for n, row in items:
        where = f"{path}:{n}"
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected an object with an arrival time and two lengths")
        out = _length(_pick(row, OUTPUT_KEYS, where), where, "output tokens", 0)
        prompt = _length(_pick(row, PROMPT_KEYS, where), where, "prompt tokens", 1)
        t = _seconds(_pick(row, TIME_KEYS, where), where)
        if out == 0:
            dropped += 1
            continue
        rows.append((t, prompt, out))
    if not rows:
        raise InputError(f"{path}: no requests (an arrivals file needs rows with output tokens >= 1)")
    arr = np.array([r[0] for r in rows])
    order = np.argsort(arr, kind="stable")
    arr = arr[order] - arr[order][0]
    meta = {"source": str(path), "arrival": f"from {path.name}", "prompt_tokens": f"from {path.name}",
            "output_tokens": f"from {path.name}", "rows_without_output_dropped": dropped, "rate_per_s": None}
    return RequestStream(arr, np.array([r[1] for r in rows], np.int64)[order],
                         np.array([r[2] for r in rows], np.int64)[order], meta)


def trace_rows(stream: RequestStream, trace_tokens: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Where each request's tokens take their routes: request r's token j (its prompt tokens, then the
    output tokens fed back for decoding: P + O - 1 in all) uses trace row ``(offset[r] + j) mod
    trace_tokens`` with ``offset`` the running sum of the earlier requests' tokens (so requests of P
    prompt tokens and one output token read the trace's rows in order, P per request). Returns
    ``offset`` (int64 [N]) and a statement of the reuse."""
    need = stream.prompt_tokens + stream.output_tokens - 1
    offset = np.zeros(stream.requests, np.int64)
    offset[1:] = np.cumsum(need)[:-1]
    total = int(need.sum())
    reuse = total / max(trace_tokens, 1)
    rule = (f"request r's token j uses trace row (sum of earlier requests' tokens + j) mod {trace_tokens:,}; "
            f"{total:,} tokens drawn from {trace_tokens:,} trace rows"
            + (f": the trace is reused {reuse:.2f} times in order" if total > trace_tokens else ": no row reused"))
    return offset, {"rule": rule, "stream_tokens": total, "trace_tokens": trace_tokens, "reuse_factor": reuse}
