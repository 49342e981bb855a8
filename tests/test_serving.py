"""Serving under load: queueing theory, unloaded latency, conservation, saturation, static equivalence,
request streams and the rate search.

Every expected number is computed here from a closed form or from the specification (the scheduler's
and the stream's docstrings), never copied from a run's output."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import simpy

from arch.errors import HetmoeError
from arch.safeio import InputError
from sim.api import build_run, simulate
from sim.serving.metrics import measured_window, stability
from sim.serving.scheduler import Scheduler, SchedulerConfig
from sim.serving.search import RESOLUTION, RateSearch
from tests.test_engine import TINY, TWO_NODE, chip, expected_single_token_ns, tiny, tiny_trace  # noqa: F401 (fixtures)
from workloads.checkpoints.stats import VARIANTS, ExpertStats, synthetic_stats
from workloads.requests import (Z99, ArrivalSpec, LengthSpec, RequestStream, parse_length, read_requests,
                                synthesize_requests)
from workloads.shapes import load_model
from workloads.traces.synthetic import SyntheticSpec, synthesize


# ------------------------------------------------------------------------------------------ helpers
class FixedTime:
    """Executor whose iteration takes ``a + b x tokens`` ps (no physics)."""

    def __init__(self, env: simpy.Environment, a_ps: int, b_ps: int = 0) -> None:
        self.env, self.a, self.b = env, a_ps, b_ps

    def run(self, it):
        yield self.env.timeout(self.a + self.b * it.tokens)


def one_token_requests(n: int, arrival: ArrivalSpec, seed: int) -> RequestStream:
    return synthesize_requests(n, arrival, LengthSpec("fixed", 1), LengthSpec("fixed", 1), seed=seed)


def run_scheduler(stream: RequestStream, cfg: SchedulerConfig, make_executor) -> Scheduler:
    env = simpy.Environment()
    sched = Scheduler(env, stream, cfg, None)
    sched.ex = make_executor(env, sched)
    sched.start()
    env.run()
    return sched


def batch_means_se(x: np.ndarray, batches: int = 40) -> float:
    """Standard error of the mean of a correlated series by non-overlapping batch means."""
    m = x[: x.size // batches * batches].reshape(batches, -1).mean(axis=1)
    return float(m.std(ddof=1) / math.sqrt(batches))


def in_system(arrival_ps: np.ndarray, finish_ps: np.ndarray, t: int) -> int:
    """Requests arrived at or before ``t`` and not finished by ``t``."""
    return int(np.searchsorted(arrival_ps, t, side="right") - ((finish_ps >= 0) & (finish_ps <= t)).sum())




# ------------------------------------------------------------------------------------------ 1. M/D/1
@pytest.mark.parametrize("rho,n", [(0.5, 60_000), (0.8, 200_000)])
def test_md1_waiting_time_matches_pollaczek_khinchine(rho, n):
    """One-token requests (prompt 1, output 1: one iteration each), one at a time, a fixed service time D:
    an M/D/1 queue, whose mean wait is Wq = rho D / (2 (1 - rho)) (Pollaczek-Khinchine)."""
    D = 1_000_000                                              # 1 us in ps
    rate = rho / (D * 1e-12)
    stream = one_token_requests(n, ArrivalSpec("poisson", rate), seed=2)
    cfg = SchedulerConfig(max_num_batched_tokens=1, max_num_seqs=1, max_inflight=1)
    sched = run_scheduler(stream, cfg, lambda env, _: FixedTime(env, D))
    rec = sched.records()
    assert sched.finished == n and sched.iterations == n
    wait = (rec["first_scheduled_ps"] - rec["arrival_ps"]).astype(np.float64)[n // 20:]   # drop the warm-up
    # one iteration per request: its first token comes exactly D after it is scheduled
    assert np.array_equal(rec["first_token_ps"] - rec["first_scheduled_ps"], np.full(n, D))
    wq = rho * D / (2 * (1 - rho))
    se = batch_means_se(wait)
    assert se < 0.02 * wq                                      # the comparison below is meaningful
    assert wait.mean() == pytest.approx(wq, rel=0.05)


# ------------------------------------------------------------------------------------------ 2. unloaded TTFT
@pytest.mark.parametrize("policy,route,analog_expert,analog_dense", [
    ("all-analog", 0, True, True), ("all-digital", 0, False, False),
    ("maxnn", 0, True, False), ("maxnn", 1, False, False)])
def test_unloaded_ttft_of_one_token_prompt_is_the_closed_form(chip, tiny, policy, route, analog_expert,
                                                               analog_dense):
    """Requests far apart (1 ms) of a 1-token prompt: each runs alone through an idle chip, so its TTFT is
    the one-token latency of tests/test_engine.py's closed form, lm_head included."""
    from sim.serve import serve

    planted = np.array([[1.0, 2.0]])        # maxnn at fraction 0.5 puts expert 1 on digital (as in test_engine)
    stats = ExpertStats({v: planted for v in VARIANTS}, planted, planted, False, "planted")
    stream = one_token_requests(12, ArrivalSpec("fixed", 1e3), seed=0)
    res = serve(chip, tiny, tiny_trace(tiny, [route]), policy, stream=stream, fraction=0.5, stats=stats,
                scheduler=SchedulerConfig(max_num_batched_tokens=8, max_inflight=1))
    t = res["requests_table"]
    ttft_ns = (np.array(t["first_token_ps"]) - np.array(t["arrival_ps"])) / 1000
    expected = expected_single_token_ns(chip, tiny, analog_expert, analog_dense, expert_remote=policy == "all-analog")
    assert ttft_ns == pytest.approx(np.full(12, expected), rel=1e-3)
    assert np.array_equal(np.array(t["first_scheduled_ps"]), np.array(t["arrival_ps"]))   # no queueing
    assert res["metrics"]["stable"]


def test_unloaded_ttft_of_longer_prompt_is_the_static_prefill(chip, tiny):
    """Prompts of P = 8 tokens on a trace of exactly 8 rows: every request reads rows 0..7 (offset r x 8 mod
    8 = 0), so each TTFT is the static, closed-batch prefill of that one 8-token request."""
    from sim.serve import serve

    routes = [0, 1, 1, 0, 1, 0, 0, 1]
    trace = tiny_trace(tiny, routes)
    stats = synthetic_stats(tiny, 0)
    static = build_run(chip, tiny, trace, "all-analog", stats=stats, batch=8, mode="prefill").engine.run()
    stream = synthesize_requests(6, ArrivalSpec("fixed", 1e3), LengthSpec("fixed", 8), LengthSpec("fixed", 1))
    res = serve(chip, tiny, trace, "all-analog", stream=stream, stats=stats,
                scheduler=SchedulerConfig(max_num_batched_tokens=8, max_inflight=1))
    t = res["requests_table"]
    ttft = np.array(t["first_token_ps"]) - np.array(t["arrival_ps"])
    assert ttft == pytest.approx(np.full(6, static), rel=1e-3)


# ------------------------------------------------------------------------------------------ 3. conservation
class Checker:
    """Wraps an executor and checks every iteration against the scheduler's rules as it is handed over."""

    def __init__(self, inner, sched: Scheduler) -> None:
        self.inner, self.s = inner, sched
        N = sched.stream.requests
        self.pos = np.zeros(N, np.int64)           # next position of each request's sequence
        self.emitted = np.zeros(N, np.int64)       # emitting steps completed
        self.seen_preemptions = np.zeros(N, np.int64)
        self.recomputed = 0                        # tokens thrown away by preemptions (run again)
        self.tokens = 0
        self.next_index = 0
        self.iterations = 0

    def check(self, it) -> None:
        s, cfg = self.s, self.s.cfg
        assert it.index == self.next_index
        self.next_index += 1
        assert 1 <= it.tokens <= cfg.max_num_batched_tokens
        assert 1 <= it.req.size <= cfg.max_num_seqs and len(s.running) <= cfg.max_num_seqs
        assert np.unique(it.req).size == it.req.size                      # no request twice in one iteration
        assert (it.n >= 1).all()
        if cfg.kv_blocks is not None:
            assert s.used_blocks <= cfg.kv_blocks and s.peak_blocks <= cfg.kv_blocks
        for r, start, n, e in zip(it.req.tolist(), it.start.tolist(), it.n.tolist(), it.emits.tolist()):
            assert self.emitted[r] < s.output[r]                           # a finished request never runs again
            if start != self.pos[r]:                                        # only a recompute restarts
                assert start == 0 and s.preemptions[r] > self.seen_preemptions[r]
                self.recomputed += int(self.pos[r])
            self.seen_preemptions[r] = s.preemptions[r]
            known = int(s.prompt[r] + self.emitted[r])
            assert start + n <= known
            assert e == (start + n == known)                               # emits iff it reaches the known length
            assert s.blocks[r] * cfg.block_size >= start + n                # its KV is allocated
            self.pos[r] = start + n

    def run(self, it):
        self.check(it)
        yield from self.inner.run(it)
        self.emitted[it.req[it.emits]] += 1
        self.tokens += it.tokens
        self.iterations += 1


def test_conservation_with_preemption_fixed_time_executor():
    n = 1000
    stream = synthesize_requests(n, ArrivalSpec("poisson", 20_000.0),
                                 parse_length("lognormal:64:400", "--prompt-tokens"),
                                 parse_length("uniform:1:48", "--output-tokens"), seed=4)
    need = stream.prompt_tokens + stream.output_tokens - 1
    cfg = SchedulerConfig(max_num_batched_tokens=128, max_num_seqs=32, block_size=16, kv_capacity_tokens=1536,
                          max_inflight=3)
    assert (-(-need // 16)).max() <= cfg.kv_blocks                    # every request fits on its own
    checkers = []

    def make(env, sched):
        checkers.append(Checker(FixedTime(env, 20_000_000, 200_000), sched))
        return checkers[0]

    sched = run_scheduler(stream, cfg, make)
    ch = checkers[0]
    rec = sched.records()
    assert sched.finished == n and not sched.running and not sched.waiting and sched.in_flight == 0
    assert sched.used_blocks == 0                                       # every block freed
    assert 0 < sched.peak_blocks <= cfg.kv_blocks
    assert rec["preemptions"].sum() > 0
    assert np.array_equal(rec["generated"], stream.output_tokens)
    assert np.array_equal(ch.emitted, stream.output_tokens)           # emitting steps = output length
    assert np.array_equal(ch.pos, need)                                 # each sequence ran to P + O - 1
    assert (rec["finish_ps"] >= rec["first_token_ps"]).all()
    assert (rec["first_token_ps"] > rec["first_scheduled_ps"]).all()
    assert (rec["first_scheduled_ps"] >= rec["arrival_ps"]).all()
    assert sched.emitted_tokens == int(stream.output_tokens.sum())
    assert ch.tokens == sched.processed_tokens == stream.tokens + ch.recomputed
    assert ch.recomputed > 0 and ch.iterations == sched.iterations


def test_conservation_on_the_engine(chip, tiny, monkeypatch):
    """A smaller run on the real engine (tiny chip), every iteration checked the same way."""
    import sim.serve as serve_mod
    from sim.engine.iteration import IterationRunner

    checkers = []

    class CheckedRunner(IterationRunner):
        def run(self, it):
            checkers[0].check(it)
            yield from super().run(it)
            checkers[0].emitted[it.req[it.emits]] += 1
            checkers[0].tokens += it.tokens
            checkers[0].iterations += 1

    class CheckedScheduler(Scheduler):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            checkers.append(Checker(None, self))

    monkeypatch.setattr(serve_mod, "IterationRunner", CheckedRunner)
    monkeypatch.setattr(serve_mod, "Scheduler", CheckedScheduler)
    n = 80
    stream = synthesize_requests(n, ArrivalSpec("poisson", 2e7), parse_length("uniform:1:40", "p"),
                                 parse_length("uniform:1:16", "o"), seed=1)
    trace = synthesize(SyntheticSpec(tokens=64, requests=1, seed=0), tiny)
    cfg = SchedulerConfig(max_num_batched_tokens=32, max_num_seqs=8, block_size=16, max_inflight=2)
    res = serve_mod.serve(chip, tiny, trace, "all-analog", stream=stream, scheduler=cfg, kv_capacity_tokens=128,
                          stats=synthetic_stats(tiny, 0))
    ch = checkers[0]
    t = {k: np.array(v) for k, v in res["requests_table"].items()}
    log = np.array(res["iteration_log"]["rows"])
    cols = res["iteration_log"]["columns"]
    assert (log[:, cols.index("tokens")] <= 32).all() and (log[:, cols.index("seqs")] <= 8).all()
    assert (log[:, cols.index("kv_blocks")] <= 128 // 16).all()
    assert res["metrics"]["peak_kv_tokens"] <= 128
    assert res["metrics"]["preemptions"] == t["preemptions"].sum() > 0
    assert np.array_equal(t["generated"], stream.output_tokens) and (t["finish_ps"] >= 0).all()
    assert np.array_equal(ch.emitted, stream.output_tokens)
    assert np.array_equal(ch.pos, stream.prompt_tokens + stream.output_tokens - 1)
    c = res["conservation"]
    assert c["requests_finished"] == n
    assert c["tokens_emitted"] == c["tokens_expected"] == int(stream.output_tokens.sum())
    assert c["tokens_processed"] == res["engine"]["tokens_run"] == stream.tokens + ch.recomputed
    assert res["engine"]["iterations"] == ch.iterations == log.shape[0]
    assert res["engine"]["layer_visits"] == ch.iterations * tiny.num_layers


# ------------------------------------------------------------------------------------------ 4. saturation
B, A_PS, B_PS = 8, 800_000, 100_000            # budget B tokens; an iteration takes a + b x tokens
CAPACITY = B / ((A_PS + B_PS * B) * 1e-12)     # full iterations of B one-token requests: requests / s


def _saturation_run(load: float, n: int = 4000):
    stream = one_token_requests(n, ArrivalSpec("poisson", load * CAPACITY), seed=7)
    cfg = SchedulerConfig(max_num_batched_tokens=B, max_num_seqs=B, max_inflight=1)
    sched = run_scheduler(stream, cfg, lambda env, _: FixedTime(env, A_PS, B_PS))
    rec = sched.records()
    w = measured_window(rec["arrival_ps"], 0.1)
    fin = rec["finish_ps"]
    done = int(((fin > w["t_a_ps"]) & (fin <= w["t_b_ps"])).sum())
    throughput = done / ((w["t_b_ps"] - w["t_a_ps"]) * 1e-12)
    stab = stability(in_system(rec["arrival_ps"], fin, w["t_a_ps"]), in_system(rec["arrival_ps"], fin, w["t_b_ps"]),
                     w["hi"] - w["lo"])
    return stream, sched, rec, w, throughput, stab


def test_saturation_serves_at_capacity_and_is_unstable():
    stream, sched, rec, w, throughput, stab = _saturation_run(2.0)
    assert CAPACITY == pytest.approx(5e6)
    assert throughput == pytest.approx(CAPACITY, rel=0.02)
    assert not stab["stable"]
    # the backlog grows by (2 - 1) x capacity x window: the window's N arrivals come at 2 x capacity, so it
    # lasts N / (2 capacity) and serves N / 2 of them; growth N - N / 2 = N / 2 (Poisson: sd ~ sqrt(N) / 2,
    # under 2 % of N / 2 here); the criterion's limit is 10 % of the arrivals
    assert stab["growth_requests"] == pytest.approx(0.5 * (w["hi"] - w["lo"]), rel=0.1)
    queue = (rec["first_scheduled_ps"] - rec["arrival_ps"])[w["lo"]:w["hi"]]
    k = (w["hi"] - w["lo"]) // 10
    # arrivals at twice the service rate: the wait of a request arriving at t grows like t, so the last
    # tenth of the window (arrivals near 0.86 of the run) waits about 6 times the first (near 0.14)
    assert queue[-k:].mean() > 4 * queue[:k].mean()
    # saturated, the server takes B requests every a + b B: request i is first scheduled at
    # (i - lo) (a + b B) / B after request lo, to within one iteration
    i = np.arange(w["lo"], w["hi"])
    served = rec["first_scheduled_ps"][i]
    S = A_PS + B_PS * B
    assert np.abs(served - (served[0] + (i - w["lo"]) * S / B)).max() <= S
    # every measured iteration is full: B requests
    log = sched.log_array()
    inside = (log[:, 1] >= w["t_a_ps"]) & (log[:, 1] <= w["t_b_ps"])
    assert (log[inside, 3] == B).all()


def test_half_capacity_is_stable():
    stream, sched, rec, w, throughput, stab = _saturation_run(0.5)
    assert stab["stable"]
    offered = (w["hi"] - w["lo"] - 1) / ((w["t_b_ps"] - w["t_a_ps"]) * 1e-12)   # arrivals in the window
    assert throughput == pytest.approx(offered, rel=0.05)
    assert sched.finished == stream.requests


# ------------------------------------------------------------------------------------------ 5. closed batch
def test_closed_batch_reproduces_static_prefill():
    """N requests of P prompt tokens (one output) queued at t = 0 under a 64-token budget and 4 in flight
    are the static prefill's micro-batches (each request cut into P / 64 chained chunks of 64, 4 in
    flight): the synthetic trace puts request r's tokens in rows r P .. r P + P - 1, which is where the
    stream's mapping (offset r = r P) reads them."""
    from sim.serve import serve

    model = load_model("olmoe-1b-7b")
    N, P, seed = 4, 256, 3
    trace = synthesize(SyntheticSpec(tokens=N * P, requests=N, seed=seed), model)
    assert np.array_equal(trace.request, np.repeat(np.arange(N), P))       # contiguous rows per request
    static = simulate("aimc-3d-moe", model, trace, "maxnn", mode="prefill", batch=64, seed=seed)
    stream = synthesize_requests(N, ArrivalSpec("closed"), LengthSpec("fixed", P), LengthSpec("fixed", 1), seed=seed)
    res = serve("aimc-3d-moe", model, trace, "maxnn", stream=stream, seed=seed,
                scheduler=SchedulerConfig(max_num_batched_tokens=64, max_inflight=4))
    assert res["engine"]["iterations"] == static.data["engine"]["micro_batches"] == N * P // 64
    assert res["metrics"]["makespan_s"] == pytest.approx(static.metrics["makespan_s"], rel=0.01)


# ------------------------------------------------------------------------------------------ 6. streams
def test_parse_length_forms():
    assert parse_length("7", "--prompt-tokens") == LengthSpec("fixed", 7)
    assert parse_length(" uniform:2:5 ", "--prompt-tokens") == LengthSpec("uniform", 2, 5)
    assert parse_length("uniform:3:3", "--prompt-tokens") == LengthSpec("uniform", 3, 3)
    assert parse_length("lognormal:100:400", "--output-tokens") == LengthSpec("lognormal", 100, 400)
    rng = np.random.default_rng(0)
    u = parse_length("uniform:2:5", "x").sample(20_000, rng)
    assert u.min() == 2 and u.max() == 5 and set(np.unique(u).tolist()) == {2, 3, 4, 5}


@pytest.mark.parametrize("text,extra", [
    ("0", ""), ("1.5", ""), ("abc", ""), ("-3", ""), ("nan", ""), ("inf", ""), ("uniform:1", ""),
    ("uniform:5:2", "; LO <= HI, integers"), ("uniform:1.5:3", "; LO <= HI, integers"), ("poisson:1:2", ""),
    ("lognormal:100:50", "; a lognormal needs MEAN < P99"), ("lognormal:100:100", "; a lognormal needs MEAN < P99"),
    ("lognormal:10:1000", "; a lognormal needs MEAN < P99"), ("uniform:0:4", ""), ("lognormal:1:2:3", "")])
def test_parse_length_errors(text, extra):
    msg = f"--prompt-tokens {text!r}: allowed N (tokens), uniform:LO:HI or lognormal:MEAN:P99 (tokens, >= 1){extra}"
    with pytest.raises(HetmoeError, match=re.escape(msg)):
        parse_length(text, "--prompt-tokens")


def test_lognormal_bound_is_exp_z99_squared_over_2():
    """P99 / MEAN may reach exp(z99^2 / 2) (the discriminant of the sigma equation is then 0)."""
    limit = math.exp(Z99 ** 2 / 2)
    assert parse_length(f"lognormal:10:{10 * limit * 0.999}", "x").kind == "lognormal"
    with pytest.raises(HetmoeError, match=re.escape(f"MEAN x {limit:.1f}")):
        parse_length(f"lognormal:10:{10 * limit * 1.001}", "x")


@pytest.mark.parametrize("mean,p99", [(200, 1000), (64, 400)])
def test_lognormal_fit_mean_and_p99(mean, p99):
    x = parse_length(f"lognormal:{mean}:{p99}", "x").sample(400_000, np.random.default_rng(11))
    assert x.dtype == np.int64 and x.min() >= 1
    assert x.mean() == pytest.approx(mean, rel=0.02)
    assert np.percentile(x, 99) == pytest.approx(p99, rel=0.03)


@pytest.mark.parametrize("cv", [0.5, 1.0, 2.0])
def test_gamma_arrivals_rate_and_cv(cv):
    rate = 5.0
    t = ArrivalSpec("gamma", rate, cv).times(200_000, np.random.default_rng(3))
    gaps = np.diff(np.r_[0.0, t])
    assert (gaps >= 0).all()
    assert gaps.mean() == pytest.approx(1 / rate, rel=0.02)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.03)


def test_other_arrival_processes():
    rng = np.random.default_rng(0)
    t = ArrivalSpec("fixed", 4.0).times(5, rng)
    assert t == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.25])
    assert ArrivalSpec("closed").times(3, rng).tolist() == [0.0, 0.0, 0.0]
    g = np.diff(np.r_[0.0, ArrivalSpec("poisson", 2.0).times(200_000, rng)])
    assert g.mean() == pytest.approx(0.5, rel=0.02) and g.std() / g.mean() == pytest.approx(1.0, rel=0.02)
    with pytest.raises(HetmoeError, match=r"--arrival 'bursty'; allowed: poisson, gamma, fixed, closed"):
        ArrivalSpec("bursty")
    with pytest.raises(HetmoeError, match=r"--rate 0: allowed a number > 0"):
        ArrivalSpec("poisson", 0)
    with pytest.raises(HetmoeError, match=r"--cv -1"):
        ArrivalSpec("gamma", 1.0, -1)


def test_synthesized_lengths_do_not_depend_on_the_rate():
    a = synthesize_requests(50, ArrivalSpec("poisson", 1.0), parse_length("uniform:1:99", "p"),
                            parse_length("lognormal:20:90", "o"), seed=5)
    b = synthesize_requests(50, ArrivalSpec("poisson", 9.0), parse_length("uniform:1:99", "p"),
                            parse_length("lognormal:20:90", "o"), seed=5)
    assert np.array_equal(a.prompt_tokens, b.prompt_tokens) and np.array_equal(a.output_tokens, b.output_tokens)
    assert a.arrival_s == pytest.approx(b.arrival_s * 9.0)         # the same exponential draws, rescaled
    assert a.tokens == int((a.prompt_tokens + a.output_tokens - 1).sum())


def test_read_azure_csv(tmp_path):
    """Azure LLM inference trace columns, ISO date-times with 7 fractional digits, rows out of order, one
    row with 0 generated tokens (dropped and counted)."""
    path = tmp_path / "azure.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                    "2023-11-16 18:15:46.6805900,374,44\n"
                    "2023-11-16 18:15:50.1234567,12,0\n"
                    "2023-11-16 18:15:47.9000001,1020,7\n"
                    "2023-11-16 18:15:46.7000000,5,1\n")
    s = read_requests(path)
    assert s.requests == 3 and s.meta["rows_without_output_dropped"] == 1
    # seconds after 18:15:46.6805900, in arrival order
    assert s.arrival_s == pytest.approx([0.0, 0.7 - 0.68059, 1.9000001 - 0.68059], abs=2e-6)
    assert s.prompt_tokens.tolist() == [374, 5, 1020] and s.output_tokens.tolist() == [44, 1, 7]
    assert s.prompt_tokens.dtype == np.int64 and s.output_tokens.dtype == np.int64


def test_read_jsonl_and_plain_csv(tmp_path):
    j = tmp_path / "req.jsonl"
    j.write_text('{"arrival_s": 2.5, "prompt_tokens": 10, "output_tokens": 3}\n\n'
                 '{"arrival_s": 1.0, "prompt_tokens": 4, "output_tokens": 2}\n'
                 '{"arrival_s": 2.5, "prompt_tokens": 6, "output_tokens": 1}\n')
    s = read_requests(j)
    assert s.arrival_s.tolist() == [0.0, 1.5, 1.5]                   # ties keep file order
    assert s.prompt_tokens.tolist() == [4, 10, 6] and s.output_tokens.tolist() == [2, 3, 1]
    c = tmp_path / "req.csv"
    c.write_text("arrival_s,prompt_tokens,output_tokens\n0.5,8,2\n0.25,16,4\n")
    s = read_requests(c)
    assert s.arrival_s.tolist() == [0.0, 0.25] and s.prompt_tokens.tolist() == [16, 8]
    assert s.tokens == (16 + 4 - 1) + (8 + 2 - 1)


@pytest.mark.parametrize("name,text,where,what", [
    ("bad.csv", "arrival_s,prompt_tokens,output_tokens\n0.5,8,2\n0.7,eight,2\n", 3,
     "prompt tokens 'eight' is not a number"),
    ("bad2.csv", "arrival_s,prompt_tokens,output_tokens\n0.5,8,2\n0.6,8,2\nyesterday,8,2\n", 4,
     "arrival time 'yesterday' is neither seconds nor an ISO date-time"),
    ("bad3.csv", "arrival_s,prompt_tokens,output_tokens\n0.5,0,2\n", 2, "prompt tokens '0': allowed an integer"),
    ("bad4.csv", "arrival_s,prompt,output_tokens\n0.5,3,2\n", 2, "no prompt_tokens or ContextTokens field"),
    ("bad.jsonl", '{"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1}\n{"arrival_s": 1, "prompt_tokens": 2,\n',
     2, "not valid JSON"),
    ("bad2.jsonl", '{"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1}\n[1, 2]\n', 2, "expected an object"),
    ("bad3.jsonl", '{"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 2.5}\n', 1, "output tokens 2.5"),
])
def test_read_requests_errors_name_file_and_line(tmp_path, name, text, where, what):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError, match=re.escape(f"{path}:{where}: {what}")):
        read_requests(path)


def test_read_requests_all_rows_without_output(tmp_path):
    path = tmp_path / "none.csv"
    path.write_text("arrival_s,prompt_tokens,output_tokens\n0.5,8,0\n")
    with pytest.raises(InputError, match=re.escape(f"{path}: no requests")):
        read_requests(path)


# ------------------------------------------------------------------------------------------ 7. rate search
def _search(threshold: float, capacity: float, k: int, max_rates: int) -> tuple[RateSearch, list[list[float]]]:
    s = RateSearch(capacity, k=k, max_rates=max_rates)
    rounds = []
    while True:
        rates = s.next_rates()
        if not rates:
            break
        assert len(rates) <= k and all(r not in s.tried for r in rates)
        rounds.append(rates)
        s.record({r: r <= threshold for r in rates})
        assert len(s.tried) <= max_rates
        assert len(rounds) < 100
    return s, rounds


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_rate_search_converges_below_the_threshold(k):
    s, rounds = _search(7.3, 10.0, k, max_rates=40)
    assert rounds[0] == pytest.approx([12.0 * (i + 1) / (k + 1) for i in range(k)])   # [0, 1.2 x capacity]
    assert s.done and s.hi - s.lo <= RESOLUTION * s.hi                 # stopped by resolution, not the cap
    assert s.lo <= 7.3 < s.hi and s.best == s.lo
    assert 7.3 - s.best <= RESOLUTION * s.hi
    assert all(ok == (r <= 7.3) for r, ok in s.tried.items())


@pytest.mark.parametrize("k,max_rates", [(2, 8), (3, 7), (2, 5), (4, 3)])
def test_rate_search_never_exceeds_max_rates(k, max_rates):
    s, _ = _search(7.3, 10.0, k, max_rates)
    assert len(s.tried) == max_rates or s.hi - s.lo <= RESOLUTION * s.hi
    assert len(s.tried) <= max_rates and s.done and s.next_rates() == []
    assert s.best is None or s.best <= 7.3


def test_rate_search_doubles_when_the_top_passes_and_reports_none_when_nothing_does():
    s, rounds = _search(50.0, 10.0, 2, max_rates=60)
    assert max(r for rd in rounds for r in rd) > 12.0                  # the bracket grew past 1.2 x capacity
    assert s.lo <= 50.0 < s.hi and s.hi - s.lo <= RESOLUTION * s.hi
    s, _ = _search(0.0, 10.0, 2, max_rates=8)
    assert s.best is None and len(s.tried) == 8
    with pytest.raises(ValueError):
        RateSearch(0.0)
