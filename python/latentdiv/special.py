"""Special functions of latentdiv: Kummer 1F1 at negative argument, the Cramer-Wold kernel phi_D and
its fitted kernel-speed form, and the O(n) closed forms under N(0, I_D).

Two layers:

* numpy/scipy, float64 (the ground truth and the fitter): :func:`hyp1f1_negarg`, :func:`phi_cw_exact`,
  :func:`dphi_cw_exact`, :func:`cw_phi_params` (coefficients for ``csrc/include/latentdiv/cw_phi.h``)
  and :func:`cw_phi_eval_reference` (an op-for-op replica of the header, numpy or torch).
* torch, differentiable, any device/dtype, ``torch.compile(fullgraph=True)``-safe:
  :func:`phi_cw`, :func:`expected_distance_to_normal`, :func:`expected_pair_distance_normal`,
  :func:`chi_cdf`, :func:`chi_sf`, :func:`log_chi_pdf`, :func:`normal_cdf`.
  The 1F1 and incomplete-gamma values come from two ``torch.library.custom_op`` s in the ``latentdiv``
  namespace whose implementation runs the float64 numpy/scipy code on the host (these are O(n)
  per-sample scalars; accuracy matters more than the device round trip). The ops are opaque to the
  compiler (``register_fake``) and carry their own autograd (``register_autograd``), so fullgraph works.

Sources: docs/formulas.md sections 5 (CWAE, phi_D), 7c (energy test closed forms), 8 (energy
distance) and 9 (1F1 evaluation).

This module imports only torch, numpy, scipy, math, functools, the shared input checks
(latentdiv._validation) and the engine's exported layout constants (latentdiv._ext), by absolute
imports: tests/test_special.py loads this file on its own.
"""

from __future__ import annotations

import functools
import math
import sys

import numpy as np
import scipy.special as _sp
import torch

# Absolute, not relative: tests/test_special.py loads this file by path, outside the package.
from latentdiv import _ext
from latentdiv._validation import check_float_tensor, check_real_at_least_one


def _assume_constant_result(fn):
    """``torch.compiler.assume_constant_result`` without its import of ``torch._dynamo`` (1-2 s, most of
    ``latentdiv check``'s start-up when nothing is compiled): that decorator only sets this one flag,
    which dynamo reads when it meets the function. Once dynamo is loaded, the public decorator is used.
    tests/test_special.py checks that both leave the same mark."""
    if "torch._dynamo" in sys.modules:
        return torch.compiler.assume_constant_result(fn)
    fn._dynamo_marked_constant = True
    return fn

__all__ = [
    "hyp1f1_negarg",
    "phi_cw_exact",
    "dphi_cw_exact",
    "cw_phi_params",
    "cw_phi_eval_reference",
    "cw_phi_of_r2_reference",
    "phi_cw",
    "expected_distance_to_normal",
    "expected_pair_distance_normal",
    "gamma_ratio_half",
    "chi_cdf",
    "chi_sf",
    "log_chi_pdf",
    "normal_cdf",
    "CW_PHI_HEADER",
    "CW_PHI_MAX_COEFFS",
]

# ---------------------------------------------------------------------------------------------------
# 1F1(a; b; -z), z >= 0, float64 (numpy)
# ---------------------------------------------------------------------------------------------------


def _kummer_series(c: float, b: float, z: np.ndarray) -> np.ndarray:
    """e^{-z} 1F1(c; b; z) for c >= 0, b > 0, z >= 0 by the positive series (docs/formulas.md section 9).

    Terms t_{k+1} = t_k (c+k)/(b+k) z/(k+1) are all positive (no cancellation); the running sum is
    renormalised by 2^-600 when it grows so e^{z}-sized sums do not overflow. Relative error
    ~ sqrt(K) eps plus eps * z from the final exp.
    """
    z = np.asarray(z, dtype=np.float64)
    if c == 0.0 or z.size == 0:
        return np.exp(-z)
    zmax = float(np.max(z))
    # terms peak near k ~ z (c ~ b) and then fall like a Poisson tail
    n_terms = int(zmax + 12.0 * math.sqrt(zmax) + 2.0 * abs(c - b) + 60.0)
    term = np.ones_like(z)
    total = np.ones_like(z)
    log_scale = np.zeros_like(z)
    big = 2.0**600
    for k in range(n_terms):
        term = term * ((c + k) / (b + k)) * (z / (k + 1.0))
        total = total + term
        if k % 16 == 15:
            over = total > big
            if over.any():
                total = np.where(over, total * 2.0**-600, total)
                term = np.where(over, term * 2.0**-600, term)
                log_scale = log_scale + np.where(over, 600.0 * math.log(2.0), 0.0)
    return np.exp(np.log(total) + log_scale - z)


def _asymptotic_neg(a: float, b: float, z: np.ndarray) -> np.ndarray:
    """1F1(a; b; -z) ~ Gamma(b)/Gamma(b-a) z^{-a} sum_k (a)_k (1+a-b)_k / k! z^{-k}, large z (DLMF 13.7.2).

    The companion term Gamma(b)/Gamma(a) e^{-z} z^{a-b} (...) is below 1e-25 relative where this is
    used (z >= 2b + 60). The series is summed up to its smallest term (it terminates for odd D).
    """
    z = np.asarray(z, dtype=np.float64)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        log_pref = _sp.gammaln(b) - _sp.gammaln(b - a) - a * np.log(z)
        pref = np.exp(log_pref)  # b - a > 0 here (b == a is e^{-z}, handled by the caller)
        term = np.ones_like(z)
        total = np.ones_like(z)
        alive = np.isfinite(z)
        for k in range(4000):
            nxt = term * ((a + k) * (1.0 + a - b + k) / ((k + 1.0) * z))
            alive = alive & (np.abs(nxt) < np.abs(term)) & (np.abs(term) > 1e-18 * np.abs(total))
            if not alive.any():
                break
            term = np.where(alive, nxt, term)
            total = total + np.where(alive, nxt, 0.0)
        return pref * total


def hyp1f1_negarg(a: float, b: float, z) -> np.ndarray:
    r"""Kummer's function at negative argument, :math:`M(a; b; -z) = {}_1F_1(a; b; -z)`, for z >= 0.

    Requires b > 0 and b - a >= 0 (all uses here: phi_D, its derivative, the energy forms).
    Moderate z: Kummer's transform :math:`M(a;b;-z) = e^{-z} M(b-a; b; z)` (positive series);
    z >= 2b + 60: the large-argument expansion. Negative z is treated as 0; NaN propagates; z = inf
    gives the limit (0 for a > 0, inf for a < 0). Relative accuracy ~1e-13 (D <= 1024) in float64.
    Source: docs/formulas.md sections 5, 7c, 9.
    """
    if not (b > 0.0 and b - a >= 0.0):
        raise ValueError(f"hyp1f1_negarg needs b > 0 and b >= a, got a={a}, b={b}")
    z = np.asarray(z, dtype=np.float64)
    shape = z.shape
    z = z.reshape(-1)
    out = np.full(z.shape, np.nan)
    ok = ~np.isnan(z)
    zz = np.maximum(z[ok], 0.0)
    res = np.empty_like(zz)
    if b - a == 0.0:  # M(a; a; -z) = e^{-z} exactly
        res = np.exp(-zz)
    else:
        z0 = 2.0 * b + 60.0
        small = zz < z0
        if small.any():
            res[small] = _kummer_series(b - a, b, zz[small])
        if (~small).any():
            res[~small] = _asymptotic_neg(a, b, zz[~small])
    out[ok] = res
    return out.reshape(shape)


def phi_cw_exact(D: float, s) -> np.ndarray:
    r"""Ground truth :math:`\varphi_D(s) = {}_1F_1(\tfrac12; \tfrac D2; -s)` in float64 (numpy).

    :math:`\varphi_1(s) = e^{-s}`, :math:`\varphi_2(s) = e^{-s/2} I_0(s/2)`,
    :math:`\varphi_3(s) = \sqrt{\pi/(4s)}\,\mathrm{erf}(\sqrt s)`; large s:
    :math:`\Gamma(D/2)/\Gamma((D-1)/2)\, s^{-1/2}`. Source: docs/formulas.md section 5 ("Exact phi_D").
    """
    return hyp1f1_negarg(0.5, D / 2.0, s)


def dphi_cw_exact(D: float, s) -> np.ndarray:
    r""":math:`\varphi_D'(s) = -\tfrac1D\, {}_1F_1(\tfrac32; \tfrac D2 + 1; -s)` in float64 (docs/formulas.md section 5)."""
    return -hyp1f1_negarg(1.5, D / 2.0 + 1.0, s) / D


# ---------------------------------------------------------------------------------------------------
# Fitted phi_D for the kernel (see csrc/include/latentdiv/cw_phi.h for the form and the layout)
# ---------------------------------------------------------------------------------------------------

# The layout's sizes and kind codes, as the build exports them (latentdiv._ext): params[0..5] = s_scale,
# kind, D, a, a / s_scale, N, then at most kMaxKernelParams - header coefficients.
CW_PHI_HEADER = _ext.CW_PHI_HEADER
CW_PHI_MAX_COEFFS = _ext.CW_PHI_MAX_COEFFS
_KIND_EXP = _ext.CW_PHI_KIND_EXP
_KIND_CHEB = _ext.CW_PHI_KIND_CHEB
_FIT_NODES = 256
_COEF_TOL = 1e-12  # drop trailing Chebyshev coefficients below this (g is O(1))
_FIT_CHECK_TOL = 1e-8  # self-check of every fit on a dense grid (value and derivative, relative)


def _cheb_eval_np(a: float, coeffs: np.ndarray, s: np.ndarray):
    """phi, dphi/ds of the fitted form, float64 numpy (used by the fitter's self-check)."""
    inv = 1.0 / (s + a)
    w = a * inv
    t = 1.0 - 2.0 * w
    b1 = b2 = d1 = d2 = 0.0
    for k in range(len(coeffs) - 1, 0, -1):
        b0 = coeffs[k] + 2.0 * t * b1 - b2
        d0 = 2.0 * b1 + 2.0 * t * d1 - d2
        b2, b1, d2, d1 = b1, b0, d1, d0
    g = coeffs[0] + t * b1 - b2
    gt = b1 + t * d1 - d2
    sw = np.sqrt(w)
    return sw * g, sw * inv * (2.0 * w * gt - 0.5 * g)


@functools.lru_cache(maxsize=None)
def _cw_phi_fit(D: float) -> tuple[int, float, tuple[float, ...]]:
    """(kind, a, coefficients) of the fitted phi_D; computed once per D (about 50 ms)."""
    if D == 1.0:
        return _KIND_EXP, 1.0, ()
    a = D / 2.0 + 8.0
    m = _FIT_NODES
    j = np.arange(m, dtype=np.float64)
    theta = np.pi * (j + 0.5) / m
    t = np.cos(theta)  # Chebyshev points of the first kind: t = +-1 (s = inf) is never sampled
    w = 0.5 * (1.0 - t)
    s = a * (1.0 - w) / w
    g = phi_cw_exact(D, s) / np.sqrt(w)
    coeffs = (2.0 / m) * (np.cos(np.outer(np.arange(m), theta)) @ g)
    coeffs[0] *= 0.5
    big = np.nonzero(np.abs(coeffs) > _COEF_TOL)[0]
    n = max(int(big.max()) + 1 if big.size else 1, 2)
    if n > CW_PHI_MAX_COEFFS:
        raise ValueError(f"cw_phi_params: D={D} needs {n} > {CW_PHI_MAX_COEFFS} coefficients")
    coeffs = coeffs[:n]
    # self-check against the ground truth on a grid the nodes do not see
    sc = np.concatenate([[0.0], np.logspace(-6, 8, 600)])
    p, dp = _cheb_eval_np(a, coeffs, sc)
    err = max(np.max(np.abs(p / phi_cw_exact(D, sc) - 1)), np.max(np.abs(dp / dphi_cw_exact(D, sc) - 1)))
    if not err <= _FIT_CHECK_TOL:
        raise ValueError(f"cw_phi_params: no accurate fit for D={D} (relative error {err:.2e})")
    return _KIND_CHEB, a, tuple(float(c) for c in coeffs)


@_assume_constant_result  # the numpy fit is not traceable by dynamo; D is a Python constant
def _cw_phi_fit_const(D: float) -> tuple:
    return _cw_phi_fit(D)


def cw_phi_params(D: float, s_scale: float = 1.0) -> tuple[float, ...]:
    r"""Kernel params for ``cw_phi_of_r2`` / ``cw_phi_eval`` in ``latentdiv/cw_phi.h``.

    The kernel computes :math:`f(r^2) = \varphi_D(c\, r^2)` and :math:`f'(r^2) = c\,\varphi_D'(c\, r^2)`
    with c = ``s_scale`` (CWAE pair terms: :math:`c = 1/(4\gamma)`; cross term to N(0, I):
    :math:`c = 1/(2 + 4\gamma)`), :math:`\varphi_D(s) = {}_1F_1(1/2; D/2; -s)` (docs/formulas.md section 5).

    Layout (``6 + N <= 64`` doubles): ``[s_scale, kind, N32, a, a / s_scale, N, c_0, ..., c_{N-1}]``,
    kind 0 = exp(-s) (D = 1, N = 0), kind 1 = :math:`\sqrt{w}\sum_k c_k T_k(1 - 2w)`, w = a/(s+a),
    a = D/2 + 8. N32 (<= N): the leading coefficients a float32 evaluation uses, the fewest whose tail
    is below float32 rounding (:func:`cw_phi_float32_terms`). D: integer >= 1 or real >= 2.
    Coefficients are cached per D.
    """
    D = float(D)
    if not (math.isfinite(D) and (D == 1.0 or D >= 2.0)):
        raise ValueError(f"cw_phi_params: D must be 1 or a real >= 2, got {D}")
    s_scale = float(s_scale)
    if not (math.isfinite(s_scale) and s_scale > 0.0):
        raise ValueError(f"cw_phi_params: s_scale must be finite and > 0, got {s_scale}")
    kind, a, coeffs = _cw_phi_fit_const(D)
    a_r2 = a / s_scale
    # a normal float64 number (the CPU engine brings it into float32's range for float32 data)
    if not (sys.float_info.min <= a_r2 <= sys.float_info.max):
        raise ValueError(f"cw_phi_params: s_scale={s_scale} is out of range for D={D}")
    return (s_scale, float(kind), float(cw_phi_float32_terms(coeffs)), a, a_r2, float(len(coeffs))) + coeffs


def cw_phi_float32_terms(coeffs) -> int:
    """The leading Chebyshev coefficients of a phi_D fit that a float32 evaluation needs: the fewest N32
    such that every shorter tail is small, sum_{k >= N32} |c_k| <= 2^-27 (the value g; |T_k| <= 1) and
    sum_{k >= N32} k^2 |c_k| <= 2^-26 (its t-derivative; |T_k'| <= k^2), against float32's 2^-24
    relative rounding of g ~ 0.4-1. 0 for the exp kind (no coefficients)."""
    c = [abs(float(v)) for v in coeffs]
    tail = slope_tail = 0.0
    n32 = len(c)
    for k in range(len(c) - 1, 0, -1):
        tail += c[k]
        slope_tail += k * k * c[k]
        if tail > 2.0 ** -27 or slope_tail > 2.0 ** -26:
            break
        n32 = k
    return n32


def _xp_ops(x):
    if isinstance(x, torch.Tensor):
        return torch.sqrt, torch.exp, (lambda v: torch.clamp_min(v, 0.0))
    return np.sqrt, np.exp, (lambda v: np.where(v < 0, 0.0, v))


def _replica(params, x, A, exp_scale):
    """Op-for-op replica of cw_detail::cheb_eval / the exp kind, in the dtype of x."""
    sqrt, exp, clamp = _xp_ops(x)
    x = clamp(x)
    if int(params[1]) == _KIND_EXP:
        f = exp(-exp_scale * x) if exp_scale != 1.0 else exp(-x)
        return f, -exp_scale * f
    n = min(int(params[5]), len(params) - CW_PHI_HEADER)
    if x.dtype in (torch.float32, np.float32) and 1 <= int(params[2]) < n:
        n = int(params[2])  # cw_detail::cheb_terms: N32 terms in float32
    c = params[CW_PHI_HEADER : CW_PHI_HEADER + n]
    if isinstance(x, torch.Tensor):
        cast = lambda v: torch.tensor(v, dtype=x.dtype, device=x.device)  # noqa: E731 (T(v) in C++)
    else:
        dt = x.dtype.type if isinstance(x, np.ndarray) else np.float64
        cast = dt
    A = cast(A)
    one, two, half = cast(1.0), cast(2.0), cast(0.5)
    inv = one / (x + A)
    w = A * inv
    t = one - two * w
    t2 = t + t
    b1 = b2 = d1 = d2 = cast(0.0)
    for k in range(n - 1, 0, -1):
        b0 = cast(c[k]) + t2 * b1 - b2
        d0 = two * b1 + t2 * d1 - d2
        b2, b1, d2, d1 = b1, b0, d1, d0
    g = (cast(c[0]) if n > 0 else cast(0.0)) + t * b1 - b2
    gt = b1 + t * d1 - d2
    sw = sqrt(w)
    return sw * g, sw * inv * (two * w * gt - half * g)


def cw_phi_eval_reference(params, s):
    """Replica of ``cw_phi_eval<T>`` (same operations, in the dtype of ``s``): returns (phi, dphi/ds).

    ``s``: numpy array (float32 or float64) or torch tensor (any shape; differentiable, and autograd
    reproduces dphi/ds exactly since it is the derivative of the same arithmetic). ``s_scale`` is not
    applied (s is phi's own argument).
    """
    if not isinstance(s, torch.Tensor):
        s = np.asarray(s)
        if s.dtype not in (np.float32, np.float64):
            s = s.astype(np.float64)
    return _replica(params, s, params[3], 1.0)


def cw_phi_of_r2_reference(params, r2):
    """Replica of ``cw_phi_of_r2<T>``: (phi_D(s_scale r2), s_scale phi_D'(s_scale r2)) in the dtype of r2."""
    if not isinstance(r2, torch.Tensor):
        r2 = np.asarray(r2)
        if r2.dtype not in (np.float32, np.float64):
            r2 = r2.astype(np.float64)
        scale = r2.dtype.type(params[0])
    else:
        scale = float(torch.tensor(params[0], dtype=r2.dtype))  # T(params[0]) rounding in float32
    return _replica(params, r2, params[4], scale)


# ---------------------------------------------------------------------------------------------------
# torch custom ops (host float64 implementation; any device in, same device out)
# ---------------------------------------------------------------------------------------------------


def _to_numpy64(x: torch.Tensor) -> np.ndarray:
    return x.detach().to(device="cpu", dtype=torch.float64).contiguous().numpy()


def _from_numpy(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(device=like.device, dtype=like.dtype)


def _hyp_values(z: torch.Tensor, a: float, b: float) -> torch.Tensor:  # [...] -> [...] same dtype/device
    """M(a; b; -z) elementwise (z >= 0; negatives treated as 0): the body of the op below."""
    return _from_numpy(hyp1f1_negarg(a, b, _to_numpy64(z)), z)


def _chi_values(r: torch.Tensor, dim: float, upper: bool) -> torch.Tensor:  # [...] -> [...] same dtype/device
    """P(dim/2, r^2/2) (upper=False) or Q(dim/2, r^2/2) (upper=True); r < 0 treated as 0: the op's body."""
    rr = np.maximum(_to_numpy64(r), 0.0)
    f = _sp.gammaincc if upper else _sp.gammainc
    return _from_numpy(f(0.5 * dim, 0.5 * rr * rr), r)


def _define_ops():
    ns = torch.ops.latentdiv
    try:  # the module may be imported twice (by path in tests and as latentdiv.special)
        return ns.special_hyp1f1_negarg.default, ns.special_chi_cdf.default
    except (AttributeError, RuntimeError):
        pass

    @torch.library.custom_op("latentdiv::special_hyp1f1_negarg", mutates_args=())
    def _hyp_op(z: torch.Tensor, a: float, b: float) -> torch.Tensor:
        """M(a; b; -z) elementwise (z >= 0; negatives treated as 0). [...] -> [...] same dtype/device."""
        return _hyp_values(z, a, b)

    @_hyp_op.register_fake
    def _(z, a, b):
        return torch.empty_like(z)

    def _hyp_setup(ctx, inputs, output):
        z, a, b = inputs
        ctx.save_for_backward(z)
        ctx.a, ctx.b = a, b

    def _hyp_backward(ctx, grad):
        (z,) = ctx.saved_tensors
        # d/dz M(a; b; -z) = -(a/b) M(a+1; b+1; -z); the op is itself differentiable (higher orders)
        d = torch.ops.latentdiv.special_hyp1f1_negarg.default(z, ctx.a + 1.0, ctx.b + 1.0)
        return grad * (-(ctx.a / ctx.b)) * d, None, None

    _hyp_op.register_autograd(_hyp_backward, setup_context=_hyp_setup)

    @torch.library.custom_op("latentdiv::special_chi_cdf", mutates_args=())
    def _chi_op(r: torch.Tensor, dim: float, upper: bool) -> torch.Tensor:
        """P(dim/2, r^2/2) (upper=False) or Q(dim/2, r^2/2) (upper=True); r < 0 treated as 0."""
        return _chi_values(r, dim, upper)

    @_chi_op.register_fake
    def _(r, dim, upper):
        return torch.empty_like(r)

    def _chi_setup(ctx, inputs, output):
        r, dim, upper = inputs
        ctx.save_for_backward(r)
        ctx.dim, ctx.upper = dim, upper

    def _chi_backward(ctx, grad):
        (r,) = ctx.saved_tensors
        pdf = torch.exp(_log_chi_pdf_impl(r, ctx.dim))  # 0 at r <= 0 for dim >= 2; r < 0 -> 0 always
        pdf = torch.where(r < 0, torch.zeros_like(pdf), pdf)
        return (-grad * pdf if ctx.upper else grad * pdf), None, None

    _chi_op.register_autograd(_chi_backward, setup_context=_chi_setup)
    return ns.special_hyp1f1_negarg.default, ns.special_chi_cdf.default


_HYP_OP, _CHI_OP = _define_ops()


# The same ops as torch.autograd.Functions (setup_context, jvp, an elementwise vmap rule), which is
# what torch.func transforms need; derivatives of any order compose from the Functions themselves.
# torch.compile traces the custom ops instead (dynamo does not trace Functions with a custom jvp).
class _Hyp1f1NegArg(torch.autograd.Function):
    @staticmethod
    def forward(z, a, b):
        # The op's body itself in plain eager mode, as ops._run_op (why: there): a custom op's first call
        # imports torch._dynamo (1-2 s of a short `latentdiv check`).
        return _hyp_values(z, a, b) if _ext.plain_eager(z) else _HYP_OP(z, a, b)

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, a, b = inputs
        ctx.save_for_backward(z)
        ctx.save_for_forward(z)
        ctx.a, ctx.b = a, b

    @staticmethod
    def _slope(ctx):  # d/dz M(a; b; -z) = -(a/b) M(a+1; b+1; -z)
        (z,) = ctx.saved_tensors
        return _Hyp1f1NegArg.apply(z, ctx.a + 1.0, ctx.b + 1.0) * (-(ctx.a / ctx.b))

    @staticmethod
    def backward(ctx, grad):
        return grad * _Hyp1f1NegArg._slope(ctx), None, None

    @staticmethod
    def jvp(ctx, tz, *_):
        return tz * _Hyp1f1NegArg._slope(ctx)

    @staticmethod
    def vmap(info, in_dims, z, a, b):  # elementwise: the batch dimension passes through
        return _Hyp1f1NegArg.apply(z, a, b), in_dims[0]


class _ChiCdf(torch.autograd.Function):
    @staticmethod
    def forward(r, dim, upper):  # as _Hyp1f1NegArg.forward
        return _chi_values(r, dim, upper) if _ext.plain_eager(r) else _CHI_OP(r, dim, upper)

    @staticmethod
    def setup_context(ctx, inputs, output):
        r, dim, upper = inputs
        ctx.save_for_backward(r)
        ctx.save_for_forward(r)
        ctx.dim, ctx.upper = dim, upper

    @staticmethod
    def _slope(ctx):  # the chi_D density (plain torch ops: differentiable to any order); 0 for r < 0
        (r,) = ctx.saved_tensors
        pdf = torch.exp(_log_chi_pdf_impl(r, ctx.dim))
        pdf = torch.where(r < 0, torch.zeros_like(pdf), pdf)
        return -pdf if ctx.upper else pdf

    @staticmethod
    def backward(ctx, grad):
        return grad * _ChiCdf._slope(ctx), None, None

    @staticmethod
    def jvp(ctx, tr, *_):
        return tr * _ChiCdf._slope(ctx)

    @staticmethod
    def vmap(info, in_dims, r, dim, upper):
        return _ChiCdf.apply(r, dim, upper), in_dims[0]


def _hyp(z: torch.Tensor, a: float, b: float) -> torch.Tensor:
    return _HYP_OP(z, a, b) if torch.compiler.is_compiling() else _Hyp1f1NegArg.apply(z, a, b)


def _chi(r: torch.Tensor, dim: float, upper: bool) -> torch.Tensor:
    return _CHI_OP(r, dim, upper) if torch.compiler.is_compiling() else _ChiCdf.apply(r, dim, upper)


# ---------------------------------------------------------------------------------------------------
# Public differentiable closed forms
# ---------------------------------------------------------------------------------------------------


def phi_cw(s: torch.Tensor, dim: int) -> torch.Tensor:
    r"""Cramer-Wold kernel :math:`\varphi_D(s) = {}_1F_1(\tfrac12; \tfrac D2; -s)`, elementwise, exact.

    .. math:: \varphi_D'(s) = -\tfrac1D\,{}_1F_1(\tfrac32; \tfrac D2+1; -s)

    Source: docs/formulas.md section 5 (CWAE; Kummer-transformed positive series, large-s expansion).
    Used for the O(n) cross term :math:`\sum_i \varphi_D(\|x_i\|^2/(2+4\gamma))` of
    :math:`d_{cw}^2(X, N(0,I))`. Accuracy ~1e-13 relative in float64 (the O(n^2) engine uses the
    fitted form of :func:`cw_phi_params`, ~1e-9). s < 0 is clamped to 0 (gradient 0 there).

    s: [...] float tensor, any device -> [...] same dtype/device. Differentiable (any order).
    """
    check_float_tensor(s, "s")
    D = check_real_at_least_one(dim, "dim")
    return _hyp(torch.clamp_min(s, 0.0), 0.5, 0.5 * D)  # [...]


def gamma_ratio_half(dim: float) -> float:
    r""":math:`c_D = \Gamma(\tfrac{D+1}{2}) / \Gamma(\tfrac D2) = E\|Y\| / \sqrt2`, Y ~ N(0, I_D), stable for large D."""
    return _gamma_ratio_half_const(check_real_at_least_one(dim, "dim"))


@_assume_constant_result  # dynamo cannot trace a scipy ufunc; D is a Python constant
def _gamma_ratio_half_const(D: float) -> float:
    return float(_sp.poch(0.5 * D, 0.5))


def expected_pair_distance_normal(dim: int) -> float:
    r""":math:`E\|Y - Y'\| = 2 c_D = 2\,\Gamma(\tfrac{D+1}{2})/\Gamma(\tfrac D2)`, Y, Y' ~ N(0, I_D) iid.

    Source: docs/formulas.md section 7c (Szekely-Rizzo, E||Y - Y'|| = 2c). Computed with
    scipy.special.poch (relative error ~1e-13 up to D ~ 1e7, no lgamma cancellation).
    """
    return 2.0 * gamma_ratio_half(dim)


def expected_distance_to_normal(sq_norm: torch.Tensor, dim: int) -> torch.Tensor:
    r""":math:`E\|z - Y\|`, Y ~ N(0, I_D), as a function of :math:`x = \|z\|^2`, elementwise:

    .. math::
        E\|z - Y\| = \sqrt2\, c_D\, {}_1F_1(-\tfrac12; \tfrac D2; -\tfrac x2),\qquad
        \frac{d}{dx} = \frac{\sqrt2\, c_D}{2D}\, {}_1F_1(\tfrac12; \tfrac D2 + 1; -\tfrac x2),

    :math:`c_D = \Gamma(\frac{D+1}{2})/\Gamma(\frac D2)`, so :math:`\nabla_z = \frac{\sqrt2 c_D}{D}
    {}_1F_1(\frac12; \frac D2+1; -\frac{\|z\|^2}{2})\, z` (smooth, also at z = 0). Large x:
    :math:`\to \sqrt{x}`. Source: docs/formulas.md section 7c (and section 8, energy distance);
    evaluated via :math:`e^{-x/2}\,{}_1F_1(\frac{D+1}{2}; \frac D2; \frac x2)` (positive terms).
    sq_norm < 0 (rounding) is clamped to 0.

    sq_norm: [...] float tensor -> [...] same dtype/device. Differentiable (any order).
    """
    check_float_tensor(sq_norm, "sq_norm")
    D = check_real_at_least_one(dim, "dim")
    c = math.sqrt(2.0) * gamma_ratio_half(D)
    z = 0.5 * torch.clamp_min(sq_norm, 0.0)  # [...]
    return c * _hyp(z, -0.5, 0.5 * D)  # [...]


def _log_chi_pdf_impl(r: torch.Tensor, dim: float) -> torch.Tensor:
    # (k-1) log r - r^2/2 - (k/2 - 1) log 2 - lgamma(k/2); log r only where r > 0 so that no NaN/inf
    # gradient leaks through torch.where at r <= 0.
    k = float(dim)
    const = -(0.5 * k - 1.0) * math.log(2.0) - math.lgamma(0.5 * k)
    neg_inf = torch.full_like(r, -math.inf)
    if k == 1.0:  # finite at r = 0 (log sqrt(2/pi)), gradient -r; the support is r >= 0
        return torch.where(r < 0, neg_inf, const - 0.5 * r * r)
    pos = r > 0
    r_safe = torch.where(pos, r, torch.ones_like(r))
    core = (k - 1.0) * torch.log(r_safe) - 0.5 * r_safe * r_safe + const
    return torch.where(pos, core, neg_inf)


def log_chi_pdf(r: torch.Tensor, dim: int) -> torch.Tensor:
    r"""Log-density of the chi distribution with D degrees of freedom (radius of N(0, I_D)):

    .. math:: \log p_D(r) = (D-1)\log r - \tfrac{r^2}{2} - (\tfrac D2 - 1)\log 2 - \log\Gamma(\tfrac D2),\quad r > 0.

    Source: docs/formulas.md section 6 (EDF vs CDF: radii have CDF P(D/2, r^2/2); "compute CDFs and pdfs in
    log space"). r < 0: -inf; r = 0: -inf for D >= 2, log sqrt(2/pi) for D = 1. Gradient
    (D-1)/r - r; 0 where the value is -inf (never NaN).

    r: [...] float tensor -> [...] same dtype/device.
    """
    check_float_tensor(r, "r")
    return _log_chi_pdf_impl(r, check_real_at_least_one(dim, "dim"))  # [...]


def chi_cdf(r: torch.Tensor, dim: int) -> torch.Tensor:
    r"""CDF of the chi_D distribution, :math:`F_D(r) = P(\tfrac D2, \tfrac{r^2}{2})` (regularized lower
    incomplete gamma), differentiable w.r.t. r with :math:`F_D'(r) = \exp(\log p_D(r))`
    (:func:`log_chi_pdf`; 0 at r = 0 for D >= 2, sqrt(2/pi) for D = 1, 0 for r < 0).

    Source: docs/formulas.md section 6 (EDF vs CDF on radii; pairwise distances: use chi_cdf(d / sqrt 2)).
    Values from scipy.special.gammainc in float64 (~1e-13 relative; torch.special.gammainc is ~1e-9
    at D >= 64). r < 0 gives 0. Use :func:`chi_sf` for upper tails (p-values).

    r: [...] float tensor -> [...] same dtype/device.
    """
    check_float_tensor(r, "r")
    return _chi(r, check_real_at_least_one(dim, "dim"), False)  # [...]


def chi_sf(r: torch.Tensor, dim: int) -> torch.Tensor:
    r"""Survival function :math:`1 - F_D(r) = Q(\tfrac D2, \tfrac{r^2}{2})`, accurate in the upper tail;
    derivative :math:`-p_D(r)`. Same conventions as :func:`chi_cdf`.

    r: [...] float tensor -> [...] same dtype/device.
    """
    check_float_tensor(r, "r")
    return _chi(r, check_real_at_least_one(dim, "dim"), True)  # [...]


def normal_cdf(x: torch.Tensor) -> torch.Tensor:
    r""":math:`\Phi(x) = \tfrac12\,\mathrm{erfc}(-x/\sqrt2)` (torch.special.ndtr; differentiable, pure torch).

    x: [...] float tensor -> [...].
    """
    check_float_tensor(x, "x")
    return torch.special.ndtr(x)  # [...]
