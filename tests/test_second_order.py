"""Second-order gradients, gradients w.r.t. a bandwidth tensor, torch.func and torch.compile.

(a) gradgradcheck (float64) of every engine op, for every registry kernel (tests/kernel_cases.py),
    self and cross pairs, weights, exclude_diagonal; through the custom ops' registered autograd
    (torch.ops.latentdiv.*) and through the autograd.Function layer the public functions use.
(b) The HESS_VEC engine mode against a float64 autograd oracle, on every CPU ISA variant.
(c) Every engine-backed loss: gradgradcheck, and its second order (a gradient penalty and a
    Hessian-vector product) against a pure-torch float64 oracle (the reference backend with
    twice-differentiable distances).
(d) The reproducers of issue 10 items 1, 6 and 8; torch.func grad / jacrev / jacfwd / hessian / vmap;
    torch.compile(fullgraph=True) over calls that change n, D and the bandwidth.
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import latentdiv
from latentdiv import _ext, functional as F, reference
from latentdiv._registry import get_kernel, kernel_params
from kernel_cases import BANDWIDTH_KERNELS, KERNEL_CASES, case_id
from conftest import requires_compiled

pytestmark = requires_compiled
ops = torch.ops.latentdiv
f64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    # gradgradcheck makes thousands of tiny engine calls; one thread avoids OpenMP start-up per call
    # (conftest restores the thread count after each test).
    torch.set_num_threads(1)


def _points(n, d, seed, scale=1.0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=f64) * scale + shift)


def _weights(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, generator=g, dtype=f64) + 0.2


def _params(case, d):
    kernel, bandwidth, options, _ = case
    spec = get_kernel(kernel)
    return spec.kernel_id, list(kernel_params(spec, bandwidth, d, dict(options)))


# ---------------------------------------------------------------------------------------------------
# (a) every op, every kernel
# ---------------------------------------------------------------------------------------------------
# (self pairs, weighted, exclude_diagonal)
PAIR_LAYOUTS = [(True, False, False), (True, True, False), (True, True, True), (False, False, False),
                (False, True, False)]


def _layout_id(layout):
    self_pairs, weighted, excl = layout
    return f"{'self' if self_pairs else 'cross'}{'-w' if weighted else ''}{'-nodiag' if excl else ''}"


def _op_inputs(layout, d):
    self_pairs, weighted, _ = layout
    x = _points(4, d, 1).requires_grad_()
    y = None if self_pairs else _points(3, d, 2, 1.2, 0.3).requires_grad_()
    wx = _weights(4, 3).requires_grad_() if weighted else None
    wy = _weights(3, 4).requires_grad_() if (weighted and not self_pairs) else None
    return x, y, wx, wy


def _op_callables(layout, case, d, table):
    """Each op as a function of its differentiable inputs (outputs reduced to something
    non-trivially weighted, so that every output entry matters)."""
    _, _, excl = layout
    k, p = _params(case, d)
    E = table
    probe_rows = _weights(4, 7)
    probe_grad = _points(4, d, 8)

    def total(x, y, wx, wy):
        return E.sum(x, y, wx, wy, k, p, excl)

    def rows(x, y, wx, wy):
        w = wx if y is None else wy
        return (E.rows(x, y, w, k, p, excl) * probe_rows).sum()

    def grad(x, y, wx, wy):
        w = wx if y is None else wy
        return (E.grad(x, y, w, k, p, excl) * probe_grad).sum()

    def with_grad(x, y, wx, wy):
        fn = latentdiv.ops._PairSumWithGrad.apply if E.fns else ops.pair_sum_with_grad
        t, r, g = fn(x, y, wx, wy, k, p, excl)
        return t + (r * probe_rows).sum() + (g * probe_grad).sum()

    return dict(pair_sum=total, pair_rows=rows, pair_grad=grad, pair_sum_with_grad=with_grad)


# pair_grad (and the grad output of pair_sum_with_grad) is itself a first derivative: its gradcheck is
# the second order of the sum; gradgradcheck would be a third order (HESS_VEC's own derivative, which
# raises, test_third_order_raises_a_clear_error).
SECOND_ORDER_CHECK = {"pair_sum": gradgradcheck, "pair_rows": gradgradcheck, "pair_grad": gradcheck,
                      "pair_sum_with_grad": gradcheck}
# The public path (autograd.Functions) for every kernel and layout; the custom ops' registered autograd
# (torch.ops.latentdiv.*, used inside torch.compile graphs) shares the formulas: two kernels.
OP_MATRIX = ([(case, layout, "functions") for case in KERNEL_CASES for layout in PAIR_LAYOUTS]
             + [(case, layout, "ops") for case in KERNEL_CASES if case[0] in ("gaussian", "cramer_wold")
                for layout in PAIR_LAYOUTS])


@pytest.mark.parametrize("case,layout,table", OP_MATRIX,
                         ids=[f"{case_id(c)}-{_layout_id(l)}-{t}" for c, l, t in OP_MATRIX])
def test_second_order_every_pair_op(case, layout, table):
    d = max(2, case[3])
    E = latentdiv.ops._OPS if table == "ops" else latentdiv.ops._FNS
    x, y, wx, wy = _op_inputs(layout, d)
    inputs = [t for t in (x, y, wx, wy) if t is not None]

    for name, fn in _op_callables(layout, case, d, E).items():
        def f(*args, fn=fn):
            it = iter(args)
            return fn(*[next(it) if t is not None else None for t in (x, y, wx, wy)])

        assert SECOND_ORDER_CHECK[name](f, inputs), name
        if name == "pair_sum_with_grad":  # the total alone: a second order through the saved pieces
            def total_only(*args):
                it = iter(args)
                a = [next(it) if t is not None else None for t in (x, y, wx, wy)]
                fn_ = latentdiv.ops._PairSumWithGrad.apply if E.fns else ops.pair_sum_with_grad
                return fn_(*a, *_params(case, d), layout[2])[0]
            assert gradgradcheck(total_only, inputs), name


@pytest.mark.parametrize("table", ["ops", "functions"])
def test_gradgradcheck_pdist_and_pdist_backward(table):
    x = _points(5, 2, 11).requires_grad_()
    x.data[4] = x.data[1]  # a zero distance: the subgradient convention, never NaN
    g = _weights(10, 12).requires_grad_()
    if table == "ops":
        pd, pdb = ops.pdist, ops.pdist_backward
    else:
        pd, pdb = latentdiv.ops._Pdist.apply, latentdiv.ops._PdistBackward.apply
    probe = _weights(10, 13)
    x_far = _points(5, 2, 14).requires_grad_()  # no duplicates: finite differences are valid everywhere
    assert gradgradcheck(lambda x: (pd(x) * probe).sum(), (x_far,))
    assert gradgradcheck(lambda g, x: pdb(g, x, pd(x)), (g, x_far))
    # At the duplicate the derivatives are the convention's zeros, and everything stays finite.
    (gx,) = torch.autograd.grad((pd(x) * probe).sum(), x, create_graph=True)
    (hx,) = torch.autograd.grad(gx.pow(2).sum(), x)
    assert torch.isfinite(hx).all()


def test_third_order_raises_a_clear_error():
    x = _points(5, 3, 21).requires_grad_()
    s = latentdiv.pairwise_sum(x, bandwidth=1.2)
    (g,) = torch.autograd.grad(s, x, create_graph=True)
    (h,) = torch.autograd.grad(g.pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="third-order"):
        torch.autograd.grad(h.sum(), x)


# ---------------------------------------------------------------------------------------------------
# (b) HESS_VEC against autograd, every ISA variant
# ---------------------------------------------------------------------------------------------------
def _hess_vec_oracle(x, y, wx, wy, vx, vy, case):
    """grad_i = d/dx_i sum_ij (wy_j vx_i - wx_i vy_j) . grad_d f(|d_ij|^2), rows_i = sum_j grad_d f . vy_j,
    from the registry formula by autograd (float64; the self diagonal masked)."""
    kernel, bandwidth, options, _ = case
    spec = get_kernel(kernel)
    self_pairs = y is None
    x64 = x.double().detach().requires_grad_()
    yy = x64 if self_pairs else y.double()
    n, m = x.shape[0], yy.shape[0]
    diff = x64.unsqueeze(1) - yy.unsqueeze(0)  # [n, m, D]
    r2 = diff.pow(2).sum(-1)
    keep = ~torch.eye(n, dtype=torch.bool) if self_pairs else torch.ones(n, m, dtype=torch.bool)
    r = torch.sqrt(torch.where(keep & (r2 > 0), r2, torch.ones_like(r2))) * (keep & (r2 > 0))
    fvals = spec.formula(r, bandwidth, x.shape[1], options) * keep
    (gd,) = torch.autograd.grad(fvals.sum(), diff, create_graph=True)  # [n, m, D] = 2 f' d
    wx_ = torch.ones(n, dtype=f64) if wx is None else wx.double()
    wy_ = torch.ones(m, dtype=f64) if wy is None else wy.double()
    vx_ = torch.zeros_like(x64) if vx is None else vx.double()
    vy_ = torch.zeros(m, x.shape[1], dtype=f64) if vy is None else vy.double()
    u = wy_.view(1, m, 1) * vx_.unsqueeze(1) - wx_.view(n, 1, 1) * vy_.unsqueeze(0)
    q = (u * gd * keep.unsqueeze(-1)).sum()
    # d/dx of q through the pair term only (vy_j's x-dependence for self pairs is held fixed).
    (out,) = torch.autograd.grad(q, diff)
    rows = (gd * vy_.unsqueeze(0) * keep.unsqueeze(-1)).sum((1, 2))
    return out.sum(1).detach(), rows.detach()


ISAS = [isa for isa in ("baseline", "avx2", "avx512") if _ext._C is not None
        and isa in _ext._C.build_info()["cpu_isa_usable"]]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("self_pairs", [True, False], ids=["self", "cross"])
@pytest.mark.parametrize("case", KERNEL_CASES, ids=case_id)
def test_hess_vec_mode_matches_autograd(case, self_pairs, dtype, isa, monkeypatch):
    monkeypatch.setenv("LATENTDIV_ISA", isa)
    d = 19  # more than one 16-dim chunk
    n, m = 21, 18
    x = _points(n, d, 31)
    y = None if self_pairs else _points(m, d, 32, 1.1, 0.2)
    m_ = n if self_pairs else m
    wx, wy = _weights(n, 33), _weights(m_, 34)
    vx, vy = _points(n, d, 35), _points(m_, d, 36)
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    k, p = _params(case, d)
    grad, rows = ops.pair_hess_vec(cast(x), cast(y), cast(wx), cast(wy), cast(vx), cast(vy), k, p)
    want_grad, want_rows = _hess_vec_oracle(x, y, wx, wy, vx, vy, case)
    tol = 1e-9 if dtype == f64 else 2e-5
    scale = want_grad.abs().max().clamp_min(1.0)
    assert grad.dtype == dtype
    assert (grad.double() - want_grad).abs().max() <= tol * scale
    assert (rows - want_rows).abs().max() <= tol * want_rows.abs().max().clamp_min(1.0)


# ---------------------------------------------------------------------------------------------------
# (c) every engine-backed loss
# ---------------------------------------------------------------------------------------------------
Y = _points(5, 3, 41, 1.1, 0.2)
WX = _weights(6, 42)
LOSSES = {
    "mmd_gaussian": lambda z: F.mmd(z, Y, bandwidth=1.3),
    "mmd_multiscale_biased_weighted": lambda z: F.mmd(z, Y, bandwidth=[0.7, 2.0], estimator="biased",
                                                      weights_x=WX),
    "mmd_laplacian": lambda z: F.mmd(z, Y, kernel="laplacian", bandwidth=1.5),
    "mmd_imq": lambda z: F.mmd(z, Y, kernel="imq", bandwidth=2.0),
    "mmd_energy": lambda z: F.mmd(z, Y, kernel="energy"),
    "mmd_wae": lambda z: F.mmd(z, Y, preset="wae"),
    "mmd_infovae": lambda z: F.mmd(z, Y, preset="infovae"),
    "mmd_to_normal": lambda z: F.mmd_to_normal(z, 1.5),
    "mmd_to_normal_multiscale_biased": lambda z: F.mmd_to_normal(z, [0.8, 2.5], estimator="biased"),
    "cramer_wold": lambda z: F.cramer_wold(z),
    "cramer_wold_approx": lambda z: F.cramer_wold(z, phi="approx"),
    "cramer_wold_xy": lambda z: F.cramer_wold(z, Y),
    "cwae_loss": lambda z: F.cwae_loss(z),
    "energy_distance": lambda z: F.energy_distance(z),
    "energy_distance_xy": lambda z: F.energy_distance(z, Y),
    "distances_cvm": lambda z: F.distances_cvm(z),
    "radii_cvm": lambda z: F.radii_cvm(z),
}


def _twice_differentiable_reference(monkeypatch):
    """The reference backend with distances from direct differences (torch.cdist / torch.pdist have no
    double backward); r = 0 gets gradient 0, the engine's convention."""

    def safe_norm(diff):
        r2 = diff.pow(2).sum(-1)
        pos = r2 > 0
        return torch.sqrt(torch.where(pos, r2, torch.ones_like(r2))) * pos

    def block_sum(xi, y, wxi, wy, i0, spec, bandwidth, dim, options, exclude_diagonal):
        k = spec.formula(safe_norm(xi.unsqueeze(1) - y.unsqueeze(0)), bandwidth, dim, options)
        if exclude_diagonal:
            rows = torch.arange(xi.shape[0])
            mask = torch.ones_like(k)
            mask[rows, rows + i0] = 0.0
            k = k * mask
        if wy is not None:
            k = k * wy.unsqueeze(0)
        row_sums = k.sum(dim=1)
        if wxi is not None:
            row_sums = row_sums * wxi
        return row_sums.sum()

    def pdist(x):
        i, j = torch.triu_indices(x.shape[0], x.shape[0], 1)
        return safe_norm(x[i] - x[j])

    monkeypatch.setattr(reference, "_block_sum", block_sum)
    monkeypatch.setattr(reference, "pdist", pdist)


def _second_order(f, z, v):
    """(gradient penalty's gradient d/dz |grad f|^2, Hessian-vector product H v)."""
    z = z.detach().clone().requires_grad_()
    (g,) = torch.autograd.grad(f(z), z, create_graph=True)
    assert g.grad_fn is not None, "create_graph=True returned a gradient without grad_fn"
    (gp,) = torch.autograd.grad(g.pow(2).sum(), z, retain_graph=True)
    (hv,) = torch.autograd.grad(g, z, grad_outputs=v)
    return gp, hv


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_second_order(name, monkeypatch):
    f = LOSSES[name]
    z = _points(6, 3, 43).requires_grad_()
    assert gradgradcheck(f, (z,))
    v = _points(6, 3, 44)
    gp, hv = _second_order(f, z, v)
    _twice_differentiable_reference(monkeypatch)
    previous = latentdiv.set_backend("reference")
    try:
        want_gp, want_hv = _second_order(f, z, v)
    finally:
        latentdiv.set_backend(previous)
    torch.testing.assert_close(gp, want_gp, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(hv, want_hv, rtol=1e-7, atol=1e-10)


def test_batched_losses_second_order():
    z = _points(8, 2, 45).reshape(2, 4, 2).requires_grad_()
    assert gradgradcheck(lambda z: F.mmd_to_normal(z, 1.5).sum(), (z,))
    assert gradgradcheck(lambda z: F.cramer_wold(z).sum(), (z,))


# ---------------------------------------------------------------------------------------------------
# (d) issue 10 reproducers
# ---------------------------------------------------------------------------------------------------
def _torch_mmd_to_normal(z, h):
    """Plain-torch mmd_to_normal (unbiased, gaussian), from the closed form in its docstring."""
    n, dim = z.shape
    r2 = (z.unsqueeze(1) - z.unsqueeze(0)).pow(2).sum(-1)
    k = torch.exp(-r2 / (2 * h * h)) * (1 - torch.eye(n, dtype=z.dtype))
    self_term = k.sum() / (n * (n - 1))
    cross = ((h * h / (1 + h * h)) ** (dim / 2) * torch.exp(-z.pow(2).sum(1) / (2 * (1 + h * h)))).mean()
    return self_term - 2 * cross + (h * h / (2 + h * h)) ** (dim / 2)


def test_issue10_mmd_to_normal_gradient_penalty_matches_plain_torch():
    z = _points(32, 5, 51).requires_grad_()
    (g,) = torch.autograd.grad(latentdiv.mmd_to_normal(z, 4.0), z, create_graph=True)
    g.pow(2).sum().backward()
    z2 = z.detach().clone().requires_grad_()
    (g2,) = torch.autograd.grad(_torch_mmd_to_normal(z2, 4.0), z2, create_graph=True)
    g2.pow(2).sum().backward()
    torch.testing.assert_close(g, g2, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(z.grad, z2.grad, rtol=1e-9, atol=1e-14)


def test_issue10_cramer_wold_gradient_penalty_matches_finite_differences():
    z = _points(12, 4, 52)

    def penalty(z):
        z = z.clone().requires_grad_()
        (g,) = torch.autograd.grad(F.cramer_wold(z), z, create_graph=True)
        return g.pow(2).sum()

    zz = z.clone().requires_grad_()
    (analytic,) = torch.autograd.grad(penalty(zz), zz)
    direction = _points(12, 4, 53)
    eps = 1e-5
    numeric = (penalty(z + eps * direction) - penalty(z - eps * direction)) / (2 * eps)
    torch.testing.assert_close((analytic * direction).sum(), numeric, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("name", ["mmd", "mmd_wae", "cramer_wold_xy", "pairwise_sum_cross"])
def test_issue10_create_graph_gradients_have_grad_fn(name):
    y = _points(9, 3, 54)
    f = {"mmd": lambda x: F.mmd(x, y), "mmd_wae": lambda x: F.mmd(x, y, preset="wae"),
         "cramer_wold_xy": lambda x: F.cramer_wold(x, y),
         "pairwise_sum_cross": lambda x: latentdiv.pairwise_sum(x, y)}[name]
    x = _points(8, 3, 55).requires_grad_()
    (g,) = torch.autograd.grad(f(x), x, create_graph=True)
    assert g.grad_fn is not None


def test_issue10_gradgradcheck_pairwise_sum_and_distances_cvm():
    x = _points(5, 2, 56).requires_grad_()
    assert gradgradcheck(lambda x: latentdiv.pairwise_sum(x), (x,))
    assert gradgradcheck(F.distances_cvm, (x,))


# ---- item 6: bandwidth tensors -------------------------------------------------------------------
@pytest.mark.parametrize("kernel", BANDWIDTH_KERNELS)  # the registry kernels with a bandwidth
def test_bandwidth_tensor_gradients(kernel):
    x = _points(4, 2, 61).requires_grad_()
    y = _points(3, 2, 62, 1.2).requires_grad_()
    h = torch.tensor([0.8, 1.9], dtype=f64, requires_grad=True)
    f = lambda x, y, h: latentdiv.pairwise_sum(x, y, kernel=kernel, bandwidth=h)  # noqa: E731
    assert gradcheck(f, (x, y, h))
    assert gradgradcheck(f, (x, y, h))
    # The value is the constant-bandwidth value; the gradient is not silently dropped.
    value = f(x, y, h)
    torch.testing.assert_close(value, latentdiv.pairwise_sum(x, y, kernel=kernel, bandwidth=[0.8, 1.9]))
    (gh,) = torch.autograd.grad(value, h)
    assert (gh.abs() > 0).all()


def test_bandwidth_tensor_through_mmd_and_in_a_training_step():
    x = _points(5, 2, 63).requires_grad_()
    y = _points(4, 2, 64, 1.5)
    log_h = torch.zeros((), dtype=f64, requires_grad=True)
    assert gradgradcheck(lambda x, lh: F.mmd(x, y, bandwidth=lh.exp()), (x, log_h))
    loss = F.mmd(x, y, bandwidth=log_h.exp())
    loss.backward()
    assert log_h.grad is not None and log_h.grad != 0


def test_bandwidth_tensor_where_it_cannot_be_differentiated_raises():
    z = _points(8, 3, 65)
    h = torch.tensor(1.5, dtype=f64, requires_grad=True)
    with pytest.raises(ValueError, match="bandwidth"):
        F.mmd_to_normal(z, h)
    with pytest.raises(ValueError, match="bandwidth"):
        latentdiv.pairwise_sum(z, kernel="energy", bandwidth=h)
    # Without grad (or detached) the tensor is a constant, as before.
    with torch.no_grad():
        F.mmd_to_normal(z, h)
    F.mmd_to_normal(z, h.detach())


# ---- item 8: torch.func and torch.compile ---------------------------------------------------------
FUNC_LOSSES = {
    "mmd_to_normal": lambda z: F.mmd_to_normal(z, 1.5),
    "mmd_xy": lambda z: F.mmd(z, Y, bandwidth=[0.9, 2.0]),
    "cramer_wold": lambda z: F.cramer_wold(z),
    "energy_distance": lambda z: F.energy_distance(z),
    "distances_cvm": lambda z: F.distances_cvm(z),
}


@pytest.mark.parametrize("name", sorted(FUNC_LOSSES))
def test_torch_func_transforms(name):
    f = FUNC_LOSSES[name]
    z = _points(7, 3, 71)
    zz = z.clone().requires_grad_()
    (g_ref,) = torch.autograd.grad(f(zz), zz, create_graph=True)
    h_ref = torch.stack([torch.autograd.grad(g_ref.reshape(-1)[i], zz, retain_graph=True)[0]
                         for i in range(z.numel())]).reshape(7, 3, 7, 3)
    torch.testing.assert_close(torch.func.grad(f)(z), g_ref.detach())
    torch.testing.assert_close(torch.func.jacrev(f)(z), g_ref.detach())
    torch.testing.assert_close(torch.func.jacfwd(f)(z), g_ref.detach())
    torch.testing.assert_close(torch.func.hessian(f)(z), h_ref)
    torch.testing.assert_close(torch.func.jacrev(torch.func.jacrev(f))(z), h_ref)
    batch = torch.stack([z, z * 0.7 + 0.1, z.flip(0)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the no-batching-rule fallback warns
        batched = torch.func.vmap(f)(batch)
        batched_grad = torch.func.vmap(torch.func.grad(f))(batch)
    torch.testing.assert_close(batched, torch.stack([f(b) for b in batch]))
    torch.testing.assert_close(batched_grad, torch.stack([torch.func.grad(f)(b) for b in batch]))


def test_vmap_over_the_ops_themselves_and_mixed_batching():
    x = _points(12, 3, 72).reshape(3, 4, 3)
    y = _points(5, 3, 73)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = torch.func.vmap(lambda x: latentdiv.pairwise_sum(x, y, bandwidth=1.1))(x)
        dist = torch.func.vmap(latentdiv.pdist)(x)
    torch.testing.assert_close(out, torch.stack([latentdiv.pairwise_sum(b, y, bandwidth=1.1) for b in x]))
    torch.testing.assert_close(dist, torch.stack([torch.pdist(b) for b in x]))


def test_torch_compile_fullgraph_survives_new_n_d_and_bandwidth():
    torch._dynamo.reset()
    f = lambda x, y, h: F.mmd(x, y, bandwidth=h) + F.mmd_to_normal(x, bandwidth=h)  # noqa: E731
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    for n, d, h in [(8, 3, 1.0), (11, 3, 1.5), (9, 4, 2.0), (13, 2, 0.7)]:
        x = _points(n, d, 100 + n).requires_grad_()
        y = _points(n + 2, d, 200 + n)
        value = compiled(x, y, h)
        (gx,) = torch.autograd.grad(value, x)
        x2 = x.detach().clone().requires_grad_()
        want = f(x2, y, h)
        (wx,) = torch.autograd.grad(want, x2)
        torch.testing.assert_close(value, want)
        torch.testing.assert_close(gx, wx)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_hess_vec_and_the_backward_ops(requires_grad):
    x, y = _points(6, 3, 81), _points(4, 3, 82)
    wx, wy, vx, vy = _weights(6, 83), _weights(4, 84), _points(6, 3, 85), _points(4, 3, 86)
    if requires_grad:
        x, y, wy = (t.requires_grad_(True) for t in (x, y, wy))
    torch.library.opcheck(ops.pair_hess_vec, (x.detach(), y.detach(), None, wy.detach(), vx, None, 0, [0.5]))
    cw_exact = next(c for c in KERNEL_CASES if c[0] == "cramer_wold")  # the fitted phi_D (many params)
    torch.library.opcheck(ops.pair_hess_vec, (x.detach(), None, wx, wx, vx, vx, *_params(cw_exact, 3)))
    torch.library.opcheck(ops.pair_hess_vec, (x.detach(), y.detach(), wx, None, None, vy, 3, []))
    # pair_rows / pair_grad with inputs that require grad: their registered autograd (second order).
    torch.library.opcheck(ops.pair_rows, (x, y, wy, 2, [1.0, 2.0], False))
    torch.library.opcheck(ops.pair_grad, (x, y, wy, 0, [0.5], False))


def test_torch_func_grad_with_respect_to_the_bandwidth():
    x = _points(5, 2, 91)
    h = torch.tensor(1.3, dtype=f64)
    got = torch.func.grad(lambda h: latentdiv.pairwise_sum(x, bandwidth=h))(h)
    hh = h.clone().requires_grad_()
    (want,) = torch.autograd.grad(latentdiv.pairwise_sum(x, bandwidth=hh), hh)
    torch.testing.assert_close(got, want)
    # d/dh sum_ij exp(-r2 / (2 h^2)) = sum_ij r2 / h^3 exp(-r2 / (2 h^2)), in plain torch
    r2 = (x.unsqueeze(1) - x.unsqueeze(0)).pow(2).sum(-1)
    torch.testing.assert_close(got, (r2 / 1.3 ** 3 * torch.exp(-r2 / (2 * 1.3 ** 2))).sum())
