"""KLoM against distributions with a known KL divergence, and against an independent reference."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from untrac.unlearn import klom as K


def _reference_kl(p, q, bins, floor, clip=100.0):
    """Straightforward per-example implementation: numpy histograms over the shared range, scipy entropy."""
    p, q = np.clip(p, -clip, clip), np.clip(q, -clip, clip)
    lo, hi = min(p.min(), q.min()), max(p.max(), q.max())
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    P = np.histogram(p, edges)[0] / len(p)
    Q = np.histogram(q, edges)[0] / len(q)
    Q = np.where(P > 0, np.maximum(Q, floor), Q)
    return stats.entropy(P, Q)  # scipy renormalises Q


def test_identical_samples_give_zero():
    x = np.random.default_rng(0).normal(size=(50, 7))
    np.testing.assert_allclose(K.klom(x, x.copy()), np.zeros(7), atol=1e-12)
    assert K.binned_kl([3.0, 3.0, 3.0], [3.0, 3.0]) == 0.0  # all values equal: one bin


def test_disjoint_samples_hit_the_ceiling():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0, 1, 40), rng.uniform(5, 6, 40)
    for floor in (1e-5, 1e-3):
        # two bins: all unlearned mass in an empty oracle bin, Q = (floor, 1) / (1 + floor)
        assert K.binned_kl(a, b, bins=2, floor=floor) == pytest.approx(np.log((1 + floor) / floor), rel=1e-9)
        # more bins: log(1 / floor) minus the entropy of the unlearned histogram
        P = np.histogram(a, np.linspace(a.min(), b.max(), 11))[0] / len(a)
        P = P[P > 0]
        got = K.binned_kl(a, b, bins=10, floor=floor)
        assert got == pytest.approx(np.log(1 / floor) + (P * np.log(P)).sum(), rel=1e-3)


def test_monotone_in_gaussian_shift_and_close_to_the_analytic_kl():
    rng = np.random.default_rng(2)
    n = 4000
    shifts = [0.0, 0.25, 0.5, 1.0, 2.0]
    base = rng.standard_normal(n)
    values = [K.binned_kl(rng.standard_normal(n) + d, base, bins=30) for d in shifts]
    assert all(a < b for a, b in zip(values, values[1:])), values
    # KL(N(d,1) || N(0,1)) = d^2 / 2: a 30-bin histogram of 4000 draws gets it roughly right
    for d, v in zip(shifts[2:4], values[2:4]):
        assert v == pytest.approx(d**2 / 2, rel=0.35, abs=0.03)


def test_vectorised_matches_reference_per_example():
    rng = np.random.default_rng(3)
    u = rng.normal(size=(6, 25)) * rng.uniform(0.1, 3, 25) + rng.normal(size=25)
    o = rng.normal(size=(5, 25)) * rng.uniform(0.1, 3, 25)
    o[:, 0] = 2.0  # a constant column
    u[:, 1] = 500.0  # clipped
    got = K.klom(u, o, bins=4, floor=1e-4)
    want = [_reference_kl(u[:, j], o[:, j], 4, 1e-4) for j in range(25)]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_percentiles_summary_and_noise_floor():
    s = K.summary({"forget": np.arange(101.0), "retain": np.zeros(3), "validation": np.array([])})
    assert list(s.columns) == ["group", "n", "p50", "p95", "p99"]
    assert s.loc[0, "p50"] == 50 and s.loc[0, "p99"] == pytest.approx(99)
    assert np.isnan(s.loc[2, "p50"])
    floor = K.noise_floor(4, bins=2, n_examples=500)
    shifted = K.percentiles(K.klom(np.random.default_rng(0).normal(size=(4, 500)) + 3,
                                   np.random.default_rng(1).normal(size=(4, 500)), bins=2))
    assert floor["p50"] < 1.0 < shifted["p50"]


def test_rejects_bad_inputs():
    with pytest.raises(ValueError, match="examples"):
        K.klom(np.zeros((3, 2)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        K.klom(np.array([[np.nan]]), np.zeros((1, 1)))
    with pytest.raises(ValueError, match="floor"):
        K.klom(np.zeros(3), np.zeros(3), floor=0)
