"""The fused loss path (python/latentdiv/_fused_ops.py, csrc/cpu/pair_terms.cpp): one engine call per
loss evaluation must give the values and gradients of the per-term path it replaces (float64, tight),
be bit-identical for any thread count, keep create_graph working, and run under torch.compile."""

from __future__ import annotations

import math

import pytest
import torch

import latentdiv
from latentdiv import _ext, _fused_ops, special
from latentdiv._registry import get_kernel, kernel_params

from kernel_cases import KERNEL_CASES, case_id

pytestmark = pytest.mark.skipif(not _ext.compiled_available(), reason="needs the compiled engine")


@pytest.fixture
def per_term(monkeypatch):
    """Run a function with the fused path switched off (the per-term path of functional.py)."""
    def run(fn):
        with monkeypatch.context() as m:
            m.setattr(_fused_ops, "applicable", lambda x: False)
            return fn()
    return run


def _data(n=37, m=29, d=5, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=dtype)
    y = 0.8 * torch.randn(m, d, generator=gen, dtype=dtype) + 0.2
    wx = torch.rand(n, generator=gen, dtype=dtype) + 0.1
    wy = torch.rand(m, generator=gen, dtype=dtype) + 0.1
    return x, y, wx, wy


LOSSES = {
    "mmd_gaussian_unbiased": lambda x, y, wx, wy: latentdiv.mmd(x, y, bandwidth=1.3),
    "mmd_gaussian_biased_weighted": lambda x, y, wx, wy: latentdiv.mmd(x, y, estimator="biased", weights_x=wx,
                                                                       weights_y=wy),
    "mmd_wae": lambda x, y, wx, wy: latentdiv.mmd(x, y, preset="wae"),
    "mmd_infovae": lambda x, y, wx, wy: latentdiv.mmd(x, y, preset="infovae"),
    "mmd_laplacian_scales": lambda x, y, wx, wy: latentdiv.mmd(x, y, kernel="laplacian", bandwidth=1.0,
                                                               scales=[0.5, 2.0]),
    "mmd_energy": lambda x, y, wx, wy: latentdiv.mmd(x, y, kernel="energy"),
    "mmd_to_normal": lambda x, y, wx, wy: latentdiv.mmd_to_normal(x, bandwidth=[0.7, 2.0]),
    "mmd_to_normal_biased_weighted": lambda x, y, wx, wy: latentdiv.mmd_to_normal(x, estimator="biased", weights=wx),
    "cwae_loss": lambda x, y, wx, wy: latentdiv.cwae_loss(x),
    "cwae_loss_approx": lambda x, y, wx, wy: latentdiv.cwae_loss(x, phi="approx"),
    "cramer_wold_two_sample": lambda x, y, wx, wy: latentdiv.cramer_wold(x, y, weights_x=wx),
    "cramer_wold_weighted": lambda x, y, wx, wy: latentdiv.cramer_wold(x, weights_x=wx),
    "energy_to_normal": lambda x, y, wx, wy: latentdiv.energy_distance(x, weights_x=wx),
    "energy_two_sample": lambda x, y, wx, wy: latentdiv.energy_distance(x, y, weights_y=wy),
    "pairwise_sum_self": lambda x, y, wx, wy: latentdiv.pairwise_sum(x, kernel="imq", bandwidth=[0.5, 3.0],
                                                                     weights_x=wx, exclude_diagonal=True),
    "pairwise_sum_cross": lambda x, y, wx, wy: latentdiv.pairwise_sum(x, y, weights_x=wx, weights_y=wy),
}

# The exact Cramer-Wold cross term to N(0, I) and energy's E||z - Y|| now come from the engine's
# fitted phi (~1e-9 relative) instead of the float64 series: the looser tolerance is that fit's.
FIT_TOL = {"cwae_loss": 1e-7, "cramer_wold_weighted": 1e-7, "energy_to_normal": 1e-8}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_fused_matches_per_term_path(name, per_term):
    x, y, wx, wy = _data()
    leaves = [t.clone().requires_grad_(True) for t in (x, y, wx, wy)]

    def value_and_grads():
        ls = [t.detach().clone().requires_grad_(True) for t in leaves]
        v = LOSSES[name](*ls)
        gs = torch.autograd.grad(v, ls, allow_unused=True)
        return v.detach(), gs

    v_fused, g_fused = value_and_grads()
    v_ref, g_ref = per_term(value_and_grads)
    tol = FIT_TOL.get(name, 1e-11)
    assert torch.allclose(v_fused, v_ref, rtol=tol, atol=tol * 1e-2), (name, float(v_fused), float(v_ref))
    for which, a, b in zip("x y wx wy".split(), g_fused, g_ref):
        assert (a is None) == (b is None), (name, which)
        if a is not None:
            scale = float(b.abs().max()) + 1e-300
            assert float((a - b).abs().max()) <= 10 * tol * scale, (name, which)


@pytest.mark.parametrize("name", ["mmd_wae", "cwae_loss", "energy_to_normal", "mmd_gaussian_biased_weighted"])
def test_fused_bit_identical_across_thread_counts(name):
    # n large enough that the work-based thread choice uses every thread torch allows
    x, y, wx, wy = _data(n=700, m=650, d=8, dtype=torch.float32)
    previous = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            xg = x.clone().requires_grad_(True)
            v = LOSSES[name](xg, y, wx, wy)
            (g,) = torch.autograd.grad(v, xg)
            results.append((v.detach(), g))
    finally:
        torch.set_num_threads(previous)
    for v, g in results[1:]:
        assert torch.equal(v, results[0][0]) and torch.equal(g, results[0][1]), name


def test_thread_count_from_work():
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert _fused_ops.thread_count(128 * 128, 8) == 1
        assert _fused_ops.thread_count(4096 * 4096, 8) == 2
        torch.set_num_threads(1)
        assert _fused_ops.thread_count(4096 * 4096, 64) == 1
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("name", ["mmd_wae", "mmd_gaussian_biased_weighted", "mmd_to_normal", "cwae_loss_approx",
                                  "pairwise_sum_cross"])
def test_create_graph_gradient_equals_first_order(name):
    """create_graph=True recomposes the gradient from pair_grad / pair_rows: it must equal the saved one."""
    x, y, wx, wy = _data()
    ls = [t.clone().requires_grad_(True) for t in (x, y, wx, wy)]
    g1 = torch.autograd.grad(LOSSES[name](*ls), ls, allow_unused=True)
    g2 = torch.autograd.grad(LOSSES[name](*ls), ls, allow_unused=True, create_graph=True)
    for a, b in zip(g1, g2):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b.detach(), rtol=1e-12, atol=1e-15)


def _pair_grad_is_differentiable() -> bool:
    x = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    try:
        g = torch.ops.latentdiv.pair_grad(x, None, None, 0, [0.5], False)
        torch.autograd.grad(g.sum(), x)
        return True
    except RuntimeError:
        return False


def _wae_mmd_dense(x, y):  # [n, D], [m, D] -> []: the WAE preset in plain float64 torch (twice differentiable)
    n, m, d = x.shape[0], y.shape[0], x.shape[1]

    def r2(a, b):
        return (a[:, None, :] - b[None, :, :]).pow(2).sum(-1)

    off_x, off_y = ~torch.eye(n, dtype=torch.bool), ~torch.eye(m, dtype=torch.bool)
    total = x.new_zeros(())
    for s in latentdiv.WAE_SCALES:
        c = 2.0 * d * s
        kxx, kyy, kxy = c / (c + r2(x, x)), c / (c + r2(y, y)), c / (c + r2(x, y))
        total = total + kxx[off_x].sum() / (n * (n - 1)) + kyy[off_y].sum() / (m * (m - 1)) - 2.0 * kxy.mean()
    return total


def test_second_order_against_reference():
    if not _pair_grad_is_differentiable():
        pytest.skip("the engine's pair_grad has no autograd of its own in this build (second-order ops not merged)")
    x, y, _, _ = _data(n=11, m=9, d=3)
    results = []
    for loss in (lambda z: latentdiv.mmd(z, y, preset="wae"), lambda z: _wae_mmd_dense(z, y)):
        xg = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(loss(xg), xg, create_graph=True)
        (h,) = torch.autograd.grad((g * g).sum(), xg)
        results.append(h)
    assert torch.allclose(results[0], results[1], rtol=1e-9, atol=1e-12)


def test_expected_distance_to_normal_rows():
    for d in (1, 2, 5, 8, 64):
        z = 2.0 * torch.randn(50, d, dtype=torch.float64)
        z[0] = 0.0
        zg = z.clone().requires_grad_(True)
        ours = _fused_ops.expected_distance_to_normal(zg, d)
        zr = z.clone().requires_grad_(True)
        ref = special.expected_distance_to_normal((zr * zr).sum(1), d)
        assert torch.allclose(ours, ref, rtol=1e-9, atol=0), d
        w = torch.rand(50, dtype=torch.float64)
        (g1,) = torch.autograd.grad((ours * w).sum(), zg)
        (g2,) = torch.autograd.grad((ref * w).sum(), zr)
        assert torch.allclose(g1, g2, rtol=1e-8, atol=1e-12), d


def test_no_grad_and_eval_values():
    x, y, _, _ = _data(dtype=torch.float32)
    with torch.no_grad():
        a = latentdiv.mmd(x, y, preset="wae")
    b = latentdiv.mmd(x.clone().requires_grad_(True), y, preset="wae")
    assert not a.requires_grad and b.requires_grad
    assert torch.allclose(a, b.detach(), rtol=1e-6)


def test_torch_compile_fullgraph_uses_the_custom_op():
    x, y, _, _ = _data(dtype=torch.float32)
    torch._dynamo.reset()
    fn = torch.compile(lambda a, b: latentdiv.mmd(a, b, preset="wae") + latentdiv.cwae_loss(a, phi="approx"),
                       fullgraph=True)
    xg = x.clone().requires_grad_(True)
    v = fn(xg, y)
    (g,) = torch.autograd.grad(v, xg)
    xe = x.clone().requires_grad_(True)
    ve = latentdiv.mmd(xe, y, preset="wae") + latentdiv.cwae_loss(xe, phi="approx")
    (ge,) = torch.autograd.grad(ve, xe)
    assert torch.allclose(v, ve, rtol=1e-6) and torch.allclose(g, ge, rtol=1e-5, atol=1e-7)


def test_opcheck_fused_op():
    x, y, wx, wy = _data(n=9, m=7, d=3)
    x.requires_grad_(True)
    wx.requires_grad_(True)
    kid, p = _fused_ops.kernel_params_cached("gaussian", (1.0,), 3, None)
    terms = [0, 0, kid, 1, len(p), 1, 1, kid, 0, len(p), 0, 1, kid, 0, len(p), 0, 2, kid, 0, len(p)]
    args = (x, y, wx, wy, terms, list(p) * 4, [0.3, 0.2, -0.5, -0.1], 0.25, [True, False, True, False])
    torch.library.opcheck(torch.ops.latentdiv.fused_pair_terms.default, args)


def test_pair_terms_rejects_bad_descriptors():
    x = torch.randn(5, 2)
    total = torch.zeros((), dtype=torch.float64)
    args = lambda terms: (-1, 0, 2, 1, [x.data_ptr(), 0, 0], [5, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0],  # noqa: E731
                          terms, [0.5], [1.0], total.data_ptr())
    assert _ext._C.pair_terms(*args([0, 0, 0, 0, 1])) == 0
    assert math.isclose(float(total), float(latentdiv.pairwise_sum(x.double())), rel_tol=1e-5)
    assert _ext._C.pair_terms(*args([0, 1, 0, 0, 1])) == _ext._C.STATUS_BAD_ARGUMENT  # set 1 absent
    assert _ext._C.pair_terms(*args([0, 0, 99, 0, 1])) == _ext._C.STATUS_UNKNOWN_KERNEL
    with pytest.raises(ValueError):
        _ext._C.pair_terms(*args([0, 0, 0, 0, 5]))  # more params than given


# ---- the triangle schedule of self pairs with gradient (Mode::kValueGradTriangle) --------------------------
MODE_VALUE_GRAD_TRIANGLE = _ext.MODE_VALUE_GRAD_TRIANGLE
# (case id, kernel, engine params) for every registry kernel case (tests/kernel_cases.py), at D = 8.
TRIANGLE_KERNELS = [(case_id(c), c[0], list(kernel_params(get_kernel(c[0]), c[1], 8, dict(c[2])))) for c in KERNEL_CASES]


def _value_grad(mode, x, w, kernel_id, params, exclude_diagonal, threads):
    n, d = x.shape
    rows = torch.empty(n, dtype=torch.float64)
    total = torch.empty((), dtype=torch.float64)
    grad = torch.empty_like(x)
    status = _ext._C.pair_reduce(0, _ext.isa_code(), mode, _ext.dtype_code(x), x.data_ptr(), x.data_ptr(),
                                 0 if w is None else w.data_ptr(), 0 if w is None else w.data_ptr(), rows.data_ptr(),
                                 total.data_ptr(), grad.data_ptr(), 0, n, n, d, True, exclude_diagonal, threads,
                                 kernel_id, params, 0)
    assert status == 0
    return total, rows, grad


@pytest.mark.parametrize("kernel,params", [k[1:] for k in TRIANGLE_KERNELS], ids=[k[0] for k in TRIANGLE_KERNELS])
# Below kTriangleMinRows (512, schedule.h) the triangle mode runs the square schedule: small n checks that
# fallback, n >= 512 the triangle itself (partial row blocks and panels included).
@pytest.mark.parametrize("n", [1, 2, 3, 17, 33, 257, 515, 547])
@pytest.mark.parametrize("d", [3, 8, 16])
@pytest.mark.parametrize("weighted,exclude_diagonal", [(False, False), (True, True)])
def test_triangle_matches_square_value_grad(kernel, params, n, d, weighted, exclude_diagonal):
    """Triangle vs square VALUE_GRAD in float64: the same sums in another order (and vs float64 torch
    through the square schedule, which the suite checks against the reference)."""
    from latentdiv._registry import get_kernel

    gen = torch.Generator().manual_seed(n * 100 + d)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    if n > 3:
        x[3] = x[1]  # an exact duplicate (r2 = 0 off the diagonal)
    w = torch.rand(n, generator=gen, dtype=torch.float64) + 0.1 if weighted else None
    kid = get_kernel(kernel).kernel_id
    tri = _value_grad(MODE_VALUE_GRAD_TRIANGLE, x, w, kid, params, exclude_diagonal, 2)
    sq = _value_grad(_ext.MODE_VALUE_GRAD, x, w, kid, params, exclude_diagonal, 2)
    for a, b in zip(tri, sq):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n,d", [(515, 5), (700, 8), (1500, 16), (300, 64)])  # (D = 64: the square fallback)
def test_triangle_float32_bit_identical_across_threads(n, d):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(n, d, generator=gen)
    w = torch.rand(n, generator=gen) + 0.1
    runs = [_value_grad(MODE_VALUE_GRAD_TRIANGLE, x, w, 2, [0.5, 4.0], False, t) for t in (1, 2, 3, 5)]
    for run in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(run, runs[0]))
    # and float32 against float64 (the accuracy of the square schedule)
    ref = _value_grad(_ext.MODE_VALUE_GRAD, x.double(), w.double(), 2, [0.5, 4.0], False, 2)
    torch.testing.assert_close(runs[0][0], ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(runs[0][1], ref[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(runs[0][2].double(), ref[2], rtol=1e-4, atol=1e-4 * float(ref[2].abs().max()))


def test_triangle_rejects_cross_pairs():
    x, y = torch.randn(5, 2), torch.randn(4, 2)
    rows = torch.empty(5, dtype=torch.float64)
    total = torch.empty((), dtype=torch.float64)
    grad = torch.empty_like(x)
    status = _ext._C.pair_reduce(0, -1, MODE_VALUE_GRAD_TRIANGLE, 0, x.data_ptr(), y.data_ptr(), 0, 0, rows.data_ptr(),
                                 total.data_ptr(), grad.data_ptr(), 0, 5, 4, 2, False, False, 1, 0, [0.5], 0)
    assert status == _ext._C.STATUS_BAD_ARGUMENT


# ---- one column (m = 1, float32): the single-column pass of schedule.h -------------------------------------
def _one_column(mode, x, y, wx, wy, kernel_id, params):
    n, d = x.shape
    rows = torch.full((n,), math.nan, dtype=torch.float64)
    total = torch.full((), math.nan, dtype=torch.float64)
    grad = torch.full_like(x, math.nan)
    status = _ext._C.pair_reduce(0, _ext.isa_code(), mode, _ext.dtype_code(x), x.data_ptr(), y.data_ptr(),
                                 0 if wx is None else wx.data_ptr(), 0 if wy is None else wy.data_ptr(),
                                 rows.data_ptr(), total.data_ptr(), grad.data_ptr(), 0, n, 1, d, False, False, 1,
                                 kernel_id, params, 0)
    assert status == 0
    return total, rows, grad


@pytest.mark.parametrize("kernel,params", [k[1:] for k in TRIANGLE_KERNELS], ids=[k[0] for k in TRIANGLE_KERNELS])
@pytest.mark.parametrize("weighted", [False, True])
def test_single_column_float32_matches_float64_tiles(kernel, params, weighted):
    """float32 points against one point take the single-column pass (each row one scalar kernel
    evaluation in double); float64 ones the tile schedule. Every mode's outputs agree to float32
    rounding of the inputs' products (the single column is the more accurate of the two)."""
    from latentdiv._registry import get_kernel

    gen = torch.Generator().manual_seed(11)
    x = torch.randn(37, 8, generator=gen) * 1.5
    y = torch.randn(1, 8, generator=gen) * 0.5
    x[5] = y[0]  # a row at the point itself (r2 = 0)
    wx = torch.rand(37, generator=gen) + 0.1 if weighted else None
    wy = torch.rand(1, generator=gen) + 0.5 if weighted else None
    kid = get_kernel(kernel).kernel_id
    d64 = [None if t is None else t.double() for t in (x, y, wx, wy)]
    for mode in (_ext.MODE_VALUE, _ext.MODE_GRAD, _ext.MODE_VALUE_GRAD, _ext.MODE_TOTAL):
        ours = _one_column(mode, x, y, wx, wy, kid, params)
        ref = _one_column(mode, *d64, kid, params)
        if mode != _ext.MODE_GRAD:
            torch.testing.assert_close(ours[0], ref[0], rtol=1e-5, atol=1e-6)
        if mode in (_ext.MODE_VALUE, _ext.MODE_VALUE_GRAD):
            torch.testing.assert_close(ours[1], ref[1], rtol=1e-5, atol=1e-6)
        if mode in (_ext.MODE_GRAD, _ext.MODE_VALUE_GRAD):
            scale = float(ref[2].abs().max())
            torch.testing.assert_close(ours[2].double(), ref[2], rtol=1e-4, atol=1e-5 * scale)
            assert torch.all(ours[2][5] == 0.0)  # x_i = y: no slope direction


# ---- energy_distance against N(0, I) in one call (float32; the times-r2 origin term) ---------------------
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("d", [1, 2, 8, 33])
def test_energy_to_normal_fused_matches_unfused_path(weighted, d, monkeypatch):
    """float32 points take the fused call (energy_to_normal_value); without it they take the engine
    passes of expected_distance_to_normal (in float64) and a separate pair term. Value, gradients
    (x and weights) and a Hessian-vector product (create_graph: the differentiable recomposition of
    the times-r2 term) agree to float32 rounding, and with the float64 answer to float32 accuracy."""
    gen = torch.Generator().manual_seed(d)
    x = torch.randn(40, d, generator=gen) * 1.3 + 0.2
    w = torch.rand(40, generator=gen) + 0.1 if weighted else None
    v = torch.randn(40, d, generator=gen)

    def run(dtype):
        xg = x.to(dtype).requires_grad_(True)
        wg = None if w is None else w.to(dtype).requires_grad_(True)
        value = latentdiv.energy_distance(xg, weights_x=wg)
        inputs = [xg] if wg is None else [xg, wg]
        grads = torch.autograd.grad(value, inputs, create_graph=True)
        (hv,) = torch.autograd.grad(grads[0], xg, grad_outputs=v.to(dtype))
        return [t.detach().double() for t in (value, *grads, hv)]

    assert _fused_ops.energy_to_normal_value(x, None, torch.float32) is not None  # the fused path is taken
    fused, exact = run(torch.float32), run(torch.float64)
    monkeypatch.setattr(_fused_ops, "energy_to_normal_value", lambda *args: None)
    unfused = run(torch.float32)
    for got, want, ref in zip(fused, unfused, exact):
        scale = float(ref.abs().max())
        torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-6 * scale)
        # (1-D gradients lose ~4e-5 of their largest entry to cancellation in the float32 pair term.)
        torch.testing.assert_close(got, ref, rtol=2e-4, atol=1e-4 * scale)


def test_times_r2_term_only_against_one_point():
    x = torch.randn(5, 2)
    total = torch.zeros((), dtype=torch.float64)
    kid, p = _fused_ops.kernel_params_cached("gaussian", (1.0,), 2, None)
    args = lambda terms, rows: (-1, 0, 2, 1, [x.data_ptr(), x.data_ptr(), 0], rows, [0, 0, 0],  # noqa: E731
                                [0, 0, 0], [0, 0, 0], terms, list(p), [1.0], total.data_ptr())
    times_r2 = _fused_ops.TERM_TIMES_R2
    assert _ext._C.pair_terms(*args([0, 2, kid, times_r2, 1], [5, 0, 1])) == 0  # against the origin
    r2 = (x.double() ** 2).sum(1)
    assert math.isclose(float(total), float((r2 * torch.exp(-p[0] * r2)).sum()), rel_tol=1e-6)
    assert _ext._C.pair_terms(*args([0, 0, kid, times_r2, 1], [5, 0, 1])) == _ext._C.STATUS_BAD_ARGUMENT  # self
    assert _ext._C.pair_terms(*args([0, 1, kid, times_r2, 1], [5, 5, 1])) == _ext._C.STATUS_BAD_ARGUMENT  # 5 points
    with pytest.raises(ValueError, match="flags"):
        _ext._C.pair_terms(*args([0, 2, kid, 4, 1], [5, 0, 1]))
