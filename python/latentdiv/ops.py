"""The engine as torch custom ops (``torch.ops.latentdiv.*``).

Each op is opaque to ``torch.compile`` (it runs as-is inside compiled graphs), has a fake
implementation for shape propagation, and an autograd formula that calls other ops of the engine:
no n x n tensor exists in the forward or the backward. Inputs reaching these ops are already
validated by the public layer (``pairwise.py``): contiguous, same device, float32 or float64.

Gradients (notation of DESIGN.md section 2; VALUE = row sums, GRAD = sum_j w_j 2 f'(r2_ij)(x_i - y_j)):
  S = sum_ij wx_i wy_j f(r2_ij)
  dS/dx_i = wx_i GRAD(x, y, wy)_i          dS/dy_j = wy_j GRAD(y, x, wx)_j
  dS/dwx_i = VALUE(x, y, wy)_i             dS/dwy_j = VALUE(y, x, wx)_j
  self terms (y is x, one weight vector w): dS/dx_i = 2 w_i GRAD(x, x, w)_i, dS/dw_i = 2 VALUE(x, x, w)_i

Two CPU-schedule shortcuts (other devices take the general path with the same results):
  - ``pair_sum`` of self pairs runs the engine's TOTAL mode, which visits only j >= i (f is symmetric);
  - ``pair_sum_with_grad`` (used by ``pairwise_sum`` when x needs a gradient) computes VALUE(x, .) and
    GRAD(x, .) in one VALUE_GRAD pass and keeps them for the backward: a self sum then needs no engine
    pass in the backward, a cross sum only the y side.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from . import _ext


def _ptr(t: Optional[Tensor]) -> int:
    return 0 if t is None else t.data_ptr()


def _launch_pair(
    mode: int,
    x: Tensor,              # [n, D]
    y: Optional[Tensor],    # [m, D] or None (self pairs)
    wx: Optional[Tensor],   # [n] or None
    wy: Optional[Tensor],   # [m] or None
    kernel: int,
    params: List[float],
    exclude_diagonal: bool,
    out_rows: Optional[Tensor] = None,   # [n] float64
    out_total: Optional[Tensor] = None,  # [] float64
    out_grad: Optional[Tensor] = None,   # [n, D], x.dtype
) -> None:
    if _ext._C is None:
        raise RuntimeError("latentdiv custom ops need the compiled engine latentdiv._C")
    self_pairs = y is None
    other = x if self_pairs else y
    n, d = x.shape
    m = other.shape[0]
    workspace = None
    if x.device.type == "cuda":
        # Per-block partial totals (VALUE); allocated by torch's caching allocator on the current stream,
        # so it is not reused before our kernels on that stream are done with it.
        nbytes = int(_ext._C.pair_reduce_cuda_workspace_bytes(n, m, d, mode))
        workspace = torch.empty(max(nbytes, 1), dtype=torch.uint8, device=x.device)
    with _ext.device_guard(x):
        status = _ext._C.pair_reduce(
            device=_ext.device_code(x), isa=_ext.isa_code(), mode=mode, dtype=_ext.dtype_code(x),
            x=x.data_ptr(), y=other.data_ptr(), wx=_ptr(wx), wy=_ptr(wy),
            out_rows=_ptr(out_rows), out_total=_ptr(out_total), out_grad=_ptr(out_grad), workspace=_ptr(workspace),
            n=n, m=m, d=d, self_pairs=self_pairs, exclude_diagonal=exclude_diagonal,
            num_threads=torch.get_num_threads(), kernel=kernel, params=list(params),
            stream=_ext.stream_handle(x),
        )
    _ext.check_status(status, "pair_reduce")


# ---------------------------------------------------------------------------------------------------
# pair_sum: the scalar sum_ij wx_i wy_j f(r2_ij), in float64
# ---------------------------------------------------------------------------------------------------
@torch.library.custom_op("latentdiv::pair_sum", mutates_args=())
def pair_sum(
    x: Tensor,              # [n, D]
    y: Optional[Tensor],    # [m, D]; None: y is x (self pairs)
    wx: Optional[Tensor],   # [n] or None (ones); also the y-side weights when y is None
    wy: Optional[Tensor],   # [m] or None (ones); must be None when y is None
    kernel: int,
    params: List[float],
    exclude_diagonal: bool,
) -> Tensor:                # [] float64
    n = x.shape[0]
    total = torch.empty((), dtype=torch.float64, device=x.device)
    if y is None and x.device.type == "cpu":
        # Only the total is needed: the CPU TOTAL mode sums the upper triangle of the symmetric f (half the pairs).
        _launch_pair(_ext.MODE_TOTAL, x, y, wx, wx, kernel, params, exclude_diagonal, out_total=total)
        return total
    rows = torch.empty(n, dtype=torch.float64, device=x.device)
    _launch_pair(_ext.MODE_VALUE, x, y, wx, wx if y is None else wy, kernel, params, exclude_diagonal,
                 out_rows=rows, out_total=total)
    return total


@pair_sum.register_fake
def _(x, y, wx, wy, kernel, params, exclude_diagonal):
    return x.new_empty((), dtype=torch.float64)


# ---------------------------------------------------------------------------------------------------
# pair_rows: VALUE mode, rows_i = sum_j wy_j f(r2_ij), float64 [n]
# ---------------------------------------------------------------------------------------------------
@torch.library.custom_op("latentdiv::pair_rows", mutates_args=())
def pair_rows(
    x: Tensor,              # [n, D]
    y: Optional[Tensor],    # [m, D] or None (self pairs)
    wy: Optional[Tensor],   # [m] or None
    kernel: int,
    params: List[float],
    exclude_diagonal: bool,
) -> Tensor:                # [n] float64
    rows = torch.empty(x.shape[0], dtype=torch.float64, device=x.device)
    total = torch.empty((), dtype=torch.float64, device=x.device)
    _launch_pair(_ext.MODE_VALUE, x, y, None, wy, kernel, params, exclude_diagonal, out_rows=rows, out_total=total)
    return rows


@pair_rows.register_fake
def _(x, y, wy, kernel, params, exclude_diagonal):
    return x.new_empty((x.shape[0],), dtype=torch.float64)


# ---------------------------------------------------------------------------------------------------
# pair_grad: GRAD mode, out_i = sum_j wy_j 2 f'(r2_ij) (x_i - y_j), x.dtype [n, D]
# ---------------------------------------------------------------------------------------------------
@torch.library.custom_op("latentdiv::pair_grad", mutates_args=())
def pair_grad(
    x: Tensor,              # [n, D]
    y: Optional[Tensor],    # [m, D] or None (self pairs)
    wy: Optional[Tensor],   # [m] or None
    kernel: int,
    params: List[float],
    exclude_diagonal: bool,
) -> Tensor:                # [n, D]
    out = torch.empty_like(x)
    # The diagonal contributes x_i - x_i = 0 to GRAD whatever the slope, so exclude_diagonal is moot
    # here; it is passed through for a uniform signature.
    _launch_pair(_ext.MODE_GRAD, x, y, None, wy, kernel, params, exclude_diagonal, out_grad=out)
    return out


@pair_grad.register_fake
def _(x, y, wy, kernel, params, exclude_diagonal):
    return torch.empty_like(x)


def _pair_sum_setup(ctx, inputs, output):
    x, y, wx, wy, kernel, params, exclude_diagonal = inputs
    ctx.save_for_backward(x, y, wx, wy)
    ctx.kernel, ctx.params, ctx.exclude_diagonal = kernel, params, exclude_diagonal


def _pair_sum_backward(ctx, grad):  # grad: [] float64
    x, y, wx, wy = ctx.saved_tensors
    k, p, excl = ctx.kernel, ctx.params, ctx.exclude_diagonal
    need = ctx.needs_input_grad
    gx = gy = gwx = gwy = None
    if y is None:
        if need[0]:
            g = pair_grad(x, None, wx, k, p, excl) * (2.0 * grad).to(x.dtype)
            gx = g if wx is None else g * wx.unsqueeze(1)
        if wx is not None and need[2]:
            gwx = (pair_rows(x, None, wx, k, p, excl) * (2.0 * grad)).to(wx.dtype)
    else:
        if need[0]:
            g = pair_grad(x, y, wy, k, p, False) * grad.to(x.dtype)
            gx = g if wx is None else g * wx.unsqueeze(1)
        if need[1]:
            g = pair_grad(y, x, wx, k, p, False) * grad.to(y.dtype)
            gy = g if wy is None else g * wy.unsqueeze(1)
        if wx is not None and need[2]:
            gwx = (pair_rows(x, y, wy, k, p, False) * grad).to(wx.dtype)
        if wy is not None and need[3]:
            gwy = (pair_rows(y, x, wx, k, p, False) * grad).to(wy.dtype)
    return gx, gy, gwx, gwy, None, None, None


pair_sum.register_autograd(_pair_sum_backward, setup_context=_pair_sum_setup)


# ---------------------------------------------------------------------------------------------------
# pair_sum_with_grad: pair_sum plus, in the same pass, the x side of its gradient
# ---------------------------------------------------------------------------------------------------
@torch.library.custom_op("latentdiv::pair_sum_with_grad", mutates_args=())
def pair_sum_with_grad(
    x: Tensor,              # [n, D]
    y: Optional[Tensor],    # [m, D]; None: y is x (self pairs)
    wx: Optional[Tensor],   # [n] or None (ones); also the y-side weights when y is None
    wy: Optional[Tensor],   # [m] or None (ones); must be None when y is None
    kernel: int,
    params: List[float],
    exclude_diagonal: bool,
) -> Tuple[Tensor, Tensor, Tensor]:  # total [] float64, rows [n] float64, grad [n, D] x.dtype
    """The value of ``pair_sum`` and the saved pieces of its x-side gradient: rows = VALUE(x, y, wy)
    and grad = GRAD(x, y, wy) (y, wy = x, wx for self pairs). Only the total is differentiable; rows
    and grad are what its backward consumes."""
    n = x.shape[0]
    total = torch.empty((), dtype=torch.float64, device=x.device)
    rows = torch.empty(n, dtype=torch.float64, device=x.device)
    grad = torch.empty_like(x)
    w_other = wx if y is None else wy
    if x.device.type == "cpu":
        _launch_pair(_ext.MODE_VALUE_GRAD, x, y, wx, w_other, kernel, params, exclude_diagonal,
                     out_rows=rows, out_total=total, out_grad=grad)
    else:
        # The fused mode is CPU-only (csrc common.h): two passes, same outputs.
        _launch_pair(_ext.MODE_VALUE, x, y, wx, w_other, kernel, params, exclude_diagonal,
                     out_rows=rows, out_total=total)
        _launch_pair(_ext.MODE_GRAD, x, y, None, w_other, kernel, params, exclude_diagonal, out_grad=grad)
    return total, rows, grad


@pair_sum_with_grad.register_fake
def _(x, y, wx, wy, kernel, params, exclude_diagonal):
    return (x.new_empty((), dtype=torch.float64), x.new_empty((x.shape[0],), dtype=torch.float64),
            torch.empty_like(x))


def _pair_sum_with_grad_setup(ctx, inputs, output):
    x, y, wx, wy, kernel, params, exclude_diagonal = inputs
    _, rows, grad = output
    ctx.mark_non_differentiable(rows, grad)
    ctx.save_for_backward(x, y, wx, wy, rows, grad)
    ctx.kernel, ctx.params, ctx.exclude_diagonal = kernel, params, exclude_diagonal


def _pair_sum_with_grad_backward(ctx, grad, _grad_rows, _grad_grad):  # grad: [] float64
    x, y, wx, wy, rows, gsaved = ctx.saved_tensors
    k, p = ctx.kernel, ctx.params
    need = ctx.needs_input_grad
    gx = gy = gwx = gwy = None
    scale = 2.0 * grad if y is None else grad  # a self sum counts each ordered pair from both ends
    if need[0]:
        g = gsaved * scale.to(x.dtype)
        gx = g if wx is None else g * wx.unsqueeze(1)
    if wx is not None and need[2]:
        gwx = (rows * scale).to(wx.dtype)
    if y is not None and (need[1] or (wy is not None and need[3])):
        if need[1] and wy is not None and need[3]:
            # One pass for both y-side pieces (the fused op on the CPU; two passes elsewhere).
            _, rows_y, grad_y = pair_sum_with_grad(y, x, wy, wx, k, p, False)
            gy = grad_y * grad.to(y.dtype) * wy.unsqueeze(1)
            gwy = (rows_y * grad).to(wy.dtype)
        elif need[1]:
            g = pair_grad(y, x, wx, k, p, False) * grad.to(y.dtype)
            gy = g if wy is None else g * wy.unsqueeze(1)
        else:
            gwy = (pair_rows(y, x, wx, k, p, False) * grad).to(wy.dtype)
    return gx, gy, gwx, gwy, None, None, None


pair_sum_with_grad.register_autograd(_pair_sum_with_grad_backward, setup_context=_pair_sum_with_grad_setup)


# ---------------------------------------------------------------------------------------------------
# pdist: condensed distances (torch.pdist order) and its backward
# ---------------------------------------------------------------------------------------------------
def _launch_pdist(x: Tensor, out: Tensor, grad_out: Optional[Tensor] = None, dist: Optional[Tensor] = None) -> None:
    if _ext._C is None:
        raise RuntimeError("latentdiv custom ops need the compiled engine latentdiv._C")
    n, d = x.shape
    common = dict(device=_ext.device_code(x), isa=_ext.isa_code(), dtype=_ext.dtype_code(x), x=x.data_ptr(),
                  out=out.data_ptr(), n=n, d=d, num_threads=torch.get_num_threads(), stream=_ext.stream_handle(x))
    with _ext.device_guard(x):
        if grad_out is None:
            status = _ext._C.pdist(**common)
        else:
            status = _ext._C.pdist_backward(grad_out=grad_out.data_ptr(), dist=dist.data_ptr(), **common)
    _ext.check_status(status, "pdist")


@torch.library.custom_op("latentdiv::pdist", mutates_args=())
def pdist(x: Tensor) -> Tensor:  # [n, D] -> [n (n - 1) / 2]
    n = x.shape[0]
    out = x.new_empty((n * (n - 1) // 2,))
    if out.numel() > 0:
        _launch_pdist(x, out)
    return out


@pdist.register_fake
def _(x):
    n = x.shape[0]
    return x.new_empty((n * (n - 1) // 2,))


@torch.library.custom_op("latentdiv::pdist_backward", mutates_args=())
def pdist_backward(
    grad: Tensor,  # [n (n - 1) / 2]
    x: Tensor,     # [n, D]
    dist: Tensor,  # [n (n - 1) / 2], the forward's output
) -> Tensor:       # [n, D]
    out = torch.zeros_like(x)
    if grad.numel() > 0:
        _launch_pdist(x, out, grad_out=grad.contiguous(), dist=dist)
    return out


@pdist_backward.register_fake
def _(grad, x, dist):
    return torch.empty_like(x)


def _pdist_setup(ctx, inputs, output):
    (x,) = inputs
    ctx.save_for_backward(x, output)


def _pdist_grad(ctx, grad):
    x, dist = ctx.saved_tensors
    return pdist_backward(grad, x, dist)


pdist.register_autograd(_pdist_grad, setup_context=_pdist_setup)
