"""The public primitives over pairs of points: :func:`pairwise_sum` and :func:`pdist`.

Both route to the compiled engine (custom ops in ``ops.py``) when it is available for the device and
to ``reference.py`` otherwise; the results agree to the tolerances of docs/formulas.md section 10.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional, Sequence, Union

import torch

from . import _ext, _fused_ops, ops, reference
from ._registry import KernelSpec, get_kernel, kernel_params, kernels_doc
from ._validation import check_bool, check_pair, check_points, check_weights, compute_dtype

Bandwidth = Union[float, Sequence[float], torch.Tensor]


def _engine_params(spec: KernelSpec, bandwidth: Any, dim: int, options: dict) -> tuple:
    """The engine's params, or a ValueError naming the argument (``gamma`` for the Cramer-Wold kernels,
    else ``bandwidth``) when a positive finite value is still unusable: its derived parameters (e.g.
    1 / (2 h^2) for h = 1e-300) leave float64's range. The engine takes any finite params whatever the
    input dtype (float32 passes rescale and clamp them, docs/engine.md)."""
    name = "gamma" if "gamma" in spec.options else "bandwidth"
    if spec.functor == "CramerWoldExact" and "gamma" in options:
        gamma = options["gamma"]
        # The fitted phi_D reads 1 / (4 gamma) and 4 gamma (D/2 + 8) (cw_phi.h); both must be normal.
        if isinstance(gamma, numbers.Real) and not isinstance(gamma, bool) and 0 < gamma < math.inf:
            for derived in (0.25 / gamma, 4.0 * gamma * (dim / 2.0 + 8.0)):
                if not (2.3e-308 < derived < 1.7e308):
                    raise ValueError(f"gamma={gamma!r} is out of the usable range for kernel {spec.name!r} "
                                     f"(1 / (4 gamma) and gamma (2D + 32) must be normal float64 numbers)")
    try:
        params = kernel_params(spec, bandwidth, dim, options)
        # Comparisons, not math.isfinite: under torch.compile a float that changes between calls is a
        # SymFloat, which math.isfinite cannot take (a graph break); comparisons trace as guards.
        usable = all(-math.inf < v < math.inf for v in params)
    except (ZeroDivisionError, OverflowError):
        usable = False
    if not usable:
        raise ValueError(f"{name}={bandwidth if name == 'bandwidth' else options.get('gamma')!r} is out of the usable "
                         f"range for kernel {spec.name!r}: its derived parameters overflow float64")
    return params


def pairwise_sum(
    x: torch.Tensor,                          # [n, D]
    y: Optional[torch.Tensor] = None,         # [m, D]; None: y is x
    *,
    kernel: str = "gaussian",
    bandwidth: Bandwidth = 1.0,
    weights_x: Optional[torch.Tensor] = None,  # [n]
    weights_y: Optional[torch.Tensor] = None,  # [m]; with y=None it must be None (weights_x is used)
    exclude_diagonal: bool = False,
    **kernel_options: Any,
) -> torch.Tensor:                            # [] in x's dtype
    r"""Weighted sum of a radial kernel over all pairs, without building the n x m matrix.

    .. math::
        S = \sum_{i=1}^{n} \sum_{j=1}^{m} w^x_i \, w^y_j \, k(x_i, y_j),
        \qquad k(x, y) = f(\lVert x - y \rVert^2)

    Kernels (``bandwidth`` = h; a sequence of bandwidths sums the kernel over them in one pass; the
    list is the registry's, ``latentdiv.KERNELS``):

{kernels}

    ``y=None`` means y is x, with ``weights_x`` on both sides; ``exclude_diagonal=True`` then drops
    the i = j terms (U-statistics). Differentiable with respect to x, y and both weight vectors;
    memory O((n + m) D). float16/bfloat16 are computed in float32; every sum is accumulated in
    float64 and the result is returned in x's dtype.
    """
    spec = get_kernel(kernel)
    check_points(x, "x")
    check_bool(exclude_diagonal, "exclude_diagonal")
    if y is None:
        if weights_y is not None:
            raise ValueError("weights_y must be None when y is None (weights_x weighs both sides of x's self pairs)")
    else:
        check_points(y, "y")
        check_pair(x, y)
        if exclude_diagonal:
            raise ValueError("exclude_diagonal=True needs y=None (the diagonal i = j exists only for self pairs)")
    check_weights(weights_x, "weights_x", x, "x")
    check_weights(weights_y, "weights_y", y if y is not None else x, "y")
    dim = x.shape[1]
    if isinstance(bandwidth, torch.Tensor) and bandwidth.requires_grad and torch.is_grad_enabled():
        return _sum_differentiable_bandwidth(spec, x, y, bandwidth, weights_x, weights_y, exclude_diagonal,
                                             kernel_options)
    params = _engine_params(spec, bandwidth, dim, kernel_options)

    out_dtype = x.dtype
    work = compute_dtype(x.dtype)
    xc = x.to(work)
    yc = None if y is None else y.to(work)
    wx = None if weights_x is None else weights_x.to(work)
    wy = None if weights_y is None else weights_y.to(work)

    fused = _fused_ops.pairwise_value(xc, yc, wx, wy, spec.kernel_id, params, exclude_diagonal,
                                     out_dtype)  # CPU engine
    if fused is not None:
        return fused.to(out_dtype)
    if _ext.use_compiled(x.device):
        args = [xc.contiguous(), None if yc is None else yc.contiguous(),
                None if wx is None else wx.contiguous(), None if wy is None else wy.contiguous()]
        if torch.is_grad_enabled() and yc is not None and not xc.requires_grad and yc.requires_grad:
            # S(x, y, wx, wy) = S(y, x, wy, wx) (k is symmetric): put the side that needs a gradient first.
            args = [args[1], args[0], args[3], args[2]]
        if torch.is_grad_enabled() and args[0].requires_grad:
            # Training path: the forward pass also yields the first argument's gradient (ops.py).
            total, _, _ = ops.sum_with_grad_fn(*args, spec.kernel_id, list(params), exclude_diagonal)
        else:
            total = ops.sum_fn(*args, spec.kernel_id, list(params), exclude_diagonal)
    else:
        total = reference.pairwise_sum(xc, yc, wx, wy, spec, bandwidth, kernel_options, exclude_diagonal)
    return total.to(out_dtype)


if pairwise_sum.__doc__:  # None under python -OO
    pairwise_sum.__doc__ = pairwise_sum.__doc__.replace("{kernels}", kernels_doc())


def _sum_differentiable_bandwidth(spec, x, y, bandwidth, weights_x, weights_y, exclude_diagonal, kernel_options):
    """pairwise_sum for a bandwidth tensor that requires grad: k_h(x, y) = k_1(x / s(h), y / s(h))
    (KernelSpec.bandwidth_scale), one pass per scale over the rescaled points, so h's gradient (and
    its second order) comes through the points' gradients."""
    if spec.bandwidth_scale is None:
        raise ValueError(f"bandwidth requires grad, but kernel {spec.name!r} has no bandwidth to differentiate")
    _engine_params(spec, bandwidth.detach(), x.shape[1], kernel_options)  # the same checks as a constant bandwidth
    work = compute_dtype(x.dtype)
    total = None
    for h in bandwidth.reshape(-1).to(work):
        c = spec.bandwidth_scale(h)
        term = pairwise_sum(x.to(work) / c, None if y is None else y.to(work) / c, kernel=spec.name, bandwidth=1.0,
                            weights_x=weights_x, weights_y=weights_y, exclude_diagonal=exclude_diagonal,
                            **kernel_options)
        total = term if total is None else total + term
    return total.to(x.dtype)


def pdist(x: torch.Tensor) -> torch.Tensor:  # [n, D] -> [n (n - 1) / 2]
    r"""Condensed pairwise Euclidean distances :math:`\lVert x_i - x_j \rVert`, i < j, in the order of
    ``torch.pdist`` (and ``scipy.spatial.distance.pdist``). Differentiable; the gradient of a zero
    distance is 0 (subgradient), never NaN. The output itself has n(n-1)/2 entries."""
    check_points(x, "x")
    work = compute_dtype(x.dtype)
    xc = x.to(work).contiguous()
    if _ext.use_compiled(x.device):
        out = ops.pdist_fn(xc)
    else:
        out = reference.pdist(xc)
    return out.to(x.dtype)
