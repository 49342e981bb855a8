"""Chrome trace-event JSON (opens in Perfetto and chrome://tracing).

Two views of one run:

- **micro-batches** (process 0): one thread per micro-batch, a span per stage of each layer (attention,
  norm+router, experts, combine; the output head last), each with its micro-batch, layer and token count,
  and flow arrows from each stage to the next one it waits for (stage to stage within a layer, combine to the
  next layer's attention, and a prefill chunk's attention to the next chunk of the same request), so Perfetto
  draws each micro-batch's critical path;
- **resources** (processes 1-5): one thread per resource (tile, local digital unit, SIMD, NoC link, DRAM
  channel), a span per booking with the matrix or operation, the micro-batch and layer it serves, and for NoC
  links the bytes it carried (duration × link bandwidth: a link is booked at its full rate).

A window keeps a large run's trace usable: the first N micro-batches, or the bookings that overlap a time
range; what was left out is counted in the trace's metadata. :func:`estimate_bytes` sizes the file before it
is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arch.errors import HetmoeError
from arch.safeio import dumps_json, write_text

KINDS = {"tile": 1, "local_digital": 2, "simd": 3, "link": 4, "dram": 5}
NAMES = {0: "micro-batches (stages, critical path)", 1: "analog tiles", 2: "local digital units", 3: "SIMD cores",
         4: "NoC links", 5: "DRAM"}
STAGES = ("attention", "norm+router", "experts", "combine", "output head")   # the engine's stage indices
BYTES_PER_EVENT = 190            # a span event with its arguments, as written (measured on hetmoe's traces)
WARN_BYTES = 100 * 2 ** 20       # say so above 100 MiB


@dataclass(frozen=True)
class Window:
    """Which part of a run a trace holds: the first ``micro_batches`` micro-batches, or the bookings that
    overlap [``start_us``, ``end_us``] of simulated time; neither: the whole run."""

    micro_batches: int | None = None
    start_us: float | None = None
    end_us: float | None = None

    @staticmethod
    def parse(text: str | None) -> "Window":
        """``N`` (first N micro-batches) or ``START:END`` in microseconds of simulated time (either may be
        empty: from the start, to the end)."""
        if text is None or text == "":
            return Window()
        try:
            if ":" in text:
                a, b = text.split(":", 1)
                w = Window(None, float(a) if a else 0.0, float(b) if b else None)
                if w.start_us < 0 or (w.end_us is not None and not w.end_us > w.start_us) or w.start_us != w.start_us:
                    raise ValueError
                return w
            n = int(text)
            if n < 1:
                raise ValueError
            return Window(n)
        except ValueError:
            raise HetmoeError(f"--trace-window {text!r}: give N (the first N micro-batches, N >= 1) or START:END "
                              "in microseconds of simulated time (0 <= START < END)") from None

    def keeps(self, b: int, start_ps: int, end_ps: int) -> bool:
        if self.micro_batches is not None:
            return b < self.micro_batches
        if self.start_us is not None:
            return end_ps >= self.start_us * 1e6 and (self.end_us is None or start_ps <= self.end_us * 1e6)
        return True

    def text(self) -> str:
        if self.micro_batches is not None:
            return f"the first {self.micro_batches} micro-batches"
        if self.start_us is not None:
            return f"bookings overlapping {self.start_us:g} to " + (f"{self.end_us:g} µs" if self.end_us is not None
                                                                   else "the end")
        return "the whole run"


def estimate_bytes(records: int, stages: int) -> int:
    """Bytes of a trace of ``records`` bookings and ``stages`` stage spans (each stage span with one flow
    arrow pair)."""
    return BYTES_PER_EVENT * (records + 3 * stages)


def size_warning(n_bytes: int, window: Window) -> str | None:
    """A line when the trace is large, with the option that shrinks it."""
    if n_bytes < WARN_BYTES:
        return None
    return (f"warning: the Chrome trace of {window.text()} is about {n_bytes / 2 ** 20:,.0f} MiB "
            "(Perfetto slows down above ~100 MiB); --trace-window N keeps the first N micro-batches, "
            "--trace-window START:END a span of simulated time (µs)")


def chrome_events(timeline: Any, engine: Any, window: Window = Window()) -> tuple[list[dict[str, Any]], dict]:
    """The trace events of ``timeline`` within ``window``, and what was kept and left out."""
    tokens = [int(x) for x in engine.plan.mb_tokens] if getattr(engine, "plan", None) is not None else []
    L = engine.model.num_layers
    link_gbps = _link_bandwidths(engine)
    events: list[dict[str, Any]] = [{"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": name}}
                                    for pid, name in NAMES.items()]
    tids: dict[str, tuple[int, int]] = {}
    kept = left = 0
    for resource, start, end, label, b, layer in timeline.records:
        if not window.keeps(b, start, end):
            left += 1
            continue
        kept += 1
        if resource not in tids:
            pid = KINDS[resource.split(" ")[0]]
            tids[resource] = (pid, len(tids) + 1)
            events.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tids[resource][1],
                           "args": {"name": resource}})
        pid, tid = tids[resource]
        args: dict[str, Any] = {"micro_batch": b, "layer": "output head" if layer >= L else layer}
        if b < len(tokens):
            args["micro_batch_tokens"] = tokens[b]
        if pid == KINDS["link"] and resource in link_gbps:
            args["bytes"] = round((end - start) * 1e-3 * link_gbps[resource] / 8)
        events.append({"ph": "X", "name": label or resource, "cat": resource.split(" ")[0], "pid": pid, "tid": tid,
                       "ts": start / 1e6, "dur": (end - start) / 1e6, "args": args})
    stages = sorted(s for s in timeline.stages if window.keeps(s[0], s[3], s[4]))
    seen_mb: set[int] = set()
    flow = 0
    prev: tuple[int, int] | None = None           # (micro-batch, end ps) of the stage before, same micro-batch
    for b, layer, kind, start, end in stages:
        if b not in seen_mb:
            seen_mb.add(b)
            events.append({"ph": "M", "name": "thread_name", "pid": 0, "tid": b + 1,
                           "args": {"name": f"micro-batch {b}" + (f" ({tokens[b]} tokens)" if b < len(tokens) else "")}})
            prev = None
        name = STAGES[kind] if layer >= L else f"L{layer} {STAGES[kind]}"
        args = {"micro_batch": b, "layer": "output head" if layer >= L else layer, "stage": STAGES[kind]}
        if b < len(tokens):
            args["tokens"] = tokens[b]
        events.append({"ph": "X", "name": name, "cat": "stage", "pid": 0, "tid": b + 1, "ts": start / 1e6,
                       "dur": max(end - start, 0) / 1e6, "args": args})
        if prev is not None and prev[0] == b:
            flow += 1
            events.append({"ph": "s", "id": flow, "name": "waits for", "cat": "dependency", "pid": 0, "tid": b + 1,
                           "ts": prev[1] / 1e6})
            events.append({"ph": "f", "bp": "e", "id": flow, "name": "waits for", "cat": "dependency", "pid": 0,
                           "tid": b + 1, "ts": start / 1e6})
        prev = (b, end)
    flow = _chunk_flows(events, stages, engine, flow)
    meta = {"window": window.text(), "bookings_kept": kept, "bookings_left_out": left,
            "bookings_not_recorded": int(getattr(timeline, "dropped", 0)), "stage_spans": len(stages),
            "flow_arrows": flow}
    return events, meta


def _chunk_flows(events: list[dict[str, Any]], stages: list[tuple], engine: Any, flow: int) -> int:
    """Prefill: chunk j of a request attends to the KV cache of chunk j - 1, so its attention at each layer
    waits for that chunk's attention at the same layer: an arrow between the two micro-batches' threads."""
    plan = getattr(engine, "plan", None)
    if plan is None or getattr(plan, "mode", "") != "prefill":
        return flow
    attn = {(b, layer): (start, end) for b, layer, kind, start, end in stages if kind == 0}
    for (b, layer), (start, _) in attn.items():
        prev = int(plan.mb_prev[b]) if b < plan.n_mb else -1
        if prev >= 0 and (prev, layer) in attn:
            flow += 1
            events.append({"ph": "s", "id": flow, "name": "KV of the previous chunk", "cat": "dependency", "pid": 0,
                           "tid": prev + 1, "ts": attn[(prev, layer)][1] / 1e6})
            events.append({"ph": "f", "bp": "e", "id": flow, "name": "KV of the previous chunk", "cat": "dependency",
                           "pid": 0, "tid": b + 1, "ts": start / 1e6})
    return flow


def _link_bandwidths(engine: Any) -> dict[str, float]:
    """Each NoC link's bandwidth (Gbit/s) by its resource name (none when the engine cannot say)."""
    rates = getattr(engine, "link_bandwidths_gbps", None)
    return rates() if callable(rates) else {}


def write_chrome_trace(timeline: Any, engine: Any, path: str | Path, window: Window = Window()) -> dict:
    """Write the trace of ``timeline`` within ``window`` to ``path``; returns what was kept and left out."""
    events, meta = chrome_events(timeline, engine, window)
    write_text(Path(path), dumps_json({"traceEvents": events, "displayTimeUnit": "ns",
                                       "metadata": {"hetmoe": meta}}))
    return meta
