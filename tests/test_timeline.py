"""The Chrome trace: arguments on every booking, stage spans joined by dependency arrows, a window, and a
size estimate checked against the file written."""

from __future__ import annotations

import json

import pytest

from arch.errors import HetmoeError
from sim.api import simulate
from sim.report.timeline import Window, estimate_bytes, size_warning

def _small(tmp_path, window=None):
    from workloads.traces.synthetic import SyntheticSpec

    path = tmp_path / "events.json"
    result = simulate("aimc-3d-moe", "olmoe-1b-7b", SyntheticSpec(tokens=96, requests=2, seed=1), "maxnn",
                      batch=16, trace_events=path, trace_window=window)
    return result, json.loads(path.read_text()), path


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    return _small(tmp_path_factory.mktemp("whole"))


def test_every_booking_names_its_micro_batch_and_layer_and_links_their_bytes(whole):
    result, trace, _ = whole
    L = 16                                                   # olmoe-1b-7b's layers
    n_mb = 96 // 16
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["pid"] > 0]
    assert spans
    for e in spans:
        a = e["args"]
        assert 0 <= a["micro_batch"] < n_mb and (a["layer"] == "output head" or 0 <= a["layer"] < L)
        assert a["micro_batch_tokens"] == 16
    links = [e for e in spans if e["pid"] == 4]
    assert links
    from arch import load_chip

    bw = load_chip("aimc-3d-moe").noc.link_bandwidth_gbps
    for e in links:                                          # a link is booked at its full rate
        assert e["args"]["bytes"] == round(e["dur"] * 1e3 * bw / 8)


def test_stages_follow_each_other_and_the_arrows_join_them(whole):
    _, trace, _ = whole
    ev = trace["traceEvents"]
    stages = [e for e in ev if e["ph"] == "X" and e["pid"] == 0]
    n_mb, L = 96 // 16, 16
    lm = sum(1 for e in stages if e["args"]["layer"] == "output head")
    assert len(stages) == n_mb * L * 4 + lm and 1 <= lm <= n_mb
    by_mb: dict[int, list] = {}
    for e in stages:
        by_mb.setdefault(e["args"]["micro_batch"], []).append(e)
    for spans in by_mb.values():
        spans.sort(key=lambda e: e["ts"])
        for a, b in zip(spans, spans[1:]):
            if b["args"]["stage"] == "attention":               # may also wait for the previous chunk's KV
                assert b["ts"] >= a["ts"] + a["dur"] - 1e-6
            else:                                               # starts when the stage before it ends
                assert b["ts"] == pytest.approx(a["ts"] + a["dur"], abs=1e-6)
    starts = {e["id"]: e for e in ev if e["ph"] == "s"}
    ends = {e["id"]: e for e in ev if e["ph"] == "f"}
    assert starts.keys() == ends.keys()
    within = [i for i in starts if starts[i]["name"] == "waits for"]
    assert len(within) == len(stages) - n_mb               # one arrow into every stage but each first one
    for i in starts:
        assert ends[i]["ts"] >= starts[i]["ts"] - 1e-9       # an arrow never points back in time
    chunks = [i for i in starts if starts[i]["name"] == "KV of the previous chunk"]
    assert len(chunks) == (n_mb - 2) * L                     # 2 requests of 3 chunks: 4 later chunks x L layers
    assert trace["metadata"]["hetmoe"]["flow_arrows"] == len(starts)


def test_a_window_keeps_the_first_micro_batches_and_counts_the_rest(whole, tmp_path):
    _, full, _ = whole
    _, part, _ = _small(tmp_path, "2")
    spans = [e for e in part["traceEvents"] if e["ph"] == "X"]
    assert {e["args"]["micro_batch"] for e in spans} == {0, 1}

    def names(trace: dict) -> dict:                  # thread ids are numbered as threads appear: compare names
        return {(m["pid"], m["tid"]): m["args"]["name"] for m in trace["traceEvents"]
                if m["ph"] == "M" and m["name"] == "thread_name"}

    def named(threads: dict, e: dict) -> str:
        return json.dumps({**e, "tid": threads[(e["pid"], e["tid"])]}, sort_keys=True)

    tp, tf = names(part), names(full)
    kept = {named(tp, e) for e in spans if e["pid"] > 0}
    every = [e for e in full["traceEvents"] if e["ph"] == "X" and e["pid"] > 0]
    first_two = {named(tf, e) for e in every if e["args"]["micro_batch"] < 2}
    assert kept == first_two
    meta = part["metadata"]["hetmoe"]
    assert meta["bookings_kept"] == len(kept) and meta["bookings_kept"] + meta["bookings_left_out"] == len(every)


def test_a_time_window_keeps_the_bookings_that_overlap_it(whole, tmp_path):
    _, full, _ = whole
    every = [e for e in full["traceEvents"] if e["ph"] == "X" and e["pid"] > 0]
    t_end = max(e["ts"] + e["dur"] for e in every)
    a, b = 0.25 * t_end, 0.5 * t_end
    _, part, _ = _small(tmp_path, f"{a}:{b}")
    got = [e for e in part["traceEvents"] if e["ph"] == "X" and e["pid"] > 0]
    want = [e for e in every if e["ts"] + e["dur"] >= a - 1e-6 and e["ts"] <= b + 1e-6]
    assert abs(len(got) - len(want)) <= 2                    # ps -> µs rounding at the two edges


def test_the_size_estimate_is_within_2x_of_the_file(whole):
    _, trace, path = whole
    meta = trace["metadata"]["hetmoe"]
    estimate = estimate_bytes(meta["bookings_kept"], meta["stage_spans"])
    size = path.stat().st_size
    assert size / 2 <= estimate <= 2 * size
    assert size_warning(estimate, Window()) is None
    big = size_warning(200 * 2 ** 20, Window(3))
    assert "about 200 MiB" in big and "--trace-window N" in big and "first 3 micro-batches" in big


@pytest.mark.parametrize("text", ["0", "-1", "x", "5:2", "3:3", ":-1", "1.5"])
def test_a_bad_window_is_one_line(text):
    with pytest.raises(HetmoeError, match="--trace-window"):
        Window.parse(text)


def test_window_parse():
    assert Window.parse("4") == Window(4)
    assert Window.parse("10:20") == Window(None, 10.0, 20.0)
    assert Window.parse(":20") == Window(None, 0.0, 20.0)
    assert Window.parse("10:") == Window(None, 10.0, None)
    assert Window.parse(None) == Window()
