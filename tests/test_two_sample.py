"""Two-sample permutation tests (latentdiv.stats.mmd_test, energy_two_sample_test; docs/two_sample.md).

The permuted statistics are checked against a dense float64 reference on a pooled sample small enough
to enumerate every split, the p-value against its formula (1 + #{T_b >= T}) / (1 + B) and against the
exact permutation p-value; then power against a shift and a scale change, and (slow) calibration under H0.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import latentdiv
from latentdiv.stats import energy_two_sample_test, mmd_test
from latentdiv.stats.two_sample import permutation_indicators


def _dense_mmd(z, split, kernel, bandwidth, unbiased):
    """MMD^2 of one split of the pooled sample z (x side = the indices in split), dense float64."""
    idx = np.zeros(z.shape[0], dtype=bool)
    idx[list(split)] = True
    x, y = z[torch.from_numpy(idx)], z[torch.from_numpy(~idx)]
    return latentdiv.mmd(x, y, kernel=kernel, bandwidth=bandwidth, estimator="unbiased" if unbiased else "biased").item()


def _sample(n, d, seed, shift=0.0, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen, dtype=torch.float64) * scale + shift


@pytest.mark.parametrize("kernel,estimator", [("gaussian", "unbiased"), ("gaussian", "biased"),
                                              ("energy", "biased"), ("laplacian", "unbiased")])
def test_statistic_is_mmd(kernel, estimator):
    x, y = _sample(40, 3, 1), _sample(33, 3, 2, shift=0.2)
    bandwidth = None if kernel == "energy" else 1.7
    res = mmd_test(x, y, kernel=kernel, bandwidth=bandwidth, estimator=estimator, n_permutations=20)
    want = latentdiv.mmd(x, y, kernel=kernel, bandwidth=bandwidth, estimator=estimator).item()
    assert res.statistic == pytest.approx(want, rel=1e-10, abs=1e-13)
    assert res.null == "permutation" and res.target == "two-sample" and res.n_resamples == 20
    assert (res.n, res.dim, res.details["m"]) == (40, 3, 33)
    assert len(res.details["null_statistics"]) == 20


def test_median_bandwidth_and_scales():
    x, y = _sample(30, 4, 3), _sample(25, 4, 4)
    res = mmd_test(x, y, n_permutations=10)
    med = latentdiv.median_bandwidth(x, y)
    assert res.details["bandwidth"] == pytest.approx(med)
    assert res.statistic == pytest.approx(latentdiv.mmd(x, y, bandwidth=med).item(), rel=1e-10, abs=1e-13)
    multi = mmd_test(x, y, bandwidth=2.0, scales=[0.5, 1.0, 2.0], n_permutations=10)
    assert multi.details["bandwidth"] == (1.0, 2.0, 4.0)
    assert multi.statistic == pytest.approx(latentdiv.mmd(x, y, bandwidth=(1.0, 2.0, 4.0)).item(), rel=1e-10)


@pytest.mark.parametrize("unbiased", [True, False])
def test_every_split_enumerated(unbiased):
    """n = m = 3: the 20 splits of 6 points. Every permuted statistic equals the dense value of its
    split; the p-value is the formula over them; with many permutations it approaches the exact
    permutation p-value #{splits s: T_s >= T} / 20."""
    z = torch.cat([_sample(3, 2, 5), _sample(3, 2, 6, shift=0.7)])
    x, y = z[:3], z[3:]
    est = "unbiased" if unbiased else "biased"
    bw = 1.1
    exact = {s: _dense_mmd(z, s, "gaussian", bw, unbiased) for s in itertools.combinations(range(6), 3)}
    observed = exact[(0, 1, 2)]
    nperm, seed = 3000, 11
    res = mmd_test(x, y, bandwidth=bw, estimator=est, n_permutations=nperm, generator=seed)
    assert res.statistic == pytest.approx(observed, rel=1e-12, abs=1e-14)
    # The permutations the test drew (same seed, same stream) and their dense statistics.
    from latentdiv.stats._common import rng_for
    ind = permutation_indicators(3, 3, nperm, rng_for(seed, 3))
    splits = [tuple(np.flatnonzero(row)) for row in ind[1:]]
    null = np.asarray(res.details["null_statistics"])
    dense = np.asarray([exact[s] for s in splits])
    assert np.allclose(null, dense, rtol=1e-12, atol=1e-14)
    # Ties: the complement of the observed split has the same statistic (n = m) and counts as >=.
    ge = [exact[s] >= observed - 1e-12 for s in splits]
    assert res.pvalue == (1 + sum(ge)) / (1 + nperm)
    p_exact = sum(v >= observed - 1e-12 for v in exact.values()) / 20
    assert abs(res.pvalue - p_exact) <= 4 * math.sqrt(p_exact * (1 - p_exact) / nperm) + 1e-3


def test_pvalue_never_zero_and_seeded():
    x, y = _sample(50, 3, 7), _sample(50, 3, 8, shift=3.0)
    res = mmd_test(x, y, n_permutations=99)
    assert res.pvalue == 1 / 100  # the observed statistic is counted once
    again = mmd_test(x, y, n_permutations=99)
    assert again.details["null_statistics"] == res.details["null_statistics"]
    other = mmd_test(x, y, n_permutations=99, generator=1)
    assert other.details["null_statistics"] != res.details["null_statistics"]
    gen_res = mmd_test(x, y, n_permutations=99, generator=np.random.default_rng(3))
    assert gen_res.pvalue == 1 / 100


@pytest.mark.parametrize("test", [mmd_test, energy_two_sample_test], ids=["mmd", "energy"])
def test_power_against_shift_and_scale(test):
    x = _sample(120, 5, 21)
    shifted = _sample(120, 5, 22, shift=0.5)
    scaled = _sample(120, 5, 23, scale=1.6)
    same = _sample(120, 5, 24)
    assert test(x, shifted, n_permutations=199).pvalue <= 0.01
    assert test(x, scaled, n_permutations=199).pvalue <= 0.01
    assert test(x, same, n_permutations=199).pvalue > 0.01


def test_energy_is_mmd_with_the_energy_kernel():
    x, y = _sample(30, 2, 31), _sample(20, 2, 32, shift=0.4)
    e = energy_two_sample_test(x, y, n_permutations=50)
    m = mmd_test(x, y, kernel="energy", estimator="biased", n_permutations=50)
    assert e.statistic == m.statistic and e.pvalue == m.pvalue
    assert e.details["bandwidth"] is None
    dist = lambda a, b: torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist").mean()  # noqa: E731
    direct = (2 * dist(x, y) - dist(x, x) - dist(y, y)).item()
    assert e.statistic == pytest.approx(direct, rel=1e-10)


def test_reference_backend_gives_the_same_result(reference_backend):
    x, y = _sample(20, 3, 41), _sample(17, 3, 42, shift=0.3)
    ref = mmd_test(x, y, bandwidth=1.3, n_permutations=30)
    latentdiv.set_backend("auto")
    eng = mmd_test(x, y, bandwidth=1.3, n_permutations=30)
    assert np.allclose(ref.details["null_statistics"], eng.details["null_statistics"], rtol=1e-10, atol=1e-14)
    assert ref.pvalue == eng.pvalue


def test_float32_and_numpy_inputs():
    x, y = _sample(25, 3, 51), _sample(25, 3, 52, shift=0.3)
    a = mmd_test(x, y, bandwidth=1.0, n_permutations=20)
    b = mmd_test(x.numpy(), y.numpy(), bandwidth=1.0, n_permutations=20)
    c = mmd_test(x.float(), y.float(), bandwidth=1.0, n_permutations=20)
    assert a.statistic == b.statistic
    assert c.statistic == pytest.approx(a.statistic, rel=1e-5, abs=1e-7)


def test_errors_name_the_argument():
    x, y = _sample(10, 3, 61), _sample(10, 2, 62)
    with pytest.raises(ValueError, match="dimension"):
        mmd_test(x, y)
    with pytest.raises(ValueError, match="n_permutations"):
        mmd_test(x, x, n_permutations=0)
    with pytest.raises(ValueError, match="bandwidth"):
        mmd_test(x, x, bandwidth="silverman")
    with pytest.raises(ValueError, match="x has 1 row"):
        mmd_test(x[:1], x)
    with pytest.raises(ValueError, match="estimator"):
        energy_two_sample_test(x, x, estimator="v")
    with pytest.raises(TypeError, match="generator"):
        mmd_test(x, x, generator=1.5)
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        mmd_test(bad, x)


@pytest.mark.slow
@pytest.mark.parametrize("test", [mmd_test, energy_two_sample_test], ids=["mmd", "energy"])
def test_calibrated_under_h0(test):
    """Rejection rate at 0.05 over 300 H0 replications within 3 Monte Carlo standard errors."""
    reps, alpha = 300, 0.05
    rejections = 0
    for r in range(reps):
        x, y = _sample(30, 3, 1000 + 2 * r), _sample(24, 3, 1001 + 2 * r)
        rejections += test(x, y, n_permutations=199, generator=r).pvalue <= alpha
    rate = rejections / reps
    assert abs(rate - alpha) <= 3 * math.sqrt(alpha * (1 - alpha) / reps), rate


# ---- linear-time and block (B-test) estimators -----------------------------------------------------
from scipy import stats as sps  # noqa: E402

from latentdiv.linear_mmd import block_mmd, block_mmd_terms, linear_mmd, linear_mmd_terms  # noqa: E402
from latentdiv.stats import block_mmd_test, linear_mmd_test  # noqa: E402


def _population_mmd2(shift_norm2: float, h: float, d: int) -> float:
    """MMD^2 between N(0, I) and N(mu, I) for the gaussian kernel exp(-r^2 / (2 h^2)) (closed form):
    2 c (1 - exp(-|mu|^2 / (2 (h^2 + 2)))), c = (h^2 / (h^2 + 2))^(D/2)."""
    c = (h * h / (h * h + 2.0)) ** (d / 2.0)
    return 2.0 * c * (1.0 - math.exp(-shift_norm2 / (2.0 * (h * h + 2.0))))


def test_linear_and_block_terms_by_definition():
    x, y = _sample(9, 2, 71), _sample(7, 2, 72)
    h = linear_mmd_terms(x, y, bandwidth=1.2)
    k = lambda a, b: math.exp(-float(((a - b) ** 2).sum()) / (2 * 1.2 ** 2))  # noqa: E731
    assert h.shape == (3,)
    for p in range(3):
        want = k(x[2 * p], x[2 * p + 1]) + k(y[2 * p], y[2 * p + 1]) - k(x[2 * p], y[2 * p + 1]) - k(x[2 * p + 1], y[2 * p])
        assert h[p].item() == pytest.approx(want, rel=1e-12)
    eta = block_mmd_terms(x, y, block_size=3, bandwidth=1.2)
    assert eta.shape == (2,)
    for blk in range(2):
        xs, ys = x[3 * blk:3 * blk + 3], y[3 * blk:3 * blk + 3]
        want = latentdiv.mmd(xs, ys, bandwidth=1.2, estimator="unbiased").item()
        assert eta[blk].item() == pytest.approx(want, rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("estimator", ["linear", "block"])
def test_unbiased_over_replications(estimator):
    reps, n, d, h = 300, 200, 3, 1.5
    mu = torch.full((d,), 0.4, dtype=torch.float64)
    target = _population_mmd2(float((mu ** 2).sum()), h, d)
    vals = []
    for r in range(reps):
        x, y = _sample(n, d, 5000 + 2 * r), _sample(n, d, 5001 + 2 * r) + mu
        vals.append((linear_mmd(x, y, bandwidth=h) if estimator == "linear" else block_mmd(x, y, bandwidth=h)).item())
    vals = np.asarray(vals)
    se = vals.std(ddof=1) / math.sqrt(reps)
    assert abs(vals.mean() - target) <= 4 * se, (vals.mean(), target, se)


@pytest.mark.parametrize("test", [linear_mmd_test, block_mmd_test], ids=["linear", "block"])
def test_standardised_null_is_standard_normal(test):
    """The z-score over 300 H0 replications. The normal limit needs many i.i.d. terms: 500 pairs for
    the linear estimator, 100 blocks of 10 for the B-test (with 20 blocks the studentised mean is
    visibly heavy-tailed and skewed)."""
    reps = 300
    kw = dict(bandwidth=1.5) if test is linear_mmd_test else dict(bandwidth=1.5, block_size=10)
    z = np.asarray([test(_sample(1000, 3, 7000 + 2 * r), _sample(1000, 3, 7001 + 2 * r), **kw).details["zscore"]
                    for r in range(reps)])
    assert abs(z.mean()) <= 4 / math.sqrt(reps)
    assert abs(z.std(ddof=1) - 1.0) <= 0.15
    assert sps.kstest(z, "norm").pvalue > 1e-3


@pytest.mark.parametrize("test", [linear_mmd_test, block_mmd_test], ids=["linear", "block"])
def test_asymptotic_tests_have_power(test):
    x, y = _sample(3000, 4, 81), _sample(3000, 4, 82, shift=0.3)
    res = test(x, y)
    assert res.null == "asymptotic" and res.target == "two-sample" and res.pvalue < 1e-3
    assert res.pvalue == pytest.approx(sps.norm.sf(res.details["zscore"]))


def test_linear_and_block_are_differentiable_losses():
    x = _sample(12, 3, 91).requires_grad_(True)
    y = _sample(12, 3, 92).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: linear_mmd(a, b, bandwidth=1.3), (x, y))
    assert torch.autograd.gradcheck(lambda a, b: block_mmd(a, b, block_size=4, kernel="energy"), (x, y))


def test_linear_block_errors():
    x = _sample(10, 3, 93)
    with pytest.raises(ValueError, match="block_size"):
        block_mmd(x, x, block_size=11)
    with pytest.raises(ValueError, match="block_size"):
        block_mmd(x, x, block_size=1)
    with pytest.raises(ValueError, match="dimension"):
        linear_mmd(x, _sample(10, 2, 94))
    with pytest.raises(ValueError, match="at least 2"):
        linear_mmd(x[:1], x)
