"""The batched VALUE mode (latentdiv._batched_ops, csrc/cpu/pair_batched_cpu.cpp, csrc/cuda/batched_schedule.h):
out[b] = sum_ij W[b, i] k(x_i, y_j) V[b, j] for B weightings in one pass.

Checked against B separate VALUE calls of the engine (pairwise_sum, float64) and against a dense
float64 reference; bit-identical to itself across B (a weighting's bits do not depend on the others),
thread counts and repeated calls; every kernel, float32 / float64, self pairs with and without the
diagonal, sizes around the CPU tiles (8 rows, 32 columns, 64-row groups) and the CUDA blocks (128 rows,
16-column tiles, 16-weighting chunks), every usable ISA variant, and the CUDA schedule's block programs
through the host emulator.
"""

from __future__ import annotations

import pytest
import torch

import latentdiv
from latentdiv import _ext
from latentdiv._batched_ops import _fallback, batched_pairwise_sum
from latentdiv._registry import get_kernel, kernel_params
from conftest import requires_compiled
from kernel_cases import KERNEL_CASES, case_id

_C = _ext._C
DTYPES = [torch.float32, torch.float64]

# (n, m or None for self pairs, d, exclude_diagonal)
SHAPES = [
    (1, 1, 1, False),
    (7, 33, 3, False),
    (9, 31, 5, False),
    (65, 2, 17, False),
    (3, None, 2, True),
    (70, None, 4, True),
    (64, None, 3, False),
]


def _shape_id(s):
    n, m, d, diag = s
    return f"n{n}-{'self' if m is None else f'm{m}'}-d{d}{'-nodiag' if diag else ''}"


def _inputs(n, m, d, batch, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed + 1000 * n + 10 * d + (m or 0))
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    if n >= 3:
        x[2] = x[0]  # an exact duplicate: r = 0 off the diagonal
    y = None if m is None else torch.randn(m, d, generator=gen, dtype=torch.float64) * 1.2 + 0.1
    rows = n if m is None else m
    w = torch.randn(batch, n, generator=gen, dtype=torch.float64)
    v = torch.randn(batch, rows, generator=gen, dtype=torch.float64)
    w[:, ::3] = 0.0  # zeros in the weights
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    return cast(x), cast(y), cast(w), cast(v)


def _separate(x, y, w, v, kernel, bandwidth, options, exclude_diagonal):
    """B separate VALUE calls of the engine, each a bilinear form w_b^T K v_b, in float64.

    pairwise_sum takes one weight vector per side; w^T K v with signed weights is its polarisation:
    w^T K v = sum_ij w_i v_j k_ij, which pairwise_sum(x, y, weights_x=w, weights_y=v) is for y given;
    for self pairs the cross form x, x with the diagonal removed by hand (k(x_i, x_i) = f(0))."""
    xd = x.to(torch.float64)
    yd = xd if y is None else y.to(torch.float64)
    out = []
    f0 = get_kernel(kernel).formula(torch.zeros(1, dtype=torch.float64), bandwidth, x.shape[1], options)[0]
    for b in range(w.shape[0]):
        wb, vb = w[b].to(torch.float64), v[b].to(torch.float64)
        s = latentdiv.pairwise_sum(xd, yd, kernel=kernel, bandwidth=bandwidth, weights_x=wb, weights_y=vb, **options)
        if y is None and exclude_diagonal:
            s = s - f0 * (wb * vb).sum()
        out.append(s)
    return torch.stack(out)


def _scale(x, y, w, v, kernel, bandwidth, options):
    """sum_ij |W_bi| |k_ij| |V_bj|: the magnitude that rounding errors are relative to."""
    xd = x.to(torch.float64)
    yd = xd if y is None else y.to(torch.float64)
    k = get_kernel(kernel).formula(torch.cdist(xd, yd, compute_mode="donot_use_mm_for_euclid_dist"), bandwidth, x.shape[1], options).abs()
    return ((w.abs().to(torch.float64) @ k) * v.abs().to(torch.float64)).sum(dim=1) + 1e-300


@requires_compiled
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
@pytest.mark.parametrize("case", KERNEL_CASES, ids=case_id)
def test_against_separate_value_calls(case, shape, dtype):
    kernel, bandwidth, options, min_d = case
    n, m, d, diag = shape
    d = max(d, min_d)
    x, y, w, v = _inputs(n, m, d, 5, dtype)
    got = batched_pairwise_sum(x, y, weights_x=w, weights_y=v, kernel=kernel, bandwidth=bandwidth,
                               exclude_diagonal=diag, **options)
    assert got.dtype == torch.float64 and got.shape == (5,)
    # The engine widens float32 input to float64: compare with the float64 computation on the same values.
    want = _separate(x, y, w, v, kernel, bandwidth, options, diag)
    scale = _scale(x, y, w, v, kernel, bandwidth, options)
    assert torch.all((got - want).abs() <= 1e-11 * scale), (got, want)
    dense = _fallback(x, y, w, v, get_kernel(kernel), bandwidth, diag, options)
    assert torch.all((got - dense).abs() <= 1e-11 * scale)


@requires_compiled
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_bit_identical_whatever_the_batch(dtype):
    """A weighting's bits do not depend on B or on its neighbours (lanes and chunks never interact)."""
    x, y, w, v = _inputs(45, 38, 6, 21, dtype)
    full = batched_pairwise_sum(x, y, weights_x=w, weights_y=v, bandwidth=1.7)
    for b in (0, 3, 8, 20):
        one = batched_pairwise_sum(x, y, weights_x=w[b:b + 1], weights_y=v[b:b + 1], bandwidth=1.7)
        assert torch.equal(one[0], full[b])
    rev = batched_pairwise_sum(x, y, weights_x=w.flip(0), weights_y=v.flip(0), bandwidth=1.7)
    assert torch.equal(rev.flip(0), full)


@requires_compiled
def test_b1_and_large_b():
    x, _, w, _ = _inputs(19, None, 3, 1, torch.float64)
    one = batched_pairwise_sum(x, weights_x=w, kernel="energy", bandwidth=1.0, exclude_diagonal=True)
    ref = latentdiv.pairwise_sum(x, kernel="energy", weights_x=w[0], exclude_diagonal=True)
    assert one.shape == (1,)
    assert abs(one[0].item() - ref.item()) <= 1e-12 * (1 + abs(ref.item())) * 19
    # Large B: 1,000 weightings, not a multiple of any lane or chunk width.
    x, y, w, v = _inputs(23, 11, 4, 1003, torch.float64)
    got = batched_pairwise_sum(x, y, weights_x=w, weights_y=v, kernel="imq", bandwidth=2.0)
    k = get_kernel("imq").formula(torch.cdist(x, y), 2.0, 4, {})
    want = ((w @ k) * v).sum(dim=1)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-11)


@requires_compiled
def test_zero_weights_give_exact_zeros():
    x, y, w, v = _inputs(30, 40, 3, 6, torch.float64)
    w[1] = 0.0
    v[4] = 0.0
    got = batched_pairwise_sum(x, y, weights_x=w, weights_y=v)
    assert got[1].item() == 0.0 and got[4].item() == 0.0
    # Zero-size sides are rejected as pairwise_sum rejects them (naming the argument).
    with pytest.raises(ValueError, match="y is empty"):
        batched_pairwise_sum(x, y[:0], weights_x=w, weights_y=v[:, :0])


@requires_compiled
def test_deterministic_across_threads_and_calls():
    x, _, w, _ = _inputs(301, None, 9, 40, torch.float32)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3, 1):
            torch.set_num_threads(threads)
            results.append(batched_pairwise_sum(x, weights_x=w, bandwidth=2.5, exclude_diagonal=True))
    finally:
        torch.set_num_threads(before)
    for r in results[1:]:
        assert torch.equal(r, results[0])


@requires_compiled
def test_every_isa_variant(monkeypatch):
    x, y, w, v = _inputs(41, 77, 7, 13, torch.float64)
    want = _separate(x, y, w, v, "gaussian", 1.5, {}, False)
    scale = _scale(x, y, w, v, "gaussian", 1.5, {})
    for isa in _C.build_info()["cpu_isa_usable"]:
        monkeypatch.setenv("LATENTDIV_ISA", isa)
        got = batched_pairwise_sum(x, y, weights_x=w, weights_y=v, bandwidth=1.5)
        assert torch.all((got - want).abs() <= 1e-12 * scale), isa


def test_reference_backend_matches(reference_backend):
    x, y, w, v = _inputs(13, 9, 3, 4, torch.float64)
    got = batched_pairwise_sum(x, y, weights_x=w, weights_y=v, kernel="laplacian", bandwidth=0.7)
    k = get_kernel("laplacian").formula(torch.cdist(x, y), 0.7, 3, {})
    assert torch.allclose(got, ((w @ k) * v).sum(dim=1), rtol=1e-12, atol=1e-12)


def test_errors_name_the_argument():
    x = torch.randn(5, 2)
    w = torch.randn(3, 5)
    with pytest.raises(ValueError, match="weights_x"):
        batched_pairwise_sum(x, weights_x=torch.randn(3, 4))
    with pytest.raises(TypeError, match="weights_x"):
        batched_pairwise_sum(x, weights_x=[[1.0] * 5])
    with pytest.raises(ValueError, match="weights_y"):
        batched_pairwise_sum(x, torch.randn(4, 2), weights_x=w)
    with pytest.raises(ValueError, match="same number of weightings"):
        batched_pairwise_sum(x, torch.randn(4, 2), weights_x=w, weights_y=torch.randn(2, 4))
    with pytest.raises(ValueError, match="exclude_diagonal"):
        batched_pairwise_sum(x, torch.randn(4, 2), weights_x=w, weights_y=torch.randn(3, 4), exclude_diagonal=True)
    with pytest.raises(ValueError, match="kernel"):
        batched_pairwise_sum(x, weights_x=w, kernel="nope")


# ---- the CUDA schedule, through the host emulator ---------------------------------------------------
EMU_SHAPES = [  # around the block (128 rows), the tile (16 columns), the dim chunk (16) and the chunk (16)
    (1, 1, 1, 1, False),
    (129, 17, 17, 16, False),
    (127, None, 3, 17, True),
    (5, 40, 33, 3, False),
    (130, None, 2, 33, False),
]


def _emulate(x, y, w, v, kernel, bandwidth, options, diag, reverse):
    spec = get_kernel(kernel)
    params = kernel_params(spec, bandwidth, x.shape[1], options)
    other = x if y is None else y
    n, d = x.shape
    batch = w.shape[0]
    nbytes = int(_C.batched_cuda_workspace_bytes(n, batch))
    ws = torch.full((max(nbytes, 8) // 8,), float("nan"), dtype=torch.float64)
    out = torch.full((batch,), float("nan"), dtype=torch.float64)
    status = _C.emulate_cuda_pair_batched(
        dtype=_ext.dtype_code(x), x=x.data_ptr(), y=other.data_ptr(), w=w.data_ptr(), v=v.data_ptr(),
        out=out.data_ptr(), workspace=ws.data_ptr(), workspace_bytes=nbytes, n=n, m=other.shape[0], d=d,
        batch=batch, self_pairs=y is None, exclude_diagonal=diag, kernel=spec.kernel_id, params=list(params),
        reverse_threads=reverse)
    assert status == 0
    return out


@requires_compiled
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", EMU_SHAPES, ids=lambda s: f"n{s[0]}-{s[1]}-d{s[2]}-B{s[3]}")
@pytest.mark.parametrize("case", [c for c in KERNEL_CASES if c[0] in ("gaussian", "energy", "cramer_wold")],
                         ids=case_id)
def test_cuda_schedule_emulated(case, shape, dtype):
    kernel, bandwidth, options, min_d = case
    n, m, d, batch, diag = shape
    d = max(d, min_d)
    x, y, w, v = _inputs(n, m, d, batch, dtype, seed=7)
    fwd = _emulate(x, y, w, v, kernel, bandwidth, options, diag, reverse=False)
    rev = _emulate(x, y, w, v, kernel, bandwidth, options, diag, reverse=True)
    assert torch.equal(fwd, rev)  # a legal reordering of the threads changes no bit
    want = _separate(x, y, w, v, kernel, bandwidth, options, diag)
    scale = _scale(x, y, w, v, kernel, bandwidth, options)
    # The CUDA schedule computes r2 and the kernel in the input dtype (sums in double).
    tol = 1e-11 if dtype == torch.float64 else 2e-5
    assert torch.all((fwd - want).abs() <= tol * scale), (fwd, want)


@requires_compiled
def test_cuda_emulator_rejects_a_short_workspace():
    x = torch.randn(4, 2, dtype=torch.float64)
    w = torch.randn(3, 4, dtype=torch.float64)
    out = torch.empty(3, dtype=torch.float64)
    nbytes = int(_C.batched_cuda_workspace_bytes(4, 3))
    assert nbytes == 3 * 8  # one row block of 128 rows, one double per weighting
    ws = torch.empty(3, dtype=torch.float64)
    status = _C.emulate_cuda_pair_batched(
        dtype=1, x=x.data_ptr(), y=x.data_ptr(), w=w.data_ptr(), v=w.data_ptr(), out=out.data_ptr(),
        workspace=ws.data_ptr(), workspace_bytes=nbytes - 8, n=4, m=4, d=2, batch=3, self_pairs=True,
        exclude_diagonal=False, kernel=0, params=[0.5])
    assert status == _C.STATUS_BAD_ARGUMENT


@requires_compiled
@pytest.mark.parametrize("diag", [False, True], ids=["withdiag", "nodiag"])
@pytest.mark.parametrize("n", [1, 8, 33, 70, 131])
def test_symmetric_form_visits_half_the_pairs(n, diag):
    """V = W on self pairs (weights_y=None or the same tensor): the CPU schedule sums j >= i only and
    doubles; equal to the general path (a copy of W, so the pointers differ) to rounding."""
    x, _, w, _ = _inputs(n, None, 5, 19, torch.float64)
    sym = batched_pairwise_sum(x, weights_x=w, kernel="laplacian", bandwidth=1.3, exclude_diagonal=diag)
    same = batched_pairwise_sum(x, weights_x=w, weights_y=w, kernel="laplacian", bandwidth=1.3, exclude_diagonal=diag)
    general = batched_pairwise_sum(x, weights_x=w, weights_y=w.clone(), kernel="laplacian", bandwidth=1.3,
                                   exclude_diagonal=diag)
    assert torch.equal(sym, same)
    scale = _scale(x, None, w, w, "laplacian", 1.3, {})
    assert torch.all((sym - general).abs() <= 1e-12 * scale)
    for b in (0, 18):  # bit-identical across B in the symmetric form too
        assert torch.equal(batched_pairwise_sum(x, weights_x=w[b:b + 1], kernel="laplacian", bandwidth=1.3,
                                                exclude_diagonal=diag)[0], sym[b])


BATCHED_CHILD = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # even if inherited ignored (tests/test_interrupt.py)
import torch, latentdiv
gen = torch.Generator().manual_seed(0)
small = torch.randn(50, 3, generator=gen)
ws = torch.randn(4, 50, generator=gen)
before = latentdiv.batched_pairwise_sum(small, weights_x=ws)
x = torch.randn(12000, 16, generator=gen)
w = torch.rand(400, 12000, generator=gen)
print("ready", flush=True)
try:
    latentdiv.batched_pairwise_sum(x, weights_x=w, bandwidth=4.0)
    print("finished", time.monotonic(), flush=True)
except KeyboardInterrupt:
    print("interrupted", time.monotonic(), flush=True)
print("same", bool(torch.equal(latentdiv.batched_pairwise_sum(small, weights_x=ws), before)), flush=True)
"""


@requires_compiled
@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGINT") or __import__("os").name != "posix",
                    reason="POSIX signals")
def test_sigint_stops_a_batched_call():
    """Ctrl-C during a long batched call (seconds on 2 cores): KeyboardInterrupt within a second, and
    the engine gives the same bits afterwards (the plumbing of tests/test_interrupt.py)."""
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", BATCHED_CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("ready"), (line, proc.stderr.read())
        time.sleep(0.5)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        first, second = proc.stdout.readline().split(), proc.stdout.readline().strip()
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert first[0] == "interrupted", first
    assert float(first[1]) - sent < 1.0
    assert second == "same True"


@requires_compiled
def test_custom_op_opcheck():
    """The op's schema, fake (meta) implementation and dispatcher registration (no autograd: values only)."""
    from latentdiv._batched_ops import pair_batched

    x, y, w, v = _inputs(12, 9, 3, 4, torch.float64)
    spec = get_kernel("gaussian")
    params = list(kernel_params(spec, 1.2, 3, {}))
    torch.library.opcheck(pair_batched, (x, y, w, v, spec.kernel_id, params, False),
                          test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(pair_batched, (x, None, w, w, spec.kernel_id, params, True),
                          test_utils=("test_schema", "test_faketensor"))
