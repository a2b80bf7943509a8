r"""Many weightings of one pair of point sets in one engine pass (issue 14, the batched VALUE mode).

.. math::  \mathrm{out}_b = \sum_{i=1}^{n}\sum_{j=1}^{m} W_{bi}\, k(x_i, y_j)\, V_{bj},\qquad b = 1..B

the bilinear forms :math:`w_b^\top K v_b` of one kernel matrix for B weight pairs: what a permutation
test (one weighting per permutation), a bootstrap or a many-seed Monte Carlo needs. Each pair's
kernel value is computed once for all B weightings: cost O(n m (D + B)) instead of B passes of
O(n m D); memory O((n + m) D + m B), never n x m. The engine (csrc/cpu/pair_batched_cpu.cpp) widens
the inputs to float64 and accumulates in float64; the result is float64 [B] and does not depend on
the thread count or on the other weightings of the batch (each row b has the same arithmetic
whatever B is).

The op ``latentdiv::pair_batched`` has no autograd formula: the statistics built on it (permutation
tests) need values only. Differentiating through it raises torch's error for a custom op without a
backward. Devices: CPU through the engine, CUDA through the batched CUDA schedule when the build has
it, anything else (or a build without the engine) through a chunked pure-torch evaluation.
"""

from __future__ import annotations

from typing import Any, List, Optional

import torch
from torch import Tensor

from . import _ext
from ._registry import get_kernel
from ._validation import check_bool, check_pair, check_points
from .pairwise import _engine_params

# Rows of the kernel matrix per chunk of the pure-torch fallback (memory: chunk x m values).
_FALLBACK_ROWS = 1024


@torch.library.custom_op("latentdiv::pair_batched", mutates_args=())
def pair_batched(
    x: Tensor,            # [n, D]
    y: Optional[Tensor],  # [m, D]; None: y is x (self pairs)
    w: Tensor,            # [B, n], x.dtype
    v: Tensor,            # [B, m], x.dtype
    kernel: int,
    params: List[float],
    exclude_diagonal: bool,
) -> Tensor:              # [B] float64
    if _ext._C is None:
        raise RuntimeError("latentdiv custom ops need the compiled engine latentdiv._C")
    other = x if y is None else y
    n, d = x.shape
    m = other.shape[0]
    batch = w.shape[0]
    out = torch.empty(batch, dtype=torch.float64, device=x.device)
    workspace = None
    if x.device.type == "cuda":
        nbytes = int(_ext._C.batched_cuda_workspace_bytes(n, batch))
        workspace = torch.empty(max(nbytes, 1), dtype=torch.uint8, device=x.device)
    with _ext.device_guard(x):
        status = _ext._C.pair_batched(
            device=_ext.device_code(x), isa=_ext.isa_code(), dtype=_ext.dtype_code(x),
            x=x.data_ptr(), y=other.data_ptr(), w=w.data_ptr(), v=v.data_ptr(), out=out.data_ptr(),
            workspace=0 if workspace is None else workspace.data_ptr(), n=n, m=m, d=d, batch=batch,
            self_pairs=y is None, exclude_diagonal=exclude_diagonal, num_threads=torch.get_num_threads(),
            kernel=kernel, params=list(params), stream=_ext.stream_handle(x),
        )
    _ext.check_status(status, "pair_batched")
    return out


@pair_batched.register_fake
def _(x, y, w, v, kernel, params, exclude_diagonal):
    return x.new_empty((w.shape[0],), dtype=torch.float64)


def _check_batch_weights(t: Any, name: str, rows: int, points_name: str, like: Tensor) -> Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, {points_name}.shape[0]), got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {t.dtype}")
    if t.dim() != 2 or t.shape[1] != rows:
        raise ValueError(f"{name} must have shape (B, {rows}) (one row of weights per weighting, one weight per "
                         f"row of {points_name}), got shape {tuple(t.shape)}")
    if t.device != like.device:
        raise ValueError(f"{name} must be on {points_name}'s device {like.device}, got {t.device}")
    return t


def _fallback(x: Tensor, y: Optional[Tensor], w: Tensor, v: Tensor, spec, bandwidth: Any,
              exclude_diagonal: bool, options: dict) -> Tensor:  # -> [B] float64
    """Pure torch, float64, kernel rows in chunks (no n x m buffer beyond _FALLBACK_ROWS x m)."""
    xd = x.to(torch.float64)
    yd = xd if y is None else y.to(torch.float64)
    wd, vd = w.to(torch.float64), v.to(torch.float64)
    dim = x.shape[1]
    out = torch.zeros(w.shape[0], dtype=torch.float64, device=x.device)
    for i0 in range(0, xd.shape[0], _FALLBACK_ROWS):
        xi = xd[i0:i0 + _FALLBACK_ROWS]
        # Direct differences (not the matmul form): exact zeros at duplicates, accurate small r.
        r = torch.cdist(xi, yd, compute_mode="donot_use_mm_for_euclid_dist")
        k = spec.formula(r, bandwidth, dim, options)  # [rows, m]
        if exclude_diagonal:
            idx = torch.arange(xi.shape[0], device=x.device)
            k = k.clone()
            k[idx, idx + i0] = 0.0
        out += ((wd[:, i0:i0 + _FALLBACK_ROWS] @ k) * vd).sum(dim=1)
    return out


def self_row_sums(
    z: Tensor,  # [N, D], float32 / float64, contiguous
    kernel: str,
    bandwidth: Any,
    exclude_diagonal: bool,
    **kernel_options: Any,
) -> Tensor:    # [N] float64
    """Row sums r_i = sum_j k(z_i, z_j) of the self pairs (j != i with exclude_diagonal), in float64:
    the engine's VALUE mode (ops.pair_rows) where it runs, else chunked pure torch."""
    spec = get_kernel(kernel)
    params = _engine_params(spec, bandwidth, z.shape[1], kernel_options)
    if _ext.use_compiled(z.device):
        return torch.ops.latentdiv.pair_rows(z, None, None, spec.kernel_id, list(params), exclude_diagonal)
    zd = z.to(torch.float64)
    rows = []
    for i0 in range(0, zd.shape[0], _FALLBACK_ROWS):
        zi = zd[i0:i0 + _FALLBACK_ROWS]
        k = spec.formula(torch.cdist(zi, zd, compute_mode="donot_use_mm_for_euclid_dist"), bandwidth, z.shape[1],
                         kernel_options)
        if exclude_diagonal:
            idx = torch.arange(zi.shape[0], device=z.device)
            k = k.clone()
            k[idx, idx + i0] = 0.0
        rows.append(k.sum(dim=1))
    return torch.cat(rows)


def batched_pairwise_sum(
    x: Tensor,                      # [n, D]
    y: Optional[Tensor] = None,     # [m, D]; None: y is x
    *,
    weights_x: Tensor,              # [B, n]
    weights_y: Optional[Tensor] = None,  # [B, m]; None: weights_x (y is x only)
    kernel: str = "gaussian",
    bandwidth: Any = 1.0,
    exclude_diagonal: bool = False,
    **kernel_options: Any,
) -> Tensor:                        # [B] float64
    r"""B weighted sums over the same pairs in one pass:
    :math:`\mathrm{out}_b = \sum_{ij} W_{bi} k(x_i, y_j) V_{bj}` (``W = weights_x``, ``V = weights_y``).

    Kernels and ``bandwidth`` as :func:`latentdiv.pairwise_sum`; ``y=None`` means y is x (then
    ``exclude_diagonal=True`` drops the i = j terms, and ``weights_y=None`` means ``weights_x`` on both
    sides). Weights may be any finite numbers (signed weightings are fine). Returns float64 [B]
    whatever the input dtype (the engine computes in float64). Values only (no gradient).
    Cost O(n m (D + B)), memory O((n + m) D + m B).
    """
    spec = get_kernel(kernel)
    check_points(x, "x")
    check_bool(exclude_diagonal, "exclude_diagonal")
    if y is not None:
        check_points(y, "y")
        check_pair(x, y)
        if exclude_diagonal:
            raise ValueError("exclude_diagonal=True needs y=None (the diagonal i = j exists only for self pairs)")
    other = x if y is None else y
    _check_batch_weights(weights_x, "weights_x", x.shape[0], "x", x)
    if weights_y is None:
        if y is not None:
            raise ValueError("weights_y is required when y is given (weights_y=None means weights_x, for y=None)")
        weights_y = weights_x
    _check_batch_weights(weights_y, "weights_y", other.shape[0], "y" if y is not None else "x", x)
    if weights_y.shape[0] != weights_x.shape[0]:
        raise ValueError(f"weights_x and weights_y must have the same number of weightings B, got "
                         f"{weights_x.shape[0]} and {weights_y.shape[0]}")
    params = _engine_params(spec, bandwidth, x.shape[1], kernel_options)
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    xc = x.detach().to(work).contiguous()
    yc = None if y is None else y.detach().to(work).contiguous()
    wc = weights_x.detach().to(work).contiguous()
    vc = weights_y.detach().to(work).contiguous()
    if _ext.use_compiled(x.device):
        return pair_batched(xc, yc, wc, vc, spec.kernel_id, list(params), exclude_diagonal)
    return _fallback(xc, yc, wc, vc, spec, bandwidth, exclude_diagonal, kernel_options)
