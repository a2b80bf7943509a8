"""Every CPU instruction-set variant of the engine (baseline / AVX2 / AVX-512, whichever this CPU
runs) against the float64 reference, against each other, and bit-identical for 1 and 2 threads.

The sizes straddle the schedule's tiles (row blocks of 6-8, column panels of 8-32) and its padding;
near-duplicate and exact-duplicate points exercise the direct-difference fallback of the
dot-product form of r2 (exact zeros are required: energy and laplacian take a square root).
"""

from __future__ import annotations

import os

import pytest
import torch

import latentdiv
from latentdiv import _ext, reference
from latentdiv._registry import get_kernel

from kernel_cases import KERNEL_CASES

pytestmark = pytest.mark.skipif(not _ext.compiled_available(), reason="needs the compiled engine")

ISAS = [isa for isa in ("baseline", "avx2", "avx512")
        if _ext.compiled_available() and isa in _ext._C.build_info()["cpu_isa_usable"]]

TILE = 32  # the widest column panel (AVX-512 float: 2 x 16 lanes)
SIZES = [1, 2, 3, 17, TILE - 1, TILE, TILE + 1, 257]

# Every registry kernel's cases (tests/kernel_cases.py): (kernel, bandwidth, options, minimum D).
CASES = KERNEL_CASES


def _ids(case):
    k, bw, _, _ = case
    return f"{k}-{len(bw)}" if isinstance(bw, list) else k


class _isa:
    """Force one variant (LATENTDIV_ISA is read at every call)."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        self.old = os.environ.get("LATENTDIV_ISA")
        os.environ["LATENTDIV_ISA"] = self.name

    def __exit__(self, *exc):
        if self.old is None:
            os.environ.pop("LATENTDIV_ISA", None)
        else:
            os.environ["LATENTDIV_ISA"] = self.old


def _points(n, d, seed, dtype=torch.float64, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) + shift
    if n >= 4:
        x[1] = x[0]                                  # exact duplicate
        x[2] = x[0] + 1e-3 * torch.randn(d, generator=g, dtype=torch.float64)  # near-duplicate
    return x.to(dtype)


def _value_and_grads(fn, tensors):
    tensors = [t.detach().clone().requires_grad_(True) for t in tensors]
    v = fn(*tensors)
    grads = torch.autograd.grad(v, tensors)
    return v.detach(), [g.detach() for g in grads]


def _ref(kernel, bw, opts, excl=False):
    spec = get_kernel(kernel)
    return lambda a, b=None: reference.pairwise_sum(a, b, None, None, spec, bw, opts, excl)


def _ours(kernel, bw, opts, excl=False):
    return lambda a, b=None: latentdiv.pairwise_sum(a, b, kernel=kernel, bandwidth=bw, exclude_diagonal=excl, **opts)


def _close(a, b, rtol, what):
    scale = b.abs().max().clamp_min(1e-300)
    err = (a - b).abs().max()
    assert err <= rtol * scale, f"{what}: relative error {float(err / scale):.2e} > {rtol:.0e}"


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_float64_matches_reference_odd_sizes(isa, case):
    kernel, bw, opts, min_dim = case
    d_values = [d for d in (1, 2, 3, 8, 64, 65) if d >= min_dim]
    with _isa(isa):
        for i, n in enumerate(SIZES):
            m = SIZES[(i + 3) % len(SIZES)]
            d = d_values[i % len(d_values)]
            x, y = _points(n, d, 10 + i), _points(m, d, 20 + i, shift=0.3)
            v, g = _value_and_grads(_ours(kernel, bw, opts), [x, y])
            ve, ge = _value_and_grads(_ref(kernel, bw, opts), [x, y])
            _close(v, ve, 1e-10, f"{isa} {kernel} n={n} m={m} d={d} value")
            for name, a, b in zip("xy", g, ge):
                _close(a, b, 1e-9, f"{isa} {kernel} n={n} m={m} d={d} grad {name}")
            # self pairs with the diagonal dropped (duplicates: r2 = 0 off the diagonal too)
            v, g = _value_and_grads(_ours(kernel, bw, opts, True), [x])
            ve, ge = _value_and_grads(_ref(kernel, bw, opts, True), [x])
            _close(v, ve, 1e-10, f"{isa} {kernel} self n={n} d={d} value")
            _close(g[0], ge[0], 1e-9, f"{isa} {kernel} self n={n} d={d} grad")
            assert torch.isfinite(g[0]).all()


def _assert_float32_rule(ours, plain, exact, what, eps=1e-6):
    """docs/formulas.md section 10: error(ours) <= 2 x error(plain float32 torch) + eps * |exact|."""
    exact = exact.double()
    scale = exact.abs().max().clamp_min(1e-30)
    err_ours = (ours.double() - exact).abs().max()
    err_torch = (plain.double() - exact).abs().max()
    assert err_ours <= 2.0 * err_torch + eps * scale, f"{what}: {float(err_ours):.3e} vs torch {float(err_torch):.3e}"


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", CASES, ids=_ids)
@pytest.mark.parametrize("d,shift", [(2, 0.0), (64, 0.0), (8, 30.0)], ids=["d2", "d64", "d8-offset"])
def test_float32_tolerance_rule(isa, case, d, shift):
    kernel, bw, opts, min_dim = case
    if d < min_dim:
        pytest.skip(f"{kernel} needs D >= {min_dim}")
    x64, y64 = _points(257, d, 1, shift=shift), _points(200, d, 2, shift=shift + 0.3)
    ve, ge = _value_and_grads(_ref(kernel, bw, opts), [x64, y64])
    x32, y32 = x64.float(), y64.float()
    with _isa(isa):
        v, g = _value_and_grads(_ours(kernel, bw, opts), [x32, y32])
    vp, gp = _value_and_grads(_ref(kernel, bw, opts), [x32, y32])
    _assert_float32_rule(v, vp, ve, f"{isa} {kernel} value")
    for name, a, b, c in zip("xy", g, gp, ge):
        _assert_float32_rule(a, b, c, f"{isa} {kernel} grad {name}")


@pytest.mark.skipif(len(ISAS) < 2, reason="needs two usable CPU variants to compare")
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_variants_agree_with_each_other(case):
    kernel, bw, opts, _ = case
    x, y = _points(257, 65, 3).float(), _points(33, 65, 4, shift=0.2).float()
    results = {}
    for isa in ISAS:
        with _isa(isa):
            results[isa] = _value_and_grads(_ours(kernel, bw, opts), [x, y])
    base = ISAS[0]
    v0, g0 = results[base]
    assert torch.isfinite(v0) and v0 != 0
    for isa in ISAS[1:]:
        v, g = results[isa]
        rel = float((v.double() - v0.double()).abs() / v0.double().abs())
        assert rel <= 1e-5, f"{kernel}: value {isa} vs {base} relative difference {rel:.2e}"
        for name, a, b in zip("xy", g, g0):
            scale = b.double().abs().max()
            rel = float((a.double() - b.double()).abs().max() / scale)
            assert scale > 0 and rel <= 1e-4, f"{kernel}: grad {name} {isa} vs {base} relative difference {rel:.2e}"


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bit_identical_for_1_and_2_threads(isa, dtype):
    old = torch.get_num_threads()
    x, y = _points(257, 65, 5, dtype), _points(130, 65, 6, dtype, shift=0.1)
    try:
        outs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with _isa(isa):
                res = []
                for kernel, bw, opts, _ in CASES:
                    res.append(_value_and_grads(_ours(kernel, bw, opts), [x, y]))
                    res.append(_value_and_grads(_ours(kernel, bw, opts, True), [x]))
                pd, gpd = _value_and_grads(lambda a: (latentdiv.pdist(a) * torch.linspace(-1, 1, a.shape[0] * (a.shape[0] - 1) // 2, dtype=a.dtype)).sum(), [x])
                res.append((latentdiv.pdist(x), gpd))
            outs.append(res)
    finally:
        torch.set_num_threads(old)
    for (v1, g1), (v2, g2) in zip(*outs):
        assert torch.equal(v1, v2)
        for a, b in zip(g1, g2):
            assert torch.equal(a, b)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n,d", [(2, 1), (17, 3), (TILE + 1, 64), (257, 65)])
def test_pdist_and_backward_match_reference(isa, n, d):
    x = _points(n, d, 7)
    w = torch.linspace(-1.0, 2.0, n * (n - 1) // 2, dtype=torch.float64)
    with _isa(isa):
        v, g = _value_and_grads(lambda a: (latentdiv.pdist(a) * w).sum(), [x])
        dist = latentdiv.pdist(x)
    ve, ge = _value_and_grads(lambda a: (reference.pdist(a) * w).sum(), [x])
    _close(dist, reference.pdist(x), 1e-12, f"{isa} pdist n={n} d={d}")
    if n >= 4:
        assert dist[0] == 0.0  # x[1] == x[0]: exactly zero
    _close(v, ve, 1e-10, f"{isa} pdist value")
    _close(g[0], ge[0], 1e-9, f"{isa} pdist grad")
    assert torch.isfinite(g[0]).all()


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pdist_backward_far_duplicates_and_float32(isa, dtype):
    """Pairs far left of the diagonal (the backward's column-major fast path) with exact duplicates
    there (d_ij = 0: zero subgradient) and a ragged last block, in both dtypes."""
    n, d = 203, 8
    x = _points(n, d, 9)
    x[150] = x[3]
    x[201] = x[40]
    w = torch.linspace(-1.0, 2.0, n * (n - 1) // 2, dtype=torch.float64)
    with _isa(isa):
        v, g = _value_and_grads(lambda a: (latentdiv.pdist(a) * w.to(dtype)).sum(), [x.to(dtype)])
    ve, ge = _value_and_grads(lambda a: (reference.pdist(a) * w).sum(), [x])
    tol = 1e-9 if dtype == torch.float64 else 2e-5
    _close(v.double(), ve, tol, f"{isa} pdist value")
    _close(g[0].double(), ge[0], tol, f"{isa} pdist grad")
    assert torch.isfinite(g[0]).all()


@pytest.mark.parametrize("isa", ISAS)
def test_special_values(isa):
    """NaN propagates, huge distances give exactly 0 for the decaying kernels (exp underflow), and
    self pairs of exact duplicates give r2 = 0 exactly (energy = 0, no NaN gradient)."""
    x = torch.tensor([[0.5, -1.0], [0.5, -1.0], [1e4, 1e4]], dtype=torch.float32)
    with _isa(isa):
        v = latentdiv.pairwise_sum(x[:2], kernel="energy")
        assert v.item() == 0.0
        xg = x[:2].clone().requires_grad_(True)
        latentdiv.pairwise_sum(xg, kernel="energy").backward()
        assert torch.equal(xg.grad, torch.zeros_like(xg))
        far = latentdiv.pairwise_sum(x[:1], x[2:], kernel="gaussian", bandwidth=1.0)
        assert far.item() == 0.0
        xn = x.clone()
        xn[0, 0] = float("nan")
        assert torch.isnan(latentdiv.pairwise_sum(xn, kernel="gaussian"))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d", [5, 65])
def test_bit_identical_at_any_address(isa, dtype, d):
    """The same values at other addresses (input views at every offset of a vector, outputs and scratch
    wherever the allocator puts them) give the same bits. Regression: a product summed in a loop that
    GCC versions at run time (aliasing / alignment) used to round differently in the scalar and the
    vector version, so the AVX-512 variant's float64 rows and gradients changed in the last bit with
    heap addresses."""
    ops = torch.ops.latentdiv
    n = 45
    base = _points(n, d, 11, dtype)
    w = torch.rand(n, generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(dtype) + 0.5
    lanes = 64 // base.element_size()

    def run(x, wx):
        out = []
        for kid, params in ((0, [0.5]), (2, [1.0, 3.0]), (3, [1.0]), (1, [0.7])):
            out.append(ops.pair_rows(x, None, None, kid, params, False))
            out.append(ops.pair_grad(x, None, None, kid, params, False))
            out.append(ops.pair_sum(x, None, wx, None, kid, params, False))
            out.append(ops.pair_sum(x, x, wx, None, kid, params, False))  # two-sample form: sum_i wx_i rows_i
        out.append(ops.pdist(x))
        return out

    with _isa(isa):
        want = run(base, w)
        junk = []
        for rep in range(3):
            for off in range(lanes):
                storage = torch.empty(off * d + n * d + 7, dtype=dtype)
                x = storage[off * d: off * d + n * d].view(n, d)
                x.copy_(base)
                wst = torch.empty(off + n, dtype=dtype)
                wx = wst[off:]
                wx.copy_(w)
                junk.append(torch.empty(1 + 37 * (off + rep), dtype=torch.uint8))  # moves the heap
                got = run(x, wx)
                for a, b in zip(got, want):
                    assert torch.equal(a, b), f"offset {off}, repeat {rep}"


@pytest.mark.parametrize("isa", ISAS)
def test_underflowing_kernel_values_and_the_callers_fp_state(isa):
    """Gaussian values below float32's smallest normal (bandwidth 0.9 at D = 64: about a third of the
    pairs underflow) are flushed to zero inside the engine (a 2.5x speed cliff otherwise): the results
    still match float64, and the caller's floating-point state (gradual underflow) is restored."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(70, 64, generator=g)
    y = torch.randn(50, 64, generator=g) + 0.1
    r2 = torch.cdist(x.double(), y.double()) ** 2
    assert (r2 / (2 * 0.81) > 87.4).double().mean() > 0.2  # the case does underflow in float32
    with _isa(isa):
        v, (gx, gy) = _value_and_grads(_ours("gaussian", 0.9, {}), [x, y])
        sv, (sg,) = _value_and_grads(_ours("gaussian", 0.9, {}, True), [x])
    rv, (rgx, rgy) = _value_and_grads(_ref("gaussian", 0.9, {}), [x.double(), y.double()])
    rsv, (rsg,) = _value_and_grads(_ref("gaussian", 0.9, {}, True), [x.double()])
    _close(v.double(), rv, 1e-5, "two-sample value")
    _close(gx.double(), rgx, 1e-4, "two-sample grad x")
    _close(gy.double(), rgy, 1e-4, "two-sample grad y")
    _close(sv.double(), rsv, 1e-5, "self value")
    _close(sg.double(), rsg, 1e-4, "self grad")
    tiny = torch.tensor([1e-38], dtype=torch.float32) * 0.01  # this thread still has gradual underflow
    assert tiny.item() > 0.0


def _emulated_scalar_functor(mode, x, y, kernel_id, params):
    """Rows (VALUE) or gradient (GRAD) from the CUDA schedule's host emulation: it evaluates the
    functor element by element (scalar cw_phi_of_r2), with r2 from direct differences."""
    C = _ext._C
    n, d = x.shape
    rows = torch.full((n,), float("nan"), dtype=torch.float64)
    total = torch.full((), float("nan"), dtype=torch.float64)
    grad = torch.full_like(x, float("nan"))
    nbytes = C.emulate_cuda_workspace_bytes(n, mode)
    ws = torch.full((max(nbytes // 8, 1),), float("nan"), dtype=torch.float64)
    status = C.emulate_cuda_pair_reduce(
        mode=mode, dtype=_ext.dtype_code(x), x=x.data_ptr(), y=y.data_ptr(), wx=0, wy=0,
        out_rows=rows.data_ptr(), out_total=total.data_ptr(), out_grad=grad.data_ptr(),
        workspace=ws.data_ptr(), workspace_bytes=nbytes, n=n, m=y.shape[0], d=d, self_pairs=False,
        exclude_diagonal=False, kernel=kernel_id, params=list(params), reverse_threads=False)
    assert status == 0
    return rows if mode == _ext.MODE_VALUE else grad


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dim", [1, 2, 64])  # 1: the exp kind; 2: 30 coefficients (odd step count); 64: 11
def test_cramer_wold_tile_matches_scalar_functor(isa, dtype, dim):
    """The CPU schedule evaluates the exact Cramer-Wold kernel by its own tile evaluator (coefficients
    outside, elements inside); the CUDA schedule by the scalar functor. Two columns y = 0 (one column
    takes the single-column pass instead of the tiles) and rows x = +-v (1-D, centre exactly 0) give
    r2 = v^2 exactly in both schedules, so rows[i] = 2 f(v_i^2) and grad[i] = 4 f'(v_i^2) v_i element by
    element: tiles mixing r2 = 0, normal values over s = 1e-8 ..
    1e8. (r2 = +inf from finite points no longer occurs: out-of-range data are rescaled, docs/engine.md;
    tests/test_range.py.) The baseline variant has no FMA, like the emulation: same formulas in the same
    order give the same bits. With FMA: a few ulp."""
    v = [0.0] + torch.logspace(-4, 4, 41, dtype=torch.float64).tolist() + [3.0]
    x = torch.tensor([s * u for u in v for s in (1.0, -1.0)][1:], dtype=dtype).reshape(-1, 1)  # one 0 only
    acc = 0.0
    for u in x.double().flatten().tolist():  # the engine's centre: a running sum in double, here 0
        acc += u
        assert acc == 0.0 or acc == u
    y = torch.zeros(2, 1, dtype=dtype)
    spec = get_kernel("cramer_wold")
    params = spec.make_params(1.0, dim, {"gamma": 0.3})
    with _isa(isa):
        rows = torch.ops.latentdiv.pair_rows(x, y, None, spec.kernel_id, list(params), False)
        grad = torch.ops.latentdiv.pair_grad(x, y, None, spec.kernel_id, list(params), False)
    want_rows = _emulated_scalar_functor(_ext.MODE_VALUE, x, y, spec.kernel_id, params)
    want_grad = _emulated_scalar_functor(_ext.MODE_GRAD, x, y, spec.kernel_id, params)
    assert torch.isfinite(rows).all() and torch.isfinite(grad).all()
    assert rows[0].item() == pytest.approx(2.0, rel=1e-6) and grad[0].item() == 0.0  # r2 = 0: phi(0) = 1
    # NaN stays NaN (the functor's clamp to r2 >= 0 must not turn it into r2 = 0, f = 1)
    xn = x.clone()
    xn[3, 0] = float("nan")
    with _isa(isa):
        assert torch.isnan(torch.ops.latentdiv.pair_rows(xn, y, None, spec.kernel_id, list(params), False)[3])
        assert torch.isnan(torch.ops.latentdiv.pair_grad(xn, y, None, spec.kernel_id, list(params), False)[3]).all()
    if isa == "baseline":
        assert torch.equal(rows, want_rows)
        assert torch.equal(grad, want_grad)
    else:
        eps = torch.finfo(dtype).eps
        torch.testing.assert_close(rows, want_rows, rtol=8 * eps, atol=0)
        torch.testing.assert_close(grad, want_grad, rtol=8 * eps, atol=0)
