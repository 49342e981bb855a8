"""The fast noisy pass: its draw stream, its compiled kernels held to the array code they replace,
programming once per seed and matrix, bitwise reproducibility, and the torch backend against numpy.

The array code (``fused=False``) is the reference: it is what the torch backend runs, and the compiled
numpy path must give the same numbers from the same stream (bitwise for the MVM; programming computes
in float64 inside the kernel, float32 in the arrays, so agreement is to float32 rounding).
"""

from __future__ import annotations

from dataclasses import replace
from math import erfc, sqrt

import numpy as np
import pytest

from arch import load_chip
from arch.noise import NormalStream, block_mvm, converter_step, program, slot_physics
from arch.spec import NoiseSpec, ProgrammingNoiseSpec
from sim.functional.backend import backend
from sim.functional.operators import analog_apply, program_matrix

Z = 6.0


# ----------------------------------------------------------------------------- the stream

def test_stream_is_reproducible_and_sequential():
    a, b, c = NormalStream([3, 1]), NormalStream([3, 1]), NormalStream([3, 2])
    first = a((40, 50))
    assert first.dtype == np.float32 and first.shape == (40, 50)
    assert np.array_equal(first, b((40, 50)))
    assert not np.array_equal(first, c((40, 50)))
    # sequential: one block of 2000 = two calls of 700 and 1300
    d, e = NormalStream([9]), NormalStream([9])
    assert np.array_equal(d(2000), np.concatenate([e(700), e(1300)]))
    g1, g2 = np.random.default_rng(4), np.random.default_rng(4)
    assert np.array_equal(NormalStream.from_generator(g1)(10), NormalStream.from_generator(g2)(10))


def test_stream_is_standard_normal():
    """Mean, variance, skew and kurtosis within Z standard errors, and the two-sided tail frequencies
    P(|z| > t) (t = 1..5, the ziggurat's base strip and tail included) within Z binomial errors."""
    n = 4_000_000
    z = NormalStream([2026])(n).astype(np.float64)
    assert abs(z.mean()) <= Z / sqrt(n)
    assert abs(z.var() - 1.0) <= Z * sqrt(2.0 / n)
    assert abs((z ** 3).mean()) <= Z * sqrt(15.0 / n)
    assert abs((z ** 4).mean() - 3.0) <= Z * sqrt(96.0 / n)
    a = np.abs(z)
    for t in (1.0, 2.0, 3.0, 3.6541528853610088, 4.0, 5.0):
        p = erfc(t / sqrt(2.0))
        assert abs((a > t).mean() - p) <= Z * sqrt(p * (1 - p) / n) + 1.0 / n, t


# ----------------------------------------------------------------------------- compiled == array code

def _mvm_case(seed: int = 0, n: int = 300, rows: int = 96, out: int = 200, spread: float = 1.0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, rows)) * rng.uniform(0.1, 3.0, (n, 1))).astype(np.float32)
    w = (rng.normal(size=(out, rows)) * spread).astype(np.float32)
    w /= np.abs(w).max()
    cs = rng.uniform(0.5, 2.0, out).astype(np.float32)
    return x, w, cs


NOISES = {
    "aihwkit defaults": dict(out_noise=0.06),
    "saturating, iterative": dict(out_noise=0.06, out_bound=1.5),
    "saturating, no management": dict(out_noise=0.06, out_bound=1.5, bound_management="none"),
    "read noise": dict(out_noise=0.06, w_noise=0.02),
    "no output noise": dict(out_noise=0.0),
    "relative": dict(out_noise=0.04, out_noise_relative=0.04),
    "calibrated": dict(out_noise_relative=0.04, out_range="calibrated"),
    "input noise": dict(out_noise=0.06, inp_noise=0.01, out_bound=1.5),
    "fixed input range": dict(out_noise=0.06, noise_management="none", inp_bound=4.0),
}


@pytest.mark.parametrize("name", NOISES)
@pytest.mark.parametrize("width", [200, 64, 50])
def test_fused_mvm_equals_the_array_code(name, width):
    x, w, cs = _mvm_case()
    noise = NoiseSpec(**NOISES[name])
    a = block_mvm(x, w, noise, 7, 9, NormalStream([1]), width, cs, fused=True)
    b = block_mvm(x, w, noise, 7, 9, NormalStream([1]), width, cs, fused=False)
    assert a.dtype == np.float32
    assert np.array_equal(a, b)


def test_the_saturating_cases_do_rerun():
    """The 'saturating' cases above exercise bound management: some vectors saturate a slot at first."""
    x, w, _ = _mvm_case()
    y = x / np.abs(x).max(axis=1, keepdims=True) @ w.T
    assert (np.abs(y) > 1.5).any(axis=1).mean() > 0.05


@pytest.mark.parametrize("model,devices", [("pcm", 1), ("hermes", 1), ("hermes", 2)])
@pytest.mark.parametrize("compensation", ["global", "none"])
def test_fused_programming_matches_the_array_code(model, devices, compensation):
    w = np.random.default_rng(1).normal(size=(96, 80)).astype(np.float32)
    w /= np.abs(w).max()
    w[0, :5] = 0.0                                   # both devices at zero target
    prog = ProgrammingNoiseSpec(model=model, num_devices=devices, t_inference_s=3600.0,
                                drift_compensation=compensation)
    noise = NoiseSpec(out_noise=0.06, out_noise_relative=0.02, programming=prog)
    step = converter_step(9, 12.0)
    a, alpha_a = program(w, noise, step, NormalStream([5]), fused=True)
    b, alpha_b = program(w, noise, step, NormalStream([5]), fused=False)
    assert a.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=0, atol=2e-6)
    assert alpha_a == pytest.approx(alpha_b, rel=2e-6)
    assert (alpha_a != 1.0) == (compensation == "global")


def _phys(noise: NoiseSpec, rows: int, cols: int):
    chip = load_chip("aimc-3d-moe", {"analog": {"tile": {"rows": rows, "cols": cols},
                                                "dac": {"bits": 7, "per_tile": rows},
                                                "adc": {"bits": 9, "per_tile": cols}},
                                     "precision": {"activation_bits": 7}})
    return replace(slot_physics(chip), noise=noise)


@pytest.mark.parametrize("out_bound", [12.0, 2.0])
def test_matrix_of_many_slots_fused_equals_the_array_code(out_bound):
    """200 x 150 on 64 x 48 slots: 3 + remainder row blocks, 4 + remainder column blocks."""
    rng = np.random.default_rng(3)
    w = rng.normal(0, 0.1, (200, 150)).astype(np.float32)
    x = rng.normal(size=(64, 150)).astype(np.float32)
    noise = NoiseSpec(out_noise=0.06, out_bound=out_bound,
                      programming=ProgrammingNoiseSpec(model="pcm", t_inference_s=3600.0))
    phys = _phys(noise, 64, 48)
    be = backend("numpy")
    m = program_matrix(w, phys, NormalStream([1, 0]), be)
    assert len(m.rows) == 3 and len(m.cols) == 5
    a = analog_apply(x, m, phys, NormalStream([1, 1]), be, fused=True)
    b = analog_apply(x, m, phys, NormalStream([1, 1]), be, fused=False)
    assert np.array_equal(a, b)
    # a noisy x @ W.T, not something else
    assert np.corrcoef(a.ravel(), (x @ w.T).ravel())[0, 1] > 0.95


# ----------------------------------------------------------------------------- forward pass

@pytest.fixture(scope="module")
def small(tmp_path_factory):
    from tests.moe_checkpoints import olmoe_config, write_olmoe

    return write_olmoe(tmp_path_factory.mktemp("ckpt"), olmoe_config(hidden=32, layers=2, experts=8, top_k=2,
                                                                      width=16, vocab=64), seed=1)


def _run(ckpt, placements, hw, ids, seeds=1, device="numpy", batch=2):
    from sim.functional.architecture import read_architecture
    from sim.functional.forward import ForwardRun
    from sim.placement import POLICIES, PlacementContext
    from workloads.checkpoints.stats import compute_stats

    arch = read_architecture(ckpt)
    stats = compute_stats(ckpt, arch.shape, cache=False)
    ctx = PlacementContext(arch.shape, None, stats, 0.25)
    run = ForwardRun(arch, ckpt, slot_physics(hw), [POLICIES[p](ctx) for p in placements], list(range(seeds)),
                     backend(device), keep_logits=True, batch_sequences=batch)
    run.tallies = run.run(ids)
    return run


PCM = {"out_noise": 0.06, "programming": {"model": "pcm", "t_inference_s": 3600.0}}


def _hw(noise=PCM):
    return load_chip("aimc-3d-moe", {"analog": {"noise": noise, "tile": {"rows": 16, "cols": 16},
                                                "dac": {"per_tile": 16}, "adc": {"per_tile": 16}}})


def test_each_matrix_is_programmed_once_per_seed(small, monkeypatch):
    """Two placements that share analog matrices, two noise seeds, three batches: one programming per
    (analog matrix, seed), reused by every placement and batch."""
    import sim.functional.forward as fw

    calls = []
    real = fw.program_matrix
    monkeypatch.setattr(fw, "program_matrix", lambda w, *a, **k: calls.append(w.shape) or real(w, *a, **k))
    ids = np.random.default_rng(0).integers(0, 64, (6, 9))
    run = _run(small, ["all-analog", "maxnn"], _hw(), ids, seeds=2, batch=2)
    analog = {m.name for m in run.arch.shape.matrices if not run.placements[0].is_digital(m)}
    assert len(calls) == 2 * len(analog)


def test_noisy_pass_is_bitwise_reproducible(small):
    ids = np.random.default_rng(1).integers(0, 64, (4, 9))
    a = _run(small, ["all-analog"], _hw(), ids)
    b = _run(small, ["all-analog"], _hw(), ids)
    from sim.functional.forward import Variant

    la, lb = np.concatenate(a.logits[Variant(0, 0)]), np.concatenate(b.logits[Variant(0, 0)])
    assert np.array_equal(la, lb)
    clean = np.concatenate(a.logits[Variant(None, None)])
    assert not np.array_equal(la, clean)
    assert set(a.seconds) == {"clean", "program", "noisy"} and a.seconds["noisy"] > 0


@pytest.mark.parametrize("noise", [PCM, {"out_noise": 0.06, "out_bound": 2.0, "out_noise_relative": 0.03,
                                         "programming": {"model": "hermes", "t_inference_s": 3600.0}}])
def test_torch_cpu_agrees_with_numpy_within_1e_3(small, noise):
    pytest.importorskip("torch", reason="torch is not installed (optional backend)")
    from sim.functional.forward import Variant

    ids = np.random.default_rng(2).integers(0, 64, (3, 9))
    a = _run(small, ["all-analog"], _hw(noise), ids, device="numpy")
    b = _run(small, ["all-analog"], _hw(noise), ids, device="cpu")
    for v in (Variant(None, None), Variant(0, 0)):
        x, y = np.concatenate(a.logits[v]), np.concatenate(b.logits[v])
        assert np.abs(x - y).max() <= 1e-3 * np.abs(x).max()
