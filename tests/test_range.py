"""Range: float32 (and bfloat16) data of any finite magnitude give the float64 answer to float32
accuracy, for every kernel and pdist, values and gradients; unusable parameters are a ValueError.

Before the engine's power-of-two frame (docs/engine.md, "Range"), r2 overflowed float32 at |x| ~ 1.8e19
(D >= 9: NaN) and its terms were flushed to zero at |x| ~ 1e-19 (pdist and energy 0 at 1e-20).
Tolerance (values and gradients): error(ours) <= 2 error(plain torch float32) + eps where plain torch is
finite, else error(ours) <= a float32 tolerance; errors are relative to the float64 answer's largest
magnitude.
"""

from __future__ import annotations

import math

import pytest
import torch

import latentdiv
from latentdiv._registry import DISTANCE, KERNELS, SQUARED_DISTANCE

from conftest import requires_compiled

pytestmark = requires_compiled  # the engine's frame; the pure-torch fallback keeps plain float32 range

SCALES = (1e-30, 1e-20, 1e-19, 1.0, 1e19, 1e30)
DIMS = (5, 16)  # direct-difference tiles (D <= 8) and the dot-product path
EPS = 2e-6      # float32 slack of the sums, relative
FLOAT32_TOL = 2e-5  # where plain torch float32 is not finite


def kernel_args(kernel: str, scale: float, dim: int) -> dict:
    """Kernel arguments that scale with the data (so the float64 answer is the same at every scale),
    from the units of the kernel's parameters in the registry."""
    spec = KERNELS[kernel]
    args = {}
    if spec.bandwidth_units is DISTANCE:  # gaussian, laplacian
        args["bandwidth"] = math.sqrt(dim) * scale
    elif spec.bandwidth_units is SQUARED_DISTANCE:  # imq
        args["bandwidth"] = 2.0 * dim * scale * scale
    for p in spec.parameters:
        if p.name == "bandwidth" or not p.required:
            continue
        assert p.units == "squared distance", f"{kernel}: no scaling rule here for a parameter in {p.units}"
        args[p.name] = 0.5 * scale * scale  # the Cramer-Wold kernels' gamma
    return args


def dense_sum(x, y, kernel, args, cdist_mode):  # x: [n, D], y: [m, D] -> []
    """Plain torch: the n x m matrix of the registry's formula (what users write)."""
    spec = KERNELS[kernel]
    r = torch.cdist(x, y, compute_mode=cdist_mode)
    options = {k: v for k, v in args.items() if k != "bandwidth"}
    return spec.formula(r, args.get("bandwidth", 1.0), x.shape[1], options).sum()


def value_and_grad(fn, x, y):  # -> value, dvalue/dx, dvalue/dy
    x = x.detach().clone().requires_grad_(True)
    y = y.detach().clone().requires_grad_(True)
    v = fn(x, y)
    gx, gy = torch.autograd.grad(v, (x, y))
    return v.detach().double(), gx.double(), gy.double()


def rel_err(a, ref):
    a, ref = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(ref, dtype=torch.float64)
    if not torch.isfinite(a).all():
        return math.inf
    scale = ref.abs().max().item()
    return (a - ref).abs().max().item() / (scale if scale > 0 else 1.0)


def representable_in_float32(ref) -> bool:
    big = torch.as_tensor(ref, dtype=torch.float64).abs().max().item()
    return big == 0.0 or 1e-30 < big < 1e37


def failures(cases):
    """The cases (ours, plain torch float32, float64 reference, label) whose error exceeds the bound:
    twice plain torch's own float32 error (+ EPS), or FLOAT32_TOL where plain torch is not finite.
    References outside float32's range are skipped (e.g. cramer_wold_approx's gradient ~ 1e60 at scale
    1e-30)."""
    out = []
    for ours, plain32, ref, what in cases:
        if not representable_in_float32(ref):
            continue
        err, err_torch = rel_err(ours, ref), rel_err(plain32, ref)
        bound = 2.0 * err_torch + EPS if math.isfinite(err_torch) else FLOAT32_TOL
        if not err <= bound:
            out.append(f"{what}: error {err:.3g} > {bound:.3g} (plain torch float32: {err_torch:.3g})")
    return out


def data(scale, dim, n=48, m=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=gen, dtype=torch.float64) * scale
    y = (torch.randn(m, dim, generator=gen, dtype=torch.float64) + 0.5) * scale
    x[7] = x[3]  # an exact duplicate: r2 = 0 off the diagonal
    # Rounded to float32 first: the float64 reference sees the same points.
    return x.float().double(), y.float().double()


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_pairwise_sum_float32_at_any_scale(kernel, scale, dim):
    x, y = data(scale, dim)
    args = kernel_args(kernel, scale, dim)

    def ours(a, b):  # self terms of both samples and the cross term, as in an MMD
        return (latentdiv.pairwise_sum(a, kernel=kernel, **args) + latentdiv.pairwise_sum(b, kernel=kernel, **args)
                - 2.0 * latentdiv.pairwise_sum(a, b, kernel=kernel, **args))

    def plain(a, b, mode):
        return (dense_sum(a, a, kernel, args, mode) + dense_sum(b, b, kernel, args, mode)
                - 2.0 * dense_sum(a, b, kernel, args, mode))

    ref = value_and_grad(lambda a, b: plain(a, b, "donot_use_mm_for_euclid_dist"), x, y)
    got = value_and_grad(ours, x.float(), y.float())
    torch32 = value_and_grad(lambda a, b: plain(a, b, "use_mm_for_euclid_dist_if_necessary"), x.float(), y.float())
    cases = [(got[i], torch32[i], ref[i], f"{kernel} scale {scale:g} D {dim} {name}")
             for name, i in (("value", 0), ("grad x", 1), ("grad y", 2))]
    # Each term on its own too (the MMD combination may cancel to a small number).
    xs = x.float()
    cases.append((latentdiv.pairwise_sum(xs, kernel=kernel, **args).double(),
                  dense_sum(xs, xs, kernel, args, "use_mm_for_euclid_dist_if_necessary").double(),
                  dense_sum(x, x, kernel, args, "donot_use_mm_for_euclid_dist"), f"{kernel} scale {scale:g} D {dim} self sum"))
    assert failures(cases) == []


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("scale", SCALES)
def test_pdist_float32_at_any_scale(scale, dim):
    x, _ = data(scale, dim, n=70)
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(70 * 69 // 2, generator=gen, dtype=torch.float64)

    def loss(pd):
        return lambda a, b: (pd(a) * w.to(a.dtype)).sum() + 0.0 * b.sum()

    ref = value_and_grad(loss(torch.pdist), x, x)
    got = value_and_grad(loss(latentdiv.pdist), x.float(), x.float())
    torch32 = value_and_grad(loss(torch.pdist), x.float(), x.float())
    assert failures([(latentdiv.pdist(x.float()), torch.pdist(x.float()), torch.pdist(x), f"pdist scale {scale:g} D {dim}"),
                     (got[1], torch32[1], ref[1], f"pdist backward scale {scale:g} D {dim}")]) == []
    # Relative accuracy of each distance, not only of the largest.
    d32, d64 = latentdiv.pdist(x.float()).double(), torch.pdist(x)
    nonzero = d64 > 0
    assert ((d32 - d64).abs()[nonzero] / d64[nonzero]).max() < 1e-5
    assert (d32[~nonzero] == 0).all()


@pytest.mark.parametrize("scale", (1e-30, 1e30))
def test_bfloat16_at_extreme_scales(scale):
    x, y = data(scale, 16)
    xb, yb = x.bfloat16(), y.bfloat16()
    args = kernel_args("gaussian", scale, 16)
    got = latentdiv.pairwise_sum(xb, yb, **args)
    assert got.dtype == torch.bfloat16
    ref = dense_sum(xb.double(), yb.double(), "gaussian", args, "donot_use_mm_for_euclid_dist")
    assert abs(got.double().item() - ref.item()) <= 1e-2 * abs(ref.item())
    d = latentdiv.pdist(xb)
    assert torch.isfinite(d).all() and rel_err(d, torch.pdist(xb.double())) < 1e-2


def test_kernel_parameters_far_from_the_data_scale():
    """float32 parameters that overflow float32 (1 / (2 h^2) = 5e39 for h = 1e-20) or underflow it:
    the kernel is then a delta at r2 = 0 or a constant; float64 gets the same from its own params."""
    x = torch.randn(30, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x[5] = x[2]
    for kernel, args in (("gaussian", dict(bandwidth=1e-20)), ("laplacian", dict(bandwidth=1e-40)),
                         ("imq", dict(bandwidth=1e-45)), ("gaussian", dict(bandwidth=1e25)),
                         ("imq", dict(bandwidth=1e40))):
        ref = latentdiv.pairwise_sum(x, kernel=kernel, **args).item()
        got = latentdiv.pairwise_sum(x.float(), kernel=kernel, **args).item()
        assert math.isfinite(got) and abs(got - ref) <= 1e-5 * abs(ref), (kernel, args, got, ref)
    assert latentdiv.pairwise_sum(x.float(), bandwidth=1e-20).item() == 32.0  # the diagonal and one duplicate pair x 2


@pytest.mark.parametrize("kernel, args, name", [
    ("gaussian", dict(bandwidth=1e-300), "bandwidth"),
    ("gaussian", dict(bandwidth=1e-160), "bandwidth"),
    ("gaussian", dict(bandwidth=[1.0, 1e-300]), "bandwidth"),
    ("laplacian", dict(bandwidth=1e-320), "bandwidth"),
    ("cramer_wold", dict(gamma=1e-310), "gamma"),
    ("cramer_wold", dict(gamma=1e307), "gamma"),
])
def test_unusable_parameters_name_the_argument(kernel, args, name):
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match=name):
        latentdiv.pairwise_sum(x, kernel=kernel, **args)


def test_normal_scales_unchanged_bits():
    """At ordinary magnitudes the frame is the identity: scaling the data by a power of two inside the
    window (2^10) scales the energy sum by exactly that factor (same arithmetic, other exponents), and a
    rescaled call (2^40, outside the window) gives the same bits too."""
    x = torch.randn(200, 16, generator=torch.Generator().manual_seed(3))
    base = latentdiv.pairwise_sum(x, kernel="energy").item()
    for k in (10, 40, -40):
        assert latentdiv.pairwise_sum(x * 2.0**k, kernel="energy").item() == base * 2.0**k


@pytest.mark.parametrize("scale", (1e-30, 1e30))
@pytest.mark.parametrize("kernel", ("gaussian", "energy"))
def test_weights_and_unbiased_sums_at_extreme_scales(kernel, scale):
    """The weights' gradients are VALUE rows (scaled back by the frame too), U-statistics skip the diagonal."""
    x, y = data(scale, 16)
    gen = torch.Generator().manual_seed(4)
    wx, wy = torch.rand(x.shape[0], generator=gen, dtype=torch.float64), torch.rand(y.shape[0], generator=gen, dtype=torch.float64)
    args = kernel_args(kernel, scale, 16)

    def run(dtype):
        leaves = [t.to(dtype).requires_grad_(True) for t in (x, y, wx, wy)]
        a, b, va, vb = leaves
        total = (latentdiv.pairwise_sum(a, b, kernel=kernel, weights_x=va, weights_y=vb, **args)
                 + latentdiv.pairwise_sum(a, kernel=kernel, weights_x=va, exclude_diagonal=True, **args))
        return [total.detach().double()] + [g.double() for g in torch.autograd.grad(total, leaves)]

    for got, ref, what in zip(run(torch.float32), run(torch.float64), ("value", "x", "y", "wx", "wy")):
        assert rel_err(got, ref) < FLOAT32_TOL, (kernel, scale, what, rel_err(got, ref))
