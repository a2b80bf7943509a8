"""The kernel registry: every Python-side fact about a kernel, in one :class:`KernelSpec` each.

A spec says how a user-facing kernel name and its arguments become the engine's ``(kernel_id,
params)``, the pure-torch formula of the float64 reference (the fallback and the tests' oracle), its
parameters and their units, and whether :func:`latentdiv.mmd` accepts it. Everything else is derived
from :data:`KERNELS` or checked against it by a test: the kernels ``mmd`` accepts and their default
bandwidths, the bandwidth-gradient rule of ``pairwise_sum``, the tests' kernel cases
(tests/kernel_cases.py), the kernel tables of README.md and docs/ (tests/test_registry.py).

Adding a kernel = one functor in ``csrc/include/latentdiv/kernels.h`` (+ its line in
``LATENTDIV_FOR_EACH_KERNEL``) and one :class:`KernelSpec` here (copy the closest entry of
:data:`KERNELS`); tests/test_registry.py then names any doc table row still to write.
"""

from __future__ import annotations

import functools
import numbers
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

import torch

from ._ext import MAX_KERNEL_PARAMS as MAX_PARAMS  # noqa: E402  kMaxKernelParams (common.h), exported by the build
from ._validation import check_positive, check_positive_scales  # noqa: E402


#: bandwidth_scales(bandwidth, name="bandwidth"): a positive finite bandwidth or a non-empty sequence of
#: them (a multi-scale sum), at most MAX_PARAMS (the engine's parameter limit). A partial, not a wrapper
#: function: it is on every loss call's path.
bandwidth_scales = functools.partial(check_positive_scales, max_count=MAX_PARAMS)


@dataclass(frozen=True)
class Units:
    """What a bandwidth measures: a distance to the power ``power`` (1: a distance h, k_h(r) = k_1(r / h);
    2: a squared distance C, k_C(r) = k_1(r / sqrt(C))). The bandwidth of the scale r is r ** power."""

    name: str
    power: float
    # s(h) = h ** (1 / power), with k_h(x, y) = k_1(x / s(h), y / s(h)): the points' scale for a
    # bandwidth tensor h (written out, so that e.g. sqrt keeps torch's own derivative formula).
    point_scale: Callable[[torch.Tensor], torch.Tensor]


#: h is a distance: k_h(r) = k_1(r / h) (gaussian, laplacian).
DISTANCE = Units("distance", 1.0, lambda h: h)
#: C is a squared distance: k_C(r) = k_1(r / sqrt(C)) (imq, C = h^2).
SQUARED_DISTANCE = Units("squared distance", 2.0, torch.sqrt)
_UNITS = {u.name: u for u in (DISTANCE, SQUARED_DISTANCE)}


@dataclass(frozen=True)
class KernelParameter:
    """One argument of a kernel, as :func:`latentdiv.pairwise_sum` takes it."""

    name: str    # the keyword: "bandwidth", or a kernel option such as "gamma"
    symbol: str  # its letter in the formulas and the docs' tables (h, C, gamma, D)
    units: str   # what it measures (a Units name for a bandwidth)
    doc: str     # its entry in the parameter column of the README's kernel table
    required: bool = True  # False: an option with a default (such as dim = x's D)


def _bandwidth(symbol: str, units: Units, doc: str) -> KernelParameter:
    return KernelParameter("bandwidth", symbol, units.name, doc)


@dataclass(frozen=True)
class KernelSpec:
    """One radial kernel k(x, y) = f(||x - y||^2).

    ``make_params(bandwidth, dim, options)`` validates the user's arguments and returns the
    engine's params tuple. ``formula(r, bandwidth, dim, options)`` is the pure-torch f written
    directly from the user's arguments (not from the params, so it is an independent oracle), as a
    function of the distance r (from a difference-based cdist, whose gradient is 0 at r = 0);
    ``formula_text`` is the same f in plain text (the docs' tables are checked against it).
    ``parameters``: what ``pairwise_sum`` takes besides the points (a ``"bandwidth"`` entry, if any,
    is a scale of the points in its units, :data:`DISTANCE` or :data:`SQUARED_DISTANCE`, which become
    ``bandwidth_units``; the other entries are the keyword ``options``).
    ``mmd``: whether :func:`latentdiv.mmd` / ``MMDLoss`` accept it (then a kernel with a bandwidth
    defaults to the prior's median heuristic in its units, :meth:`default_bandwidth`).
    ``examples``: (bandwidth, options) argument sets in the kernel's usual range, the cases every
    kernel test runs (tests/kernel_cases.py); ``min_dim``: the smallest D the kernel is defined for.
    """

    name: str
    kernel_id: int
    functor: str  # C++ functor name in kernels.h (checked against the build at import)
    make_params: Callable[[Any, int, Dict[str, Any]], Tuple[float, ...]]
    formula: Callable[[torch.Tensor, Any, int, Dict[str, Any]], torch.Tensor]
    formula_text: str
    parameters: Tuple[KernelParameter, ...]
    mmd: bool
    examples: Tuple[Tuple[Any, Dict[str, Any]], ...] = field(compare=False)  # test data: not part of identity
    min_dim: int = 1
    doc: str = ""  # f and its parameters in a phrase: its line in the public docstrings' kernel lists
    # Derived once from ``parameters`` (read at every call): the units of the "bandwidth" parameter
    # (None: the kernel has none), and the extra keyword arguments it accepts (the other parameters).
    bandwidth_units: Optional[Units] = field(init=False)
    options: Tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        bandwidth = [p for p in self.parameters if p.name == "bandwidth"]
        units = None
        if bandwidth:
            units = _UNITS.get(bandwidth[0].units)
            if units is None:
                raise ValueError(f"KernelSpec {self.name!r}: a bandwidth is in one of {sorted(_UNITS)}, "
                                 f"got {bandwidth[0].units!r}")
        if not self.examples:
            raise ValueError(f"KernelSpec {self.name!r} needs at least one example (the tests' cases)")
        object.__setattr__(self, "bandwidth_units", units)
        object.__setattr__(self, "options", tuple(p.name for p in self.parameters if p.name != "bandwidth"))

    @property
    def bandwidth_scale(self) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
        """s(h) with k_h(x, y) = k_1(x / s(h), y / s(h)) for a bandwidth tensor h: pairwise_sum rescales
        the points by it, so a bandwidth that requires grad gets its gradient (to second order) through
        the points' gradients. None: the kernel has no bandwidth to differentiate."""
        return None if self.bandwidth_units is None else self.bandwidth_units.point_scale

    def default_bandwidth(self, dim: Any) -> Any:
        """The median heuristic of the prior N(0, I_D) in this kernel's units: two prior points are
        about sqrt(2D) apart (E|Y - Y'|^2 = 2D), so h = sqrt(2D) for a distance, C = 2D for a squared
        distance. ``dim`` may be a torch.SymInt under torch.compile(dynamic=True) (** stays symbolic)."""
        if self.bandwidth_units is None:
            raise ValueError(f"kernel {self.name!r} has no bandwidth")
        return (2.0 * dim) ** (0.5 * self.bandwidth_units.power)  # exact for the power 2: (2D) ** 1.0

    def bandwidth_from_distance(self, r: float) -> float:
        """The bandwidth whose scale is the distance r (``bandwidth="median"``: r = the median distance)."""
        if self.bandwidth_units is None:
            raise ValueError(f"kernel {self.name!r} has no bandwidth")
        p = self.bandwidth_units.power
        return r if p == 1.0 else r * r if p == 2.0 else r ** p  # r * r: exact (r ** 2.0 may round differently)


def _gaussian_params(bandwidth, dim, options):
    return tuple(1.0 / (2.0 * h * h) for h in bandwidth_scales(bandwidth))


def _gaussian_formula(r, bandwidth, dim, options):
    return sum(torch.exp(-(r * r) / (2.0 * h * h)) for h in bandwidth_scales(bandwidth))


def _laplacian_params(bandwidth, dim, options):
    return tuple(1.0 / h for h in bandwidth_scales(bandwidth))


def _laplacian_formula(r, bandwidth, dim, options):
    return sum(torch.exp(-r / h) for h in bandwidth_scales(bandwidth))


def _imq_params(bandwidth, dim, options):
    return bandwidth_scales(bandwidth)


def _imq_formula(r, bandwidth, dim, options):
    return sum(h / (h + r * r) for h in bandwidth_scales(bandwidth))


def _imq_sqrt_formula(r, bandwidth, dim, options):
    return sum(torch.sqrt(h / (h + r * r)) for h in bandwidth_scales(bandwidth))


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
    return check_positive(options["gamma"], "gamma")


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


# A new kernel's entry (after its functor and LATENTDIV_FOR_EACH_KERNEL line in kernels.h), e.g. for
# a kernel f(r) = 1 / (1 + r^2 / h^2) with a distance bandwidth h:
#
#     def _new_params(bandwidth, dim, options):    # the engine's params, in the functor's order
#         return tuple(1.0 / (h * h) for h in bandwidth_scales(bandwidth))
#
#     def _new_formula(r, bandwidth, dim, options):  # float64 torch, from the user's arguments
#         return sum(1.0 / (1.0 + (r / h) ** 2) for h in bandwidth_scales(bandwidth))
#
#     KernelSpec("new", <its id in the X-macro>, "<Functor>", _new_params, _new_formula,
#                formula_text="1 / (1 + r^2 / h^2)",
#                parameters=(_bandwidth("h", DISTANCE, "`bandwidth` h (or a list)"),),
#                mmd=True,           # mmd takes it, default h = sqrt(2D)
#                examples=((1.3, {}), ([0.5, 2.0, 7.0], {})),  # the cases of every kernel test
#                doc="1 / (1 + r^2 / h^2), summed over the bandwidths h")
#
# Then run tests/test_registry.py: it prints the rows to add to the kernel tables of README.md and docs/.
_WAE_SEVEN = [0.2, 0.4, 1.0, 2.0, 4.0, 10.0, 20.0]  # WAE's seven scales (C = 2D x WAE_SCALES at D = 1)
_CW_PARAMETERS = (
    KernelParameter("gamma", "gamma", "squared distance", "`gamma=`"),
    KernelParameter("dim", "D", "integer", "optional `dim=` (default: x's D)", required=False),
)

KERNELS: Dict[str, KernelSpec] = {
    spec.name: spec
    for spec in (
        KernelSpec(
            "gaussian", 0, "Gaussian", _gaussian_params, _gaussian_formula,
            formula_text="exp(-r^2 / (2 h^2))",
            parameters=(_bandwidth("h", DISTANCE, "`bandwidth` h (or a list: summed)"),),
            mmd=True,
            examples=((1.3, {}), ([0.5, 2.0, 7.0], {})),
            doc="exp(-r^2 / (2 h^2)), summed over the bandwidths h"),
        KernelSpec(
            "laplacian", 1, "Laplacian", _laplacian_params, _laplacian_formula,
            formula_text="exp(-r / h)",
            parameters=(_bandwidth("h", DISTANCE, "`bandwidth` h (or a list)"),),
            mmd=True,
            examples=((1.1, {}), ([0.4, 3.0], {})),
            doc="exp(-r / h), summed over the bandwidths h"),
        KernelSpec(
            "imq", 2, "Imq", _imq_params, _imq_formula,
            formula_text="h / (h + r^2)",
            parameters=(_bandwidth("h", SQUARED_DISTANCE, "`bandwidth` h (or a list; WAE uses C = 2 D sigma^2 x "
                                                          "{.1,.2,.5,1,2,5,10})"),),
            mmd=True,
            examples=((2.0, {}), (_WAE_SEVEN, {})),
            doc="h / (h + r^2) (inverse multiquadric, WAE), summed over the bandwidths h"),
        KernelSpec(
            "imq_sqrt", 6, "ImqSqrt", _imq_params, _imq_sqrt_formula,
            formula_text="(h / (h + r^2))^(1/2)",
            parameters=(_bandwidth("h", SQUARED_DISTANCE, "`bandwidth` h (or a list)"),),
            mmd=True,
            examples=((2.0, {}), ((0.5, 2.0, 8.0), {})),
            doc="(h / (h + r^2))^(1/2) = (1 + r^2 / h)^(-1/2) (inverse multiquadric of exponent -1/2, heavy-tailed: "
                "Gorham & Mackey 2017), summed over the bandwidths h"),
        KernelSpec(
            "energy", 3, "Energy", _energy_params, _energy_formula,
            formula_text="-r",
            parameters=(), mmd=True,
            examples=((1.0, {}),),
            doc="-r (energy distance); bandwidth unused"),
        KernelSpec(
            "cramer_wold_approx", 4, "CramerWoldApprox", _cw_approx_params, _cw_approx_formula,
            formula_text="(gamma + r^2 / (2D - 3))^(-1/2)",
            parameters=_CW_PARAMETERS, mmd=False,
            examples=((1.0, {"gamma": 0.3}),), min_dim=2,
            doc="(gamma + r^2 / (2D - 3))^(-1/2), the CWAE paper's approximation of phi_D"),
        KernelSpec(
            "cramer_wold", 5, "CramerWoldExact", _cw_exact_params, _cw_exact_formula,
            formula_text="phi_D(r^2 / (4 gamma)), phi_D(s) = 1F1(1/2; D/2; -s)",
            parameters=_CW_PARAMETERS, mmd=False,
            examples=((1.0, {"gamma": 0.3}),),
            doc="phi_D(r^2 / (4 gamma)) = 1F1(1/2; D/2; -r^2/(4 gamma)), the exact Cramer-Wold kernel "
                "(fitted per D to 1e-6 relative)"),
    )
}

#: The kernels :func:`latentdiv.mmd` and ``MMDLoss`` accept, in registry order.
MMD_KERNELS: Tuple[str, ...] = tuple(name for name, spec in KERNELS.items() if spec.mmd)


def kernels_doc(names: Optional[Tuple[str, ...]] = None, indent: str = "    ") -> str:
    """A reST bullet list of the kernels ``names`` (default: all), one per line, from the registry:
    the public docstrings that list kernels are completed with it at import, so they name every kernel."""
    lines = []
    for name in (tuple(KERNELS) if names is None else names):
        spec = KERNELS[name]
        opts = [f"``{p.name}=``" if p.required else f"optional ``{p.name}=``"
                for p in spec.parameters if p.name != "bandwidth"]
        lines.append(f'{indent}- ``"{name}"``' + (f" ({', '.join(opts)})" if opts else "") + f": {spec.doc}")
    return "\n".join(lines)


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
