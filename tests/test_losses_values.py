"""Each loss against an independent float64 computation: brute-force n x n torch/numpy for the
two-sample forms, Monte Carlo with a large N(0, I) sample for the closed forms (within 4 standard
errors), integration over slices for Cramer-Wold, scipy quadrature for sliced Wasserstein, and
scipy.stats.cramervonmises for the EDF losses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.special as sp
import scipy.stats
import torch

import latentdiv
import latentdiv.functional as F
from latentdiv import KERNELS

from kernel_cases import MMD_CASES

D64 = torch.float64


def _cdist(x, y):
    return torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist")


def _offdiag_mean(k):
    n = k.shape[0]
    return (k.sum() - k.diagonal().sum()) / (n * (n - 1))


@pytest.fixture(params=["compiled", "reference"])
def backend(request):
    if request.param == "compiled" and not latentdiv._ext.compiled_available():
        pytest.skip("latentdiv._C is not built")
    previous = latentdiv.set_backend(request.param)
    yield request.param
    latentdiv.set_backend(previous)


# ---------------------------------------------------------------------------------------------------
# KL
# ---------------------------------------------------------------------------------------------------
def test_kl_matches_torch_distributions():
    mu, logvar = torch.randn(7, 5, dtype=D64), torch.randn(7, 5, dtype=D64)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    want = torch.distributions.kl_divergence(q, p).sum(-1)  # [7]
    torch.testing.assert_close(F.kl_normal(mu, logvar, reduction="none"), want)
    torch.testing.assert_close(F.kl_normal(mu, logvar), want.mean())
    torch.testing.assert_close(F.kl_normal(mu, logvar, reduction="sum"), want.sum())
    # batched leading dims
    torch.testing.assert_close(F.kl_normal(mu.view(7, 1, 5), logvar.view(7, 1, 5), reduction="none"), want.view(7, 1))


def test_kl_overflow_guard_is_finite_and_c1():
    lv = torch.tensor([[49.0, 50.0, 51.0, 1e4, -1e4]], requires_grad=True)
    value = F.kl_normal(torch.zeros_like(lv), lv, reduction="sum")
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(lv.grad).all()
    g = lv.grad[0]
    assert g[3] > 0 and g[4] < 0  # the pull toward logvar = 0 survives on both sides
    assert abs(g[2] / (0.5 * (math.exp(50) - 1)) - 1) < 1e-5  # tangent continuation: slope e^50 above
    assert abs(g[0] / (0.5 * (math.exp(49) - 1)) - 1) < 1e-5  # exact below


# ---------------------------------------------------------------------------------------------------
# MMD
# ---------------------------------------------------------------------------------------------------
def _brute_kernel(r, kernel, h, dim):
    hs = h if isinstance(h, (tuple, list)) else [h]
    if kernel == "gaussian":
        return sum(torch.exp(-r**2 / (2 * b * b)) for b in hs)
    if kernel == "imq":
        return sum(b / (b + r**2) for b in hs)
    if kernel == "laplacian":
        return sum(torch.exp(-r / b) for b in hs)
    if kernel == "energy":
        return -r
    # A kernel without a hand-written formula above: the registry's float64 one.
    return KERNELS[kernel].formula(r, h, dim, {})


# Every kernel mmd accepts (KernelSpec.mmd) with its registry examples, and a few other bandwidths.
MMD_BRUTE_CASES = MMD_CASES + [("gaussian", (0.5, 2.0)), ("imq", 3.0), ("laplacian", 2.0)]


@pytest.mark.parametrize("kernel,h", MMD_BRUTE_CASES)
@pytest.mark.parametrize("estimator", ["unbiased", "biased"])
def test_mmd_against_brute_force(backend, kernel, h, estimator):
    x, y = torch.randn(17, 3, dtype=D64), 0.5 + torch.randn(11, 3, dtype=D64)
    kxx, kyy, kxy = (_brute_kernel(_cdist(a, b), kernel, h, 3) for a, b in ((x, x), (y, y), (x, y)))
    if estimator == "unbiased":
        want = _offdiag_mean(kxx) + _offdiag_mean(kyy) - 2 * kxy.mean()
    else:
        want = kxx.mean() + kyy.mean() - 2 * kxy.mean()
    got = F.mmd(x, y, kernel=kernel, bandwidth=h, estimator=estimator)  # energy: no bandwidth (issue 10 item 15)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_mmd_scales_equal_explicit_bandwidth_list():
    x, y = torch.randn(9, 4, dtype=D64), torch.randn(12, 4, dtype=D64)
    a = F.mmd(x, y, kernel="imq", bandwidth=2.0, scales=[0.5, 1, 3])
    b = F.mmd(x, y, kernel="imq", bandwidth=[1.0, 2.0, 6.0])
    torch.testing.assert_close(a, b)


def test_mmd_weighted_against_brute_force():
    x, y = torch.randn(8, 3, dtype=D64), torch.randn(6, 3, dtype=D64)
    wa, wb = torch.rand(8, dtype=D64) + 0.1, torch.rand(6, dtype=D64) + 0.1
    a, b = wa / wa.sum(), wb / wb.sum()
    kxx, kyy, kxy = (torch.exp(-_cdist(p, q) ** 2 / 2) for p, q in ((x, x), (y, y), (x, y)))
    v = a @ kxx @ a + b @ kyy @ b - 2 * a @ kxy @ b
    # h = 1 explicitly: the default bandwidth is sqrt(2D) since issue 10 item 5 (the reference above uses h = 1)
    torch.testing.assert_close(F.mmd(x, y, bandwidth=1.0, estimator="biased", weights_x=wa, weights_y=wb), v)
    u = ((a @ kxx @ a - (a * a).sum()) / (1 - (a * a).sum()) + (b @ kyy @ b - (b * b).sum()) / (1 - (b * b).sum())
         - 2 * a @ kxy @ b)
    torch.testing.assert_close(F.mmd(x, y, bandwidth=1.0, weights_x=wa, weights_y=wb), u)
    # uniform weights = no weights
    torch.testing.assert_close(F.mmd(x, y, weights_x=torch.ones(8, dtype=D64), weights_y=torch.ones(6, dtype=D64)),
                               F.mmd(x, y))


def test_wae_preset_transcribes_reference_code():
    """tolstikhin/wae mmd_penalty (IMQ branch), re-typed in torch: Cbase = 2 zdim sigma^2, 7 scales,
    (1 - eye) on the within-sample terms, all pairs for the cross term."""
    n, dim = 10, 8
    z, zp = torch.randn(n, dim, dtype=D64), torch.randn(n, dim, dtype=D64)
    d_qz, d_pz, d_cross = _cdist(z, z) ** 2, _cdist(zp, zp) ** 2, _cdist(z, zp) ** 2
    stat = 0.0
    for scale in [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]:
        c = 2.0 * dim * 1.0 * scale
        res1 = c / (c + d_qz) + c / (c + d_pz)
        res1 = (res1 * (1 - torch.eye(n, dtype=D64))).sum() / (n * n - n)
        res2 = (c / (c + d_cross)).sum() * 2.0 / (n * n)
        stat = stat + res1 - res2
    torch.testing.assert_close(F.mmd(z, zp, preset="wae"), stat)


def test_infovae_preset_transcribes_reference_code():
    """ShengjiaZhao/MMD-Variational-Autoencoder compute_kernel: exp(-mean_d (x - y)^2 / dim)."""
    dim = 20
    x, y = torch.randn(13, dim, dtype=D64), torch.randn(9, dim, dtype=D64)

    def k(a, b):
        return torch.exp(-((a[:, None, :] - b[None, :, :]) ** 2).mean(-1) / dim)

    want = k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()
    torch.testing.assert_close(F.mmd(x, y, preset="infovae"), want)


def test_median_bandwidth_small_is_exact_median_and_subsample_is_close():
    x, y = torch.randn(20, 3, dtype=D64), torch.randn(15, 3, dtype=D64)
    pool = torch.cat([x, y])
    assert F.median_bandwidth(x, y) == float(torch.pdist(pool).median())
    big = torch.randn(5000, 4, dtype=D64)
    est = F.median_bandwidth(big)
    exact = math.sqrt(2 * scipy.stats.chi2(4).median())  # median of ||Y - Y'|| = sqrt(2) chi_4
    assert abs(est / exact - 1) < 0.02
    assert F.median_bandwidth(big) == est  # seeded: deterministic
    got = F.mmd(x, y, bandwidth="median")
    torch.testing.assert_close(got, F.mmd(x, y, bandwidth=F.median_bandwidth(x, y)))
    torch.testing.assert_close(F.mmd(x, y, kernel="imq", bandwidth="median"),
                               F.mmd(x, y, kernel="imq", bandwidth=F.median_bandwidth(x, y) ** 2))


def _mc_mean_se(values):
    values = values.double()
    return float(values.mean()), float(values.std() / math.sqrt(values.numel()))


def test_mmd_to_normal_closed_form_against_monte_carlo():
    g = torch.Generator().manual_seed(1)
    dim, h, n, N = 3, 1.2, 12, 400_000
    z = torch.randn(n, dim, dtype=D64, generator=g) * 1.3 + 0.2
    y = torch.randn(N, dim, dtype=D64, generator=g)
    y2 = torch.randn(N, dim, dtype=D64, generator=g)
    # E_Y k(z_i, Y) per sample: average over i for each prior draw -> iid values
    cross = torch.stack([torch.exp(-((y - zi) ** 2).sum(1) / (2 * h * h)) for zi in z]).mean(0)  # [N]
    prior = torch.exp(-((y - y2) ** 2).sum(1) / (2 * h * h))  # [N]
    c_mc, c_se = _mc_mean_se(cross)
    p_mc, p_se = _mc_mean_se(prior)
    kzz = torch.exp(-_cdist(z, z) ** 2 / (2 * h * h))
    for est, self_term in (("unbiased", _offdiag_mean(kzz)), ("biased", kzz.mean())):
        mc = float(self_term) - 2 * c_mc + p_mc
        se = math.sqrt(4 * c_se**2 + p_se**2)
        got = float(F.mmd_to_normal(z, bandwidth=h, estimator=est))
        assert abs(got - mc) < 4 * se, (est, got, mc, se)
    # multi-scale = sum over scales
    torch.testing.assert_close(F.mmd_to_normal(z, bandwidth=[1.0, 3.0]),
                               F.mmd_to_normal(z, bandwidth=1.0) + F.mmd_to_normal(z, bandwidth=3.0))


def test_mmd_to_normal_weighted_uses_weights():
    z = torch.randn(6, 2, dtype=D64)
    w = torch.tensor([1.0, 1, 1, 1, 1, 0], dtype=D64)
    torch.testing.assert_close(F.mmd_to_normal(z, estimator="biased", weights=w),
                               F.mmd_to_normal(z[:5], estimator="biased"))
    torch.testing.assert_close(F.mmd_to_normal(z, weights=w), F.mmd_to_normal(z[:5]))


# ---------------------------------------------------------------------------------------------------
# Cramer-Wold
# ---------------------------------------------------------------------------------------------------
def test_cramer_wold_approx_reference_test_vectors():
    two = torch.tensor([[0.0] * 32, [1.0] * 32], dtype=D64)
    assert abs(2 * math.sqrt(math.pi) * float(F.cramer_wold(two, gamma=0.5, phi="approx")) - 0.20768175975) < 1e-10
    assert abs(float(F.cramer_wold(two, gamma=0.5, phi="approx")) - 0.05858594277) < 1e-10
    zeros = torch.zeros(8, 32, dtype=D64)
    assert abs(2 * math.sqrt(math.pi) * float(F.cramer_wold(zeros, gamma=1.0, phi="approx")) - 0.07411361933) < 1e-10


def _gauss(d, var):
    return np.exp(-d * d / (2 * var)) / np.sqrt(2 * np.pi * var)


def _slice_value(px, py, gamma):
    """1-D squared L2 distance between gamma-smoothed projected samples; py None: N(0, 1 + gamma)."""
    v = _gauss(px[:, None] - px[None, :], 2 * gamma).mean()
    if py is None:
        return v + _gauss(0.0, 2 + 2 * gamma) - 2 * _gauss(px, 1 + 2 * gamma).mean()
    return v + _gauss(py[:, None] - py[None, :], 2 * gamma).mean() - 2 * _gauss(px[:, None] - py[None, :], 2 * gamma).mean()


def _sphere_average(fn, dim):
    """Average over the unit sphere: trapezoid on the circle (D = 2), Gauss-Legendre x trapezoid (D = 3)."""
    if dim == 2:
        t = np.linspace(0, 2 * np.pi, 400, endpoint=False)
        return np.mean([fn(np.array([math.cos(a), math.sin(a)])) for a in t])
    nodes, weights = np.polynomial.legendre.leggauss(60)
    phis = np.linspace(0, 2 * np.pi, 120, endpoint=False)
    total = 0.0
    for c, w in zip(nodes, weights):
        s = math.sqrt(1 - c * c)
        total += w * np.mean([fn(np.array([s * math.cos(p), s * math.sin(p), c])) for p in phis])
    return total / 2


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("two_sample", [False, True])
def test_cramer_wold_exact_against_integration_over_slices(backend, dim, two_sample):
    g = torch.Generator().manual_seed(dim)
    x = torch.randn(7, dim, dtype=D64, generator=g) * 0.8 + 0.3
    y = torch.randn(5, dim, dtype=D64, generator=g) if two_sample else None
    gamma = 0.3
    xn, yn = x.numpy(), None if y is None else y.numpy()
    want = _sphere_average(lambda v: _slice_value(xn @ v, None if yn is None else yn @ v, gamma), dim)
    got = float(F.cramer_wold(x, y, gamma=gamma))
    assert abs(got - want) < 1e-8 * max(1.0, abs(want)), (got, want)


def _phi_np(s, dim):
    return sp.hyp1f1(0.5, dim / 2, -s)


def test_cramer_wold_exact_against_brute_force_hyp1f1_high_d(backend):
    dim, gamma = 16, 0.2
    x, y = torch.randn(9, dim, dtype=D64), torch.randn(13, dim, dtype=D64)
    xn, yn = x.numpy(), y.numpy()

    def sq(a, b):
        return ((a[:, None] - b[None]) ** 2).sum(-1)

    k = lambda a, b: _phi_np(sq(a, b) / (4 * gamma), dim).mean()  # noqa: E731
    two = (k(xn, xn) + k(yn, yn) - 2 * k(xn, yn)) / (2 * math.sqrt(math.pi * gamma))
    one = (k(xn, xn) / math.sqrt(gamma) + 1 / math.sqrt(1 + gamma)
           - 2 / math.sqrt(gamma + 0.5) * _phi_np((xn**2).sum(1) / (2 + 4 * gamma), dim).mean()) / (2 * math.sqrt(math.pi))
    assert abs(float(F.cramer_wold(x, y, gamma=gamma)) - two) < 1e-8 * abs(two)
    assert abs(float(F.cramer_wold(x, gamma=gamma)) - one) < 1e-8 * abs(one)


def test_cramer_wold_closed_form_equals_two_sample_with_large_prior_samples():
    """d_cw^2(X, N(0,I)) vs the two-sample formula against R independent N(0, I) samples of size N:
    the mean of the replicates, corrected for the V-statistic's known diagonal bias
    (1/N)(1/sqrt(gamma) - 1/sqrt(1+gamma)) / (2 sqrt(pi)), agrees within 4.5 standard errors."""
    g = torch.Generator().manual_seed(3)
    dim, gamma, N, R = 8, 0.25, 2000, 10
    x = torch.randn(64, dim, dtype=D64, generator=g) * 1.2
    closed = float(F.cramer_wold(x, gamma=gamma))
    reps = np.array([float(F.cramer_wold(x, torch.randn(N, dim, dtype=D64, generator=g), gamma=gamma))
                     for _ in range(R)])
    bias = (1 / math.sqrt(gamma) - 1 / math.sqrt(1 + gamma)) / N / (2 * math.sqrt(math.pi))
    se = reps.std(ddof=1) / math.sqrt(R)
    assert abs(reps.mean() - bias - closed) < 4.5 * se, (closed, reps.mean() - bias, se)


def test_cramer_wold_weights_and_unequal_sizes():
    x, y = torch.randn(6, 4, dtype=D64), torch.randn(9, 4, dtype=D64)
    # duplicating a point = doubling its weight (the n != m form is the same integral)
    x_dup = torch.cat([x, x[:1]])
    w = torch.ones(6, dtype=D64)
    w[0] = 2
    for yy in (None, y):
        torch.testing.assert_close(F.cramer_wold(x_dup, yy, gamma=0.3), F.cramer_wold(x, yy, gamma=0.3, weights_x=w))
    torch.testing.assert_close(F.cramer_wold(x, gamma=None), F.cramer_wold(x, gamma=(4 / 18) ** 0.4))


def test_cwae_loss_is_log_plus_eps():
    z = torch.randn(32, 8, dtype=D64)
    d2 = F.cramer_wold(z, phi="approx")
    torch.testing.assert_close(F.cwae_loss(z, phi="approx"), torch.log(d2 + 1e-7))
    # the reference's log(cw_unscaled + 1e-7) = ours with eps / (2 sqrt pi), + log(2 sqrt pi)
    ref = torch.log(2 * math.sqrt(math.pi) * d2 + 1e-7)
    torch.testing.assert_close(F.cwae_loss(z, phi="approx", eps=1e-7 / (2 * math.sqrt(math.pi)))
                               + math.log(2 * math.sqrt(math.pi)), ref)


# ---------------------------------------------------------------------------------------------------
# Energy distance
# ---------------------------------------------------------------------------------------------------
def test_energy_distance_two_sample_brute_force(backend):
    x, y = torch.randn(13, 4, dtype=D64), torch.randn(8, 4, dtype=D64) + 0.3
    want = 2 * _cdist(x, y).mean() - _cdist(x, x).mean() - _cdist(y, y).mean()
    torch.testing.assert_close(F.energy_distance(x, y), want)
    wa, wb = torch.rand(13, dtype=D64) + 0.1, torch.rand(8, dtype=D64) + 0.1
    a, b = wa / wa.sum(), wb / wb.sum()
    want_w = 2 * a @ _cdist(x, y) @ b - a @ _cdist(x, x) @ a - b @ _cdist(y, y) @ b
    torch.testing.assert_close(F.energy_distance(x, y, weights_x=wa, weights_y=wb), want_w)


def test_energy_distance_to_normal_against_monte_carlo():
    g = torch.Generator().manual_seed(5)
    dim, n, N = 5, 10, 400_000
    z = torch.randn(n, dim, dtype=D64, generator=g) * 0.7 + 0.4
    y, y2 = torch.randn(N, dim, dtype=D64, generator=g), torch.randn(N, dim, dtype=D64, generator=g)
    cross = torch.stack([(y - zi).norm(dim=1) for zi in z]).mean(0)  # [N]
    prior = (y - y2).norm(dim=1)
    c_mc, c_se = _mc_mean_se(cross)
    p_mc, p_se = _mc_mean_se(prior)
    mc = 2 * c_mc - float(_cdist(z, z).mean()) - p_mc
    se = math.sqrt(4 * c_se**2 + p_se**2)
    got = float(F.energy_distance(z))
    assert abs(got - mc) < 4 * se, (got, mc, se)


# ---------------------------------------------------------------------------------------------------
# Sliced Wasserstein
# ---------------------------------------------------------------------------------------------------
def _w2_quad(q1, q2, breaks):
    """int_0^1 (q1(u) - q2(u))^2 du with scipy.integrate.quad, piecewise between the breakpoints."""
    total = 0.0
    for lo, hi in zip(breaks[:-1], breaks[1:]):
        if hi > lo:
            total += scipy.integrate.quad(lambda u: (q1(u) - q2(u)) ** 2, lo, hi, limit=200, epsabs=1e-13)[0]
    return total


def _emp_quantile(values, weights=None):
    order = np.argsort(values)
    v = values[order]
    w = np.full(len(v), 1 / len(v)) if weights is None else (weights / weights.sum())[order]
    ends = np.cumsum(w)
    return (lambda u: v[min(np.searchsorted(ends, u), len(v) - 1)]), np.concatenate([[0.0], ends])


@pytest.mark.parametrize("weighted", [False, True])
def test_sliced_wasserstein_to_normal_1d_against_quadrature(weighted):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(9, 1, dtype=D64, generator=g) * 1.4 + 0.2
    w = torch.rand(9, dtype=D64, generator=g) + 0.2 if weighted else None
    q, breaks = _emp_quantile(x[:, 0].numpy(), None if w is None else w.numpy())
    want = _w2_quad(q, sp.ndtri, breaks)
    got = float(F.sliced_wasserstein(x, projections=torch.ones(1, 1, dtype=D64), weights_x=w))
    assert abs(got - want) < 1e-9, (got, want)


@pytest.mark.parametrize("sizes,weighted", [((7, 7), False), ((7, 4), False), ((6, 9), True)])
def test_sliced_wasserstein_two_sample_1d_against_quadrature(sizes, weighted):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(sizes[0], 1, dtype=D64, generator=g)
    y = torch.randn(sizes[1], 1, dtype=D64, generator=g) * 2 + 1
    wx = torch.rand(sizes[0], dtype=D64, generator=g) + 0.1 if weighted else None
    wy = torch.rand(sizes[1], dtype=D64, generator=g) + 0.1 if weighted else None
    qx, bx = _emp_quantile(x[:, 0].numpy(), None if wx is None else wx.numpy())
    qy, by = _emp_quantile(y[:, 0].numpy(), None if wy is None else wy.numpy())
    want = _w2_quad(qx, qy, np.unique(np.concatenate([bx, by])))
    got = float(F.sliced_wasserstein(x, y, projections=torch.ones(1, 1, dtype=D64), weights_x=wx, weights_y=wy))
    assert abs(got - want) < 1e-10 * max(1, want), (got, want)


def test_sliced_wasserstein_projections_mean_over_slices():
    x, y = torch.randn(10, 3, dtype=D64), torch.randn(10, 3, dtype=D64)
    theta = torch.randn(5, 3, dtype=D64)
    unit = theta / theta.norm(dim=1, keepdim=True)
    per = [F.sliced_wasserstein(x @ u[:, None], y @ u[:, None], projections=torch.ones(1, 1, dtype=D64)) for u in unit]
    torch.testing.assert_close(F.sliced_wasserstein(x, y, projections=theta), torch.stack(per).mean())
    want = torch.stack([((torch.sort(x @ u).values - torch.sort(y @ u).values) ** 2).mean() for u in unit]).mean()
    torch.testing.assert_close(F.sliced_wasserstein(x, y, projections=theta), want)
    # the generator makes draws reproducible
    a = F.sliced_wasserstein(x, generator=torch.Generator().manual_seed(7))
    b = F.sliced_wasserstein(x, generator=torch.Generator().manual_seed(7))
    assert a == b


def test_sliced_wasserstein_to_normal_not_midpoint_shortcut():
    """The exact form's null mean (n = 50): E W2^2 = 0.0588, the midpoint shortcut's 0.0525 (docs/formulas.md s. 4)."""
    g = torch.Generator().manual_seed(0)
    vals = [float(F.sliced_wasserstein(torch.randn(50, 1, dtype=D64, generator=g), projections=torch.ones(1, 1, dtype=D64)))
            for _ in range(2000)]
    mean, se = np.mean(vals), np.std(vals) / math.sqrt(len(vals))
    assert abs(mean - 0.0588) < 4 * se + 5e-4, (mean, se)


# ---------------------------------------------------------------------------------------------------
# Cramer-von Mises losses
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [1, 3, 64])
def test_radii_cvm_matches_scipy(dim):
    z = torch.randn(40, dim, dtype=D64) * 1.1
    r = z.norm(dim=1).numpy()
    want = scipy.stats.cramervonmises(r, scipy.stats.chi(dim).cdf).statistic
    assert abs(float(F.radii_cvm(z)) - want) < 1e-10


@pytest.mark.parametrize("dim", [2, 16])
def test_distances_cvm_matches_scipy(dim):
    z = torch.randn(15, dim, dtype=D64)
    d = torch.pdist(z).numpy()
    want = scipy.stats.cramervonmises(d, lambda t: scipy.stats.chi(dim).cdf(t / math.sqrt(2))).statistic
    assert abs(float(F.distances_cvm(z)) - want) < 1e-10


def test_coordinates_cvm_matches_scipy():
    z = torch.randn(30, 4, dtype=D64) + 0.2
    want = np.mean([scipy.stats.cramervonmises(z[:, j].numpy(), "norm").statistic for j in range(4)])
    assert abs(float(F.coordinates_cvm(z)) - want) < 1e-10


def test_radii_cvm_large_d_finite_gradient():
    z = torch.randn(64, 512, dtype=D64, requires_grad=True)
    F.radii_cvm(z * 1.5).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
