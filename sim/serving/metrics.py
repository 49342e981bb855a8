"""Request-level metrics of a serving run, from each request's arrival (pure functions; times in ps).

Per request: **queueing delay** = first scheduled - arrival; **TTFT** = first token - arrival; **TPOT**
= (finish - first token) / (output tokens - 1), the mean time between its output tokens (requests of
one output token have none); **E2E** = finish - arrival.

**Measured window**: requests are numbered in arrival order; the first and the last
``warmup_fraction`` of them are warm-up and drain, the rest are *measured*, and the window runs from the
first measured arrival to the last (``t_a``, ``t_b``). Latency percentiles are over measured requests;
throughput, energy and utilisation over the window (counters read when the clock reaches ``t_a`` and
``t_b``: a stage's work is counted when it is laid out, at most one stage early). A closed batch
(every arrival at t = 0) has no such window: its figures are over the whole run, and its latencies
are completion times of a batch that started at once, named so.

**Stability**: requests in the system (arrived, not finished) at ``t_b`` minus those at ``t_a``; if that
growth exceeds ``max(UNSTABLE_GROWTH x arrivals in the window, UNSTABLE_MIN_REQUESTS)`` the queue grows
without bound at this rate (served < 90 % of offered), and the run is reported as unstable: its latency
percentiles describe the length of the run, not the system, and are not given as latencies.

**SLO**: a request meets it when TTFT <= ``slo_ttft`` and TPOT <= ``slo_tpot``; *attainment* is the share
of measured requests that do; *goodput* = measured requests within the SLO / window length. A rate
*meets the SLO* when the run is stable and p99 TTFT and p99 TPOT are within the SLO (DistServe's
goodput uses attainment instead; both are reported).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

UNSTABLE_GROWTH = 0.10
UNSTABLE_MIN_REQUESTS = 5
PERCENTILES = (50, 90, 99)

SERVING_METRICS = {
    "offered_rate_per_s": "requests / s offered (the arrival process's rate; measured from the window when read "
                          "from a file)",
    "window_s": "t_b - t_a: first to last measured arrival (closed batch: the whole run)",
    "throughput_tokens_per_s": "tokens run through the model (prompt + decode inputs) in the window / window_s",
    "output_tokens_per_s": "output tokens emitted in the window / window_s",
    "requests_per_s": "requests finished in the window / window_s",
    "energy_per_token_uj": "window energy (dynamic counted in it + static power x window_s) / its tokens",
    "tokens_per_s_per_w": "window tokens per joule",
    "average_power_w": "window energy / window_s",
    "ttft_p50_ms": "time to first token (first token - arrival), median over measured requests",
    "tpot_p50_ms": "time per output token ((finish - first token) / (output - 1)), median",
    "e2e_p50_ms": "end-to-end latency (finish - arrival), median",
    "queue_p50_ms": "queueing delay (first scheduled - arrival), median",
    "slo_attainment": "share of measured requests with TTFT <= SLO and TPOT <= SLO",
    "goodput_requests_per_s": "measured requests within the SLO / window_s",
    "stable": "false when the requests in the system grew by more than 10 % of the window's arrivals",
}


def measured_window(arrival_ps: np.ndarray, warmup_fraction: float) -> dict[str, Any]:
    """The measured requests ``[lo, hi)`` and the window ``[t_a, t_b]`` (ps); see the module docstring."""
    n = int(arrival_ps.size)
    w = int(math.floor(warmup_fraction * n))
    lo, hi = w, max(n - w, w + 1)
    closed = bool(arrival_ps[-1] == arrival_ps[0])
    return {"lo": lo, "hi": hi, "t_a_ps": int(arrival_ps[lo]), "t_b_ps": int(arrival_ps[hi - 1]), "closed": closed,
            "basis": ("closed batch: every request arrived at t = 0; figures over the whole run" if closed else
                      f"requests {lo}..{hi - 1} of {n} (first and last {warmup_fraction:.0%} by arrival are warm-up "
                      "and drain); throughput and energy between their first and last arrival")}


def _pct(values_ps: np.ndarray, name: str) -> dict[str, float]:
    if values_ps.size == 0:
        return {f"{name}_p{p}_ms": float("nan") for p in PERCENTILES} | {f"{name}_mean_ms": float("nan")}
    q = np.percentile(values_ps, PERCENTILES) / 1e9
    out = {f"{name}_p{p}_ms": float(v) for p, v in zip(PERCENTILES, q)}
    out[f"{name}_mean_ms"] = float(values_ps.mean() / 1e9)
    return out


def per_request(rec: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-request TTFT, TPOT (NaN for one output token), E2E and queueing delay, ps (float64)."""
    arr = rec["arrival_ps"].astype(np.float64)
    first = rec["first_token_ps"].astype(np.float64)
    fin = rec["finish_ps"].astype(np.float64)
    out = rec["output_tokens"].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(out > 1, (fin - first) / np.maximum(out - 1, 1), np.nan)
    return {"ttft": first - arr, "tpot": tpot, "e2e": fin - arr,
            "queue": rec["first_scheduled_ps"].astype(np.float64) - arr}


def request_metrics(rec: dict[str, np.ndarray], window: dict[str, Any], slo_ttft_ms: float | None,
                    slo_tpot_ms: float | None) -> dict[str, Any]:
    """Latency percentiles (ms) over the measured requests, SLO attainment, and the counts."""
    lo, hi = window["lo"], window["hi"]
    per = {k: v[lo:hi] for k, v in per_request(rec).items()}
    out: dict[str, Any] = {"measured_requests": hi - lo}
    for name in ("ttft", "tpot", "e2e", "queue"):
        vals = per[name]
        out.update(_pct(vals[np.isfinite(vals)], name))
    ok = np.ones(hi - lo, bool)
    if slo_ttft_ms is not None:
        ok &= per["ttft"] <= slo_ttft_ms * 1e9
    if slo_tpot_ms is not None:
        ok &= ~(per["tpot"] > slo_tpot_ms * 1e9)          # NaN (one output token) meets any TPOT SLO
    out["slo_met_requests"] = int(ok.sum())
    out["slo_attainment"] = float(ok.mean()) if ok.size else float("nan")
    out["preemptions"] = int(rec["preemptions"].sum())
    return out


def stability(in_system_a: int, in_system_b: int, arrivals_in_window: int) -> dict[str, Any]:
    growth = in_system_b - in_system_a
    limit = max(UNSTABLE_GROWTH * arrivals_in_window, UNSTABLE_MIN_REQUESTS)
    return {"stable": bool(growth <= limit), "in_system_at_window_start": in_system_a,
            "in_system_at_window_end": in_system_b, "growth_requests": growth, "growth_limit_requests": limit}


def meets_slo(m: dict[str, Any], slo_ttft_ms: float | None, slo_tpot_ms: float | None) -> bool:
    """Stable, and p99 TTFT and p99 TPOT within the SLO (a missing bound is no constraint)."""
    if not m.get("stable", False):
        return False
    if slo_ttft_ms is not None and not m["ttft_p99_ms"] <= slo_ttft_ms:
        return False
    tpot = m["tpot_p99_ms"]
    return not (slo_tpot_ms is not None and tpot == tpot and tpot > slo_tpot_ms)


def binding(m: dict[str, Any], slo_ttft_ms: float | None, slo_tpot_ms: float | None) -> str:
    """What fails first at this rate: 'unstable', 'ttft', 'tpot', or '' when nothing does."""
    if not m.get("stable", False):
        return "unstable"
    if slo_ttft_ms is not None and not m["ttft_p99_ms"] <= slo_ttft_ms:
        return "ttft"
    tpot = m["tpot_p99_ms"]
    if slo_tpot_ms is not None and tpot == tpot and tpot > slo_tpot_ms:
        return "tpot"
    return ""
