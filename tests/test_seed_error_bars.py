"""Answers that respect their error bars (issue 28, item 3): the budget rule on the upper confidence bound,
paired differences over common seeds, and "not separable" with the seed count that would separate."""

from __future__ import annotations

from math import sqrt

import numpy as np
import pytest

from sim.report import seeds, tradeoff


def test_t_table_matches_students_t():
    st = pytest.importorskip("scipy.stats")
    for df in (*seeds.T95, 200):
        assert seeds.t_quantile(seeds.T95, seeds.Z95, df) == pytest.approx(
            st.t.ppf(0.95, min(df, 120) if df in seeds.T95 else 1e9), abs=2e-3 if df in seeds.T95 else 1e-2)
        assert seeds.t_quantile(seeds.T975, seeds.Z975, df) == pytest.approx(
            st.t.ppf(0.975, min(df, 120) if df in seeds.T975 else 1e9), abs=2e-3 if df in seeds.T975 else 1e-2)
    # between tabulated degrees of freedom the quantile errs wide (the smaller df's, which is larger)
    assert seeds.t_quantile(seeds.T975, seeds.Z975, 11) == seeds.T975[10] > st.t.ppf(0.975, 11)


def test_upper_bound_is_mean_plus_t_s_over_root_n():
    vals = np.array([0.004, 0.009, 0.006, 0.011, 0.007])
    m, s = vals.mean(), vals.std(ddof=1)
    assert seeds.upper_bound(m, s, 5) == pytest.approx(m + seeds.T95[4] * s / sqrt(5))
    assert seeds.upper_bound(m, s, 1) == float("inf")


def _rows(a_seeds, b_seeds, a_tpw=2.0, b_tpw=1.0, a="maxnn 25%", b="random 25%"):
    def row(label, per, tpw):
        per = np.asarray(per)
        return {"label": label, "policy": label.split()[0], "fraction": 0.25, "tokens_per_s": 1.0,
                "energy_per_token_uj": 1.0, "tokens_per_s_per_w": tpw, "loss": float(per.mean()),
                "loss_std": float(per.std(ddof=1)), "delta_bits": 0.0, "delta_bits_std": 0.0, "kl": 0.0,
                "kl_std": 0.0, "top1": 1.0, "routes_changed": 0.0, "loss_per_seed": per.tolist(), "feasible": True}
    return [row(a, a_seeds, a_tpw), row(b, b_seeds, b_tpw)]


ACC = {"max_loss_rel_perplexity": 0.01, "eval": {"predicted_tokens": 100, "source": "ids.npy"},
       "clean": {"perplexity": 3.0}, "noise_seeds": 5}


def test_a_difference_within_the_seed_error_is_not_separable():
    rng = np.random.default_rng(1)
    common = rng.normal(0.005, 0.002, 5)                 # the seeds' shared noise
    a = common + np.array([0.0004, -0.0003, 0.0002, -0.0001, 0.0001])
    b = common + np.array([-0.0002, 0.0003, 0.0001, 0.0002, -0.0003])
    d = a - b
    t = d.mean() / (d.std(ddof=1) / sqrt(5))
    assert abs(t) < seeds.T975[4]                         # planted: inside the seed error
    text = " ".join(tradeoff.answer(_rows(a, b), ACC))
    assert "maxnn 25% − random 25%" in text and "not separable from random 25% at this seed count" in text
    need = seeds.paired(a, b)["seeds_needed"]
    n = need
    assert abs(d.mean()) > seeds.t_quantile(seeds.T975, seeds.Z975, n - 1) * d.std(ddof=1) / sqrt(n)
    assert abs(d.mean()) <= seeds.t_quantile(seeds.T975, seeds.Z975, n - 2) * d.std(ddof=1) / sqrt(n - 1)
    assert f"about {need} seeds would separate" in text


@pytest.mark.parametrize("sign", [-1, 1])
def test_a_difference_of_five_standard_errors_is_reported_with_its_sign(sign):
    rng = np.random.default_rng(2)
    common = rng.normal(0.006, 0.002, 5)
    jitter = np.array([0.0001, -0.0001, 0.00005, -0.00005, 0.0])
    se = jitter.std(ddof=1) / sqrt(5)
    a = common + jitter + sign * 5 * se
    b = common
    p = seeds.paired(a, b)
    assert p["t"] == pytest.approx(sign * 5 * se / se + (jitter.mean() / se), rel=1e-9)
    assert p["separable"]
    text = " ".join(tradeoff.answer(_rows(a, b), ACC))
    word = "less" if sign < 0 else "more"
    assert f"maxnn 25% damages {word} than random 25%, separable at 95 %" in text
    assert f"{100 * (a - b).mean():+.3g} % perplexity" in text


def test_the_budget_is_judged_on_the_upper_bound():
    """Mean inside the 1 % budget but the upper bound outside: not chosen, and said so."""
    wide = np.array([0.002, 0.015, 0.004, 0.016, 0.003])          # mean 0.8 %, large spread
    tight = np.array([0.003, 0.0031, 0.0029, 0.0030, 0.0030])      # mean 0.3 %
    rows = _rows(wide, tight, a_tpw=5.0, b_tpw=1.0, a="maxnn 75%", b="maxnn 12.5%")
    ucb = wide.mean() + seeds.T95[4] * wide.std(ddof=1) / sqrt(5)
    assert wide.mean() < 0.01 < ucb
    text = " ".join(tradeoff.answer(rows, ACC))
    assert "within it is **maxnn 12.5%**" in text
    assert f"maxnn 75% ({100 * wide.mean():+.3g} %, bound {100 * ucb:+.3g} %)" in text
