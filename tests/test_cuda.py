"""The CUDA schedule.

(a) Host emulation (no GPU needed): ``_C.emulate_cuda_*`` runs the block programs of
    csrc/cuda/schedule.h -- the same header the __global__ kernels call -- on the CPU, with shared
    memory as host arrays and __syncthreads() as phase boundaries (phases run thread after thread, in
    forward and reverse order, shared memory poisoned with NaN, so a missing barrier shows up). Compared
    with the float64 reference for every kernel, both modes, weights, self pairs / diagonal, float32
    and float64, at sizes around the block and tile sizes.
(b) Device tests (``@pytest.mark.cuda``): skipped with a reason when torch sees no GPU.
(c) Build checks: workspace size, no torch headers in csrc/, importing does not initialise CUDA.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import latentdiv
from latentdiv import _ext
from latentdiv._registry import get_kernel, kernel_params
from kernel_cases import KERNEL_CASES, case_id
from conftest import requires_compiled

_C = _ext._C
SCHED = dict(_C.CUDA_SCHEDULE) if _C is not None else {"block": 128, "tile_cols": 16, "dim_chunk": 16}
B = SCHED["block"]
MODE_VALUE, MODE_GRAD = _ext.MODE_VALUE, _ext.MODE_GRAD
DTYPES = [torch.float32, torch.float64]
HAS_GPU = torch.cuda.is_available()
requires_gpu = pytest.mark.skipif(not HAS_GPU, reason="no CUDA device visible to torch (torch.cuda.is_available() is False)")
requires_cuda_build = pytest.mark.skipif(not _ext.cuda_compiled(), reason="this latentdiv build has no CUDA kernels")

# (n, m or None for self pairs, d, weighted, exclude_diagonal): every n, m in {1, 2, 3, 17, B-1, B, B+1,
# 2B+5} and d in {1, 3, 64, 65} (plus 16 / 17 around the dim chunk) appears, none a multiple of every
# tile, both GRAD paths (one pass for d <= chunk, several passes with tile reloads above).
SHAPES = [
    (1, 1, 1, False, False),
    (2, 3, 3, True, False),
    (3, 17, 65, True, False),
    (17, 2, 64, False, False),
    (B - 1, B + 1, 3, True, False),
    (B, B, 1, False, False),
    (2 * B + 5, B - 1, 65, True, False),
    (B + 1, 2 * B + 5, 17, False, False),
    (1, None, 3, False, True),
    (2, None, 16, True, True),
    (17, None, 64, True, True),
    (B + 1, None, 65, True, True),
    (2 * B + 5, None, 1, False, False),
    (B, None, 17, True, False),
]


def shape_id(s):
    n, m, d, w, diag = s
    return f"n{n}-{'self' if m is None else f'm{m}'}-d{d}{'-w' if w else ''}{'-nodiag' if diag else ''}"


def _inputs(n, m, d, weighted, dtype):
    """Points with exact duplicates (zero distances: the subgradient convention at r = 0)."""
    gen = torch.Generator().manual_seed(1000 * n + 10 * d + (m or 0))
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    if n >= 3:
        x[2] = x[0]
    y = None if m is None else torch.randn(m, d, generator=gen, dtype=torch.float64) * 1.2 + 0.1
    if y is not None and m >= 2 and n >= 2:
        y[1] = x[1]
    wx = torch.rand(n, generator=gen, dtype=torch.float64) + 0.1 if weighted else None
    wy = (torch.rand(m, generator=gen, dtype=torch.float64) + 0.1) if (weighted and m is not None) else None
    cast = lambda t: None if t is None else t.to(dtype).contiguous()  # noqa: E731
    return cast(x), cast(y), cast(wx), cast(wy)


def _reference_rows_grad(x, y, wy, case, exclude_diagonal):
    """float64 oracle from the registry's pure-torch formula: rows_i = sum_j wy_j f(r2_ij) and
    grad_i = d rows_i / d x_i = sum_j wy_j 2 f'(r2_ij) (x_i - y_j) (y held fixed), via autograd
    through a difference-based cdist (gradient 0 at r = 0)."""
    kernel, bandwidth, options, _ = case
    spec = get_kernel(kernel)
    x64 = x.double().detach().clone().requires_grad_(True)
    y64 = (x if y is None else y).double().detach()
    r = torch.cdist(x64, y64, compute_mode="donot_use_mm_for_euclid_dist")
    k = spec.formula(r, bandwidth, x.shape[1], options)
    if exclude_diagonal:
        k = k * (1.0 - torch.eye(x.shape[0], dtype=torch.float64))
    if wy is not None:
        k = k * wy.double().unsqueeze(0)
    rows = k.sum(dim=1)
    (grad,) = torch.autograd.grad(rows.sum(), x64)
    # A magnitude for tolerances: the sums of absolute terms (cancellation makes |result| small).
    scale_rows = k.abs().sum(dim=1).detach()
    return rows.detach(), grad, scale_rows


def _emulate_pair(mode, x, y, wx, wy, kernel_id, params, exclude_diagonal, reverse):
    n, d = x.shape
    other = x if y is None else y
    m = other.shape[0]
    rows = torch.full((n,), float("nan"), dtype=torch.float64)
    total = torch.full((), float("nan"), dtype=torch.float64)
    grad = torch.full_like(x, float("nan"))
    nbytes = _C.emulate_cuda_workspace_bytes(n, mode)
    workspace = torch.full((max(nbytes // 8, 1),), float("nan"), dtype=torch.float64)
    ptr = lambda t: 0 if t is None else t.data_ptr()  # noqa: E731
    status = _C.emulate_cuda_pair_reduce(
        mode=mode, dtype=_ext.dtype_code(x), x=x.data_ptr(), y=other.data_ptr(), wx=ptr(wx),
        wy=ptr(wx if y is None else wy), out_rows=rows.data_ptr(), out_total=total.data_ptr(),
        out_grad=grad.data_ptr(), workspace=workspace.data_ptr(), workspace_bytes=nbytes, n=n, m=m, d=d,
        self_pairs=y is None, exclude_diagonal=exclude_diagonal, kernel=kernel_id, params=list(params),
        reverse_threads=reverse)
    assert status == 0, f"emulate_cuda_pair_reduce returned status {status}"
    return (rows, total) if mode == MODE_VALUE else grad


def _tolerances(dtype):
    # float64: the fitted Cramer-Wold phi (cw_phi.h) is accurate to ~1e-9 relative, the rest to rounding.
    # float32: r2 and f in float32 (relative ~1e-6 per term), sums in double.
    return (1e-8, 1e-10) if dtype == torch.float64 else (2e-5, 2e-6)


@requires_compiled
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("case", KERNEL_CASES, ids=case_id)
def test_emulated_schedule_matches_reference(case, shape, dtype):
    kernel, bandwidth, options, min_dim = case
    n, m, d, weighted, exclude_diagonal = shape
    if d < min_dim:
        pytest.skip(f"{kernel} needs D >= {min_dim}")
    x, y, wx, wy = _inputs(n, m, d, weighted, dtype)
    spec = get_kernel(kernel)
    params = kernel_params(spec, bandwidth, d, dict(options))
    wy_eff = wx if y is None else wy
    ref_rows, ref_grad, scale_rows = _reference_rows_grad(x, y, wy_eff, case, exclude_diagonal)
    ref_total = (ref_rows * (1.0 if wx is None else wx.double())).sum()
    rtol, atol = _tolerances(dtype)

    outs = {}
    for reverse in (False, True):
        rows, total = _emulate_pair(MODE_VALUE, x, y, wx, wy, spec.kernel_id, params, exclude_diagonal, reverse)
        grad = _emulate_pair(MODE_GRAD, x, y, wx, wy, spec.kernel_id, params, exclude_diagonal, reverse)
        outs[reverse] = (rows, total, grad)
    # The reverse thread order within every phase gives the same bits: no barrier is missing and no
    # result depends on the order threads run in.
    for a, b in zip(outs[False], outs[True]):
        assert torch.equal(a, b), "emulated result depends on the thread order within a phase (missing __syncthreads?)"

    rows, total, grad = outs[False]
    assert grad.dtype == dtype
    assert torch.isfinite(rows).all() and torch.isfinite(total) and torch.isfinite(grad).all()
    row_err = (rows - ref_rows).abs()
    assert (row_err <= rtol * scale_rows + atol).all(), f"rows: max error {row_err.max():.3e}"
    total_scale = (scale_rows * (1.0 if wx is None else wx.double())).sum()
    assert abs(float(total) - float(ref_total)) <= rtol * float(total_scale) + atol, (float(total), float(ref_total))
    grad_scale = ref_grad.abs().max().clamp_min(1.0)
    grad_err = (grad.double() - ref_grad).abs().max()
    assert grad_err <= rtol * 10 * grad_scale * max(1.0, (m or n) ** 0.5) + atol, f"grad: max error {grad_err:.3e}"


def _emulate_hess_vec(x, y, wx, wy, vx, vy, kernel_id, params, reverse):
    n, d = x.shape
    other = x if y is None else y
    grad = torch.full_like(x, float("nan"))
    rows = torch.full((n,), float("nan"), dtype=torch.float64)
    ptr = lambda t: 0 if t is None else t.data_ptr()  # noqa: E731
    status = _C.emulate_cuda_pair_reduce(
        mode=_ext.MODE_HESS_VEC, dtype=_ext.dtype_code(x), x=x.data_ptr(), y=other.data_ptr(), wx=ptr(wx),
        wy=ptr(wy), out_rows=rows.data_ptr(), out_total=0, out_grad=grad.data_ptr(), workspace=0,
        workspace_bytes=0, n=n, m=other.shape[0], d=d, self_pairs=y is None, exclude_diagonal=False,
        kernel=kernel_id, params=list(params), reverse_threads=reverse, vx=ptr(vx), vy=ptr(vy))
    assert status == 0, f"emulate_cuda_pair_reduce(HESS_VEC) returned status {status}"
    return grad, rows


# HESS_VEC (second-order gradients): the emulated block program against the CPU schedule's
# (tests/test_second_order.py checks that one against autograd), both vector sides, weights, self
# pairs with duplicates (the diagonal is skipped, duplicates give the r = 0 convention).
HESS_SHAPES = [(2, 3, 3), (17, None, 17), (B + 1, 2 * B + 5, 17), (B + 1, None, 65), (3, 17, 1)]


@requires_compiled
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", HESS_SHAPES, ids=lambda s: f"n{s[0]}-{'self' if s[1] is None else f'm{s[1]}'}-d{s[2]}")
@pytest.mark.parametrize("case", KERNEL_CASES, ids=case_id)
def test_emulated_hess_vec_matches_cpu(case, shape, dtype):
    kernel, bandwidth, options, min_dim = case
    n, m, d = shape
    if d < min_dim:
        pytest.skip(f"{kernel} needs D >= {min_dim}")
    x, y, wx, wy = _inputs(n, m, d, True, dtype)
    m_ = n if m is None else m
    gen = torch.Generator().manual_seed(7 * n + d)
    wy = wy if m is not None else (torch.rand(n, generator=gen, dtype=torch.float64) + 0.1).to(dtype)
    vx = torch.randn(n, d, generator=gen, dtype=torch.float64).to(dtype)
    vy = torch.randn(m_, d, generator=gen, dtype=torch.float64).to(dtype)
    spec = get_kernel(kernel)
    params = kernel_params(spec, bandwidth, d, dict(options))
    outs = [_emulate_hess_vec(x, y, wx, wy, vx, vy, spec.kernel_id, params, rev) for rev in (False, True)]
    for a, b in zip(*outs):
        assert torch.equal(a, b), "emulated HESS_VEC depends on the thread order within a phase"
    grad, rows = outs[0]
    want_grad, want_rows = torch.ops.latentdiv.pair_hess_vec(x, y, wx, wy, vx, vy, spec.kernel_id, list(params))
    assert torch.isfinite(grad).all() and torch.isfinite(rows).all()
    # Both schedules compute from direct differences in double with the same per-row order over j.
    torch.testing.assert_close(grad.double(), want_grad.double(), rtol=1e-12 if dtype == torch.float64 else 1e-6,
                               atol=1e-12 if dtype == torch.float64 else 1e-6)
    torch.testing.assert_close(rows, want_rows, rtol=1e-12, atol=1e-12)


@requires_compiled
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n,d", [(1, 3), (2, 1), (3, 65), (17, 64), (B - 1, 3), (B, 17), (B + 1, 1), (2 * B + 5, 65)])
def test_emulated_pdist_and_backward_match_torch(n, d, dtype):
    gen = torch.Generator().manual_seed(n * 100 + d)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    if n >= 3:
        x[2] = x[0]  # a zero distance: forward 0, backward subgradient 0
    x = x.to(dtype)
    npairs = n * (n - 1) // 2
    rtol, atol = (1e-12, 1e-12) if dtype == torch.float64 else (1e-5, 1e-6)
    results = {}
    for reverse in (False, True):
        out = torch.full((max(npairs, 1),), float("nan"), dtype=dtype)
        assert _C.emulate_cuda_pdist(dtype=_ext.dtype_code(x), x=x.data_ptr(), out=out.data_ptr(), n=n, d=d,
                                     reverse_threads=reverse) == 0
        results[reverse] = out[:npairs]
    assert torch.equal(results[False], results[True])
    dist = results[False]
    torch.testing.assert_close(dist.double(), torch.pdist(x.double()), rtol=rtol, atol=atol)

    g = torch.randn(npairs, generator=gen, dtype=torch.float64).to(dtype)
    x64 = x.double().requires_grad_(True)
    (want,) = torch.autograd.grad((torch.pdist(x64) * g.double()).sum(), x64) if npairs else (torch.zeros_like(x64),)
    grads = {}
    for reverse in (False, True):
        out = torch.full_like(x, float("nan"))
        gbuf = g if npairs else torch.zeros(1, dtype=dtype)
        dbuf = dist.contiguous() if npairs else torch.zeros(1, dtype=dtype)
        assert _C.emulate_cuda_pdist_backward(dtype=_ext.dtype_code(x), x=x.data_ptr(), grad_out=gbuf.data_ptr(),
                                              dist=dbuf.data_ptr(), out=out.data_ptr(), n=n, d=d,
                                              reverse_threads=reverse) == 0
        grads[reverse] = out
    assert torch.equal(grads[False], grads[True])
    scale = max(1.0, float(want.abs().max()))
    torch.testing.assert_close(grads[False].double(), want, rtol=rtol * 10, atol=atol * 10 * scale * n ** 0.5)


@requires_compiled
def test_emulation_rejects_a_short_workspace_and_bad_arguments():
    x = torch.randn(B + 1, 3, dtype=torch.float64)
    rows = torch.empty(B + 1, dtype=torch.float64)
    total = torch.empty((), dtype=torch.float64)
    nbytes = _C.emulate_cuda_workspace_bytes(B + 1, MODE_VALUE)
    assert nbytes == 2 * 8  # two blocks, one double each
    ws = torch.empty(2, dtype=torch.float64)
    common = dict(mode=MODE_VALUE, dtype=1, x=x.data_ptr(), y=x.data_ptr(), wx=0, wy=0, out_rows=rows.data_ptr(),
                  out_total=total.data_ptr(), out_grad=0, workspace=ws.data_ptr(), n=B + 1, m=B + 1, d=3,
                  self_pairs=True, exclude_diagonal=False, kernel=0, params=[0.5])
    assert _C.emulate_cuda_pair_reduce(workspace_bytes=nbytes - 8, **common) == _C.STATUS_BAD_ARGUMENT
    assert _C.emulate_cuda_pair_reduce(workspace_bytes=nbytes, **{**common, "kernel": 99}) == _C.STATUS_UNKNOWN_KERNEL
    assert _C.emulate_cuda_pair_reduce(workspace_bytes=nbytes, **common) == _C.STATUS_OK
    # n = 0: the total is written (0) even though no block runs, as on the device.
    total.fill_(float("nan"))
    zero = {**common, "n": 0, "m": 0, "workspace": 0}
    assert _C.emulate_cuda_pair_reduce(workspace_bytes=0, **zero) == _C.STATUS_OK
    assert float(total) == 0.0


# ---------------------------------------------------------------------------------------------------
# (c) build checks (no GPU needed)
# ---------------------------------------------------------------------------------------------------
CSRC = Path(__file__).resolve().parents[1] / "csrc"


@pytest.mark.skipif(not CSRC.is_dir(), reason="csrc/ not present (tests run outside the source tree)")
def test_engine_sources_include_no_torch_headers():
    pattern = re.compile(r'#\s*include\s*[<"](torch/|ATen/|c10/|torch\.h)')
    offenders = []
    for path in sorted(CSRC.rglob("*")):
        if path.suffix in {".h", ".hpp", ".cuh", ".cpp", ".cc", ".cu"}:
            for lineno, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(CSRC)}:{lineno}: {line.strip()}")
    assert not offenders, "the engine must stay torch-free:\n" + "\n".join(offenders)
    assert (CSRC / "cuda" / "schedule.h").is_file() and (CSRC / "cuda" / "pair_reduce_cuda.cu").is_file()


@requires_cuda_build
def test_cuda_build_reports_archs_and_a_sane_workspace():
    info = latentdiv.backend_info()
    assert info["cuda"] is True
    archs = info["cuda_archs"].split(",")
    assert archs and all(a.startswith(("sm_", "compute_")) for a in archs), info["cuda_archs"]
    for n in (0, 1, B - 1, B, B + 1, 2 * B + 5, 1 << 20):
        for m, d in ((1, 1), (n + 3, 65)):
            value = _C.pair_reduce_cuda_workspace_bytes(n, m, d, MODE_VALUE)
            assert value == -(-n // B) * 8, (n, value)  # one double per block
            assert value == _C.emulate_cuda_workspace_bytes(n, MODE_VALUE)
            assert _C.pair_reduce_cuda_workspace_bytes(n, m, d, MODE_GRAD) == 0


def test_import_does_not_initialise_cuda():
    """Importing latentdiv (and running it on CPU tensors) must not create a CUDA context: that costs
    hundreds of MB of GPU memory per process and breaks fork-based data loaders."""
    code = (
        "import torch, latentdiv\n"
        "latentdiv.backend_info()\n"
        "x = torch.randn(5, 3, requires_grad=True)\n"
        "latentdiv.pairwise_sum(x, kernel='gaussian', bandwidth=1.0).backward()\n"
        "latentdiv.pdist(x.detach())\n"
        "print(torch.cuda.is_initialized())\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(latentdiv.__file__).resolve().parents[1])] + sys.path)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


# ---------------------------------------------------------------------------------------------------
# (b) device tests: need a GPU
# ---------------------------------------------------------------------------------------------------
DEVICES = ["cuda"]


def _value_and_grads(x, y, wx, wy, case, exclude_diagonal=False):
    kernel, bandwidth, options, _ = case
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in (x, y, wx, wy)]
    value = latentdiv.pairwise_sum(leaves[0], leaves[1], kernel=kernel, bandwidth=bandwidth, weights_x=leaves[2],
                                   weights_y=leaves[3], exclude_diagonal=exclude_diagonal, **options)
    grads = torch.autograd.grad(value, [t for t in leaves if t is not None])
    return value.detach(), grads


@pytest.mark.cuda
@requires_gpu
@requires_cuda_build
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", KERNEL_CASES, ids=case_id)
@pytest.mark.parametrize("n,m,d", [(1, 2, 3), (B + 1, 2 * B + 5, 17), (300, 257, 64), (130, 65, 65)])
def test_device_pairwise_sum_matches_cpu_float64(case, n, m, d, dtype, device):
    kernel, bandwidth, options, min_dim = case
    if d < min_dim:
        pytest.skip(f"{kernel} needs D >= {min_dim}")
    x, y, wx, wy = (t.to(dtype) for t in (torch.randn(n, d), torch.randn(m, d) + 0.3, torch.rand(n) + 0.1, torch.rand(m) + 0.1))
    rtol, atol = (1e-9, 1e-9) if dtype == torch.float64 else (1e-4, 1e-4)
    for args, excl in (((x, y, wx, wy), False), ((x, None, wx, None), True), ((x, None, None, None), False)):
        want_v, want_g = _value_and_grads(*(None if t is None else t.double() for t in args), case, excl)
        got_v, got_g = _value_and_grads(*(None if t is None else t.to(device) for t in args), case, excl)
        assert got_v.device.type == "cuda" and got_v.dtype == dtype
        scale = max(1.0, float(want_v.abs()))
        torch.testing.assert_close(got_v.double().cpu(), want_v, rtol=rtol, atol=atol * scale)
        for g, w in zip(got_g, want_g):
            assert g.device.type == "cuda"
            torch.testing.assert_close(g.double().cpu(), w, rtol=rtol, atol=atol * max(1.0, float(w.abs().max())))


@pytest.mark.cuda
@requires_gpu
@requires_cuda_build
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n,d", [(2, 1), (B + 1, 17), (2 * B + 5, 65)])
def test_device_pdist_matches_cpu_float64(n, d, dtype, device):
    x = torch.randn(n, d, dtype=torch.float64)
    x[1] = x[0]
    g = torch.randn(n * (n - 1) // 2, dtype=torch.float64)
    x64 = x.clone().requires_grad_(True)
    want = torch.pdist(x64)
    (want_grad,) = torch.autograd.grad((want * g).sum(), x64)
    xd = x.to(device=device, dtype=dtype).requires_grad_(True)
    got = latentdiv.pdist(xd)
    (got_grad,) = torch.autograd.grad((got * g.to(device=device, dtype=dtype)).sum(), xd)
    rtol = 1e-10 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got.double().cpu(), want.detach(), rtol=rtol, atol=rtol)
    torch.testing.assert_close(got_grad.double().cpu(), want_grad, rtol=rtol * 10, atol=rtol * 10 * n)


@pytest.mark.cuda
@requires_gpu
@requires_cuda_build
@pytest.mark.parametrize("device", DEVICES)
def test_device_opcheck_every_op(device):
    x = torch.randn(37, 5, device=device, dtype=torch.float64, requires_grad=True)
    y = torch.randn(21, 5, device=device, dtype=torch.float64, requires_grad=True)
    wx = (torch.rand(37, device=device, dtype=torch.float64) + 0.1).requires_grad_(True)
    wy = (torch.rand(21, device=device, dtype=torch.float64) + 0.1).requires_grad_(True)
    ops = torch.ops.latentdiv
    torch.library.opcheck(ops.pair_sum, (x, y, wx, wy, 0, [0.5, 0.1], False))
    torch.library.opcheck(ops.pair_sum, (x, None, wx, None, 3, [], True))
    torch.library.opcheck(ops.pair_rows, (x.detach(), y.detach(), wy.detach(), 2, [1.0, 2.0], False))
    torch.library.opcheck(ops.pair_grad, (x.detach(), None, wx.detach(), 1, [1.0], True))
    torch.library.opcheck(ops.pdist, (x,))
    dist = torch.pdist(x.detach())
    torch.library.opcheck(ops.pdist_backward, (torch.randn_like(dist), x.detach(), dist))


@pytest.mark.cuda
@requires_gpu
@requires_cuda_build
@pytest.mark.parametrize("device", DEVICES)
def test_device_torch_compile_fullgraph(device):
    def loss(x, y):
        return (latentdiv.pairwise_sum(x, kernel="gaussian", bandwidth=[1.0, 2.0])
                - 2 * latentdiv.pairwise_sum(x, y, kernel="gaussian", bandwidth=[1.0, 2.0])
                + latentdiv.pairwise_sum(y, kernel="imq", bandwidth=2.0, exclude_diagonal=True)
                + latentdiv.pdist(x).sum())

    compiled = torch.compile(loss, fullgraph=True)
    x = torch.randn(133, 7, device=device, requires_grad=True)
    y = torch.randn(70, 7, device=device, requires_grad=True)
    value = compiled(x, y)
    gx, gy = torch.autograd.grad(value, (x, y))
    x2, y2 = x.detach().clone().requires_grad_(True), y.detach().clone().requires_grad_(True)
    want = loss(x2, y2)
    wx, wy = torch.autograd.grad(want, (x2, y2))
    torch.testing.assert_close(value, want, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gx, wx, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gy, wy, rtol=1e-5, atol=1e-4)


@pytest.mark.cuda
@requires_gpu
@requires_cuda_build
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", KERNEL_CASES, ids=case_id)
def test_device_runs_are_bitwise_deterministic(case, device):
    x = torch.randn(1000, 9, device=device)
    y = torch.randn(777, 9, device=device)
    wx = torch.rand(1000, device=device)
    runs = [_value_and_grads(x, y, wx, None, case) for _ in range(2)]
    assert torch.equal(runs[0][0], runs[1][0])
    for a, b in zip(runs[0][1], runs[1][1]):
        assert torch.equal(a, b)
    assert torch.equal(latentdiv.pdist(x[:300]), latentdiv.pdist(x[:300]))


@pytest.mark.cuda
@requires_gpu
@requires_cuda_build
@pytest.mark.parametrize("device", DEVICES)
def test_device_non_default_stream(device):
    """The kernels follow torch's current stream: results produced on a side stream are ordered with the
    torch ops on that stream (a launch on the NULL stream would race with them)."""
    x_cpu = torch.randn(2000, 16, dtype=torch.float64)
    want = latentdiv.pairwise_sum(x_cpu, kernel="gaussian", bandwidth=2.0)
    stream = torch.cuda.Stream(device=device)
    with torch.cuda.stream(stream):
        x = x_cpu.to(device, non_blocking=False)
        x = x * 1.0  # produced on the side stream just before our kernels
        got = latentdiv.pairwise_sum(x, kernel="gaussian", bandwidth=2.0)
        result = got * 1.0
    stream.synchronize()
    torch.testing.assert_close(result.cpu(), want, rtol=1e-10, atol=1e-10)


@pytest.mark.cuda
@requires_gpu
@requires_cuda_build
def test_device_on_second_gpu_if_present():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    x = torch.randn(300, 5, dtype=torch.float64)
    want = latentdiv.pairwise_sum(x, kernel="laplacian", bandwidth=1.0)
    got = latentdiv.pairwise_sum(x.to("cuda:1"), kernel="laplacian", bandwidth=1.0)
    assert got.device == torch.device("cuda:1")
    torch.testing.assert_close(got.cpu(), want, rtol=1e-10, atol=1e-10)
