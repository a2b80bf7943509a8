"""The engine as torch custom ops (``torch.ops.latentdiv.*``).

Each op is opaque to ``torch.compile`` (it runs as-is inside compiled graphs), has a fake
implementation for shape propagation, and an autograd formula that calls other ops of the engine:
no n x n tensor exists in the forward or the backward. Inputs reaching these ops are already
validated by the public layer (``pairwise.py``): contiguous, same device, float32 or float64.

Gradients (notation of docs/formulas.md section 11; VALUE = row sums, GRAD = sum_j w_j 2 f'(r2_ij)(x_i - y_j)):
  S = sum_ij wx_i wy_j f(r2_ij)
  dS/dx_i = wx_i GRAD(x, y, wy)_i          dS/dy_j = wy_j GRAD(y, x, wx)_j
  dS/dwx_i = VALUE(x, y, wy)_i             dS/dwy_j = VALUE(y, x, wx)_j
  self terms (y is x, one weight vector w): dS/dx_i = 2 w_i GRAD(x, x, w)_i, dS/dw_i = 2 VALUE(x, x, w)_i

Two engine modes beyond VALUE and GRAD, on every device (the engine decides how to run them: the CPU
schedule in one pass, the CUDA schedule lowers them to VALUE / GRAD launches, csrc/cuda/schedule.h):
  - ``pair_sum`` of self pairs runs the TOTAL mode (the CPU visits only j >= i: f is symmetric);
  - ``pair_sum_with_grad`` (used by ``pairwise_sum`` when x needs a gradient) computes VALUE(x, .) and
    GRAD(x, .) in one VALUE_GRAD call and keeps them for the backward: a self sum then needs no engine
    pass in the backward, a cross sum only the y side.

Second order (create_graph=True, Hessian-vector products, torch.func): every backward formula calls
differentiable ops; the derivatives of GRAD use the HESS_VEC pass (``pair_hess_vec``). See the
"Autograd" section at the end of this file and docs/second_order.md.
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
    vx: Optional[Tensor] = None,         # HESS_VEC: [n, D], x.dtype
    vy: Optional[Tensor] = None,         # HESS_VEC: [m, D], x.dtype
) -> None:
    if _ext._C is None:
        raise RuntimeError("latentdiv custom ops need the compiled engine latentdiv._C")
    self_pairs = y is None
    other = x if self_pairs else y
    n, d = x.shape
    m = other.shape[0]
    device = _ext.device_code(x)
    workspace = None
    nbytes = int(_ext._C.pair_reduce_workspace_bytes(device=device, n=n, m=m, d=d, mode=mode))
    if nbytes > 0:
        # The CUDA schedule's per-block partial totals; allocated by torch's caching allocator on the
        # current stream, so it is not reused before our kernels on that stream are done with it.
        workspace = torch.empty(nbytes, dtype=torch.uint8, device=x.device)
    with _ext.device_guard(x):
        status = _ext._C.pair_reduce(
            device=device, isa=_ext.isa_code(), mode=mode, dtype=_ext.dtype_code(x),
            x=x.data_ptr(), y=other.data_ptr(), wx=_ptr(wx), wy=_ptr(wy),
            out_rows=_ptr(out_rows), out_total=_ptr(out_total), out_grad=_ptr(out_grad), workspace=_ptr(workspace),
            n=n, m=m, d=d, self_pairs=self_pairs, exclude_diagonal=exclude_diagonal,
            num_threads=torch.get_num_threads(), kernel=kernel, params=list(params),
            stream=_ext.stream_handle(x), vx=_ptr(vx), vy=_ptr(vy),
        )
    _ext.check_status(status, "pair_reduce")


_OP_BODIES: dict = {}  # custom op -> its Python body (_engine_op)


def _engine_op(body):
    """``torch.library.custom_op("latentdiv::<name>")`` of ``body``, with the body kept for ``_run_op``."""
    op = torch.library.custom_op(f"latentdiv::{body.__name__}", mutates_args=())(body)
    _OP_BODIES[op] = body
    return op


def _run_op(op, *args):
    """What the autograd.Functions' forwards run: in plain eager mode the op's body itself, else the op.
    The op's dispatch (torch.library.custom_op) adds 5-15 us a call, and its first call in a process
    imports torch._dynamo (1-2 s: most of a short `latentdiv check`); the body computes the same thing.
    Under a torch.func transform or a dispatch mode the op is called, so that they see it."""
    return _OP_BODIES[op](*args) if _ext.plain_eager(*args) else op(*args)


# ---------------------------------------------------------------------------------------------------
# pair_sum: the scalar sum_ij wx_i wy_j f(r2_ij), in float64
# ---------------------------------------------------------------------------------------------------
@_engine_op
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
    if y is None:
        # Only the total is needed: TOTAL (on the CPU the upper triangle of the symmetric f, half the pairs).
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
@_engine_op
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
@_engine_op
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


# ---------------------------------------------------------------------------------------------------
# pair_sum_with_grad: pair_sum plus, in the same pass, the x side of its gradient
# ---------------------------------------------------------------------------------------------------
@_engine_op
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
    and grad = GRAD(x, y, wy) (y, wy = x, wx for self pairs). The total's backward consumes rows and
    grad; they are differentiable outputs too, so a second backward (a gradient penalty) reaches them."""
    n = x.shape[0]
    total = torch.empty((), dtype=torch.float64, device=x.device)
    rows = torch.empty(n, dtype=torch.float64, device=x.device)
    grad = torch.empty_like(x)
    w_other = wx if y is None else wy
    _launch_pair(_ext.MODE_VALUE_GRAD, x, y, wx, w_other, kernel, params, exclude_diagonal,
                 out_rows=rows, out_total=total, out_grad=grad)
    return total, rows, grad


@pair_sum_with_grad.register_fake
def _(x, y, wx, wy, kernel, params, exclude_diagonal):
    return (x.new_empty((), dtype=torch.float64), x.new_empty((x.shape[0],), dtype=torch.float64),
            torch.empty_like(x))


# ---------------------------------------------------------------------------------------------------
# pair_hess_vec: HESS_VEC mode, the pair reduction behind every second-order gradient
# ---------------------------------------------------------------------------------------------------
@_engine_op
def pair_hess_vec(
    x: Tensor,              # [n, D]
    y: Optional[Tensor],    # [m, D] or None (self pairs)
    wx: Optional[Tensor],   # [n] or None (ones): row weights of the vy term
    wy: Optional[Tensor],   # [m] or None (ones): column weights of the vx term
    vx: Optional[Tensor],   # [n, D] or None (zeros)
    vy: Optional[Tensor],   # [m, D] or None (zeros); for self pairs the vectors of the same points
    kernel: int,
    params: List[float],
) -> Tuple[Tensor, Tensor]:  # grad [n, D] x.dtype, rows [n] float64
    """With d = x_i - y_j and the pair Hessian H_ij = 2 f' I + 4 f'' d d^T (f', f'' at |d|^2):
    grad_i = sum_j H_ij (wy_j vx_i - wx_i vy_j), rows_i = sum_j 2 f' d . vy_j (csrc common.h). Self
    pairs skip j == i."""
    grad = torch.empty_like(x)
    rows = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    c = [None if t is None else t.to(x.dtype).contiguous() for t in (wx, wy, vx, vy)]
    _launch_pair(_ext.MODE_HESS_VEC, x, y, c[0], c[1], kernel, params, False, out_rows=rows, out_grad=grad,
                 vx=c[2], vy=c[3])
    return grad, rows


@pair_hess_vec.register_fake
def _(x, y, wx, wy, vx, vy, kernel, params):
    return torch.empty_like(x), x.new_empty((x.shape[0],), dtype=torch.float64)


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


@_engine_op
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


@_engine_op
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




# ===================================================================================================
# Autograd, to second order through the ops above (docs/second_order.md)
# ===================================================================================================
# The formulas are written once against an "entry point" table E: _OPS calls the custom ops directly
# (their registered autograd, used inside torch.compile graphs and by direct torch.ops callers),
# _FNS calls the torch.autograd.Function wrappers below (eager: torch.func transforms, vmap rules,
# forward-mode AD). Every formula calls differentiable entry points, so create_graph=True gives a
# graph of engine passes (O((n + m) D) memory) that can be differentiated again. Only pair_hess_vec's
# own derivatives (third order through a kernel: they need the third derivative of f) are not
# implemented; they raise.


def _w(t: Optional[Tensor], like: Tensor) -> Optional[Tensor]:
    """A weight / cotangent vector in the engine's dtype (like's), or None."""
    return None if t is None else t.to(like.dtype).contiguous()


def _ones_or(w: Optional[Tensor], n: int, like: Tensor) -> Tensor:
    return torch.ones(n, dtype=like.dtype, device=like.device) if w is None else w


def _add(a: Optional[Tensor], b: Optional[Tensor]) -> Optional[Tensor]:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


class _Entries:
    """The differentiable entry points; ``fns`` selects the autograd.Function wrappers."""

    def __init__(self, fns: bool):
        self.fns = fns

    def sum(self, x, y, wx, wy, k, p, excl):
        return _PairSum.apply(x, y, wx, wy, k, p, excl) if self.fns else pair_sum(x, y, wx, wy, k, p, excl)

    def rows(self, x, y, wy, k, p, excl):
        return _PairRows.apply(x, y, wy, k, p, excl) if self.fns else pair_rows(x, y, wy, k, p, excl)

    def grad(self, x, y, wy, k, p, excl):
        return _PairGrad.apply(x, y, wy, k, p, excl) if self.fns else pair_grad(x, y, wy, k, p, excl)

    def hess_vec(self, x, y, wx, wy, vx, vy, k, p):
        if self.fns:
            return _PairHessVec.apply(x, y, wx, wy, vx, vy, k, p)
        return pair_hess_vec(x, y, wx, wy, vx, vy, k, p)

    def pdist_backward(self, g, x, dist):
        return _PdistBackward.apply(g, x, dist) if self.fns else pdist_backward(g, x, dist)


_OPS = _Entries(fns=False)
_FNS = _Entries(fns=True)


def _compiling() -> bool:
    # dynamo does not trace autograd.Functions with a custom jvp / vmap rule: compiled graphs call the
    # custom ops (opaque, with their registered autograd) instead.
    return torch.compiler.is_compiling()


# ---- VJP formulas (notation of the module docstring; u, V are cotangents) --------------------------
def _sum_vjp(E, x, y, wx, wy, k, p, excl, grad, need):
    """S = sum_ij wx_i wy_j f(r2_ij) (y None: y is x, wx on both sides). grad: [] float64."""
    gx = gy = gwx = gwy = None
    if grad is None:
        return gx, gy, gwx, gwy
    if y is None:
        if need[0]:
            g = E.grad(x, None, wx, k, p, excl) * (2.0 * grad).to(x.dtype)
            gx = g if wx is None else g * wx.unsqueeze(1)
        if wx is not None and need[2]:
            gwx = (E.rows(x, None, wx, k, p, excl) * (2.0 * grad)).to(wx.dtype)
    else:
        if need[0]:
            g = E.grad(x, y, wy, k, p, False) * grad.to(x.dtype)
            gx = g if wx is None else g * wx.unsqueeze(1)
        if need[1]:
            g = E.grad(y, x, wx, k, p, False) * grad.to(y.dtype)
            gy = g if wy is None else g * wy.unsqueeze(1)
        if wx is not None and need[2]:
            gwx = (E.rows(x, y, wy, k, p, False) * grad).to(wx.dtype)
        if wy is not None and need[3]:
            gwy = (E.rows(y, x, wx, k, p, False) * grad).to(wy.dtype)
    return gx, gy, gwx, gwy


def _rows_vjp(E, x, y, wy, k, p, excl, u, need):
    """rows_i = sum_j wy_j f(r2_ij) with cotangent u [n]: (gx, gy, gwy)."""
    gx = gy = gwy = None
    if u is None:
        return gx, gy, gwy
    uw = _w(u, x)
    if y is None:  # d/dx_k = u_k GRAD(x, x, w)_k + w_k GRAD(x, x, u)_k;  d/dw_k = VALUE(x, x, u)_k
        if need[0]:
            gx = uw.unsqueeze(1) * E.grad(x, None, wy, k, p, excl)
            gx = gx + _ones_or(wy, x.shape[0], x).unsqueeze(1) * E.grad(x, None, uw, k, p, excl)
        if wy is not None and need[2]:
            gwy = E.rows(x, None, uw, k, p, excl).to(wy.dtype)
    else:
        if need[0]:
            gx = uw.unsqueeze(1) * E.grad(x, y, wy, k, p, False)
        if need[1]:
            g = E.grad(y, x, uw, k, p, False)
            gy = g if wy is None else g * wy.unsqueeze(1)
        if wy is not None and need[2]:
            gwy = E.rows(y, x, uw, k, p, False).to(wy.dtype)
    return gx, gy, gwy


def _grad_vjp(E, x, y, wy, k, p, V, need):
    """G_i = sum_j wy_j 2 f'(r2_ij)(x_i - y_j) with cotangent V [n, D]: (gx, gy, gwy), by HESS_VEC."""
    gx = gy = gwy = None
    if V is None:
        return gx, gy, gwy
    Vc = V.to(x.dtype).contiguous()
    want_w = wy is not None and need[2]
    if y is None:  # d/dx_k = sum_j H_kj (w_j V_k - w_k V_j);  d/dw_k = -sum_i 2 f'(r2_ki) (x_k - x_i) . V_i
        if need[0] or want_w:
            g, r = E.hess_vec(x, None, wy, wy, Vc, Vc, k, p)
            gx = g if need[0] else None
            gwy = (-r).to(wy.dtype) if want_w else None
    else:
        if need[0]:
            gx, _ = E.hess_vec(x, y, None, wy, Vc, None, k, p)
        if need[1] or want_w:  # rows = y: d/dy_j = -wy_j sum_i H_ji V_i, d/dwy_j = -sum_i 2 f' (y_j - x_i) . V_i
            g, r = E.hess_vec(y, x, wy, None, None, Vc, k, p)
            gy = g if need[1] else None
            gwy = (-r).to(wy.dtype) if want_w else None
    return gx, gy, gwy


def _sum_with_grad_vjp(E, x, y, wx, wy, rows, gsaved, k, p, excl, g_total, g_rows, g_grad, need):
    """pair_sum_with_grad: the total's gradient uses the saved rows / grad, which are outputs of the
    same node, so a second backward reaches them through g_rows / g_grad; rows and grad themselves are
    VALUE / GRAD of (x, y, w_other)."""
    gx = gy = gwx = gwy = None
    w_other = wx if y is None else wy
    if g_total is not None:
        scale = 2.0 * g_total if y is None else g_total  # a self sum counts each ordered pair from both ends
        if need[0]:
            g = gsaved * scale.to(x.dtype)
            gx = g if wx is None else g * wx.unsqueeze(1)
        if wx is not None and need[2]:
            gwx = (rows * scale).to(wx.dtype)
        if y is not None and (need[1] or (wy is not None and need[3])):
            if need[1] and wy is not None and need[3] and not torch.is_grad_enabled():
                # One engine call for both y-side pieces (VALUE_GRAD). Only
                # when no graph is being built: its saved pieces are not differentiable from here.
                _, rows_y, grad_y = pair_sum_with_grad(y, x, wy, wx, k, p, False)
                gy = grad_y * g_total.to(y.dtype) * wy.unsqueeze(1)
                gwy = (rows_y * g_total).to(wy.dtype)
            else:
                if need[1]:
                    g = E.grad(y, x, wx, k, p, False) * g_total.to(y.dtype)
                    gy = g if wy is None else g * wy.unsqueeze(1)
                if wy is not None and need[3]:
                    gwy = (E.rows(y, x, wx, k, p, False) * g_total).to(wy.dtype)
    # The saved pieces' own cotangents (second order: d/dx of a gradient penalty lands here).
    w_need = need[2] if y is None else need[3]
    ax, ay, aw = _rows_vjp(E, x, y, w_other, k, p, excl, g_rows, (need[0], need[1], w_need))
    bx, by, bw = _grad_vjp(E, x, y, w_other, k, p, g_grad, (need[0], need[1], w_need))
    gx, gy = _add(_add(gx, ax), bx), _add(_add(gy, ay), by)
    if y is None:
        gwx = _add(_add(gwx, aw), bw)
    else:
        gwy = _add(_add(gwy, aw), bw)
    return gx, gy, gwx, gwy


_THIRD_ORDER = ("latentdiv: the derivative of pair_hess_vec (a third-order derivative through a pair kernel, "
                "which needs the kernel's third derivative) is not implemented; gradients of engine-backed "
                "losses are supported up to second order (create_graph=True once, Hessian-vector products)")


# ---- pdist ---------------------------------------------------------------------------------------
def _pair_dot_over_dist(x: Tensor, V: Tensor, dist: Tensor) -> Tensor:  # [n, D], [n, D], [P] -> [P]
    """(x_i - x_j) . (V_i - V_j) / |x_i - x_j| per condensed pair (0 where the distance is 0), from
    direct differences in chunks of pairs (memory O(chunk D) beyond the [P] result). Plain torch ops:
    differentiable to any order."""
    n = x.shape[0]
    iu = torch.triu_indices(n, n, 1, device=x.device)  # [2, P], the condensed order
    chunk = max(1, (1 << 22) // max(1, x.shape[1]))
    parts = []
    for c0 in range(0, iu.shape[1], chunk):
        i, j = iu[0, c0:c0 + chunk], iu[1, c0:c0 + chunk]
        parts.append(((x[i] - x[j]) * (V[i] - V[j])).sum(1))
    dots = torch.cat(parts) if parts else dist.new_zeros((0,))
    pos = dist > 0
    return torch.where(pos, dots / torch.where(pos, dist, torch.ones_like(dist)), torch.zeros_like(dots))


def _pdist_backward_vjp(E, g, x, dist, V, need):
    """out_i = sum_j g_ij (x_i - x_j) / dist_ij with cotangent V [n, D]: (gg, gx, gdist)."""
    gg = gx = gdist = None
    if V is None:
        return gg, gx, gdist
    Vc = V.to(x.dtype).contiguous()
    dots = _pair_dot_over_dist(x, Vc, dist) if (need[0] or need[2]) else None
    if need[0]:
        gg = dots
    if need[1]:
        gx = E.pdist_backward(g, Vc, dist)
    if need[2]:
        pos = dist > 0
        gdist = torch.where(pos, -g * dots / torch.where(pos, dist, torch.ones_like(dist)), torch.zeros_like(dots))
    return gg, gx, gdist


# ---- registered autograd of the custom ops (the _OPS table) ----------------------------------------
def _split(inputs):
    tensors = [t for t in inputs if isinstance(t, Tensor) or t is None]
    statics = [v for v in inputs if not (isinstance(v, Tensor) or v is None)]
    return tensors, statics


def _op_setup(ctx, inputs, output):
    tensors, ctx.statics = _split(inputs)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(*tensors)


def _op_sum_backward(ctx, grad):
    x, y, wx, wy = ctx.saved_tensors
    k, p, excl = ctx.statics
    return (*_sum_vjp(_OPS, x, y, wx, wy, k, p, excl, grad, ctx.needs_input_grad), None, None, None)


def _op_rows_backward(ctx, u):
    x, y, wy = ctx.saved_tensors
    k, p, excl = ctx.statics
    return (*_rows_vjp(_OPS, x, y, wy, k, p, excl, u, ctx.needs_input_grad), None, None, None)


def _op_grad_backward(ctx, V):
    x, y, wy = ctx.saved_tensors
    k, p, _ = ctx.statics
    return (*_grad_vjp(_OPS, x, y, wy, k, p, V, ctx.needs_input_grad), None, None, None)


def _op_swg_setup(ctx, inputs, output):
    x, y, wx, wy, k, p, excl = inputs
    _, rows, grad = output
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(x, y, wx, wy, rows, grad)
    ctx.statics = [k, p, excl]


def _op_swg_backward(ctx, g_total, g_rows, g_grad):
    x, y, wx, wy, rows, gsaved = ctx.saved_tensors
    k, p, excl = ctx.statics
    return (*_sum_with_grad_vjp(_OPS, x, y, wx, wy, rows, gsaved, k, p, excl, g_total, g_rows, g_grad,
                                ctx.needs_input_grad), None, None, None)


def _op_hess_vec_setup(ctx, inputs, output):
    pass


def _op_hess_vec_backward(ctx, g_grad, g_rows):
    raise RuntimeError(_THIRD_ORDER)


def _op_pdist_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], output)


def _op_pdist_backward(ctx, grad):
    x, dist = ctx.saved_tensors
    return pdist_backward(grad, x, dist)


def _op_pdist_bw_setup(ctx, inputs, output):
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(*inputs)


def _op_pdist_bw_backward(ctx, V):
    g, x, dist = ctx.saved_tensors
    return _pdist_backward_vjp(_OPS, g, x, dist, V, ctx.needs_input_grad)


pair_sum.register_autograd(_op_sum_backward, setup_context=_op_setup)
pair_rows.register_autograd(_op_rows_backward, setup_context=_op_setup)
pair_grad.register_autograd(_op_grad_backward, setup_context=_op_setup)
pair_sum_with_grad.register_autograd(_op_swg_backward, setup_context=_op_swg_setup)
pair_hess_vec.register_autograd(_op_hess_vec_backward, setup_context=_op_hess_vec_setup)
pdist.register_autograd(_op_pdist_backward, setup_context=_op_pdist_setup)
pdist_backward.register_autograd(_op_pdist_bw_backward, setup_context=_op_pdist_bw_setup)


# ---- forward-mode (JVP) formulas, for torch.func.jvp / jacfwd / hessian -----------------------------
def _weighted(t: Optional[Tensor], w: Optional[Tensor]) -> Optional[Tensor]:  # [m, D] * [m]
    if t is None or w is None:
        return t
    return t * w.unsqueeze(1).to(t.dtype)


def _grad_jvp(x, y, wy, k, p, tx, ty, twy):
    """dG_i = sum_j H_ij (wy_j tx_i - wy_j ty_j) + GRAD(x, y, twy)_i (self pairs: ty = tx)."""
    out = None
    if y is None:
        ty = tx
    if tx is not None or ty is not None:
        out, _ = _FNS.hess_vec(x, y, None, wy, tx, _weighted(ty, wy), k, p)
    if twy is not None:
        out = _add(out, _FNS.grad(x, y, _w(twy, x), k, p, False))
    return out if out is not None else torch.zeros_like(x)


def _rows_jvp(x, y, wy, k, p, excl, tx, ty, twy):
    """d rows_i = tx_i . GRAD(x, y, wy)_i - sum_j wy_j 2 f' d . ty_j + VALUE(x, y, twy)_i."""
    out = None
    if y is None:
        ty = tx
    if tx is not None:
        out = (tx * _FNS.grad(x, y, wy, k, p, excl)).sum(1).to(torch.float64)
    if ty is not None:
        _, r = _FNS.hess_vec(x, y, None, None, None, _weighted(ty, wy), k, p)
        out = _add(out, -r)
    if twy is not None:
        out = _add(out, _FNS.rows(x, y, _w(twy, x), k, p, excl))
    return out if out is not None else torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)


def _sum_jvp(x, y, wx, wy, k, p, excl, tx, ty, twx, twy):
    out = torch.zeros((), dtype=torch.float64, device=x.device)
    if y is None:  # S = sum_ij w_i w_j f: dS = 2 sum_i w_i G_i . t_i + 2 sum_i tw_i VALUE_i
        if tx is not None:
            g = _FNS.grad(x, None, wx, k, p, excl)
            out = out + 2.0 * ((g * tx).sum(1) * _ones_or(wx, x.shape[0], x)).sum().to(torch.float64)
        if twx is not None:
            out = out + 2.0 * (_FNS.rows(x, None, wx, k, p, excl) * twx.to(torch.float64)).sum()
        return out
    if tx is not None:
        g = _FNS.grad(x, y, wy, k, p, False)
        out = out + ((g * tx).sum(1) * _ones_or(wx, x.shape[0], x)).sum().to(torch.float64)
    if ty is not None:
        g = _FNS.grad(y, x, wx, k, p, False)
        out = out + ((g * ty).sum(1) * _ones_or(wy, y.shape[0], y)).sum().to(torch.float64)
    if twx is not None:
        out = out + (_FNS.rows(x, y, wy, k, p, False) * twx.to(torch.float64)).sum()
    if twy is not None:
        out = out + (_FNS.rows(y, x, wx, k, p, False) * twy.to(torch.float64)).sum()
    return out


# ---- vmap rules: one engine call per batch element ---------------------------------------------------
def _vmap_loop(apply, info, in_dims, args):
    """The batching rule of an op without a batch dimension: slice the batched arguments, launch the
    engine once per element (the work a batched launch would do; nothing is materialized across the
    batch but the results), stack the results."""
    outs = []
    for b in range(info.batch_size):
        sl = [a.select(d, b).contiguous() if (isinstance(a, Tensor) and d is not None) else a
              for a, d in zip(args, in_dims)]
        outs.append(apply(*sl))
    if isinstance(outs[0], tuple):
        return tuple(torch.stack(o) for o in zip(*outs)), tuple(0 for _ in outs[0])
    return torch.stack(outs), 0


# ---- the autograd.Function wrappers (the _FNS table) -------------------------------------------------
def _fn_setup(ctx, inputs):
    tensors, ctx.statics = _split(inputs)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(*tensors)
    ctx.save_for_forward(*tensors)


class _PairSum(torch.autograd.Function):
    @staticmethod
    def forward(x, y, wx, wy, kernel, params, exclude_diagonal):
        return _run_op(pair_sum, x, y, wx, wy, kernel, params, exclude_diagonal)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _fn_setup(ctx, inputs)

    @staticmethod
    def backward(ctx, grad):
        x, y, wx, wy = ctx.saved_tensors
        k, p, excl = ctx.statics
        return (*_sum_vjp(_FNS, x, y, wx, wy, k, p, excl, grad, ctx.needs_input_grad), None, None, None)

    @staticmethod
    def jvp(ctx, tx, ty, twx, twy, *_):
        x, y, wx, wy = ctx.saved_tensors
        k, p, excl = ctx.statics
        return _sum_jvp(x, y, wx, wy, k, p, excl, tx, ty, twx, twy)

    @staticmethod
    def vmap(info, in_dims, *args):
        return _vmap_loop(_PairSum.apply, info, in_dims, args)


class _PairRows(torch.autograd.Function):
    @staticmethod
    def forward(x, y, wy, kernel, params, exclude_diagonal):
        return _run_op(pair_rows, x, y, wy, kernel, params, exclude_diagonal)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _fn_setup(ctx, inputs)

    @staticmethod
    def backward(ctx, u):
        x, y, wy = ctx.saved_tensors
        k, p, excl = ctx.statics
        return (*_rows_vjp(_FNS, x, y, wy, k, p, excl, u, ctx.needs_input_grad), None, None, None)

    @staticmethod
    def jvp(ctx, tx, ty, twy, *_):
        x, y, wy = ctx.saved_tensors
        k, p, excl = ctx.statics
        return _rows_jvp(x, y, wy, k, p, excl, tx, ty, twy)

    @staticmethod
    def vmap(info, in_dims, *args):
        return _vmap_loop(_PairRows.apply, info, in_dims, args)


class _PairGrad(torch.autograd.Function):
    @staticmethod
    def forward(x, y, wy, kernel, params, exclude_diagonal):
        return _run_op(pair_grad, x, y, wy, kernel, params, exclude_diagonal)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _fn_setup(ctx, inputs)

    @staticmethod
    def backward(ctx, V):
        x, y, wy = ctx.saved_tensors
        k, p, _ = ctx.statics
        return (*_grad_vjp(_FNS, x, y, wy, k, p, V, ctx.needs_input_grad), None, None, None)

    @staticmethod
    def jvp(ctx, tx, ty, twy, *_):
        x, y, wy = ctx.saved_tensors
        k, p, _ = ctx.statics
        return _grad_jvp(x, y, wy, k, p, tx, ty, twy)

    @staticmethod
    def vmap(info, in_dims, *args):
        return _vmap_loop(_PairGrad.apply, info, in_dims, args)


class _PairSumWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(x, y, wx, wy, kernel, params, exclude_diagonal):
        return _run_op(pair_sum_with_grad, x, y, wx, wy, kernel, params, exclude_diagonal)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, y, wx, wy, k, p, excl = inputs
        _, rows, grad = output
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, y, wx, wy, rows, grad)
        ctx.save_for_forward(x, y, wx, wy)
        ctx.statics = [k, p, excl]

    @staticmethod
    def backward(ctx, g_total, g_rows, g_grad):
        x, y, wx, wy, rows, gsaved = ctx.saved_tensors
        k, p, excl = ctx.statics
        return (*_sum_with_grad_vjp(_FNS, x, y, wx, wy, rows, gsaved, k, p, excl, g_total, g_rows, g_grad,
                                    ctx.needs_input_grad), None, None, None)

    @staticmethod
    def jvp(ctx, tx, ty, twx, twy, *_):
        x, y, wx, wy = ctx.saved_tensors[:4]
        k, p, excl = ctx.statics
        w_other, tw_other = (wx, twx) if y is None else (wy, twy)
        return (_sum_jvp(x, y, wx, wy, k, p, excl, tx, ty, twx, twy),
                _rows_jvp(x, y, w_other, k, p, excl, tx, ty, tw_other),
                _grad_jvp(x, y, w_other, k, p, tx, ty, tw_other))

    @staticmethod
    def vmap(info, in_dims, *args):
        return _vmap_loop(_PairSumWithGrad.apply, info, in_dims, args)


class _PairHessVec(torch.autograd.Function):
    @staticmethod
    def forward(x, y, wx, wy, vx, vy, kernel, params):
        return _run_op(pair_hess_vec, x, y, wx, wy, vx, vy, kernel, params)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(_THIRD_ORDER)

    @staticmethod
    def jvp(ctx, *tangents):
        raise RuntimeError(_THIRD_ORDER)

    @staticmethod
    def vmap(info, in_dims, *args):
        return _vmap_loop(_PairHessVec.apply, info, in_dims, args)


class _Pdist(torch.autograd.Function):
    @staticmethod
    def forward(x):
        return _run_op(pdist, x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], output)
        ctx.save_for_forward(inputs[0], output)

    @staticmethod
    def backward(ctx, grad):
        x, dist = ctx.saved_tensors
        return _PdistBackward.apply(grad.contiguous(), x, dist)

    @staticmethod
    def jvp(ctx, tx):
        x, dist = ctx.saved_tensors
        return _pair_dot_over_dist(x, tx, dist)

    @staticmethod
    def vmap(info, in_dims, x):
        return _vmap_loop(_Pdist.apply, info, in_dims, (x,))


class _PdistBackward(torch.autograd.Function):
    @staticmethod
    def forward(g, x, dist):
        return _run_op(pdist_backward, g, x, dist)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)

    @staticmethod
    def backward(ctx, V):
        g, x, dist = ctx.saved_tensors
        return _pdist_backward_vjp(_FNS, g, x, dist, V, ctx.needs_input_grad)

    @staticmethod
    def jvp(ctx, tg, tx, tdist):
        # out_i = sum_j g_ij (x_i - x_j) / d_ij:
        # d out = pdist_backward(tg - g tdist / d, x, d) + pdist_backward(g, tx, d)
        g, x, dist = ctx.saved_tensors
        out = torch.zeros_like(x)
        h = tg
        if tdist is not None:
            pos = dist > 0
            corr = torch.where(pos, g * tdist / torch.where(pos, dist, torch.ones_like(dist)), torch.zeros_like(g))
            h = -corr if h is None else h - corr
        if h is not None:
            out = out + _PdistBackward.apply(h.contiguous(), x, dist)
        if tx is not None:
            out = out + _PdistBackward.apply(g, tx.contiguous(), dist)
        return out

    @staticmethod
    def vmap(info, in_dims, *args):
        return _vmap_loop(_PdistBackward.apply, info, in_dims, args)


# ---- what pairwise.py calls ------------------------------------------------------------------------
def sum_fn(x, y, wx, wy, kernel, params, exclude_diagonal):  # -> [] float64
    """pair_sum, differentiable to second order, under torch.func and torch.compile."""
    if _compiling():
        return pair_sum(x, y, wx, wy, kernel, params, exclude_diagonal)
    return _PairSum.apply(x, y, wx, wy, kernel, params, exclude_diagonal)


def sum_with_grad_fn(x, y, wx, wy, kernel, params, exclude_diagonal):  # -> ([], [n], [n, D])
    """pair_sum_with_grad (the training path: the forward pass also yields x's gradient)."""
    if _compiling():
        return pair_sum_with_grad(x, y, wx, wy, kernel, params, exclude_diagonal)
    return _PairSumWithGrad.apply(x, y, wx, wy, kernel, params, exclude_diagonal)


def pdist_fn(x):  # [n, D] -> [n (n - 1) / 2]
    return pdist(x) if _compiling() else _Pdist.apply(x)
