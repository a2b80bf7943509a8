"""Loss properties (null values, symmetry, permutation invariance), gradients (gradcheck, no NaN from
duplicates or z = 0), bad input, torch.compile(fullgraph=True), the nn.Module wrappers, batching."""

from __future__ import annotations

import math

import pytest
import torch

import latentdiv
import latentdiv.functional as F
from latentdiv import losses as L

D64 = torch.float64

# name -> (callable of (x, y) with y possibly None, supports_two_sample, supports_one_sample)
THETA3 = torch.randn(6, 3, dtype=D64, generator=torch.Generator().manual_seed(11))
TWO_SAMPLE = {
    "mmd_gaussian": lambda x, y: F.mmd(x, y, bandwidth=1.5),
    "mmd_gaussian_biased": lambda x, y: F.mmd(x, y, bandwidth=[0.7, 2.0], estimator="biased"),
    "mmd_imq": lambda x, y: F.mmd(x, y, kernel="imq", bandwidth=2.0),
    "mmd_laplacian": lambda x, y: F.mmd(x, y, kernel="laplacian", bandwidth=2.0, estimator="biased"),
    "mmd_energy": lambda x, y: F.mmd(x, y, kernel="energy", estimator="biased"),
    "mmd_wae": lambda x, y: F.mmd(x, y, preset="wae"),
    "mmd_infovae": lambda x, y: F.mmd(x, y, preset="infovae"),
    "cramer_wold": lambda x, y: F.cramer_wold(x, y, gamma=0.3),
    "cramer_wold_approx": lambda x, y: F.cramer_wold(x, y, gamma=0.3, phi="approx"),
    "energy_distance": lambda x, y: F.energy_distance(x, y),
    "sliced_wasserstein": lambda x, y: F.sliced_wasserstein(x, y, projections=THETA3.to(x.dtype)),
}
ONE_SAMPLE = {
    "mmd_to_normal": lambda z: F.mmd_to_normal(z, bandwidth=1.5),
    "mmd_to_normal_biased": lambda z: F.mmd_to_normal(z, bandwidth=[1.0, 3.0], estimator="biased"),
    "cramer_wold": lambda z: F.cramer_wold(z, gamma=0.3),
    "cramer_wold_approx": lambda z: F.cramer_wold(z, gamma=0.3, phi="approx"),
    "cwae_loss": lambda z: F.cwae_loss(z),
    "energy_distance": lambda z: F.energy_distance(z),
    "sliced_wasserstein": lambda z: F.sliced_wasserstein(z, projections=THETA3.to(z.dtype)),
    "radii_cvm": F.radii_cvm,
    "distances_cvm": F.distances_cvm,
    "coordinates_cvm": F.coordinates_cvm,
}
# V-statistic / exact forms whose value is 0 for identical samples (the unbiased MMD is not).
ZERO_ON_IDENTICAL = ["mmd_gaussian_biased", "mmd_laplacian", "mmd_energy", "mmd_infovae", "cramer_wold",
                     "cramer_wold_approx", "energy_distance", "sliced_wasserstein"]


@pytest.fixture(params=["compiled", "reference"])
def backend(request):
    if request.param == "compiled" and not latentdiv._ext.compiled_available():
        pytest.skip("latentdiv._C is not built")
    previous = latentdiv.set_backend(request.param)
    yield request.param
    latentdiv.set_backend(previous)


# ---------------------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ZERO_ON_IDENTICAL)
def test_zero_for_identical_samples(name):
    x = torch.randn(9, 3, dtype=D64)
    assert abs(float(TWO_SAMPLE[name](x, x.clone()))) < 1e-12


def test_unbiased_mmd_null_value_for_identical_samples():
    """U-statistic with x = y: 2 (mean_{i!=j} k - mean_{ij} k) = 2 (mean_{ij} k - k(0)) / (n - 1)."""
    x = torch.randn(9, 3, dtype=D64)
    k = torch.exp(-torch.cdist(x, x) ** 2 / (2 * 1.5**2))
    want = 2 * (k.mean() - 1) / 8
    torch.testing.assert_close(F.mmd(x, x.clone(), bandwidth=1.5), want)


@pytest.mark.parametrize("name", sorted(TWO_SAMPLE))
def test_symmetry_and_permutation_invariance(name):
    f = TWO_SAMPLE[name]
    x, y = torch.randn(8, 3, dtype=D64), torch.randn(8, 3, dtype=D64) + 0.4
    v = f(x, y)
    torch.testing.assert_close(f(y, x), v, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(f(x[torch.randperm(8)], y[torch.randperm(8)]), v, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name", sorted(ONE_SAMPLE))
def test_one_sample_permutation_invariance(name):
    f = ONE_SAMPLE[name]
    z = torch.randn(10, 3, dtype=D64)
    torch.testing.assert_close(f(z[torch.randperm(10)]), f(z), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name", ["mmd_to_normal_biased", "cramer_wold", "energy_distance", "sliced_wasserstein"])
def test_closed_form_decreases_toward_the_prior(name):
    """Shrinking a Gaussian sample far from N(0, I) toward it lowers every closed form."""
    f = ONE_SAMPLE[name]
    z = torch.randn(200, 3, dtype=D64)
    assert float(f(3.0 * z + 1.0)) > float(f(z))


# ---------------------------------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(TWO_SAMPLE))
def test_gradcheck_two_sample(backend, name):
    f = TWO_SAMPLE[name]
    x = torch.randn(5, 3, dtype=D64, requires_grad=True)
    y = torch.randn(4, 3, dtype=D64, requires_grad=True) + 0.3
    y = y.detach().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (x, y))


@pytest.mark.parametrize("name", sorted(ONE_SAMPLE))
def test_gradcheck_one_sample(backend, name):
    z = torch.randn(6, 3, dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(ONE_SAMPLE[name], (z,))


def test_gradcheck_weights():
    x, y = torch.randn(5, 3, dtype=D64, requires_grad=True), torch.randn(4, 3, dtype=D64, requires_grad=True)
    a = (torch.rand(5, dtype=D64) + 0.5).requires_grad_(True)
    b = (torch.rand(4, dtype=D64) + 0.5).requires_grad_(True)
    for f in (lambda a, x, b, y: F.mmd(x, y, weights_x=a, weights_y=b),
              lambda a, x, b, y: F.cramer_wold(x, y, gamma=0.4, weights_x=a, weights_y=b),
              lambda a, x, b, y: F.cramer_wold(x, None, gamma=0.4, weights_x=a),
              lambda a, x, b, y: F.mmd_to_normal(x, weights=a),
              lambda a, x, b, y: F.energy_distance(x, y, weights_x=a, weights_y=b),
              lambda a, x, b, y: F.energy_distance(x, None, weights_x=a),
              lambda a, x, b, y: F.sliced_wasserstein(x, None, projections=THETA3, weights_x=a),
              lambda a, x, b, y: F.sliced_wasserstein(x, y, projections=THETA3, weights_x=a, weights_y=b)):
        assert torch.autograd.gradcheck(f, (a, x, b, y))


def test_gradcheck_kl():
    mu, lv = torch.randn(4, 3, dtype=D64, requires_grad=True), torch.randn(4, 3, dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda m, v: F.kl_normal(m, v), (mu, lv))


def _degenerate_inputs():
    z = torch.randn(6, 3, dtype=D64)
    dup = torch.cat([z[:3], z[:3]])  # every point twice
    zeros = torch.zeros(6, 3, dtype=D64)
    with_zero = z.clone()
    with_zero[0] = 0.0
    return {"duplicates": dup, "zeros": zeros, "one_zero_row": with_zero}


@pytest.mark.parametrize("case", ["duplicates", "zeros", "one_zero_row"])
def test_no_nan_gradient_from_degenerate_inputs(backend, case):
    base = _degenerate_inputs()[case]
    for name, f in list(ONE_SAMPLE.items()) + [(n, (lambda g: lambda z: g(z, z.detach().clone()))(g))
                                                for n, g in TWO_SAMPLE.items()]:
        for dtype in (torch.float32, D64):
            z = base.to(dtype).requires_grad_(True)
            value = f(z)
            (grad,) = torch.autograd.grad(value, z)
            assert torch.isfinite(value), (name, case, dtype)
            assert torch.isfinite(grad).all(), (name, case, dtype)
    mu, lv = torch.zeros(2, 3, requires_grad=True), torch.tensor([[0.0, 1e6, -1e6]] * 2, requires_grad=True)
    v = F.kl_normal(mu, lv)
    assert torch.isfinite(v) and torch.isfinite(torch.autograd.grad(v, (mu, lv))[1]).all()


def test_half_inputs_computed_in_float32():
    z = torch.randn(64, 8)
    for f in (lambda t: F.mmd_to_normal(t, bandwidth=2.0), lambda t: F.cramer_wold(t)):
        got = f(z.to(torch.bfloat16))
        assert got.dtype == torch.bfloat16
        want = f(z.to(torch.bfloat16).float())
        torch.testing.assert_close(got.float(), want, rtol=1e-2, atol=1e-4)


# ---------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------
def _raises(exc, match, fn):
    with pytest.raises(exc, match=match):
        fn()


def test_bad_input_messages():
    x, y = torch.randn(5, 3), torch.randn(4, 2)
    _raises(ValueError, "dimension D", lambda: F.mmd(x, y))
    _raises(ValueError, "dimension D", lambda: F.cramer_wold(x, y))
    _raises(ValueError, "dimension D", lambda: F.energy_distance(x, y))
    _raises(ValueError, "dimension D", lambda: F.sliced_wasserstein(x, y))
    _raises(ValueError, "x has 1 sample.*unbiased", lambda: F.mmd(x[:1], x))
    _raises(ValueError, "y has 1 sample.*unbiased", lambda: F.mmd(x, x[:1]))
    _raises(ValueError, "z has 1 sample.*unbiased", lambda: F.mmd_to_normal(x[:1]))
    F.mmd_to_normal(x[:1], estimator="biased")  # fine
    _raises(ValueError, "z has 1 sample", lambda: F.distances_cvm(x[:1]))
    _raises(ValueError, "bandwidth must be positive", lambda: F.mmd(x, x, bandwidth=0.0))
    _raises(ValueError, "bandwidth must be positive", lambda: F.mmd_to_normal(x, bandwidth=-1.0))
    _raises(ValueError, "gamma must be positive", lambda: F.cramer_wold(x, gamma=0.0))
    _raises(ValueError, "scales must be positive", lambda: F.mmd(x, x, scales=[1.0, -2.0]))
    _raises(ValueError, "x must have shape", lambda: F.cramer_wold(torch.randn(5)))
    _raises(ValueError, "z must have shape", lambda: F.radii_cvm(torch.randn(2, 3, 4, 5)))
    _raises(TypeError, "x must be a torch.Tensor", lambda: F.energy_distance([[1.0, 2.0]]))
    _raises(TypeError, "floating dtype", lambda: F.mmd_to_normal(torch.ones(3, 2, dtype=torch.long)))
    _raises(ValueError, "x is empty", lambda: F.cramer_wold(torch.randn(0, 3)))
    _raises(ValueError, "kernel must be one of", lambda: F.mmd(x, x, kernel="cosine"))
    _raises(ValueError, "estimator must be one of", lambda: F.mmd(x, x, estimator="u"))
    _raises(ValueError, "phi must be one of", lambda: F.cramer_wold(x, phi="fast"))
    _raises(ValueError, "preset=.*do not also pass kernel", lambda: F.mmd(x, x, preset="wae", kernel="imq"))
    _raises(ValueError, "preset must be one of", lambda: F.mmd(x, x, preset="swae"))
    _raises(ValueError, "weights_x must have shape", lambda: F.mmd(x, x, weights_x=torch.ones(4)))
    _raises(ValueError, "weights_y was given but y is None", lambda: F.cramer_wold(x, weights_y=torch.ones(5)))
    # y=None is the prior (issue 10 item 14); kernels without a closed form against N(0, I) say so.
    _raises(ValueError, "y=None means N\\(0, I\\) in closed form", lambda: F.mmd(x, None, kernel="imq"))
    _raises(ValueError, "phi='approx' needs D >= 2", lambda: F.cramer_wold(torch.randn(4, 1), phi="approx"))
    _raises(ValueError, "projections must have shape", lambda: F.sliced_wasserstein(x, projections=torch.randn(4, 2)))
    _raises(ValueError, "n_projections", lambda: F.sliced_wasserstein(x, n_projections=0))
    _raises(ValueError, "batch size B", lambda: F.mmd(torch.randn(2, 5, 3), torch.randn(3, 5, 3)))
    _raises(ValueError, "y is batched", lambda: F.cramer_wold(x, torch.randn(2, 5, 3)))
    _raises(ValueError, "logvar must have mu's shape", lambda: F.kl_normal(torch.randn(3, 2), torch.randn(3, 3)))
    _raises(ValueError, "reduction must be one of", lambda: F.kl_normal(x, x, reduction="avg"))
    _raises(TypeError, "numeric bandwidth", lambda: F.mmd_to_normal(x, bandwidth="median"))
    _raises(ValueError, "'median'", lambda: F.mmd(x, x, bandwidth="mean"))
    _raises(TypeError, "takes no second sample", lambda: L.RadiiCvMLoss()(x, x))
    _raises(TypeError, "does not take weights", lambda: L.CoordinatesCvMLoss()(torch.ones(5), x))
    _raises(TypeError, "takes \\(x\\), \\(x, y\\)", lambda: L.EnergyDistanceLoss()(x, x, x))
    _raises(ValueError, "reduction must be one of", lambda: L.CramerWoldLoss(reduction="avg"))
    _raises(ValueError, "gamma must be positive", lambda: L.CramerWoldLoss(gamma=-1.0))


# ---------------------------------------------------------------------------------------------------
# batching and modules
# ---------------------------------------------------------------------------------------------------
def test_batched_equals_loop():
    x, y = torch.randn(3, 7, 4, dtype=D64), torch.randn(3, 6, 4, dtype=D64)
    w = torch.rand(3, 7, dtype=D64) + 0.1
    for name, f in TWO_SAMPLE.items():
        if name == "sliced_wasserstein":
            f = lambda a, b: F.sliced_wasserstein(a, b, projections=torch.randn(5, 4, generator=torch.Generator().manual_seed(0), dtype=D64))  # noqa: E731
        torch.testing.assert_close(f(x, y), torch.stack([f(x[b], y[b]) for b in range(3)]))
        torch.testing.assert_close(f(x, y[0]), torch.stack([f(x[b], y[0]) for b in range(3)]))
    for name, f in ONE_SAMPLE.items():
        if name == "sliced_wasserstein":
            continue
        torch.testing.assert_close(f(x), torch.stack([f(x[b]) for b in range(3)]))
    torch.testing.assert_close(F.cramer_wold(x, weights_x=w), torch.stack([F.cramer_wold(x[b], weights_x=w[b]) for b in range(3)]))


MODULES = {
    "MMDLoss": (lambda: L.MMDLoss(bandwidth=1.5), lambda x, y, a, b: F.mmd(x, y, bandwidth=1.5, weights_x=a, weights_y=b),
                lambda x, a: F.mmd_to_normal(x, bandwidth=1.5, weights=a)),
    "CramerWoldLoss": (lambda: L.CramerWoldLoss(), lambda x, y, a, b: F.cramer_wold(x, y, weights_x=a, weights_y=b),
                       lambda x, a: F.cramer_wold(x, weights_x=a)),
    "EnergyDistanceLoss": (lambda: L.EnergyDistanceLoss(),
                           lambda x, y, a, b: F.energy_distance(x, y, weights_x=a, weights_y=b),
                           lambda x, a: F.energy_distance(x, weights_x=a)),
    "SlicedWassersteinLoss": (lambda: L.SlicedWassersteinLoss(projections=THETA3),
                              lambda x, y, a, b: F.sliced_wasserstein(x, y, projections=THETA3, weights_x=a, weights_y=b),
                              lambda x, a: F.sliced_wasserstein(x, projections=THETA3, weights_x=a)),
}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_call_conventions_and_reductions(name):
    make, two, one = MODULES[name]
    x, y = torch.randn(2, 6, 3, dtype=D64), torch.randn(2, 5, 3, dtype=D64)
    a, b = torch.rand(2, 6, dtype=D64) + 0.1, torch.rand(2, 5, dtype=D64) + 0.1
    loss = make()
    torch.testing.assert_close(loss(x[0]), one(x[0], None))
    torch.testing.assert_close(loss(x[0], y[0]), two(x[0], y[0], None, None))
    torch.testing.assert_close(loss(a[0], x[0]), one(x[0], a[0]))
    torch.testing.assert_close(loss(a[0], x[0], b[0], y[0]), two(x[0], y[0], a[0], b[0]))
    torch.testing.assert_close(loss(a[0], x[0], None, y[0]), two(x[0], y[0], a[0], None))
    per = two(x, y, a, b)
    assert per.shape == (2,)
    torch.testing.assert_close(loss(a, x, b, y), per.mean())
    loss.reduction = "sum"
    torch.testing.assert_close(loss(a, x, b, y), per.sum())
    loss.reduction = "none"
    torch.testing.assert_close(loss(a, x, b, y), per)
    torch.testing.assert_close(loss(x), one(x, None))


def test_one_sample_modules():
    z = torch.randn(2, 9, 3, dtype=D64)
    pairs = [(L.MMDToNormalLoss(bandwidth=2.0), lambda t: F.mmd_to_normal(t, bandwidth=2.0)),
             (L.RadiiCvMLoss(), F.radii_cvm), (L.DistancesCvMLoss(), F.distances_cvm),
             (L.CoordinatesCvMLoss(), F.coordinates_cvm),
             (L.CramerWoldLoss(log=True), lambda t: F.cwae_loss(t))]
    for module, f in pairs:
        torch.testing.assert_close(module(z), f(z).mean())
        torch.testing.assert_close(module(z[1]), f(z[1]))
    torch.testing.assert_close(L.KLNormalLoss(reduction="sum")(z, z), F.kl_normal(z, z, reduction="sum"))


def test_mmd_module_one_sample_closed_form_or_prior_draws():
    z = torch.randn(20, 4, dtype=D64)
    torch.testing.assert_close(L.MMDLoss(preset="infovae")(z),
                               F.mmd_to_normal(z, bandwidth=4 / math.sqrt(2), estimator="biased"))
    torch.testing.assert_close(L.MMDLoss(bandwidth=2.0, scales=[1, 2])(z), F.mmd_to_normal(z, bandwidth=[2.0, 4.0]))
    wae = L.MMDLoss(preset="wae", generator=torch.Generator().manual_seed(5))
    prior = torch.randn(20, 4, dtype=D64, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(wae(z), F.mmd(z, prior, preset="wae"))


# ---------------------------------------------------------------------------------------------------
# torch.compile
# ---------------------------------------------------------------------------------------------------
COMPILED = {
    "mmd": lambda x, y: F.mmd(x, y, preset="wae") + F.mmd(x, y, bandwidth=[1.0, 2.0], estimator="biased"),
    "mmd_to_normal": lambda x, y: F.mmd_to_normal(x, bandwidth=2.0),
    "cramer_wold": lambda x, y: F.cramer_wold(x) + F.cramer_wold(x, y, phi="approx") + F.cwae_loss(x),
    "energy_distance": lambda x, y: F.energy_distance(x) + F.energy_distance(x, y),
    "sliced_wasserstein": lambda x, y: (F.sliced_wasserstein(x, projections=THETA3.float())
                                        + F.sliced_wasserstein(x, y[:20], projections=THETA3.float())),
    "cvm": lambda x, y: F.radii_cvm(x) + F.distances_cvm(x) + F.coordinates_cvm(x),
}


@pytest.mark.parametrize("name", sorted(COMPILED))
def test_torch_compile_fullgraph_forward_backward(name):
    if not latentdiv._ext.compiled_available():
        pytest.skip("latentdiv._C is not built")
    f = COMPILED[name]
    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")  # inductor codegen is slow on 2 cores
    x = torch.randn(33, 3, requires_grad=True)
    y = torch.randn(25, 3)
    value = compiled(x, y)
    (gx,) = torch.autograd.grad(value, x)
    x2 = x.detach().clone().requires_grad_(True)
    want = f(x2, y)
    (wx,) = torch.autograd.grad(want, x2)
    torch.testing.assert_close(value, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gx, wx, rtol=1e-5, atol=1e-6)


def test_torch_compile_inductor_cramer_wold():
    if not latentdiv._ext.compiled_available():
        pytest.skip("latentdiv._C is not built")
    torch._dynamo.reset()
    f = lambda x: F.cramer_wold(x) + F.mmd_to_normal(x, bandwidth=2.0)  # noqa: E731
    x = torch.randn(40, 5, requires_grad=True)
    value = torch.compile(f, fullgraph=True)(x)
    (gx,) = torch.autograd.grad(value, x)
    x2 = x.detach().clone().requires_grad_(True)
    want = f(x2)
    torch.testing.assert_close(value, want)
    torch.testing.assert_close(gx, torch.autograd.grad(want, x2)[0])
