r"""SIGReg: the sliced Epps-Pulley statistic of LeJEPA (Balestriero and LeCun, arXiv 2511.08544),
as a loss and as a normality statistic (docs/sigreg.md).

For a sample z (n x D) and S unit directions a_1..a_S, each slice u_i = a_s^T z_i is compared with
N(0, 1) through its empirical characteristic function (ECF) :math:`\hat\varphi_s(t) = \frac1n\sum_i e^{\mathrm{i} t u_i}`:

.. math::
    T_s = n \int_{-t_{\max}}^{t_{\max}} \lvert \hat\varphi_s(t) - \varphi(t)\rvert^2\, w(t)\, dt,
    \qquad \varphi(t) = w(t) = e^{-t^2/2},\qquad \mathrm{SIGReg}(z) = \frac1S\sum_s T_s,

the integral by the trapezoidal rule on ``knots`` equally spaced points of [0, t_max], doubled (the
integrand is even in t). :math:`\lvert\hat\varphi - \varphi\rvert^2 = (\bar c(t) - \varphi(t))^2 + \bar s(t)^2`
with :math:`\bar c, \bar s` the means of cos(t u_i), sin(t u_i). Cost O(n D S + n S knots), memory
O(n S knots): no pairs at all.

Defaults (the published ones): ``knots=17`` on [0, ``t_max=3``], trapezoid weights times the Gaussian
window exp(-t^2/2), ``num_slices=256`` Gaussian directions normalised to unit length, the mean over the
slices; from the SIGReg module of rbalestr-lab/lejepa ``MINIMAL.md`` (the paper's code listing) and
``lejepa/univariate/epps_pulley.py`` (``t_max=3``, ``n_points=17``, trapezoid) with
``lejepa/multivariate/slicing.py`` (normalised Gaussian directions, mean reduction).

``estimator="biased"`` (default, LeJEPA's) uses :math:`\lvert\hat\varphi\rvert^2` as is, whose expectation
under N(0, 1) is :math:`\lvert\varphi\rvert^2 + (1 - \lvert\varphi\rvert^2)/n`: the statistic's null mean
is the constant :math:`\int (1 - \varphi^2) w`, not 0. ``"unbiased"`` replaces it with the U-statistic
:math:`(n \lvert\hat\varphi\rvert^2 - 1)/(n - 1)` (the i != j pairs only): then the expectation is exactly 0
at the population optimum z ~ N(0, I), for every n and every set of directions.

Slices: drawn from ``seed`` on the CPU in float64 and then moved to z's device and dtype, so the same
seed gives the same directions on every device and every process (what a data-parallel run needs:
each rank then only has to all-reduce the ECF sums: ``group=``, latentdiv.distributed.sigreg).
:class:`SIGRegLoss` advances the seed by one per call, as LeJEPA's step counter does, so successive
steps see fresh slices.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import torch
from torch import Tensor

from ._validation import check_choice, check_int

NUM_SLICES = 256
T_MAX = 3.0
KNOTS = 17
ESTIMATORS = ("biased", "unbiased")


def quadrature(t_max: float = T_MAX, knots: int = KNOTS, dtype: torch.dtype = torch.float64,
               device=None) -> Tuple[Tensor, Tensor, Tensor]:  # -> t [K], phi [K], weights [K]
    """The knots t_k of [0, t_max], phi(t_k) = exp(-t_k^2 / 2), and the weights: trapezoid on [0, t_max]
    doubled for [-t_max, t_max] (dt at both ends, 2 dt inside), times the window w(t_k) = phi(t_k)."""
    t = torch.linspace(0.0, t_max, knots, dtype=torch.float64)
    dt = t_max / (knots - 1)
    trap = torch.full((knots,), 2.0 * dt, dtype=torch.float64)
    trap[0] = trap[-1] = dt
    phi = torch.exp(-0.5 * t * t)
    return (t.to(device=device, dtype=dtype), phi.to(device=device, dtype=dtype),
            (trap * phi).to(device=device, dtype=dtype))


def slice_directions(dim: int, num_slices: int = NUM_SLICES, seed: int = 0, dtype: torch.dtype = torch.float64,
                     device=None) -> Tensor:  # -> [D, S], unit columns
    """S Gaussian directions normalised to unit length, from ``seed`` (CPU generator, float64, then
    moved): identical for a given (dim, num_slices, seed) on every device and process."""
    gen = torch.Generator().manual_seed(int(seed))
    a = torch.randn(dim, num_slices, generator=gen, dtype=torch.float64)
    a = a / torch.linalg.vector_norm(a, dim=0, keepdim=True)
    return a.to(device=device, dtype=dtype)


def _check_args(z, num_slices, t_max, knots, estimator):
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"z must be a torch.Tensor of shape (n, D) or (B, n, D), got {type(z).__name__}")
    if not z.is_floating_point():
        raise TypeError(f"z must have a floating dtype, got {z.dtype}")
    if z.dim() not in (2, 3) or z.shape[-1] < 1:
        raise ValueError(f"z must have shape (n, D) or (B, n, D) with D >= 1, got shape {tuple(z.shape)}")
    estimator = check_choice(estimator, "estimator", ESTIMATORS)
    if z.shape[-2] < (2 if estimator == "unbiased" else 1):
        raise ValueError(f"z has {z.shape[-2]} sample(s); estimator={estimator!r} needs at least "
                         f"{2 if estimator == 'unbiased' else 1}")
    check_int(num_slices, "num_slices", 1)
    check_int(knots, "knots", 2)
    if isinstance(t_max, bool) or not isinstance(t_max, (int, float)) or not (0.0 < float(t_max) < math.inf):
        raise ValueError(f"t_max must be a positive finite number, got {t_max!r}")
    return estimator


def ecf_sums(z: Tensor,           # [n, D] or [B, n, D]
             directions: Tensor,  # [D, S] unit columns
             t: Tensor,           # [K] knots
             ) -> Tensor:         # [2, (B,) S, K]
    """Sums over the samples of cos(t u_i) and sin(t u_i) for every slice u = z a_s and knot t: the
    n-fold ECF, the only part of SIGReg that a data-parallel run adds up over the ranks."""
    xt = (z @ directions).unsqueeze(-1) * t     # [(B,) n, S, K]
    return torch.stack([torch.cos(xt).sum(dim=-3), torch.sin(xt).sum(dim=-3)])


def statistics_from_ecf(sums: Tensor,  # [2, (B,) S, K] ecf_sums over n samples
                        n: int, phi: Tensor, weights: Tensor, estimator: str) -> Tensor:  # [(B,) S]
    """T_s from the ECF sums of n samples (module docstring)."""
    c, s = sums[0] / n, sums[1] / n              # [(B,) S, K] the ECF's real and imaginary parts
    if estimator == "unbiased":
        ecf2 = (n * (c * c + s * s) - 1.0) / (n - 1)   # unbiased |phi_hat|^2 (pairs i != j)
        err = ecf2 - 2.0 * phi * c + phi * phi
    else:
        err = (c - phi).square() + s.square()
    return n * (err @ weights)                   # [(B,) S]


def slice_statistics(z: Tensor,           # [n, D] or [B, n, D]
                     directions: Tensor,  # [D, S] unit columns
                     t_max: float = T_MAX, knots: int = KNOTS, estimator: str = "biased") -> Tensor:  # [(B,) S]
    """T_s for every slice (module docstring), differentiable in z (pure torch)."""
    t, phi, weights = quadrature(float(t_max), int(knots), z.dtype, z.device)
    return statistics_from_ecf(ecf_sums(z, directions, t), z.shape[-2], phi, weights, estimator)


def resolve_directions(z: Tensor, num_slices: int, seed: int, directions: Optional[Tensor]) -> Tensor:  # [D, S]
    """The given (D, S) directions on z's device and dtype, or num_slices of them drawn from seed."""
    if directions is None:
        return slice_directions(z.shape[-1], num_slices, seed, z.dtype, z.device)
    if not isinstance(directions, torch.Tensor) or directions.dim() != 2 or directions.shape[0] != z.shape[-1]:
        raise ValueError(f"directions must be a (D, S) tensor with D = {z.shape[-1]}, got "
                         f"{tuple(directions.shape) if isinstance(directions, torch.Tensor) else type(directions).__name__}")
    return directions.to(device=z.device, dtype=z.dtype)


def sigreg(
    z: Tensor,                        # [n, D] or [B, n, D]
    *,
    num_slices: int = NUM_SLICES,
    t_max: float = T_MAX,
    knots: int = KNOTS,
    estimator: str = "biased",
    seed: int = 0,
    directions: Optional[Tensor] = None,  # [D, S] unit columns; overrides num_slices / seed
    group: Any = None,
) -> Tensor:                          # [] or [B]
    r"""SIGReg of LeJEPA: the mean over ``num_slices`` random unit directions of the Epps-Pulley
    statistic of the projected sample against N(0, 1) (module docstring for the formula, the
    published defaults and the estimators). Differentiable in z; batched over a leading B dimension
    (the same directions for every batch element). Invariant to the order of the samples.

    ``group`` (a torch.distributed process group or ``latentdiv.distributed.WORLD``): the statistic of
    the global batch, every rank's ECF sums all-reduced (LeJEPA's all-reduce of the ECF means), the
    contract of docs/distributed.md (every rank gets the global value).
    """
    if group is not None:  # the global batch of a torch.distributed group: latentdiv.distributed
        from . import distributed

        return distributed.sigreg(z, num_slices=num_slices, t_max=t_max, knots=knots, estimator=estimator,
                                  seed=seed, directions=directions, group=group)
    estimator = _check_args(z, num_slices, t_max, knots, estimator)
    directions = resolve_directions(z, num_slices, seed, directions)
    return slice_statistics(z, directions, t_max, knots, estimator).mean(dim=-1)


class SIGRegLoss(torch.nn.Module):
    """:func:`sigreg` as a module. Each call uses the directions of seed ``seed + step`` and then
    advances ``step`` (a buffer, saved with the state dict), as LeJEPA's global step does: every
    process computing the same step draws the same slices, and successive steps see fresh ones."""

    def __init__(self, num_slices: int = NUM_SLICES, t_max: float = T_MAX, knots: int = KNOTS,
                 estimator: str = "biased", seed: int = 0, group: Any = None):
        super().__init__()
        _check_args(torch.zeros(2, 1), num_slices, t_max, knots, estimator)
        self.num_slices, self.t_max, self.knots = int(num_slices), float(t_max), int(knots)
        self.estimator, self.seed, self.group = estimator, int(seed), group
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def forward(self, z: Tensor) -> Tensor:  # [n, D] or [B, n, D] -> [] or [B]
        out = sigreg(z, num_slices=self.num_slices, t_max=self.t_max, knots=self.knots, estimator=self.estimator,
                     seed=self.seed + int(self.step), group=self.group)
        self.step += 1
        return out

    def extra_repr(self) -> str:
        return (f"num_slices={self.num_slices}, t_max={self.t_max}, knots={self.knots}, "
                f"estimator={self.estimator!r}, seed={self.seed}")
