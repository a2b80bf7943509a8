"""The kernel registry: how a user-facing kernel name and its arguments become the engine's
``(kernel_id, params)`` and the pure-torch formula used by the fallback and the tests.

Adding a kernel = one functor in ``csrc/include/latentdiv/kernels.h`` (+ its line in
``LATENTDIV_FOR_EACH_KERNEL``) and one :class:`KernelSpec` here. Tests iterate over :data:`KERNELS`.
"""

from __future__ import annotations

import math
import sys
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch

from ._ext import MAX_KERNEL_PARAMS as MAX_PARAMS  # noqa: E402  kMaxKernelParams (common.h), exported by the build


def _positive_scales(bandwidth: Any, name: str = "bandwidth") -> Tuple[float, ...]:
    """A positive finite float or a non-empty sequence of them (a multi-scale sum)."""
    if isinstance(bandwidth, torch.Tensor):
        if bandwidth.requires_grad and torch.is_grad_enabled():
            # Reached only where the value is used as a constant (pairwise_sum and mmd differentiate a
            # bandwidth tensor before it gets here): dropping its gradient silently would be wrong.
            raise ValueError(f"{name} requires grad, but this function uses it as a constant: pass "
                             f"{name}.detach() (or a float), or use pairwise_sum / mmd with a gaussian, "
                             "laplacian or imq kernel, which differentiate it")
        if bandwidth.numel() == 0:
            raise ValueError(f"{name} must not be empty")
        values = [float(v) for v in bandwidth.detach().reshape(-1).tolist()]
    elif isinstance(bandwidth, numbers.Real) and not isinstance(bandwidth, bool):
        values = [float(bandwidth)]
    elif isinstance(bandwidth, Sequence) and not isinstance(bandwidth, (str, bytes)):
        values = []
        for v in bandwidth:
            if not isinstance(v, numbers.Real) or isinstance(v, bool):
                raise TypeError(f"{name} must be a positive number or a sequence of them, got element {v!r}")
            values.append(float(v))
        if not values:
            raise ValueError(f"{name} must not be an empty sequence")
    else:
        raise TypeError(f"{name} must be a positive number or a sequence of them, got {type(bandwidth).__name__}")
    for v in values:
        # Comparisons rather than math.isfinite: under torch.compile a float argument that changes
        # between calls becomes a SymFloat, which math.isfinite cannot take (a graph break); the two
        # comparisons reject NaN, inf and v <= 0 alike and trace as guards.
        if not (v > 0.0 and v < math.inf):
            raise ValueError(f"{name} must be positive and finite, got {v!r}")
    if len(values) > MAX_PARAMS:
        raise ValueError(f"{name}: at most {MAX_PARAMS} scales, got {len(values)}")
    return tuple(values)


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive number, got {type(value).__name__}")
    v = float(value)
    if not (math.isfinite(v) and v > 0.0):
        raise ValueError(f"{name} must be positive and finite, got {v!r}")
    return v


@dataclass(frozen=True)
class KernelSpec:
    """One radial kernel k(x, y) = f(||x - y||^2).

    ``make_params(bandwidth, dim, options)`` validates the user's arguments and returns the
    engine's params tuple. ``formula(r, bandwidth, dim, options)`` is the pure-torch f written
    directly from the user's arguments (not from the params, so it is an independent oracle), as a
    function of the distance r (from a difference-based cdist, whose gradient is 0 at r = 0).
    ``options`` names the extra keyword arguments the kernel accepts.
    """

    name: str
    kernel_id: int
    functor: str  # C++ functor name in kernels.h (checked against the build at import)
    make_params: Callable[[Any, int, Dict[str, Any]], Tuple[float, ...]]
    formula: Callable[[torch.Tensor, Any, int, Dict[str, Any]], torch.Tensor]
    options: Tuple[str, ...] = ()
    doc: str = ""
    # s(h) with k_h(x, y) = k_1(x / s(h), y / s(h)) for a bandwidth tensor h: pairwise_sum rescales the
    # points by it, so a bandwidth that requires grad gets its gradient (to second order) through the
    # points' gradients. None: the kernel has no bandwidth to differentiate.
    bandwidth_scale: Optional[Callable[[torch.Tensor], torch.Tensor]] = None


def _gaussian_params(bandwidth, dim, options):
    return tuple(1.0 / (2.0 * h * h) for h in _positive_scales(bandwidth))


def _gaussian_formula(r, bandwidth, dim, options):
    return sum(torch.exp(-(r * r) / (2.0 * h * h)) for h in _positive_scales(bandwidth))


def _laplacian_params(bandwidth, dim, options):
    return tuple(1.0 / h for h in _positive_scales(bandwidth))


def _laplacian_formula(r, bandwidth, dim, options):
    return sum(torch.exp(-r / h) for h in _positive_scales(bandwidth))


def _imq_params(bandwidth, dim, options):
    return _positive_scales(bandwidth)


def _imq_formula(r, bandwidth, dim, options):
    return sum(h / (h + r * r) for h in _positive_scales(bandwidth))


def _energy_params(bandwidth, dim, options):
    # -r has no scale. pairwise_sum's default bandwidth (1.0) is accepted and unused; any other value
    # was silently ignored before, which hid mistakes (bandwidth="foo", -5): now it is an error.
    if not (isinstance(bandwidth, numbers.Real) and not isinstance(bandwidth, bool) and float(bandwidth) == 1.0):
        raise ValueError(f"bandwidth is unused by kernel 'energy' (k = -r has no scale); leave it at its "
                         f"default, got {bandwidth!r}")
    return ()


def _energy_formula(r, bandwidth, dim, options):
    return -r


def _cw_dim(options, dim, minimum):
    d = options.get("dim", dim)
    if isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < minimum:
        raise ValueError(f"dim must be an integer >= {minimum}, got {d!r}")
    return int(d)


def _cw_gamma(options, name):
    if "gamma" not in options:
        raise ValueError(f"kernel {name!r} needs gamma=... (the KDE variance, e.g. (4 / (3 n))^(2/5))")
    return _positive(options["gamma"], "gamma")


def _cw_approx_params(bandwidth, dim, options):
    # K = 1 / (2D - 3) needs D >= 2; the CWAE reference code uses it for D >= 8 only.
    return (_cw_gamma(options, "cramer_wold_approx"), 1.0 / (2.0 * _cw_dim(options, dim, 2) - 3.0))


def _cw_approx_formula(r, bandwidth, dim, options):
    gamma, d = _cw_gamma(options, "cramer_wold_approx"), _cw_dim(options, dim, 2)
    return torch.rsqrt(gamma + r * r / (2.0 * d - 3.0))


def _cw_exact_params(bandwidth, dim, options):
    from . import special

    gamma, d = _cw_gamma(options, "cramer_wold"), _cw_dim(options, dim, 1)
    try:
        params = special.cw_phi_params(d, 1.0 / (4.0 * gamma))
    except ValueError:
        # cw_phi_params keeps a / s_scale = 4 a gamma a normal float64 number (a: its fit constant for
        # this D): say so in terms of gamma, the user's argument.
        a = special._cw_phi_fit_const(float(d))[1]
        lo, hi = sys.float_info.min / (4.0 * a), sys.float_info.max / (4.0 * a)
        raise ValueError(f"gamma={gamma!r} is out of the usable range of the exact Cramer-Wold kernel in "
                         f"D = {d}: {lo:.3g} <= gamma <= {hi:.3g}") from None
    return tuple(float(v) for v in params)


def _cw_exact_formula(r, bandwidth, dim, options):
    from . import special

    gamma, d = _cw_gamma(options, "cramer_wold"), _cw_dim(options, dim, 1)
    return special.phi_cw(r * r / (4.0 * gamma), d)


KERNELS: Dict[str, KernelSpec] = {
    spec.name: spec
    for spec in (
        KernelSpec("gaussian", 0, "Gaussian", _gaussian_params, _gaussian_formula,
                   doc="exp(-r^2 / (2 h^2)), summed over the bandwidths h", bandwidth_scale=lambda h: h),
        KernelSpec("laplacian", 1, "Laplacian", _laplacian_params, _laplacian_formula,
                   doc="exp(-r / h), summed over the bandwidths h", bandwidth_scale=lambda h: h),
        KernelSpec("imq", 2, "Imq", _imq_params, _imq_formula,
                   doc="h / (h + r^2) (inverse multiquadric, WAE), summed over the bandwidths h",
                   bandwidth_scale=torch.sqrt),
        KernelSpec("energy", 3, "Energy", _energy_params, _energy_formula,
                   doc="-r (energy distance); bandwidth unused"),
        KernelSpec("cramer_wold_approx", 4, "CramerWoldApprox", _cw_approx_params, _cw_approx_formula,
                   options=("gamma", "dim"),
                   doc="(gamma + r^2 / (2D - 3))^(-1/2), the CWAE paper's approximation of phi_D"),
        KernelSpec("cramer_wold", 5, "CramerWoldExact", _cw_exact_params, _cw_exact_formula,
                   options=("gamma", "dim"),
                   doc="phi_D(r^2 / (4 gamma)) = 1F1(1/2; D/2; -r^2/(4 gamma)), exact Cramer-Wold kernel"),
    )
}


def get_kernel(name: Any) -> KernelSpec:
    if not isinstance(name, str):
        raise TypeError(f"kernel must be a string, one of {sorted(KERNELS)}, got {type(name).__name__}")
    spec = KERNELS.get(name)
    if spec is None:
        raise ValueError(f"unknown kernel {name!r}; choose one of {sorted(KERNELS)}")
    return spec


def kernel_params(spec: KernelSpec, bandwidth: Any, dim: int, options: Dict[str, Any]) -> Tuple[float, ...]:
    unknown = set(options) - set(spec.options)
    if unknown:
        raise TypeError(f"kernel {spec.name!r} got unexpected keyword argument(s) {sorted(unknown)}; "
                        f"it accepts {list(spec.options) or 'none'}")
    return spec.make_params(bandwidth, dim, options)


def check_against_build(build_kernels: Dict[str, int]) -> None:
    """The C++ registry and this one must agree on every id (a mismatch is a build bug)."""
    for spec in KERNELS.values():
        if build_kernels.get(spec.functor) != spec.kernel_id:
            raise ImportError(f"latentdiv._C kernel registry mismatch for {spec.functor}: "
                              f"Python id {spec.kernel_id}, compiled {build_kernels.get(spec.functor)}")
