"""Contracts a user relies on at the edges (issue 10, Python-side items): weights, non-finite inputs,
defaults that scale with D, what `import latentdiv` exposes, and argument consistency. Each test is
a reproducer of a defect seen on the main branch before the fix."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import latentdiv
from latentdiv import functional as F
from latentdiv import losses as L

D64 = torch.float64


def _x(n=12, d=3, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=D64)


# Every weighted loss, as (function of x, weights) -> value; y where the loss has one.
WEIGHTED = {
    "mmd": lambda x, w: F.mmd(x, _x(9, x.shape[-1], 1), weights_x=w),
    "mmd_prior": lambda x, w: F.mmd(x, weights_x=w),
    "mmd_to_normal": lambda x, w: F.mmd_to_normal(x, weights=w),
    "cramer_wold": lambda x, w: F.cramer_wold(x, weights_x=w),
    "energy_distance": lambda x, w: F.energy_distance(x, weights_x=w),
    "sliced_wasserstein": lambda x, w: F.sliced_wasserstein(x, weights_x=w, generator=torch.Generator().manual_seed(0)),
    "cwae_loss": lambda x, w: F.cwae_loss(x, weights=w),
}


# ---------------------------------------------------------------------------------------------------
# item 2: weights must be finite, non-negative, with a positive sum
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(WEIGHTED))
@pytest.mark.parametrize("bad, message", [
    (lambda n: torch.linspace(-1.0, 1.0, n, dtype=D64), "non-negative"),     # mixed signs: gave -inf / -7e300
    (lambda n: torch.zeros(n, dtype=D64), "positive sum"),                    # all zero: gave NaN
    (lambda n: torch.ones(n, dtype=D64).index_fill(0, torch.tensor([2]), math.nan), "finite"),
    (lambda n: torch.ones(n, dtype=D64).index_fill(0, torch.tensor([2]), math.inf), "finite"),
])
def test_bad_weights_are_a_named_error(name, bad, message):
    x = _x()
    key = "weights" if name in ("mmd_to_normal", "cwae_loss") else "weights_x"
    with pytest.raises(ValueError, match=f"{key}.*{message}"):
        WEIGHTED[name](x, bad(x.shape[0]))


def test_batched_weights_zero_sum_names_the_batch_element():
    x = _x(10, 3).reshape(2, 5, 3)
    w = torch.ones(2, 5, dtype=D64)
    w[1] = 0.0
    with pytest.raises(ValueError, match="weights_x must have a positive sum for batch element 1"):
        F.energy_distance(x, weights_x=w)


def test_weights_y_checked_too():
    with pytest.raises(ValueError, match="weights_y must be non-negative"):
        F.mmd(_x(), _x(8, 3, 1), weights_y=-torch.ones(8, dtype=D64))


def test_weights_with_zeros_still_fine():
    """Zero weights on some rows are legitimate (dropping points): equal to leaving them out."""
    x = _x(10, 3)
    w = torch.ones(10, dtype=D64)
    w[7:] = 0.0
    torch.testing.assert_close(F.cramer_wold(x, weights_x=w), F.cramer_wold(x[:7], gamma=F.default_gamma(10)))


# ---------------------------------------------------------------------------------------------------
# item 3: one non-finite policy for every loss: NaN result (and NaN gradients), never a finite one
# ---------------------------------------------------------------------------------------------------
ALL_LOSSES = {
    "mmd": lambda x: F.mmd(x, _x(9, x.shape[-1], 1)),
    "mmd_biased": lambda x: F.mmd(x, _x(9, x.shape[-1], 1), estimator="biased"),
    "mmd_y_bad": lambda x: F.mmd(_x(9, x.shape[-1], 1), x),
    "mmd_prior": lambda x: F.mmd(x),
    "mmd_wae": lambda x: F.mmd(x, _x(9, x.shape[-1], 1), preset="wae"),
    "mmd_energy_prior": lambda x: F.mmd(x, kernel="energy"),
    "mmd_to_normal": lambda x: F.mmd_to_normal(x),
    "cramer_wold": lambda x: F.cramer_wold(x),
    "cramer_wold_two": lambda x: F.cramer_wold(x, _x(9, x.shape[-1], 1)),
    "cwae_loss": lambda x: F.cwae_loss(x),
    "energy_distance": lambda x: F.energy_distance(x),
    "energy_two": lambda x: F.energy_distance(x, _x(9, x.shape[-1], 1)),
    "sliced_wasserstein": lambda x: F.sliced_wasserstein(x, generator=torch.Generator().manual_seed(0)),
    "sliced_two": lambda x: F.sliced_wasserstein(x, _x(9, x.shape[-1], 1), generator=torch.Generator().manual_seed(0)),
    "radii_cvm": F.radii_cvm,
    "distances_cvm": F.distances_cvm,
    "coordinates_cvm": F.coordinates_cvm,
    "kl_normal": lambda x: F.kl_normal(x, torch.zeros_like(x)),
    "kl_normal_logvar": lambda x: F.kl_normal(torch.zeros_like(x), x),
    "MMDLoss": lambda x: L.MMDLoss()(x),
    "MMDLoss_imq": lambda x: L.MMDLoss(kernel="imq", generator=torch.Generator().manual_seed(0))(x),
}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_non_finite_input_gives_nan(name, bad):
    """radii_cvm read a NaN row as the origin; unbiased mmd / mmd_to_normal returned finite values
    for an input with an inf. Now every loss returns NaN, and its gradient is NaN."""
    x = _x(12, 3)
    x[4, 1] = bad
    x.requires_grad_(True)
    value = ALL_LOSSES[name](x)
    assert torch.isnan(value).all(), f"{name} returned {value} for an input holding {bad}"
    value.sum().backward()
    assert torch.isnan(x.grad).any(), f"{name}: the gradient of a NaN result should be NaN"


def test_non_finite_is_per_batch_element():
    x = _x(12, 3).reshape(2, 6, 3).clone()
    x[1, 2, 0] = math.inf
    v = F.mmd_to_normal(x)
    assert torch.isfinite(v[0]) and torch.isnan(v[1])
    kl = F.kl_normal(x, torch.zeros_like(x), reduction="none")  # [2, 6]
    assert torch.isnan(kl[1, 2]) and torch.isfinite(kl[1, :2]).all() and torch.isfinite(kl[0]).all()


def test_non_finite_still_an_error_in_tests_and_cli():
    x = _x(12, 3).numpy()
    x[4, 1] = math.inf
    with pytest.raises(ValueError, match=r"rows \[4\]"):
        latentdiv.stats.radii_test(x)


# ---------------------------------------------------------------------------------------------------
# item 5: default bandwidths scale with D: a clearly non-Gaussian batch gives a non-vanishing value
# and gradient in every D (fixed h = 1 gave ~1e-16 at D = 64 and exactly 0 at D = 256)
# ---------------------------------------------------------------------------------------------------
DEFAULTS = {
    "mmd_to_normal(z)": lambda z: F.mmd_to_normal(z),
    "mmd(z)": lambda z: F.mmd(z),
    "mmd(z, y)": lambda z: F.mmd(z, torch.randn(z.shape, generator=torch.Generator().manual_seed(5), dtype=z.dtype)),
    "mmd(z, y, laplacian)": lambda z: F.mmd(z, torch.randn(z.shape, generator=torch.Generator().manual_seed(5),
                                                             dtype=z.dtype), kernel="laplacian"),
    "mmd(z, y, imq)": lambda z: F.mmd(z, torch.randn(z.shape, generator=torch.Generator().manual_seed(5),
                                                       dtype=z.dtype), kernel="imq"),
    "MMDLoss()(z)": lambda z: L.MMDLoss()(z),
    "MMDToNormalLoss()(z)": lambda z: L.MMDToNormalLoss()(z),
}


@pytest.mark.parametrize("dim", [8, 64, 256])
@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_default_bandwidth_does_not_vanish(name, dim):
    gen = torch.Generator().manual_seed(dim)
    z = (torch.randn(128, dim, generator=gen) * 3 + 1).requires_grad_(True)  # far from N(0, I)
    value = DEFAULTS[name](z)
    value.backward()
    value = float(value.detach())
    # A regularizer this far from its target must say so. The value of an MMD is at most 2 and does
    # not grow with D while |z| grows like sqrt(D), so the gradient norm may shrink like D^(-1/2)
    # (measured with h = sqrt(2D): ~8e-3 at D = 8, ~2e-3 at D = 64, ~1e-3 at D = 256); with the old
    # h = 1 they were ~1e-16 at D = 64 and exactly 0 at D = 256.
    assert value > 1e-2, f"{name} at D = {dim}: value {value:.3g}"
    grad_norm = float(z.grad.norm())
    assert grad_norm > 2e-4, f"{name} at D = {dim}: gradient norm {grad_norm:.3g}"
    # and the gradient points toward the prior: a small step against it lowers the loss
    with torch.no_grad():
        stepped = (z - 0.1 * z.grad / z.grad.norm() * math.sqrt(z.numel())).requires_grad_(False)
    assert float(DEFAULTS[name](stepped)) < value


def test_default_bandwidth_values():
    assert F.default_bandwidth("gaussian", 32) == 8.0
    assert F.default_bandwidth("laplacian", 8) == 4.0
    assert F.default_bandwidth("imq", 16) == 32.0
    # sqrt(2D) is the median heuristic of the prior: about the median distance of two N(0, I_D) points
    from scipy import stats as st
    for dim in (8, 64, 256):
        assert math.sqrt(2) * st.chi.median(dim) == pytest.approx(F.default_bandwidth("gaussian", dim), rel=0.05)
    z = _x(20, 8)
    torch.testing.assert_close(F.mmd_to_normal(z), F.mmd_to_normal(z, bandwidth=4.0))
    y = _x(15, 8, 3)
    torch.testing.assert_close(F.mmd(z, y), F.mmd(z, y, bandwidth=4.0))
    torch.testing.assert_close(F.mmd(z, y, kernel="imq"), F.mmd(z, y, kernel="imq", bandwidth=16.0))
    torch.testing.assert_close(F.mmd(z, y, scales=[0.5, 2.0]), F.mmd(z, y, bandwidth=[2.0, 8.0]))
    torch.testing.assert_close(L.MMDLoss()(z), F.mmd_to_normal(z, bandwidth=4.0))


# ---------------------------------------------------------------------------------------------------
# item 14: what `import latentdiv` gives, and mmd(x) with y=None means the prior
# ---------------------------------------------------------------------------------------------------
def test_submodules_and_helpers_reachable_from_the_package():
    import subprocess
    import sys

    code = ("import latentdiv; latentdiv.stats.normality_report; latentdiv.special.chi_cdf; "
            "latentdiv.median_bandwidth; latentdiv.WAE_SCALES; latentdiv.default_gamma(128); "
            "latentdiv.default_bandwidth; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    for name in ("stats", "special", "median_bandwidth", "WAE_SCALES", "default_gamma"):
        assert name in latentdiv.__all__ and name in dir(latentdiv)


def test_mmd_without_y_is_the_prior_in_closed_form():
    z = _x(30, 4)
    torch.testing.assert_close(F.mmd(z), F.mmd_to_normal(z))
    torch.testing.assert_close(F.mmd(z, bandwidth=1.5, estimator="biased"),
                               F.mmd_to_normal(z, bandwidth=1.5, estimator="biased"))
    torch.testing.assert_close(F.mmd(z, preset="infovae"),
                               F.mmd_to_normal(z, bandwidth=4 / math.sqrt(2), estimator="biased"))
    torch.testing.assert_close(F.mmd(z, kernel="energy", estimator="biased"), F.energy_distance(z))
    # unbiased energy: the within-sample mean is over i != j (the diagonal is 0): n / (n - 1) times it
    n = z.shape[0]
    exx = latentdiv.pdist(z).sum() * 2 / (n * (n - 1))
    exy = latentdiv.special.expected_distance_to_normal((z * z).sum(1), 4).mean()
    want = 2 * exy - exx - latentdiv.special.expected_pair_distance_normal(4)
    torch.testing.assert_close(F.mmd(z, kernel="energy"), want)
    with pytest.raises(ValueError, match="y=None.*kernel='imq'.*randn_like"):
        F.mmd(z, kernel="imq")
    with pytest.raises(ValueError, match="y=None.*preset='wae'"):
        F.mmd(z, preset="wae")
    with pytest.raises(ValueError, match="weights_y"):
        F.mmd(z, weights_y=torch.ones(30, dtype=D64))


# ---------------------------------------------------------------------------------------------------
# item 15: argument consistency
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bandwidth", ["foo", -5.0, 2.0, [1.0, 2.0]])
def test_energy_kernel_rejects_a_bandwidth(bandwidth):
    x = _x()
    with pytest.raises(ValueError, match="bandwidth"):
        F.mmd(x, x, kernel="energy", bandwidth=bandwidth)
    with pytest.raises(ValueError, match="bandwidth"):
        L.MMDLoss(kernel="energy", bandwidth=bandwidth)
    with pytest.raises((ValueError, TypeError), match="bandwidth"):
        latentdiv.pairwise_sum(x, kernel="energy", bandwidth=bandwidth)
    latentdiv.pairwise_sum(x, kernel="energy")  # the default stays fine


@pytest.mark.parametrize("kwargs, error, word", [
    (dict(bandwidth=-1), ValueError, "bandwidth"),
    (dict(bandwidth=0.0), ValueError, "bandwidth"),
    (dict(bandwidth="wide"), ValueError, "bandwidth"),
    (dict(bandwidth=[1.0, math.nan]), ValueError, "bandwidth"),
    (dict(scales=[1.0, -2.0]), ValueError, "scales"),
    (dict(bandwidth=[1.0, 2.0], scales=[1.0]), TypeError, "scales"),
    (dict(kernel="rbf"), ValueError, "kernel"),
    (dict(estimator="u"), ValueError, "estimator"),
    (dict(preset="wae", bandwidth=2.0), ValueError, "preset"),
    (dict(preset="swae"), ValueError, "preset"),
    (dict(generator=0), TypeError, "generator"),
])
def test_mmd_loss_fails_at_construction(kwargs, error, word):
    with pytest.raises(error, match=word):
        L.MMDLoss(**kwargs)


def test_mmd_loss_and_mmd_share_one_preset_table():
    z, y = _x(20, 6), _x(16, 6, 2)
    for preset in ("wae", "infovae"):
        torch.testing.assert_close(L.MMDLoss(preset=preset)(z, y), F.mmd(z, y, preset=preset))
    torch.testing.assert_close(L.MMDLoss(preset="infovae")(z), F.mmd(z, preset="infovae"))


def test_cramer_wold_unusable_gamma_names_gamma():
    x = _x(10, 4)
    # gamma whose derived kernel parameters (1 / (4 gamma), gamma (2D + 32)) leave float64: a named error.
    for gamma in (1e308, 1e-310):
        with pytest.raises(ValueError, match=r"gamma=.*out of the usable range"):
            F.cramer_wold(x, gamma=gamma)
        with pytest.raises(ValueError, match=r"gamma="):
            L.CramerWoldLoss(gamma=gamma)(x)
    # Extreme but usable gammas are computed (the engine rescales its parameters), not rejected.
    for gamma in (1e30, 1e-33, 1e20):
        assert torch.isfinite(F.cramer_wold(x, gamma=gamma))
    F.cramer_wold(x, gamma=1e30, phi="approx")  # the approximate kernel has no such limit


@pytest.mark.parametrize("make_int", [np.int64, np.int32, lambda v: torch.tensor(v)])
def test_numpy_and_torch_integers_accepted_where_an_int_is(make_int):
    x = _x(20, 3)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    want = F.sliced_wasserstein(x, n_projections=5, generator=gen())
    torch.testing.assert_close(F.sliced_wasserstein(x, n_projections=make_int(5), generator=gen()), want)
    torch.testing.assert_close(L.SlicedWassersteinLoss(n_projections=make_int(5), generator=gen())(x), want)
    F.median_bandwidth(x, max_points=make_int(10))
    z = x.numpy()
    s = latentdiv.stats
    assert s.projection_test(z, n_projections=make_int(4), n_resamples=make_int(9)).n_resamples == 9
    s.mardia(z, chunk=make_int(7), n_resamples=make_int(9))
    s.normality_report(z, tests=["radii"], n_resamples=make_int(9))
    for bad in (2.0, True, "3"):
        with pytest.raises(TypeError, match="n_projections"):
            F.sliced_wasserstein(x, n_projections=bad)


def test_batched_x_with_shared_per_row_weights():
    """(B, n, D) x with (n,) weights: one weight vector shared by every batch element (the docstring
    allowed it; it was rejected)."""
    x = _x(24, 3).reshape(2, 12, 3)
    w = torch.rand(12, dtype=D64, generator=torch.Generator().manual_seed(1)) + 0.1
    for f in (lambda t, a: F.mmd_to_normal(t, weights=a), lambda t, a: F.cramer_wold(t, weights_x=a),
              lambda t, a: F.energy_distance(t, weights_x=a), lambda t, a: F.mmd(t, weights_x=a)):
        got = f(x, w)
        torch.testing.assert_close(got, torch.stack([f(x[0], w), f(x[1], w)]))
        torch.testing.assert_close(got, f(x, w.expand(2, 12)))
    torch.testing.assert_close(L.EnergyDistanceLoss(reduction="none")(w, x),
                               torch.stack([F.energy_distance(x[b], weights_x=w) for b in range(2)]))
    with pytest.raises(ValueError, match=r"weights_x must have shape \(12,\) or \(2, 12\)"):
        F.energy_distance(x, weights_x=torch.ones(11, dtype=D64))


@pytest.mark.parametrize("row", [torch.zeros(3), torch.tensor([1.0, math.nan, 0.0]), torch.tensor([math.inf, 0, 0])])
def test_bad_projection_rows_are_an_error(row):
    """An all-zero row was silently treated as a direction and gave 1.0."""
    x = _x(10, 3)
    p = torch.randn(4, 3, dtype=D64)
    p[2] = row.to(D64)
    with pytest.raises(ValueError, match="projections.*row 2"):
        F.sliced_wasserstein(x, projections=p)
    with pytest.raises(ValueError, match="projections.*row 2"):
        L.SlicedWassersteinLoss(projections=p)(x)


def test_pdist_of_one_point_is_empty_like_torch():
    for x in (torch.randn(1, 3), torch.randn(1, 3, dtype=D64)):
        x.requires_grad_(True)
        d = latentdiv.pdist(x)
        want = torch.pdist(x)
        assert d.shape == want.shape == (0,) and d.dtype == want.dtype
        d.sum().backward()
        assert x.grad is not None and (x.grad == 0).all()


def test_unbiased_estimator_needs_two_weighted_points():
    """All the weight on one point leaves a U-statistic without pairs, like n = 1: a named error
    (in float32 the old 0/0 clamp turned the engine's zero gradients into NaN)."""
    x = _x(6, 3).float().requires_grad_(True)
    w = torch.tensor([0.0, 0.0, 2.0, 0.0, 0.0, 0.0])
    for f in (lambda: F.mmd_to_normal(x, weights=w), lambda: F.mmd(x, weights_x=w),
              lambda: F.mmd(x, x.detach(), weights_y=w), lambda: L.MMDLoss()(w, x)):
        with pytest.raises(ValueError, match=r"weights(_x|_y)? has 1 positive weight.*unbiased"):
            f()
    F.mmd_to_normal(x, weights=w, estimator="biased").backward()  # the V-statistic is defined
    assert torch.isfinite(x.grad).all()
