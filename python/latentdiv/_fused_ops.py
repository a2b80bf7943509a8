r"""One engine call per loss evaluation: the O(n^2) terms of a loss, and its O(n) terms against one
point, as one custom op with one backward.

Why: at training batch sizes (n = 64-512) a loss's pair work is microseconds; what it cost was
per-call overhead: one custom op (dispatcher, autograd node, buffers) per term, a backward launch
per term, parameters rebuilt per term, and closed-form O(n) terms as a dozen small torch ops (the
exact Cramer-Wold cross term as a numpy series, forward and backward: most of ``cwae_loss``'s time).

The op ``latentdiv::fused_pair_terms`` computes

.. math::  L = \text{constant} + \sum_t c_t S_t,\qquad S_t = \sum_{i,j} a_i b_j f_t(\lVert u_i - v_j\rVert^2)

for a list of terms t, each over a pair of "point sets" u, v chosen from x, y and the origin (one
point at 0: :math:`\sum_i a_i f(\lVert u_i\rVert^2)`, how the closed forms against N(0, I) of
``mmd_to_normal`` and ``cramer_wold`` enter the engine: the Gaussian and the Cramer-Wold kernels
with another scale). Weights a, b are the point sets' weight vectors (``wx`` / ``wy``; the origin
has weight 1). The forward runs the engine's VALUE_GRAD mode for every side that needs a gradient,
so the gradients of L with respect to x, y, wx, wy are complete when the forward returns; the
backward only scales them by the incoming gradient (no engine pass). The terms run in one C++ call
(``_C.TermsPlan.run``, csrc/pair_terms_binding.cpp and csrc/cpu/pair_terms.cpp). The plan of a loss
(its terms parsed, kernel parameters built) is cached per key (kernel, bandwidths, n, m, D, ...), so a
call converts only pointers; the same call can check the inputs for NaN/inf (the losses' non-finite
policy) and take the loss's outer log (``cwae_loss``), so that no torch op follows it in eager mode.

Second order (``create_graph=True``): the backward then recomposes each term's gradient from the
primitive ops ``pair_grad`` / ``pair_rows`` (ops.py), whose own autograd gives the second
derivatives; the saved first-order gradients are not differentiable.

CPU only (the multi-term entry `_C.pair_terms` exists for the CPU schedule only); other devices keep
the per-term path of functional.py.

Gradients of one term (notation of ops.py): rows R_i = sum_j b_j f_ij, G_i = sum_j b_j 2 f'_ij (u_i - v_j):
  self (u is v, one weight vector a): dS/du_i = 2 a_i G_i, dS/da_i = 2 R_i;
  cross: dS/du_i = a_i G_i, dS/da_i = R_i, and the v side from the pass (v, u, a) (skipped for the origin).
"""

from __future__ import annotations

import functools
import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from . import _ext, _validation

# Point-set codes in a term descriptor.
SET_X = 0
SET_Y = 1
SET_ORIGIN = 2
# A term descriptor is these many ints: left set, right set, kernel id, flags, params count.
TERM_INTS = 5
# Flags of a term (csrc/pair_terms_binding.cpp): skip i == j (self terms); the kernel times r2, against a
# set of one point (sum_i a_i r2_i f(r2_i): energy_distance's closed form against N(0, I)).
TERM_EXCLUDE_DIAGONAL = 1
TERM_TIMES_R2 = 2

# Work (pairs x (d + a kernel's cost)) per extra OpenMP thread. Below it one thread runs the call:
# at n = 128 the pair work is a few microseconds, less than waking a second thread (and far less
# than waiting for it on a loaded machine). Results are bit-identical for any thread count
# (pair_reduce_cpu.cpp), so this changes only the time. Measured on a Zen 4 (2 cores, AVX-512):
# two threads start to pay from about n = 512 at D = 8.
_WORK_PER_THREAD = 1 << 21


def thread_count(pairs: int, d: int) -> int:
    """Threads for an engine call over ``pairs`` pairs in dimension d: torch's count, fewer for small work."""
    limit = torch.get_num_threads()
    if limit <= 1:
        return 1
    return int(max(1, min(limit, (pairs * (d + 16)) // _WORK_PER_THREAD)))


def _ptr(t: Optional[Tensor]) -> int:
    return 0 if t is None else t.data_ptr()


def _size(set_code: int, n: int, m: int) -> int:
    """Rows of a point set, for x of n rows and y of m."""
    return n if set_code == SET_X else m if set_code == SET_Y else 1


def _term_list(terms: Sequence[int], params: Sequence[float]):
    """Unflatten the descriptors: (left, right, kernel, exclude_diagonal, times_r2, params) per term."""
    out = []
    at = 0
    for t in range(0, len(terms), TERM_INTS):
        left, right, kernel, flags, count = terms[t:t + TERM_INTS]
        out.append((left, right, kernel, bool(flags & TERM_EXCLUDE_DIAGONAL), bool(flags & TERM_TIMES_R2),
                    list(params[at:at + count])))
        at += count
    return out


# ---------------------------------------------------------------------------------------------------
# the op
# ---------------------------------------------------------------------------------------------------
def _run_plan(plan, x: Tensor, y: Optional[Tensor], wx: Optional[Tensor], wy: Optional[Tensor],
              grads: Sequence[Optional[Tensor]],   # [4] outputs for x, y, wx, wy ([n, D], [m, D], [n] f64, [m] f64) or None
              check_finite: bool) -> float:
    """One engine call of a native plan (_C.TermsPlan): the value (a Python float), the wanted
    gradients written into ``grads``. The origin set is supplied by the engine."""
    n, d = x.shape
    m = 0 if y is None else y.shape[0]
    threads = 1
    if torch.get_num_threads() > 1:
        pairs = 0
        desc = plan.desc
        for t in range(0, len(desc), TERM_INTS):
            pairs += _size(desc[t], n, m) * _size(desc[t + 1], n, m)
        threads = thread_count(pairs, d)
    status, value = plan.native.run(
        _ext.isa_code(), _ext.dtype_code(x), d, threads,
        [x.data_ptr(), _ptr(y), 0], [n, m, 1], [_ptr(wx), _ptr(wy), 0],
        [_ptr(grads[0]), _ptr(grads[1]), 0], [_ptr(grads[2]), _ptr(grads[3]), 0], check_finite)
    if status != _ext.STATUS_OK:
        _ext.check_status(status, "pair_terms")
    return value


def _grad_buffers(x: Tensor, y: Optional[Tensor], wx: Optional[Tensor], wy: Optional[Tensor],
                  need: Sequence[bool]) -> Tuple[Optional[Tensor], ...]:
    """The engine's outputs for the wanted gradients of x, y, wx, wy ([n, D], [m, D], [n] and [m] float64),
    None where not wanted (or the tensor is absent)."""
    return (torch.empty_like(x) if need[0] else None,
            torch.empty_like(y) if need[1] and y is not None else None,
            torch.empty(x.shape[0], dtype=torch.float64) if need[2] and wx is not None else None,
            torch.empty(y.shape[0], dtype=torch.float64) if need[3] and wy is not None else None)


def _forward_impl(
    x: Tensor,              # [n, D]
    y: Optional[Tensor],    # [m, D] or None (no term uses SET_Y)
    wx: Optional[Tensor],   # [n] or None (ones)
    wy: Optional[Tensor],   # [m] or None (ones)
    terms: Sequence[int],   # [T * TERM_INTS] descriptors (left, right, kernel, flags, n_params)
    params: Sequence[float],  # the terms' kernel params, concatenated in term order
    coefs: Sequence[float],   # [T] c_t
    constant: float,
    need: Sequence[bool],   # [4] gradients wanted for x, y, wx, wy
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The custom op's body: L (float64 []) and its gradients (x.dtype [n, D], y.dtype [m, D],
    wx.dtype [n], wy.dtype [m]); an empty tensor where not wanted."""
    grads = _grad_buffers(x, y, wx, wy, need)
    plan = Terms()
    plan.desc, plan.params, plan.coefs, plan.constant = list(terms), list(params), list(coefs), float(constant)
    total = torch.tensor(_run_plan(plan, x, y, wx, wy, grads, False), dtype=torch.float64)
    gx, gy, gwx, gwy = (g if g is not None else x.new_empty((0,), dtype=torch.float64 if k >= 2 else None)
                        for k, g in enumerate(grads))
    return (total, gx, gy, gwx if grads[2] is None else gwx.to(wx.dtype), gwy if grads[3] is None else gwy.to(wy.dtype))


def _backward_impl(grad, x, y, wx, wy, saved, terms, params, coefs, need):
    """Gradients of L for (x, y, wx, wy) given the incoming grad ([]) and the forward's saved
    gradients; under create_graph, recomposed from differentiable primitive ops instead."""
    if torch.is_grad_enabled():
        grads = _differentiable_grads(x, y, wx, wy, terms, params, coefs, need)
        return tuple(None if g is None else (g * grad).to(t.dtype) for g, t in zip(grads, (x, y, wx, wy)))
    out = []
    for i, (g, t) in enumerate(zip(saved, (x, y, wx, wy))):
        # A 0-dim grad does not promote g's dtype (float32 gradients stay float32).
        out.append(g * grad if need[i] and t is not None and g is not None and g.numel() == t.numel() else None)
    return tuple(out)


class _FusedPairTerms(torch.autograd.Function):
    """The eager path: an autograd.Function costs a fraction of a custom op's dispatch (issue 11:
    the op's schema handling of the term lists was most of the per-call time at n = 128), and a cached
    native plan leaves only the pointers to pass per call."""

    @staticmethod
    def forward(ctx, x, y, wx, wy, plan, out_dtype, check_finite):  # plan: Terms; out_dtype: L's dtype
        grads = _grad_buffers(x, y, wx, wy, ctx.needs_input_grad)
        value = _run_plan(plan, x, y, wx, wy, grads, check_finite)
        gx, gy, gwx, gwy = grads
        # The inputs for create_graph's recomposition; the gradients (buffers of this call, not inputs or
        # outputs) as attributes: the first-order backward then unpacks no saved tensor.
        ctx.save_for_backward(x, y, wx, wy)
        ctx.grads = (gx, gy, None if gwx is None else gwx.to(wx.dtype), None if gwy is None else gwy.to(wy.dtype))
        ctx.plan, ctx.check_finite = plan, check_finite
        # In the caller's dtype here rather than by a .to() outside: no extra autograd node.
        return torch.full((), value, dtype=out_dtype)

    @staticmethod
    def backward(ctx, grad):
        if not torch.is_grad_enabled():  # the gradients of the forward, scaled (a 0-dim grad keeps their dtype)
            return (*(None if g is None else g * grad for g in ctx.grads), None, None, None)
        x, y, wx, wy = ctx.saved_tensors
        p = ctx.plan
        need = ctx.needs_input_grad
        # create_graph: the gradients of L from differentiable ops, and for log(L + eps) the factor
        # 1 / (L + eps) with L itself differentiable (this Function without the log), to any order.
        grads = _differentiable_grads(x, y, wx, wy, p.desc, p.params, p.coefs, need)
        if p.log_eps is not None:
            inner = p.without_log()
            grad = grad / (_FusedPairTerms.apply(x, y, wx, wy, inner, torch.float64, False) + p.log_eps)
        out = []
        for g, t in zip(grads, (x, y, wx, wy)):
            if g is not None and ctx.check_finite:
                g = _validation.nan_if_nonfinite(g, x, y)
            out.append(None if g is None else (g * grad).to(t.dtype))
        return (*out, None, None, None)


@torch.library.custom_op("latentdiv::fused_pair_terms", mutates_args=())
def fused_pair_terms(
    x: Tensor,              # [n, D]
    y: Optional[Tensor],    # [m, D] or None (no term uses SET_Y)
    wx: Optional[Tensor],   # [n] or None (ones)
    wy: Optional[Tensor],   # [m] or None (ones)
    terms: List[int],       # [T * TERM_INTS] descriptors (left, right, kernel, flags, n_params)
    params: List[float],    # the terms' kernel params, concatenated in term order
    coefs: List[float],     # [T] c_t
    constant: float,
    need: List[bool],       # [4] gradients wanted for x, y, wx, wy
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The path under torch.compile (opaque to the compiler, as the other engine ops): L (float64 [])
    and its gradients (empty where not needed). Only L is differentiable; the others are what its
    backward consumes."""
    return _forward_impl(x, y, wx, wy, terms, params, coefs, constant, need)


@fused_pair_terms.register_fake
def _(x, y, wx, wy, terms, params, coefs, constant, need):
    def empty(*shape, dtype=None):
        return x.new_empty(shape, dtype=dtype)

    f64 = torch.float64
    return (empty(dtype=f64), torch.empty_like(x) if need[0] else empty(0),
            torch.empty_like(y) if (need[1] and y is not None) else empty(0),
            empty(x.shape[0], dtype=wx.dtype) if (need[2] and wx is not None) else empty(0, dtype=f64),
            empty(y.shape[0], dtype=wy.dtype) if (need[3] and wy is not None) else empty(0, dtype=f64))


def _setup(ctx, inputs, output):
    x, y, wx, wy, terms, params, coefs, constant, need = inputs
    _, gx, gy, gwx, gwy = output
    ctx.mark_non_differentiable(gx, gy, gwx, gwy)
    ctx.save_for_backward(x, y, wx, wy, gx, gy, gwx, gwy)
    ctx.terms, ctx.params, ctx.coefs = terms, params, coefs


def _backward(ctx, grad, _gx, _gy, _gwx, _gwy):  # grad: [] float64
    x, y, wx, wy, *saved = ctx.saved_tensors
    return (*_backward_impl(grad, x, y, wx, wy, saved, ctx.terms, ctx.params, ctx.coefs, ctx.needs_input_grad),
            None, None, None, None, None)


fused_pair_terms.register_autograd(_backward, setup_context=_setup)


def _differentiable_grads(x, y, wx, wy, terms, params, coefs, need):
    """dL/dx, dL/dy, dL/dwx, dL/dwy composed of pair_grad / pair_rows (differentiable ops)."""
    ops = torch.ops.latentdiv
    origin = x.new_zeros((1, x.shape[1]))
    sets = (x, y, origin)
    weights = (wx, wy, None)
    acc: List[Optional[Tensor]] = [None, None, None, None]  # x, y, wx, wy

    def add(slot, value):
        acc[slot] = value if acc[slot] is None else acc[slot] + value

    for (left, right, kernel, excl, times_r2, p), c in zip(_term_list(terms, params), coefs):
        self_pairs = left == right
        if times_r2:  # sum_i a_i r2_i f(r2_i) against one point v: gradient a_i (2 R_i (u_i - v) + r2_i G_i)
            u, v, wa = sets[left], sets[right], weights[left]
            diff = u - v
            r2 = (diff * diff).sum(1)  # [n]
            rows = ops.pair_rows(u, v, weights[right], kernel, p, False)  # [n] R_i
            if need[left]:
                g = (2.0 * rows.unsqueeze(1) * diff + r2.unsqueeze(1) * ops.pair_grad(u, v, weights[right], kernel, p,
                                                                                        False)) * c
                add(left, g if wa is None else g * wa.unsqueeze(1))
            if wa is not None and need[2 + left]:
                add(2 + left, r2 * rows * c)
            continue
        sides = [(left, right)] if self_pairs else [(left, right), (right, left)]
        for a_set, b_set in sides:
            if a_set == SET_ORIGIN:
                continue
            a = sets[a_set]
            wa = weights[a_set]
            wb = wa if self_pairs else weights[b_set]
            other = None if self_pairs else sets[b_set]
            scale = 2.0 * c if self_pairs else c
            if need[a_set]:
                g = ops.pair_grad(a, other, wb, kernel, p, excl if self_pairs else False) * scale
                add(a_set, g if wa is None else g * wa.unsqueeze(1))
            if wa is not None and need[2 + a_set]:
                add(2 + a_set, ops.pair_rows(a, other, wb, kernel, p, excl if self_pairs else False) * scale)
    return tuple(acc)


# ---------------------------------------------------------------------------------------------------
# building the terms of the catalog's losses (parameters cached per key)
# ---------------------------------------------------------------------------------------------------
def applicable(x: Tensor) -> bool:
    """Whether the fused path serves x: the compiled engine on the CPU, outside torch.func transforms
    (grad, vmap, jacrev, ...: the general path's ops carry the batching and forward-mode rules those
    need; this module's autograd.Functions do not)."""
    # (_ext.use_compiled for a CPU tensor, without building a torch.device per call)
    return (x.is_cpu and _ext._C is not None and _ext.get_backend() != "reference"
            and not torch._C._are_functorch_transforms_active())


@functools.lru_cache(maxsize=256)
def kernel_params_cached(kernel: str, bandwidth: Tuple[float, ...], dim: int, gamma: Optional[float]) -> Tuple[int, Tuple[float, ...]]:
    """(kernel id, engine params) for a kernel name, a tuple of bandwidths, D and gamma (CW kernels):
    the registry's own builder, computed once per key instead of once per term and call."""
    from ._registry import get_kernel, kernel_params

    spec = get_kernel(kernel)
    options = {} if gamma is None else {"gamma": gamma}
    bw = bandwidth[0] if len(bandwidth) == 1 else list(bandwidth)
    return spec.kernel_id, tuple(float(v) for v in kernel_params(spec, bw, dim, options))


@functools.lru_cache(maxsize=256)
def cw_origin_params(dim: int, s_scale: float) -> Tuple[float, ...]:
    """Engine params of phi_D(s_scale r2) (the exact Cramer-Wold kernel at another scale)."""
    from . import special

    return tuple(float(v) for v in special.cw_phi_params(dim, s_scale))


class Terms:
    """One fused call: add terms (and set ``constant``, ``log_eps``), then ``run``. The loss builders
    below cache a built Terms per key (a Terms is not changed after its first run: its native plan,
    the parsed terms, is built then)."""

    def __init__(self) -> None:
        self.desc: List[int] = []
        self.params: List[float] = []
        self.coefs: List[float] = []
        self.constant = 0.0
        self.log_eps: Optional[float] = None  # not None: the value is log(L + log_eps) (cwae_loss)
        self._native = None
        self._without_log: Optional["Terms"] = None

    def add(self, left: int, right: int, kernel_id: int, params: Sequence[float], coef: float,
            exclude_diagonal: bool = False, times_r2: bool = False) -> "Terms":
        flags = (TERM_EXCLUDE_DIAGONAL if exclude_diagonal else 0) | (TERM_TIMES_R2 if times_r2 else 0)
        self.desc += [left, right, kernel_id, flags, len(params)]
        self.params += params
        self.coefs.append(float(coef))
        return self

    @property
    def native(self):
        """The engine's parsed form (_C.TermsPlan), built at first use."""
        if self._native is None:
            self._native = _ext._C.TermsPlan(self.desc, self.params, self.coefs, float(self.constant),
                                             self.log_eps is not None, float(self.log_eps or 0.0))
        return self._native

    def without_log(self) -> "Terms":
        """The same terms and constant without the outer log (L itself)."""
        if self._without_log is None:
            inner = Terms()
            inner.desc, inner.params, inner.coefs, inner.constant = self.desc, self.params, self.coefs, self.constant
            self._without_log = inner
        return self._without_log

    def run(self, x: Tensor, y: Optional[Tensor] = None, wx: Optional[Tensor] = None,
            wy: Optional[Tensor] = None, out_dtype: torch.dtype = torch.float64,
            check_finite: bool = False) -> Tensor:
        """L, or log(L + log_eps) ([] of out_dtype; computed in float64), differentiable with respect to
        whichever of x, y, wx, wy require it. check_finite: the losses' non-finite policy (NaN value and
        gradients if x or y holds a NaN or inf; _validation.nan_if_nonfinite)."""
        x = x.contiguous()
        y = None if y is None else y.contiguous()
        wx = None if wx is None else wx.contiguous()
        wy = None if wy is None else wy.contiguous()
        grad_on = torch.is_grad_enabled()
        if not torch.compiler.is_compiling():
            if not grad_on:  # (an autograd.Function's needs_input_grad ignores no_grad)
                return torch.full((), _run_plan(self, x, y, wx, wy, (None,) * 4, check_finite), dtype=out_dtype)
            return _FusedPairTerms.apply(x, y, wx, wy, self, out_dtype, check_finite)
        need = [bool(grad_on and t is not None and t.requires_grad) for t in (x, y, wx, wy)]
        value = torch.ops.latentdiv.fused_pair_terms(x, y, wx, wy, self.desc, self.params, self.coefs,
                                                     self.constant, need)[0]
        if check_finite:
            value = _validation.nan_if_nonfinite(value, x, y)
        if self.log_eps is not None:
            value = torch.log(value + self.log_eps)
        return value.to(out_dtype)


def _bandwidth_tuple(bw) -> Tuple[float, ...]:
    return tuple(float(v) for v in bw) if isinstance(bw, (tuple, list)) else (float(bw),)


@functools.lru_cache(maxsize=512)
def _mmd_terms(kernel: str, bw: Tuple[float, ...], n: int, m: int, dim: int, unbiased: bool, weighted_x: bool,
               weighted_y: bool) -> Terms:
    kid, p = _cached(kernel_params_cached, kernel, bw, dim, None)
    sx = 1.0 if weighted_x else 1.0 / (n * (n - 1) if unbiased else n * n)
    sy = 1.0 if weighted_y else 1.0 / (m * (m - 1) if unbiased else m * m)
    sxy = (1.0 if weighted_x else 1.0 / n) * (1.0 if weighted_y else 1.0 / m)
    terms = Terms()
    terms.add(SET_X, SET_X, kid, p, sx, unbiased)
    terms.add(SET_Y, SET_Y, kid, p, sy, unbiased)
    terms.add(SET_X, SET_Y, kid, p, -2.0 * sxy)
    return terms


def mmd_value(x: Tensor, y: Tensor, a: Optional[Tensor], b: Optional[Tensor], kernel: str, bw,
              unbiased: bool, out_dtype: torch.dtype = torch.float64) -> Optional[Tensor]:
    """MMD^2 ([] of out_dtype) of functional._mmd_impl in one fused call (NaN if x or y holds a NaN or
    inf), or None where it does not apply (not the CPU engine; weighted unbiased terms, whose
    normalisation depends on the weights)."""
    if not applicable(x) or (unbiased and (a is not None or b is not None)) or isinstance(bw, torch.Tensor):
        return None
    terms = _cached(_mmd_terms, kernel, _bandwidth_tuple(bw), x.shape[0], y.shape[0], x.shape[1], unbiased,
                    a is not None, b is not None)
    return terms.run(x, y, a, b, out_dtype, check_finite=True)


@functools.lru_cache(maxsize=512)
def _mmd_to_normal_terms(hs: Tuple[float, ...], n: int, dim: int, unbiased: bool, weighted: bool) -> Terms:
    kid, p = _cached(kernel_params_cached, "gaussian", hs, dim, None)
    terms = Terms()
    terms.add(SET_X, SET_X, kid, p, 1.0 if weighted else 1.0 / (n * (n - 1) if unbiased else n * n), unbiased)
    mean = 1.0 if weighted else 1.0 / n
    for h in hs:
        h2 = h * h
        # E_Y k_h(z, Y) = (h^2 / (1 + h^2))^{D/2} exp(-|z|^2 / (2 (1 + h^2))); prefactors in log space.
        pref = math.exp(-0.5 * dim * math.log1p(1.0 / h2))
        gid, gp = _cached(kernel_params_cached, "gaussian", (math.sqrt(1.0 + h2),), dim, None)
        terms.add(SET_X, SET_ORIGIN, gid, gp, -2.0 * pref * mean)
        terms.constant += math.exp(-0.5 * dim * math.log1p(2.0 / h2))
    return terms


def mmd_to_normal_value(z: Tensor, a: Optional[Tensor], hs: Tuple[float, ...], unbiased: bool,
                        out_dtype: torch.dtype = torch.float64) -> Optional[Tensor]:
    """functional._mmd_to_normal_impl in one fused call (self term + the closed-form cross term as
    a sum against the origin with the Gaussian kernel of bandwidth sqrt(1 + h^2); NaN if z holds a NaN
    or inf), or None."""
    if not applicable(z) or (unbiased and a is not None):
        return None
    terms = _cached(_mmd_to_normal_terms, tuple(hs), z.shape[0], z.shape[1], unbiased, a is not None)
    return terms.run(z, None, a, out_dtype=out_dtype, check_finite=True)


@functools.lru_cache(maxsize=512)
def _cramer_wold_terms(gamma: float, exact: bool, n: int, m: Optional[int], dim: int, weighted_x: bool,
                       weighted_y: bool, log_eps: Optional[float]) -> Terms:
    kernel = "cramer_wold" if exact else "cramer_wold_approx"
    kid, p = _cached(kernel_params_cached, kernel, (1.0,), dim, gamma)
    norm = (1.0 / math.sqrt(gamma) if exact else 1.0) / (2.0 * math.sqrt(math.pi))
    terms = Terms()
    terms.log_eps = log_eps
    sx = 1.0 if weighted_x else 1.0 / (n * n)
    terms.add(SET_X, SET_X, kid, p, norm * sx)
    if m is None:
        mean = 1.0 if weighted_x else 1.0 / n
        if exact:
            op = _cached(cw_origin_params, dim, 1.0 / (2.0 + 4.0 * gamma))
            c = 1.0 / math.sqrt(gamma + 0.5)
        else:
            _, op = _cached(kernel_params_cached, "cramer_wold_approx", (1.0,), dim, gamma + 0.5)
            c = 1.0
        terms.add(SET_X, SET_ORIGIN, kid, op, -2.0 * c * mean / (2.0 * math.sqrt(math.pi)))
        terms.constant = 1.0 / math.sqrt(1.0 + gamma) / (2.0 * math.sqrt(math.pi))
        return terms
    sy = 1.0 if weighted_y else 1.0 / (m * m)
    sxy = (1.0 if weighted_x else 1.0 / n) * (1.0 if weighted_y else 1.0 / m)
    terms.add(SET_Y, SET_Y, kid, p, norm * sy)
    terms.add(SET_X, SET_Y, kid, p, -2.0 * norm * sxy)
    return terms


def cramer_wold_value(x: Tensor, y: Optional[Tensor], a: Optional[Tensor], b: Optional[Tensor], gamma: float,
                      exact: bool, out_dtype: torch.dtype = torch.float64,
                      log_eps: Optional[float] = None) -> Optional[Tensor]:
    """functional._cramer_wold_impl (d_cw^2, with the 1/(2 sqrt(pi)) factor; log(d_cw^2 + log_eps) if
    log_eps is given; NaN if x or y holds a NaN or inf) in one fused call, or None.

    Against N(0, I) the O(n) term sum_i a_i phi_D(|x_i|^2 / (2 + 4 gamma)) is a sum against the
    origin with the exact kernel at s_scale 1/(2 + 4 gamma) (the engine's fitted phi_D, the accuracy
    of the pair term); the approximate one is cramer_wold_approx with gamma + 1/2."""
    if not applicable(x):
        return None
    terms = _cached(_cramer_wold_terms, float(gamma), bool(exact), x.shape[0], None if y is None else y.shape[0],
                    x.shape[1], a is not None, b is not None, None if log_eps is None else float(log_eps))
    return terms.run(x, y, a, b, out_dtype, check_finite=True)


def _cached(fn, *args):
    """fn(*args) through its lru_cache in eager mode; under torch.compile the wrapped function
    (dynamo traces it; the cache wrapper would only add a warning)."""
    if torch.compiler.is_compiling():
        return fn.__wrapped__(*args)
    return fn(*args)


# ---------------------------------------------------------------------------------------------------
# E||z - Y||, Y ~ N(0, I_D), per point, from the engine's fitted Cramer-Wold kernels
# ---------------------------------------------------------------------------------------------------
def _origin_rows(z: Tensor, params: Sequence[float]) -> Tensor:  # [n, D] -> [n] float64
    """rows_i = f(|z_i|^2) for the exact Cramer-Wold kernel with these params: one VALUE pass of the
    engine against the origin (O(n D))."""
    n, d = z.shape
    origin = z.new_zeros((1, d))
    rows = torch.empty(n, dtype=torch.float64)
    total = torch.empty((), dtype=torch.float64)
    status = _ext._C.pair_reduce(_ext.DEVICE_CPU, _ext.isa_code(), _ext.MODE_VALUE, _ext.dtype_code(z), z.data_ptr(),
                                 origin.data_ptr(), 0, 0, rows.data_ptr(), total.data_ptr(), 0, 0, n, 1, d, False,
                                 False, 1, _CW_EXACT_ID, list(params), 0)
    _ext.check_status(status, "pair_reduce")
    return rows


_CW_EXACT_ID = 5  # the registry's id of "cramer_wold" (checked against the build by _registry)


class _ExpectedDistanceToNormal(torch.autograd.Function):
    r"""E_i = E||z_i - Y|| = sqrt2 c_D [phi_D(s_i) + (2 s_i / D) phi_{D+2}(s_i)], s_i = |z_i|^2 / 2
    (Kummer's contiguous relation b M(a, b, -s) - b M(a - 1, b, -s) + s M(a, b + 1, -s) = 0 at a = 1/2,
    b = D/2, with phi_D(s) = M(1/2; D/2; -s)), and dE_i/dz_i = (sqrt2 c_D / D) phi_{D+2}(s_i) z_i:
    two O(n) engine passes with the fitted phi (the accuracy of the pair terms, ~1e-9 relative)
    instead of the numpy series of special.expected_distance_to_normal, forward and backward.
    Under create_graph the backward uses special.phi_cw (differentiable to any order)."""

    @staticmethod
    def forward(ctx, z, dim):  # z: [n, D] -> [n] float64
        from . import special

        c = math.sqrt(2.0) * special.gamma_ratio_half(dim)
        phi_d = _origin_rows(z, _cached(cw_origin_params, dim, 0.5))
        phi_d2 = _origin_rows(z, _cached(cw_origin_params, dim + 2, 0.5))
        sq = (z.to(torch.float64) ** 2).sum(1)
        ctx.save_for_backward(z, phi_d2)
        ctx.c, ctx.dim = c, dim
        return c * (phi_d + (sq / dim) * phi_d2)

    @staticmethod
    def backward(ctx, grad):  # grad: [n] float64
        z, phi_d2 = ctx.saved_tensors
        if torch.is_grad_enabled():
            from . import special

            phi_d2 = special.phi_cw(0.5 * (z.to(torch.float64) ** 2).sum(1), ctx.dim + 2)
        slope = (grad * phi_d2) * (ctx.c / ctx.dim)  # [n]
        return (slope.unsqueeze(1) * z.to(torch.float64)).to(z.dtype), None


def expected_distance_to_normal(z: Tensor, dim: int) -> Optional[Tensor]:
    """[n] float64 E||z_i - Y|| through the engine, or None off the CPU engine (and under torch.compile,
    which cannot trace the raw engine call; the numpy-series path is opaque to it as a custom op)."""
    if not applicable(z) or torch.compiler.is_compiling():
        return None
    # In float64 whatever z's dtype: the closed form reads |z|^2, which overflows float32 for |z| >~ 1e19
    # where the answer (~|z|) is still representable; the pass is O(n D), the cast costs nothing here.
    return _ExpectedDistanceToNormal.apply(z.to(torch.float64).contiguous(), int(dim))


@functools.lru_cache(maxsize=512)
def _single_term(left: int, right: int, kernel_id: int, params: Tuple[float, ...], coef: float,
                 exclude_diagonal: bool, constant: float) -> Terms:
    terms = Terms()
    terms.add(left, right, kernel_id, list(params), coef, exclude_diagonal)
    terms.constant = constant
    return terms


@functools.lru_cache(maxsize=512)
def _energy_to_normal_terms(n: int, dim: int, weighted: bool) -> Terms:
    from . import special

    # 2 E||x - Y|| - E||X - X'|| - E||Y - Y'||, with E||z - Y|| = C [phi_D(s) + (r2 / D) phi_{D+2}(s)],
    # s = r2 / 2, C = sqrt2 Gamma((D+1)/2) / Gamma(D/2) (_ExpectedDistanceToNormal): two origin terms
    # of the exact Cramer-Wold kernel at s_scale 1/2, the second one times r2.
    mean = 1.0 if weighted else 1.0 / n
    c = math.sqrt(2.0) * special.gamma_ratio_half(dim)
    kid, p = _cached(kernel_params_cached, "energy", (1.0,), dim, None)
    terms = Terms()
    terms.add(SET_X, SET_X, kid, p, 1.0 if weighted else 1.0 / (n * n))  # kernel "energy" is -r
    terms.add(SET_X, SET_ORIGIN, _CW_EXACT_ID, _cached(cw_origin_params, dim, 0.5), 2.0 * c * mean)
    terms.add(SET_X, SET_ORIGIN, _CW_EXACT_ID, _cached(cw_origin_params, dim + 2, 0.5), 2.0 * c * mean / dim,
              times_r2=True)
    terms.constant = -special.expected_pair_distance_normal(dim)
    return terms


def energy_to_normal_value(x: Tensor, a: Optional[Tensor], out_dtype: torch.dtype) -> Optional[Tensor]:
    """energy_distance(x, None) (the V-statistic against N(0, I) in closed form) in one fused call (NaN
    if x holds a NaN or inf), or None: off the CPU engine, and for float64 points (the times-r2 term
    reads r2 in double, which float32 points cannot overflow; float64 ones take the frame-scaled
    passes of expected_distance_to_normal)."""
    if not applicable(x) or x.dtype != torch.float32:
        return None
    terms = _cached(_energy_to_normal_terms, x.shape[0], x.shape[1], a is not None)
    return terms.run(x, None, a, out_dtype=out_dtype, check_finite=True)


def energy_pair_value(x: Tensor, a: Optional[Tensor], constant: float) -> Optional[Tensor]:
    """-E||X - X'|| + constant (float64 []) as one fused term (kernel "energy" is -r), or None."""
    if not applicable(x):
        return None
    n, dim = x.shape
    kid, p = _cached(kernel_params_cached, "energy", (1.0,), dim, None)
    terms = _cached(_single_term, SET_X, SET_X, kid, p, 1.0 if a is not None else 1.0 / (n * n), False, float(constant))
    return terms.run(x, None, a)


def pairwise_value(x: Tensor, y: Optional[Tensor], wx: Optional[Tensor], wy: Optional[Tensor], kernel_id: int,
                   params: Sequence[float], exclude_diagonal: bool,
                   out_dtype: torch.dtype = torch.float64) -> Optional[Tensor]:
    """pairwise_sum's S (float64 []) as one fused term (its gradients from the forward's pass), or None."""
    if not applicable(x):
        return None
    params = tuple(float(v) for v in params)
    if y is None:
        return _cached(_single_term, SET_X, SET_X, kernel_id, params, 1.0, bool(exclude_diagonal), 0.0).run(
            x, None, wx, out_dtype=out_dtype)
    return _cached(_single_term, SET_X, SET_Y, kernel_id, params, 1.0, False, 0.0).run(x, y, wx, wy, out_dtype)
