"""The engine through the public primitives: values and gradients against the float64 reference,
for every kernel, odd sizes, weights, duplicates, both backends; gradcheck, opcheck, compile."""

from __future__ import annotations

import pytest
import torch

import latentdiv
from latentdiv import _ext, reference
from latentdiv._registry import get_kernel
from kernel_cases import KERNEL_CASES, case_id
from conftest import assert_float32_rule, requires_compiled

pytestmark = requires_compiled

TILE = 32  # the CPU schedule's widest column panel (float32 on AVX-512)
ROW_BLOCK = 8  # its widest row block (AVX-512; 6 elsewhere)
SIZES = [1, 2, 3, ROW_BLOCK - 1, ROW_BLOCK, ROW_BLOCK + 1, 17, TILE - 1, TILE, TILE + 1]


def ref_sum(x, y=None, *, kernel, bandwidth, weights_x=None, weights_y=None, exclude_diagonal=False, **options):
    """The float64 pure-torch oracle (reference.py), independent of the engine."""
    spec = get_kernel(kernel)
    return reference.pairwise_sum(x, y, weights_x, weights_y, spec, bandwidth, options, exclude_diagonal)


# Hand-written kernels (r2, the bandwidths, D, options) -> [n, m], independent of the registry's formulas.
# Opt-in per kernel: cramer_wold (phi_D) is checked against scipy's 1F1 in tests/test_special.py instead.
NAIVE_KERNELS = {
    "gaussian": lambda r2, hs, d, o: sum(torch.exp(-r2 / (2 * h * h)) for h in hs),
    "laplacian": lambda r2, hs, d, o: sum(torch.exp(-r2.sqrt() / h) for h in hs),
    "imq": lambda r2, hs, d, o: sum(h / (h + r2) for h in hs),
    "energy": lambda r2, hs, d, o: -r2.sqrt(),
    "cramer_wold_approx": lambda r2, hs, d, o: (o["gamma"] + r2 / (2 * d - 3)) ** -0.5,
}


def naive_sum(x, y, kernel, bandwidth, weights_x=None, weights_y=None, exclude_diagonal=False, **options):
    """An n x m matrix the way a user would write it, to check the oracle itself."""
    diff = x[:, None, :] - y[None, :, :]
    r2 = (diff * diff).sum(-1)
    hs = bandwidth if isinstance(bandwidth, list) else [bandwidth]
    k = NAIVE_KERNELS[kernel](r2, hs, x.shape[1], options)
    if exclude_diagonal:
        k = k * (1 - torch.eye(x.shape[0], dtype=k.dtype))
    wx = torch.ones(x.shape[0], dtype=x.dtype) if weights_x is None else weights_x
    wy = torch.ones(y.shape[0], dtype=y.dtype) if weights_y is None else weights_y
    return (wx[:, None] * k * wy[None, :]).sum()


@pytest.mark.parametrize("case", [c for c in KERNEL_CASES if c[0] in NAIVE_KERNELS], ids=case_id)
def test_reference_matches_naive_matrix(case):
    kernel, bandwidth, options, _ = case
    x, y = torch.randn(9, 4, dtype=torch.float64), torch.randn(7, 4, dtype=torch.float64)
    wx, wy = torch.rand(9, dtype=torch.float64), torch.rand(7, dtype=torch.float64)
    got = ref_sum(x, y, kernel=kernel, bandwidth=bandwidth, weights_x=wx, weights_y=wy, **options)
    want = naive_sum(x, y, kernel, bandwidth, wx, wy, **options)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    got = ref_sum(x, kernel=kernel, bandwidth=bandwidth, exclude_diagonal=True, **options)
    want = naive_sum(x, x, kernel, bandwidth, exclude_diagonal=True, **options)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def _grads(fn, tensors):
    tensors = [t.detach().clone().requires_grad_(True) if t is not None else None for t in tensors]
    value = fn(*tensors)
    grads = torch.autograd.grad(value, [t for t in tensors if t is not None])
    return value.detach(), grads


@pytest.mark.parametrize("case", KERNEL_CASES, ids=case_id)
@pytest.mark.parametrize("n,m", [(s, s + 2) for s in SIZES] + [(TILE + 1, 1), (130, 257)])
@pytest.mark.parametrize("dim", [1, 3, 64])
def test_two_sample_float64_matches_reference(case, n, m, dim):
    kernel, bandwidth, options, min_dim = case
    if dim < min_dim:
        pytest.skip(f"{kernel} needs D >= {min_dim}")
    x = torch.randn(n, dim, dtype=torch.float64)
    y = torch.randn(m, dim, dtype=torch.float64) * 1.3 + 0.2
    wx = torch.rand(n, dtype=torch.float64) + 0.1
    wy = torch.rand(m, dtype=torch.float64) + 0.1
    kw = dict(kernel=kernel, bandwidth=bandwidth, **options)
    ours, g_ours = _grads(lambda a, b, c, d: latentdiv.pairwise_sum(a, b, weights_x=c, weights_y=d, **kw), [x, y, wx, wy])
    want, g_want = _grads(lambda a, b, c, d: ref_sum(a, b, weights_x=c, weights_y=d, **kw), [x, y, wx, wy])
    torch.testing.assert_close(ours, want, rtol=1e-10, atol=1e-10)
    for name, a, b in zip(("x", "y", "weights_x", "weights_y"), g_ours, g_want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=lambda s: f"grad {name}: {s}")


@pytest.mark.parametrize("case", KERNEL_CASES, ids=case_id)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("exclude_diagonal", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_self_pairs_float64_matches_reference(case, n, exclude_diagonal, weighted):
    kernel, bandwidth, options, min_dim = case
    dim = max(2, min_dim)
    x = torch.randn(n, dim, dtype=torch.float64)
    w = torch.rand(n, dtype=torch.float64) + 0.1 if weighted else None
    kw = dict(kernel=kernel, bandwidth=bandwidth, exclude_diagonal=exclude_diagonal, **options)
    tensors = [x, w] if weighted else [x]
    ours, g_ours = _grads(lambda a, *w_: latentdiv.pairwise_sum(a, weights_x=w_[0] if w_ else None, **kw), tensors)
    want, g_want = _grads(lambda a, *w_: ref_sum(a, weights_x=w_[0] if w_ else None, **kw), tensors)
    torch.testing.assert_close(ours, want, rtol=1e-10, atol=1e-10)
    for a, b in zip(g_ours, g_want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("case", KERNEL_CASES, ids=case_id)
def test_float32_within_tolerance_rule(case):
    """float32 engine vs float64 reference: at most 2x the error of the same computation in plain
    float32 torch (values and gradients)."""
    kernel, bandwidth, options, _ = case
    x64 = torch.randn(300, 8, dtype=torch.float64)
    y64 = torch.randn(257, 8, dtype=torch.float64) + 0.3
    kw = dict(kernel=kernel, bandwidth=bandwidth, **options)
    exact, g_exact = _grads(lambda a, b: ref_sum(a, b, **kw), [x64, y64])
    x32, y32 = x64.float(), y64.float()
    ours, g_ours = _grads(lambda a, b: latentdiv.pairwise_sum(a, b, **kw), [x32, y32])
    plain, g_plain = _grads(lambda a, b: ref_sum(a, b, **kw), [x32, y32])
    assert ours.dtype == torch.float32
    assert_float32_rule(ours, plain, exact, f"{kernel} value")
    for name, a, b, c in zip("xy", g_ours, g_plain, g_exact):
        assert_float32_rule(a, b, c, f"{kernel} grad {name}")


@pytest.mark.parametrize("case", KERNEL_CASES, ids=case_id)
def test_duplicates_and_zero_distances_give_finite_gradients(case):
    kernel, bandwidth, options, _ = case
    base = torch.randn(5, 3, dtype=torch.float64)
    x = torch.cat([base, base, base[:2]])  # exact duplicates: r2 = 0 off the diagonal too
    y = torch.cat([base[:3], torch.zeros(2, 3, dtype=torch.float64)])
    for args in ((x,), (x, y)):
        leaves = [a.clone().requires_grad_(True) for a in args]
        value = latentdiv.pairwise_sum(*leaves, kernel=kernel, bandwidth=bandwidth, **options)
        grads = torch.autograd.grad(value, leaves)
        assert torch.isfinite(value)
        assert all(torch.isfinite(g).all() for g in grads)
        want = ref_sum(*args, kernel=kernel, bandwidth=bandwidth, **options)
        torch.testing.assert_close(value.detach(), want, rtol=1e-10, atol=1e-10)
        leaves_ref = [a.clone().requires_grad_(True) for a in args]
        want_g = torch.autograd.grad(ref_sum(*leaves_ref, kernel=kernel, bandwidth=bandwidth, **options), leaves_ref)
        for a, b in zip(grads, want_g):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_non_contiguous_and_half_inputs():
    base = torch.randn(40, 12, dtype=torch.float64)
    x = base[::2, ::3]  # strided view: (20, 4)
    y = base.t()[:4].t()[5:30]  # transposed view: (25, 4)
    assert not x.is_contiguous() and not y.is_contiguous()
    got = latentdiv.pairwise_sum(x, y, kernel="gaussian", bandwidth=1.5)
    want = ref_sum(x.contiguous(), y.contiguous(), kernel="gaussian", bandwidth=1.5)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for half in (torch.float16, torch.bfloat16):
        xh = x.to(half).requires_grad_(True)
        value = latentdiv.pairwise_sum(xh, kernel="gaussian", bandwidth=1.5)
        value.backward()
        assert value.dtype == half and xh.grad.dtype == half
        exact = ref_sum(xh.detach().double(), kernel="gaussian", bandwidth=1.5)
        torch.testing.assert_close(value.double(), exact, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("n", [1, 2, 3, 17, 65])
@pytest.mark.parametrize("dim", [1, 2, 64])
def test_pdist_matches_torch(n, dim):
    x = torch.randn(n, dim, dtype=torch.float64)
    x = torch.cat([x, x[:1]])  # a duplicate pair: distance 0, gradient 0
    g = torch.randn(x.shape[0] * (x.shape[0] - 1) // 2, dtype=torch.float64)
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    ours = latentdiv.pdist(a)
    want = torch.pdist(b)
    torch.testing.assert_close(ours, want, rtol=1e-12, atol=1e-12)
    (ga,) = torch.autograd.grad(ours, a, g)
    (gb,) = torch.autograd.grad(want, b, g)
    assert torch.isfinite(ga).all()
    torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-10)
    x32 = x.float()
    assert_float32_rule(latentdiv.pdist(x32), torch.pdist(x32), torch.pdist(x), "pdist float32")


def test_pdist_single_point_is_empty():
    out = latentdiv.pdist(torch.randn(1, 3))
    assert out.shape == (0,)


@pytest.mark.parametrize("case", KERNEL_CASES, ids=case_id)
def test_gradcheck_float64(case):
    kernel, bandwidth, options, _ = case
    x = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    wx = (torch.rand(7, dtype=torch.float64) + 0.5).requires_grad_(True)
    wy = (torch.rand(5, dtype=torch.float64) + 0.5).requires_grad_(True)
    kw = dict(kernel=kernel, bandwidth=bandwidth, **options)
    assert torch.autograd.gradcheck(lambda a, b, c, d: latentdiv.pairwise_sum(a, b, weights_x=c, weights_y=d, **kw),
                                    (x, y, wx, wy))
    assert torch.autograd.gradcheck(lambda a, c: latentdiv.pairwise_sum(a, weights_x=c, exclude_diagonal=True, **kw),
                                    (x, wx))
    assert torch.autograd.gradcheck(latentdiv.pdist, (x,))


def _op_samples():
    x = torch.randn(6, 3, dtype=torch.float64)
    y = torch.randn(4, 3, dtype=torch.float64)
    wx, wy = torch.rand(6, dtype=torch.float64), torch.rand(4, dtype=torch.float64)
    params = [0.5, 0.125]  # gaussian, two scales
    return x, y, wx, wy, params


@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_every_op(requires_grad):
    x, y, wx, wy, params = _op_samples()
    if requires_grad:
        x, y, wx, wy = (t.requires_grad_(True) for t in (x, y, wx, wy))
    ops = torch.ops.latentdiv
    torch.library.opcheck(ops.pair_sum, (x, y, wx, wy, 0, params, False))
    torch.library.opcheck(ops.pair_sum, (x, None, wx, None, 3, [], True))
    torch.library.opcheck(ops.pair_rows, (x.detach(), y.detach(), wy.detach(), 2, [1.0, 2.0], False))
    torch.library.opcheck(ops.pair_grad, (x.detach(), None, wx.detach(), 1, [1.0], True))
    torch.library.opcheck(ops.pair_sum_with_grad, (x, y, wx, wy, 0, params, False))
    torch.library.opcheck(ops.pair_sum_with_grad, (x, None, wx, None, 3, [], True))
    torch.library.opcheck(ops.pair_sum_with_grad, (x, y, None, None, 2, [1.0, 2.0], False))
    torch.library.opcheck(ops.pdist, (x,))
    dist = torch.pdist(x.detach())
    torch.library.opcheck(ops.pdist_backward, (torch.randn_like(dist), x.detach(), dist))


def test_torch_compile_fullgraph_forward_backward():
    def loss(x, y):
        return (latentdiv.pairwise_sum(x, kernel="gaussian", bandwidth=[1.0, 2.0])
                + latentdiv.pairwise_sum(y, kernel="imq", bandwidth=2.0, exclude_diagonal=True)
                - 2 * latentdiv.pairwise_sum(x, y, kernel="gaussian", bandwidth=[1.0, 2.0])
                + latentdiv.pdist(x).sum())

    compiled = torch.compile(loss, fullgraph=True, backend="inductor")
    x = torch.randn(33, 5, requires_grad=True)
    y = torch.randn(20, 5, requires_grad=True)
    value = compiled(x, y)
    gx, gy = torch.autograd.grad(value, (x, y))
    x2, y2 = x.detach().clone().requires_grad_(True), y.detach().clone().requires_grad_(True)
    want = loss(x2, y2)
    wx, wy = torch.autograd.grad(want, (x2, y2))
    torch.testing.assert_close(value, want, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gx, wx, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gy, wy, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("case", KERNEL_CASES, ids=case_id)
def test_bit_identical_for_one_and_two_threads(case):
    kernel, bandwidth, options, _ = case
    x = torch.randn(301, 7)
    y = torch.randn(150, 7)
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        a = x.clone().requires_grad_(True)
        value = latentdiv.pairwise_sum(a, y, kernel=kernel, bandwidth=bandwidth, **options)
        (g,) = torch.autograd.grad(value, a)
        results.append((value, g, latentdiv.pdist(x)))
    for first, second in zip(*results):
        assert torch.equal(first, second)


def test_fallback_backend_matches_compiled(reference_backend):
    assert latentdiv.backend_info()["backend"] == "reference"
    x = torch.randn(50, 4, dtype=torch.float64, requires_grad=True)
    fallback = latentdiv.pairwise_sum(x, kernel="laplacian", bandwidth=0.8)
    (g_fallback,) = torch.autograd.grad(fallback, x)
    latentdiv.set_backend("auto")
    compiled = latentdiv.pairwise_sum(x, kernel="laplacian", bandwidth=0.8)
    (g_compiled,) = torch.autograd.grad(compiled, x)
    torch.testing.assert_close(fallback, compiled, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(g_fallback, g_compiled, rtol=1e-10, atol=1e-10)


def test_fallback_chunks_rows_under_checkpointing(reference_backend):
    spec = get_kernel("gaussian")
    x = torch.randn(37, 3, dtype=torch.float64, requires_grad=True)
    chunked = reference.pairwise_sum(x, None, None, None, spec, 1.0, {}, True, chunk_size=5)
    (g_chunked,) = torch.autograd.grad(chunked, x)
    whole = reference.pairwise_sum(x, None, None, None, spec, 1.0, {}, True, chunk_size=1000)
    (g_whole,) = torch.autograd.grad(whole, x)
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_chunked, g_whole, rtol=1e-12, atol=1e-12)


def test_isa_variants_agree(monkeypatch):
    usable = latentdiv.backend_info()["cpu_isa_usable"]
    x = torch.randn(150, 9)
    values = {}
    for isa in usable:
        monkeypatch.setenv("LATENTDIV_ISA", isa)
        values[isa] = latentdiv.pairwise_sum(x, kernel="gaussian", bandwidth=2.0).double()
    exact = ref_sum(x.double(), kernel="gaussian", bandwidth=2.0)
    for isa, v in values.items():
        torch.testing.assert_close(v, exact, rtol=1e-5, atol=1e-5, msg=lambda s: f"{isa}: {s}")


def test_backend_info_reports_build():
    info = latentdiv.backend_info()
    assert info["compiled"] is True and info["backend"] == "compiled"
    assert info["threads"] == torch.get_num_threads()
    assert "baseline" in info["cpu_isa_usable"]
    assert isinstance(info["cuda"], bool)
    assert set(info["kernels"]) == {spec.functor for spec in latentdiv.KERNELS.values()}


# ---- the CPU schedule's fused modes (VALUE_GRAD, TOTAL) ---------------------------------------------
@pytest.mark.parametrize("case", KERNEL_CASES, ids=case_id)
@pytest.mark.parametrize("n", SIZES + [2 * TILE + 3])
@pytest.mark.parametrize("exclude_diagonal,weighted", [(False, False), (True, True)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_self_total_without_grad_matches_reference(case, n, exclude_diagonal, weighted, dtype):
    """No gradient needed: self sums take the triangle-only TOTAL mode (j >= i, doubled)."""
    kernel, bandwidth, options, min_dim = case
    x = torch.randn(n, max(3, min_dim), dtype=torch.float64)
    w = torch.rand(n, dtype=torch.float64) + 0.1 if weighted else None
    kw = dict(kernel=kernel, bandwidth=bandwidth, exclude_diagonal=exclude_diagonal, **options)
    with torch.no_grad():
        ours = latentdiv.pairwise_sum(x.to(dtype), weights_x=None if w is None else w.to(dtype), **kw)
        full = torch.ops.latentdiv.pair_rows(x.to(dtype), None, None if w is None else w.to(dtype),
                                             get_kernel(kernel).kernel_id, _params(kernel, bandwidth, x, options),
                                             exclude_diagonal)
    want = ref_sum(x, weights_x=w, **kw)
    if dtype == torch.float64:
        torch.testing.assert_close(ours, want, rtol=1e-10, atol=1e-10)
    else:
        # The triangle's total vs the full rows' total from the same float32 engine: only the order
        # of the double sums and f_ij vs f_ji (r2 rounded in float32) differ.
        full_total = (full * (w if w is not None else 1.0)).sum()
        torch.testing.assert_close(ours.double(), full_total, rtol=2e-6, atol=1e-6 * n)


def _params(kernel, bandwidth, x, options):
    from latentdiv._registry import kernel_params
    return list(kernel_params(get_kernel(kernel), bandwidth, x.shape[1], options))


@pytest.mark.parametrize("case", KERNEL_CASES, ids=case_id)
@pytest.mark.parametrize("self_pairs", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_value_grad_mode_matches_separate_passes(case, self_pairs, dtype):
    """pair_sum_with_grad's one fused pass = the VALUE pass (rows, total) and the GRAD pass: the same
    arithmetic per entry (1 and 2 threads giving the same bits is checked by the tests of
    pairwise_sum, which now runs this op whenever x needs a gradient)."""
    kernel, bandwidth, options, min_dim = case
    n, m, dim = 45, 70, max(5, min_dim)
    x = torch.randn(n, dim, dtype=dtype)
    y = None if self_pairs else torch.randn(m, dim, dtype=dtype) + 0.2
    wx = torch.rand(n, dtype=dtype) + 0.1
    wy = None if self_pairs else torch.rand(m, dtype=dtype) + 0.1
    w_other = wx if self_pairs else wy
    k, p = get_kernel(kernel).kernel_id, _params(kernel, bandwidth, x, options)
    ops = torch.ops.latentdiv
    total, rows, grad = ops.pair_sum_with_grad(x, y, wx, wy, k, p, False)
    tol = dict(rtol=1e-13, atol=1e-13) if dtype == torch.float64 else dict(rtol=1e-6, atol=1e-6)
    assert torch.equal(rows, ops.pair_rows(x, y, w_other, k, p, False))  # VALUE-only tiles: same bits
    torch.testing.assert_close(grad, ops.pair_grad(x, y, w_other, k, p, False), **tol)
    torch.testing.assert_close(total, (rows * wx.double()).sum(), rtol=1e-12, atol=0)
    torch.testing.assert_close(total, ops.pair_sum(x, y, wx, wy, k, p, False), rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("needs", ["x", "y", "weights_x", "weights_y", "y+weights_y", "weights_x+weights_y"])
def test_partial_requires_grad_paths(needs):
    """Only some inputs need a gradient: the public layer swaps the sides (y first) or keeps the
    plain op (weights only); gradients must match the reference either way."""
    x = torch.randn(23, 4, dtype=torch.float64)
    y = torch.randn(31, 4, dtype=torch.float64) + 0.5
    wx, wy = torch.rand(23, dtype=torch.float64) + 0.1, torch.rand(31, dtype=torch.float64) + 0.1
    names = ["x", "y", "weights_x", "weights_y"]
    kw = dict(kernel="laplacian", bandwidth=[0.7, 2.0])
    results = []
    for fn in (lambda a, b, c, d: latentdiv.pairwise_sum(a, b, weights_x=c, weights_y=d, **kw),
               lambda a, b, c, d: ref_sum(a, b, weights_x=c, weights_y=d, **kw)):
        leaves = [t.clone().requires_grad_(name in needs.split("+")) for t, name in zip((x, y, wx, wy), names)]
        value = fn(*leaves)
        results.append((value.detach(), torch.autograd.grad(value, [t for t in leaves if t.requires_grad])))
    (ours, g_ours), (want, g_want) = results
    torch.testing.assert_close(ours, want, rtol=1e-10, atol=1e-10)
    for a, b in zip(g_ours, g_want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_bit_identical_threads_for_self_total():
    x = torch.randn(301, 7)
    w = torch.rand(301)
    results = []
    with torch.no_grad():
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(latentdiv.pairwise_sum(x, weights_x=w, kernel="energy", exclude_diagonal=True))
    assert torch.equal(results[0], results[1])
