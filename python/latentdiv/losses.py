r"""The divergence catalog as ``torch.nn.Module`` losses (formulas and sources: :mod:`latentdiv.functional`).

Calling conventions (as geomloss's ``SamplesLoss``):

- ``loss(x)``: x against the prior N(0, I) (closed form where one exists);
- ``loss(x, y)``: two samples;
- ``loss(a, x)`` / ``loss(a, x, b, y)``: weighted (a: (n,) or (B, n); weights are relative and are
  normalised to sum 1; ``b=None`` means uniform; (n,) weights are shared by a (B, n, D) batch). A
  two-argument call is read as ``(a, x)`` when the first argument has fewer dimensions than the
  second, else as ``(x, y)``.

x of shape (n, D) gives one value; (B, n, D) gives one value per batch element, reduced over the
batch by ``reduction`` = ``"mean"`` (default) | ``"sum"`` | ``"none"`` (shape (B,)).

Every module takes ``group=`` (a ``torch.distributed`` process group or
:data:`latentdiv.distributed.WORLD`): then each rank passes its local batch and gets the value on the
global batch (docs/distributed.md).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from . import functional as F
from ._registry import bandwidth_scales
from ._validation import check_bool, check_choice, check_int, check_positive, check_samples

__all__ = [
    "CoordinatesCvMLoss",
    "CramerWoldLoss",
    "DistancesCvMLoss",
    "EnergyDistanceLoss",
    "KLNormalLoss",
    "MMDLoss",
    "MMDToNormalLoss",
    "RadiiCvMLoss",
    "SlicedWassersteinLoss",
]

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(value: torch.Tensor, reduction: str) -> torch.Tensor:  # [] or [B] -> [] or [B]
    if value.dim() == 0 or reduction == "none":
        return value
    return value.mean() if reduction == "mean" else value.sum()


class _SampleLoss(nn.Module):
    """Shared argument parsing and batch reduction. Subclasses implement ``_value(x, y, a, b)``."""

    two_sample = True
    weighted = True

    def __init__(self, reduction: str = "mean", group: Any = None) -> None:
        super().__init__()
        self.reduction = check_choice(reduction, "reduction", _REDUCTIONS)
        self.group = group  # a torch.distributed group (or distributed.WORLD): the global batch's value

    def _parse(self, args: Tuple[Any, ...]):
        name = type(self).__name__
        if len(args) == 1:
            a, x, b, y = None, args[0], None, None
        elif len(args) == 2:
            first, second = args
            if (isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor)
                    and first.dim() < second.dim()):
                a, x, b, y = first, second, None, None
            else:
                a, x, b, y = None, first, None, second
        elif len(args) == 4:
            a, x, b, y = args
        else:
            raise TypeError(f"{name} takes (x), (x, y), (a, x) or (a, x, b, y); got {len(args)} arguments")
        if y is None and b is not None:
            raise ValueError(f"{name}: weights b were given without a sample y")
        if y is not None and not self.two_sample:
            raise TypeError(f"{name} compares x with N(0, I) only; it takes no second sample y")
        if (a is not None or b is not None) and not self.weighted:
            raise TypeError(f"{name} does not take weights")
        return a, x, b, y

    def forward(self, *args: Any) -> torch.Tensor:
        a, x, b, y = self._parse(args)
        return _reduce(self._value(x, y, a, b), self.reduction)

    def _value(self, x, y, a, b) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class KLNormalLoss(nn.Module):
    r"""VAE KL term :math:`\frac12\sum_j(\mu_j^2 + e^{\ell_j} - 1 - \ell_j)` per sample
    (:func:`latentdiv.functional.kl_normal`), called as ``loss(mu, logvar)`` with tensors of shape
    (..., D). ``reduction``: mean / sum over samples, or ``"none"`` (shape ``mu.shape[:-1]``)."""

    def __init__(self, reduction: str = "mean", max_logvar: float = 50.0, group: Any = None) -> None:
        super().__init__()
        self.group = group
        self.reduction = check_choice(reduction, "reduction", _REDUCTIONS)
        self.max_logvar = check_positive(max_logvar, "max_logvar")

    def forward(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return F.kl_normal(mu, logvar, reduction=self.reduction, max_logvar=self.max_logvar, group=self.group)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, max_logvar={self.max_logvar}"


class MMDLoss(_SampleLoss):
    r"""Squared MMD (:func:`latentdiv.functional.mmd`): the kernels ``mmd`` accepts (gaussian by default),
    multi-scale bandwidths, presets ``"wae"`` and ``"infovae"``, unbiased or biased estimator.

    ``loss(x, y)`` compares two samples. ``loss(x)`` compares x with N(0, I): in closed form
    (``mmd(x, y=None)``, no noise) for the gaussian kernel (including the ``"infovae"`` preset and
    the default bandwidth) with a numeric bandwidth, and for the energy kernel; otherwise (imq,
    ``"wae"``, laplacian, ``bandwidth="median"``) against a fresh N(0, I) sample of x's size drawn
    with ``generator``, as the WAE reference code does. Arguments are checked at construction.
    ``bandwidth=None``: :func:`~latentdiv.functional.default_bandwidth` of each call's D.
    """

    def __init__(self, kernel: Optional[str] = None, bandwidth: Any = None, scales: Optional[Sequence[float]] = None,
                 estimator: Optional[str] = None, preset: Optional[str] = None, reduction: str = "mean",
                 generator: Optional[torch.Generator] = None, group: Any = None) -> None:
        super().__init__(reduction, group)
        # The same checks as mmd's, here, so that MMDLoss(bandwidth=-1) fails where it is written.
        self._kernel, _ = F._check_mmd_args(kernel, bandwidth, scales, estimator, preset)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.kernel, self.bandwidth, self.scales = kernel, bandwidth, scales
        self.estimator, self.preset, self.generator = estimator, preset, generator

    def _value(self, x, y, a, b):
        if y is None and not F._mmd_prior_closed_form(self._kernel, self.bandwidth, self.preset):
            check_samples(x, "x")
            y = torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
        return F.mmd(x, y, kernel=self.kernel, bandwidth=self.bandwidth, scales=self.scales,
                     estimator=self.estimator, weights_x=a, weights_y=b, preset=self.preset, group=self.group)

    def extra_repr(self) -> str:
        return (f"kernel={self.kernel!r}, bandwidth={self.bandwidth!r}, scales={self.scales!r}, "
                f"estimator={self.estimator!r}, preset={self.preset!r}, reduction={self.reduction!r}")


class MMDToNormalLoss(_SampleLoss):
    r"""Closed-form gaussian-kernel MMD^2 to N(0, I) (:func:`latentdiv.functional.mmd_to_normal`);
    ``loss(x)`` or ``loss(a, x)``."""

    two_sample = False

    def __init__(self, bandwidth: Union[float, Sequence[float], None] = None, estimator: str = "unbiased",
                 reduction: str = "mean", group: Any = None) -> None:
        super().__init__(reduction, group)
        if bandwidth is not None:  # None: h = sqrt(2D) of each call (functional.default_bandwidth)
            bandwidth_scales(bandwidth, "bandwidth")
        self.bandwidth = bandwidth
        self.estimator = check_choice(estimator, "estimator", F._ESTIMATORS)

    def _value(self, x, y, a, b):
        return F.mmd_to_normal(x, bandwidth=self.bandwidth, estimator=self.estimator, weights=a, group=self.group)

    def extra_repr(self) -> str:
        return f"bandwidth={self.bandwidth!r}, estimator={self.estimator!r}, reduction={self.reduction!r}"


class CramerWoldLoss(_SampleLoss):
    r"""Squared Cramer-Wold distance (:func:`latentdiv.functional.cramer_wold`), to N(0, I) in closed
    form (``loss(x)``) or between two samples. ``log=True`` returns :math:`\log(d_{cw}^2 + \varepsilon)`,
    the CWAE loss (:func:`~latentdiv.functional.cwae_loss`). ``gamma=None``: :math:`(4/(3n))^{2/5}`
    of each call's batch size."""

    def __init__(self, gamma: Optional[float] = None, phi: str = "exact", log: bool = False, eps: float = 1e-7,
                 reduction: str = "mean", group: Any = None) -> None:
        super().__init__(reduction, group)
        self.gamma = None if gamma is None else check_positive(gamma, "gamma")
        self.phi = check_choice(phi, "phi", ("exact", "approx"))
        self.log, self.eps = check_bool(log, "log"), check_positive(eps, "eps")

    def _value(self, x, y, a, b):
        d2 = F.cramer_wold(x, y, gamma=self.gamma, phi=self.phi, weights_x=a, weights_y=b, group=self.group)
        return torch.log(d2 + self.eps) if self.log else d2

    def extra_repr(self) -> str:
        return f"gamma={self.gamma!r}, phi={self.phi!r}, log={self.log}, reduction={self.reduction!r}"


class EnergyDistanceLoss(_SampleLoss):
    r"""Energy distance (:func:`latentdiv.functional.energy_distance`), to N(0, I) in closed form or
    between two samples (ED itself: twice geomloss's ``SamplesLoss("energy")``)."""

    def _value(self, x, y, a, b):
        return F.energy_distance(x, y, weights_x=a, weights_y=b, group=self.group)


class SlicedWassersteinLoss(_SampleLoss):
    r"""Squared sliced 2-Wasserstein distance (:func:`latentdiv.functional.sliced_wasserstein`), to
    N(0, 1) per projection exactly or between two samples. New directions are drawn at every call
    (with ``generator``) unless fixed ``projections`` (L, D) are given."""

    def __init__(self, n_projections: int = 50, generator: Optional[torch.Generator] = None,
                 projections: Optional[torch.Tensor] = None, reduction: str = "mean", group: Any = None) -> None:
        super().__init__(reduction, group)
        self.n_projections, self.generator = check_int(n_projections, "n_projections", 1), generator
        if projections is not None:
            self.register_buffer("projections", projections)
        else:
            self.projections = None

    def _value(self, x, y, a, b):
        return F.sliced_wasserstein(x, y, n_projections=self.n_projections, generator=self.generator,
                                    projections=self.projections, weights_x=a, weights_y=b,
                                    group=self.group)

    def extra_repr(self) -> str:
        return f"n_projections={self.n_projections}, reduction={self.reduction!r}"


class RadiiCvMLoss(_SampleLoss):
    r"""Cramer-von Mises W^2 of the radii against chi_D (:func:`latentdiv.functional.radii_cvm`)."""

    two_sample = False
    weighted = False

    def _value(self, x, y, a, b):
        return F.radii_cvm(x, group=self.group)


class DistancesCvMLoss(_SampleLoss):
    r"""Cramer-von Mises W^2 of the pairwise distances against sqrt(2) chi_D
    (:func:`latentdiv.functional.distances_cvm`)."""

    two_sample = False
    weighted = False

    def _value(self, x, y, a, b):
        return F.distances_cvm(x, group=self.group)


class CoordinatesCvMLoss(_SampleLoss):
    r"""Cramer-von Mises W^2 of each coordinate against N(0, 1), averaged over coordinates
    (:func:`latentdiv.functional.coordinates_cvm`)."""

    two_sample = False
    weighted = False

    def _value(self, x, y, a, b):
        return F.coordinates_cvm(x, group=self.group)
