"""SIGReg (latentdiv.sigreg, latentdiv.SIGRegLoss, latentdiv.stats.sigreg_test; docs/sigreg.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

import latentdiv
from latentdiv import SIGRegLoss, sigreg
from latentdiv._sigreg import quadrature, slice_directions, slice_statistics
from latentdiv.stats import sigreg_test


def _direct(z: np.ndarray, a: np.ndarray, t_max: float, knots: int) -> np.ndarray:  # -> [S]
    """T_s = n sum_k w_k |ECF(t_k) - phi(t_k)|^2 from the definition, complex arithmetic in float64."""
    n = z.shape[0]
    t = np.linspace(0.0, t_max, knots)
    dt = t_max / (knots - 1)
    w = np.full(knots, 2 * dt)
    w[0] = w[-1] = dt
    phi = np.exp(-t ** 2 / 2)
    out = []
    for s in range(a.shape[1]):
        u = z @ a[:, s]
        ecf = np.array([np.exp(1j * tk * u).mean() for tk in t])
        out.append(n * np.sum(w * phi * np.abs(ecf - phi) ** 2))
    return np.array(out)


def test_published_defaults():
    t, phi, w = quadrature()
    assert t.shape == (17,) and float(t[-1]) == 3.0
    assert torch.allclose(phi, torch.exp(-t ** 2 / 2))
    assert float(w[0]) == pytest.approx(3 / 16 * math.exp(0.0)) and float(w[1]) == pytest.approx(2 * 3 / 16 * float(phi[1]))
    a = slice_directions(10)
    assert a.shape == (10, 256)
    assert torch.allclose(torch.linalg.vector_norm(a, dim=0), torch.ones(256, dtype=torch.float64))


@pytest.mark.parametrize("t_max,knots", [(3.0, 17), (2.0, 8), (5.0, 41)])
def test_value_against_direct_float64(t_max, knots):
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(37, 5, generator=gen, dtype=torch.float64) * 1.3 + 0.2
    a = slice_directions(5, 9, seed=3)
    got = slice_statistics(z, a, t_max, knots)
    want = _direct(z.numpy(), a.numpy(), t_max, knots)
    assert np.allclose(got.numpy(), want, rtol=1e-12, atol=1e-14)
    assert sigreg(z, directions=a, t_max=t_max, knots=knots).item() == pytest.approx(want.mean(), rel=1e-12)


def test_quadrature_converges_to_the_defining_integral():
    """With many knots the trapezoid sum is n * int_{-t_max}^{t_max} |ECF - phi|^2 exp(-t^2/2) dt (scipy.quad)."""
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(20, 3, generator=gen, dtype=torch.float64)
    a = slice_directions(3, 2, seed=5)
    got = slice_statistics(z, a, 3.0, 4001).numpy()
    for s in range(2):
        u = (z @ a[:, s]).numpy()

        def integrand(t):
            ecf = np.exp(1j * t * u).mean()
            return abs(ecf - math.exp(-t * t / 2)) ** 2 * math.exp(-t * t / 2)

        val, _ = integrate.quad(integrand, -3.0, 3.0, limit=200, epsabs=1e-13, epsrel=1e-12)
        assert got[s] == pytest.approx(20 * val, rel=1e-6)


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_gradcheck(estimator):
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(6, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    a = slice_directions(3, 4, seed=1)
    f = lambda zz: sigreg(zz, directions=a, estimator=estimator)  # noqa: E731
    assert torch.autograd.gradcheck(f, (z,))
    assert torch.autograd.gradgradcheck(f, (z,))


def test_zero_at_the_optimum_in_expectation():
    """Unbiased: E = 0 under N(0, I) exactly; biased (LeJEPA's): E = sum_k w_k (1 - phi_k^2), for any n."""
    reps, n, d = 400, 16, 4
    gen = torch.Generator().manual_seed(4)
    z = torch.randn(reps, n, d, generator=gen, dtype=torch.float64)
    a = slice_directions(d, 32, seed=7)
    for estimator in ("unbiased", "biased"):
        vals = sigreg(z, directions=a, estimator=estimator)
        assert vals.shape == (reps,)
        _, phi, w = quadrature()
        expected = 0.0 if estimator == "unbiased" else float((w * (1 - phi ** 2)).sum())
        se = float(vals.std()) / math.sqrt(reps)
        assert abs(float(vals.mean()) - expected) <= 4 * se, (estimator, float(vals.mean()), expected, se)
    # Away from the optimum the unbiased value is clearly positive.
    assert float(sigreg(2.0 * z, directions=a, estimator="unbiased").mean()) > 1.0


def test_invariant_to_sample_order_and_batched():
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(3, 50, 6, generator=gen, dtype=torch.float64)
    batched = sigreg(z, seed=11)
    for b in range(3):
        single = sigreg(z[b], seed=11)
        assert torch.allclose(batched[b], single, rtol=1e-13, atol=0)
        perm = torch.randperm(50, generator=gen)
        assert torch.allclose(sigreg(z[b][perm], seed=11), single, rtol=1e-12, atol=0)


def test_identical_slices_from_a_seed():
    a32 = slice_directions(8, 16, seed=42, dtype=torch.float32)
    a64 = slice_directions(8, 16, seed=42)
    assert torch.equal(a32, a64.float()) and torch.equal(a64, slice_directions(8, 16, seed=42))
    assert not torch.equal(a64, slice_directions(8, 16, seed=43))
    z = torch.randn(30, 8, dtype=torch.float64)
    m1, m2 = SIGRegLoss(num_slices=16, seed=42), SIGRegLoss(num_slices=16, seed=42)
    first = [m1(z).item() for _ in range(3)]
    assert first == [m2(z).item() for _ in range(3)]  # the same slices step by step
    assert first[0] == sigreg(z, num_slices=16, seed=42).item()
    assert first[1] == sigreg(z, num_slices=16, seed=43).item()
    assert int(m1.state_dict()["step"]) == 3


def test_float32_close_to_float64():
    z = torch.randn(64, 10, dtype=torch.float64)
    assert sigreg(z.float()).item() == pytest.approx(sigreg(z).item(), rel=1e-4, abs=1e-5)


def test_test_power_and_level():
    gen = torch.Generator().manual_seed(6)
    z = torch.randn(128, 8, generator=gen, dtype=torch.float64)
    h0 = sigreg_test(z, num_slices=64, n_resamples=199)
    assert h0.method == "sigreg" and h0.null == "monte carlo" and h0.pvalue > 0.01
    assert sigreg_test(z * 1.3, num_slices=64, n_resamples=199).pvalue <= 0.01
    assert sigreg_test(z + 0.3, num_slices=64, n_resamples=199).pvalue <= 0.01
    # target="estimated" is location-scale invariant.
    est = sigreg_test(z * 3.0 + 1.0, target="estimated", num_slices=64, n_resamples=99)
    ref = sigreg_test(z, target="estimated", num_slices=64, n_resamples=99)
    assert est.statistic == pytest.approx(ref.statistic, rel=1e-9)
    again = sigreg_test(z, num_slices=64, n_resamples=199)
    assert (again.statistic, again.pvalue) == (h0.statistic, h0.pvalue)


def test_errors_name_the_argument():
    z = torch.randn(10, 3)
    with pytest.raises(ValueError, match="num_slices"):
        sigreg(z, num_slices=0)
    with pytest.raises(ValueError, match="knots"):
        sigreg(z, knots=1)
    with pytest.raises(ValueError, match="t_max"):
        sigreg(z, t_max=-1.0)
    with pytest.raises(ValueError, match="estimator"):
        sigreg(z, estimator="u")
    with pytest.raises(ValueError, match="directions"):
        sigreg(z, directions=torch.randn(4, 2))
    with pytest.raises(ValueError, match="shape"):
        sigreg(torch.randn(10))
    with pytest.raises(TypeError, match="z"):
        sigreg([[1.0]])
    assert latentdiv.sigreg is sigreg


def test_untruncated_integral_is_the_bhep_form():
    """With t_max large the statistic is the closed form sqrt(2 pi) [mean_ij e^{-(u_i-u_j)^2/2}
    - sqrt(2) mean_i e^{-u_i^2/4} + 1/sqrt(3)] times n (docs/formulas.md section 12)."""
    gen = torch.Generator().manual_seed(8)
    z = torch.randn(15, 2, generator=gen, dtype=torch.float64)
    a = slice_directions(2, 3, seed=2)
    got = slice_statistics(z, a, 12.0, 6001)
    u = z @ a  # [n, S]
    diff = u.unsqueeze(0) - u.unsqueeze(1)
    closed = math.sqrt(2 * math.pi) * (torch.exp(-diff ** 2 / 2).mean(dim=(0, 1))
                                        - math.sqrt(2) * torch.exp(-u ** 2 / 4).mean(dim=0) + 1 / math.sqrt(3))
    assert torch.allclose(got, 15 * closed, rtol=1e-8)
