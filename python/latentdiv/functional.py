r"""Latent regularizers as differentiable torch functions: the divergence catalog.

Every function takes a batch of latent codes ``x`` of shape (n, D), or a stack of batches (B, n, D)
(then it returns one value per batch element, shape (B,)), and returns a differentiable scalar.
``y=None`` (where offered) means the target N(0, I_D) itself, in closed form: no prior samples, no
extra noise. Weights (``weights_x``, ``weights_y``, shape (n,) or (B, n)) are relative: they are
normalised to sum to 1 inside (gradients flow through the normalisation); ``None`` means uniform.
``group=`` (a ``torch.distributed`` process group or :data:`latentdiv.distributed.WORLD`): each
rank passes its local batch and gets the value on the global batch (docs/distributed.md).

Every O(n^2) term runs through :func:`latentdiv.pairwise_sum` / :func:`latentdiv.pdist` (the fused
engine: memory O((n + m) D), no n x n tensor in the forward or the backward). Inputs in
float16/bfloat16 are computed in float32 and the result is returned in the input dtype; the O(n)
assembly of the terms (closed forms, sorted projections, CDF values) is done in float64 where a
difference of O(1) terms would otherwise lose the small result.

Conventions, with their sources (docs/formulas.md = the project's verified-formulas note):

=========================  =================================================================
``kl_normal``              Kingma & Welling (2014) App. B; pytorch/examples ``vae/main.py``
``mmd`` preset ``"wae"``   tolstikhin/wae ``wae.py`` ``mmd_penalty`` (docs/formulas.md section 2)
``mmd`` preset ``"infovae"`` ShengjiaZhao/MMD-Variational-Autoencoder ``mmd_vae.py`` (section 3)
``mmd_to_normal``          closed form of docs/formulas.md section 7d
``cramer_wold``            Knop et al., JMLR 21 (2020); gmum/cwae-pytorch ``src/metrics/cw.py`` (s. 5)
``energy_distance``        Szekely & Rizzo; energy ``Emvnorm.R`` closed forms (sections 7c, 8)
``sliced_wasserstein``     Kolouri et al. ICLR 2019; exact quantile-bin form (section 4)
``*_cvm``                  Duda, arXiv 1811.04751 (EDF vs CDF), as Cramer-von Mises W^2 (s. 6)
=========================  =================================================================
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch

from . import _fused_ops
from ._registry import KERNELS, MMD_KERNELS, bandwidth_scales, kernels_doc
from ._validation import (check_choice, check_directions, check_int, check_loss_weights, check_positive,
                          check_samples, check_second_sample, compute_dtype, nan_if_nonfinite)
from .pairwise import pairwise_sum, pdist

Bandwidth = Union[float, Sequence[float], str, None]

__all__ = [
    "WAE_SCALES",
    "coordinates_cvm",
    "cramer_wold",
    "cwae_loss",
    "default_bandwidth",
    "default_gamma",
    "distances_cvm",
    "energy_distance",
    "kl_normal",
    "median_bandwidth",
    "mmd",
    "mmd_to_normal",
    "radii_cvm",
    "sliced_wasserstein",
]

#: The seven IMQ scales of the WAE reference code (tolstikhin/wae ``wae.py``, ``mmd_penalty``).
WAE_SCALES: Tuple[float, ...] = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)

_MMD_KERNELS = MMD_KERNELS  # derived from the registry (KernelSpec.mmd)
_ESTIMATORS = ("unbiased", "biased")
_SQRT_PI = math.sqrt(math.pi)


# ---------------------------------------------------------------------------------------------------
# validation and batching helpers
# ---------------------------------------------------------------------------------------------------
# The checks live in _validation (one home for every module); short local names for this module.
_check_samples = check_samples
_check_choice = check_choice
_check_y = check_second_sample
_check_w = check_loss_weights
_check_directions = check_directions


def _map_batch(fn: Callable[..., torch.Tensor], x: torch.Tensor, tensors: Dict[str, Optional[torch.Tensor]],
               batched_rank: Dict[str, int], **kwargs: Any) -> torch.Tensor:
    """Apply ``fn`` to each element of a (B, n, D) batch. ``tensors`` rank ``batched_rank[name]`` are
    indexed along their first dimension, lower ranks are shared by every batch element."""
    out = []
    for b in range(x.shape[0]):
        args = {k: (None if t is None else (t[b] if t.dim() == batched_rank[k] else t)) for k, t in tensors.items()}
        out.append(fn(x[b], **args, **kwargs))
    return torch.stack(out)  # [B]


def _normalize(w: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """Relative weights -> probability weights (sum 1), in the compute dtype. [n] -> [n]."""
    if w is None:
        return None
    w = w.to(dtype)
    return w / w.sum()


def _mean(values: torch.Tensor, w: Optional[torch.Tensor]) -> torch.Tensor:
    """sum_i w_i v_i (w sums to 1), or the plain mean. [n] -> []."""
    return values.mean() if w is None else (w.to(values.dtype) * values).sum()


def _sq_norms(x: torch.Tensor) -> torch.Tensor:  # [n, D] -> [n] float64
    # float64 whatever x's dtype: a float32 |x|^2 overflows from |x| ~ 1.8e19 and underflows below 1e-19.
    x = x.to(torch.float64)
    return (x * x).sum(dim=-1)


def _safe_sqrt(r2: torch.Tensor) -> torch.Tensor:
    """sqrt with value 0 and gradient 0 at 0 (docs/formulas.md section 10), never NaN."""
    pos = r2 > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, r2, torch.ones_like(r2))), torch.zeros_like(r2))


def _self_mean(x: torch.Tensor, w: Optional[torch.Tensor], unbiased: bool, kernel: str, bandwidth: Any,
               **options: Any) -> torch.Tensor:
    r"""E k(X, X'): V-statistic :math:`\sum_{ij} w_i w_j k_{ij}` or U-statistic
    :math:`\sum_{i \ne j} w_i w_j k_{ij} / (1 - \sum_i w_i^2)` (= 1/(n(n-1)) sum_{i != j} when uniform)."""
    n = x.shape[0]
    s = pairwise_sum(x, kernel=kernel, bandwidth=bandwidth, weights_x=w, exclude_diagonal=unbiased, **options)
    s = s.to(torch.float64)
    if w is None:
        return s / (n * (n - 1) if unbiased else n * n)
    if unbiased:
        # All the weight on one point has no pairs (numerator and denominator 0): the public functions
        # refuse it (check_relative_weights); where no check runs (torch.compile) the value is 0 with
        # gradient 0, without an infinite factor that would turn the engine's zero gradients into NaN.
        denom = 1.0 - (w.to(torch.float64) ** 2).sum()
        has_pairs = denom > 0
        return torch.where(has_pairs, s / torch.where(has_pairs, denom, torch.ones_like(denom)), torch.zeros_like(s))
    return s


def _cross_mean(x: torch.Tensor, y: torch.Tensor, wx: Optional[torch.Tensor], wy: Optional[torch.Tensor],
                kernel: str, bandwidth: Any, **options: Any) -> torch.Tensor:
    r"""E k(X, Y) over all n m pairs: :math:`\sum_{ij} a_i b_j k(x_i, y_j)`."""
    s = pairwise_sum(x, y, kernel=kernel, bandwidth=bandwidth, weights_x=wx, weights_y=wy, **options)
    s = s.to(torch.float64)
    if wx is None:
        s = s / x.shape[0]
    if wy is None:
        s = s / y.shape[0]
    return s


# ---------------------------------------------------------------------------------------------------
# KL
# ---------------------------------------------------------------------------------------------------
def _exp_guarded(logvar: torch.Tensor, max_logvar: float) -> torch.Tensor:
    # exp is continued linearly (C^1) above max_logvar: finite value and gradient for any finite input.
    capped = torch.clamp(logvar, max=max_logvar)
    return torch.exp(capped) * (1.0 + (logvar - capped))


def kl_normal(
    mu: torch.Tensor,      # [..., D]
    logvar: torch.Tensor,  # [..., D], log sigma^2
    reduction: str = "mean",
    max_logvar: float = 50.0,
    group: Any = None,
) -> torch.Tensor:         # [] ("mean"/"sum") or [...] ("none")
    r"""KL divergence of the VAE posterior :math:`N(\mu, \mathrm{diag}\,\sigma^2)` from N(0, I), per sample:

    .. math::
        \mathrm{KL}_i = \tfrac12 \sum_{j=1}^{D} \left(\mu_{ij}^2 + e^{\ell_{ij}} - 1 - \ell_{ij}\right),
        \qquad \ell = \log\sigma^2 .

    Source: Kingma & Welling, ICLR 2014, Appendix B; the code form of pytorch/examples
    ``vae/main.py`` (``-0.5 * sum(1 + logvar - mu^2 - exp(logvar))``, which is ``reduction="sum"``).

    ``reduction``: ``"mean"`` (default) averages the per-sample KL over every leading dimension,
    ``"sum"`` sums it, ``"none"`` returns it with shape ``mu.shape[:-1]``.

    Overflow guard: above ``logvar = max_logvar`` (default 50, the range the WAE reference clips
    encoder log-variances to) :math:`e^{\ell}` is continued by its tangent
    :math:`e^{m}(1 + \ell - m)`, so value and gradient stay finite for every finite input (a hard
    clamp would zero the gradient and leave such units stuck). Below it the formula is exact.
    Cost O(nD).
    """
    if group is not None:  # the global batch of a torch.distributed group: latentdiv.distributed
        from . import distributed

        return distributed.kl_normal(mu, logvar, reduction, max_logvar, group=group)
    for t, name in ((mu, "mu"), (logvar, "logvar")):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must have a floating dtype, got {t.dtype}")
    if mu.dim() < 1 or mu.shape[-1] < 1:
        raise ValueError(f"mu must have shape (..., D) with D >= 1, got {tuple(mu.shape)}")
    if logvar.shape != mu.shape:
        raise ValueError(f"logvar must have mu's shape {tuple(mu.shape)}, got {tuple(logvar.shape)}")
    if logvar.device != mu.device:
        raise ValueError(f"mu and logvar must be on the same device, got {mu.device} and {logvar.device}")
    _check_choice(reduction, "reduction", ("mean", "sum", "none"))
    max_logvar = check_positive(max_logvar, "max_logvar")
    out_dtype = torch.promote_types(mu.dtype, logvar.dtype)
    work = compute_dtype(out_dtype)
    m, lv = mu.to(work), logvar.to(work)
    per_sample = 0.5 * (m * m + _exp_guarded(lv, max_logvar) - 1.0 - lv).sum(dim=-1)  # [...]
    # The non-finite policy of every loss, per sample: a NaN or inf in a sample's mu or logvar gives NaN.
    finite = torch.isfinite(mu).all(dim=-1) & torch.isfinite(logvar).all(dim=-1)  # [...]
    per_sample = per_sample * torch.where(finite, per_sample.new_ones(()), per_sample.new_full((), math.nan))
    if reduction == "mean":
        per_sample = per_sample.mean()
    elif reduction == "sum":
        per_sample = per_sample.sum()
    return per_sample.to(out_dtype)


# ---------------------------------------------------------------------------------------------------
# MMD
# ---------------------------------------------------------------------------------------------------
def median_bandwidth(
    x: torch.Tensor,                   # [n, D]
    y: Optional[torch.Tensor] = None,  # [m, D]
    max_points: int = 1024,
    seed: int = 0,
) -> float:
    r"""Median heuristic (Gretton et al., JMLR 2012): the median Euclidean distance between the
    points of the pooled sample :math:`x \cup y`.

    Computed without an (n + m)^2 matrix: at most ``max_points`` points are drawn without
    replacement (``torch.randperm`` with a CPU generator seeded with ``seed``, so the result is
    deterministic), and the median of their ``max_points (max_points - 1) / 2`` distances is taken
    with :func:`latentdiv.pdist` (lower median, as ``torch.median``). Zero distances (duplicates)
    are skipped if the median would otherwise be 0; 1.0 if every distance is 0. No gradient flows
    through the bandwidth (the usual practice). Returns a Python float (a host synchronisation).
    """
    max_points = check_int(max_points, "max_points", 2)
    pool = (x if y is None else torch.cat([x, y.to(x.dtype)], dim=0)).detach()
    if pool.shape[0] < 2:
        raise ValueError(f"the median heuristic needs at least 2 points in x and y together, got {pool.shape[0]}")
    if pool.shape[0] > max_points:
        gen = torch.Generator().manual_seed(int(seed))
        idx = torch.randperm(pool.shape[0], generator=gen)[:max_points].to(pool.device)
        pool = pool[idx]
    d = pdist(pool.to(compute_dtype(pool.dtype)))  # [k (k - 1) / 2]
    med = float(d.median())
    if not med > 0.0:
        positive = d[d > 0]
        med = float(positive.median()) if positive.numel() > 0 else 1.0
    return med


def default_bandwidth(kernel: str, dim: int) -> float:
    r"""The default bandwidth of an MMD kernel in dimension D: the median heuristic applied to the
    prior itself, so that the default is useful in every D.

    Two points of N(0, I_D) are at distance about :math:`\sqrt{2D}` (median of :math:`\sqrt2\chi_D`;
    :math:`E\lVert Y - Y'\rVert^2 = 2D`), so, in the units of ``bandwidth="median"``:
    ``"gaussian"`` and ``"laplacian"`` h = sqrt(2D), ``"imq"`` C = h^2 = 2D (the central scale of
    the WAE reference, C = 2 D sigma^2). Every kernel is then a function of :math:`s = r^2/(2D)`:
    :math:`e^{-s/2}`, :math:`e^{-\sqrt s}`, :math:`1/(1 + s)`. With a fixed h = 1 the gaussian
    kernel of typical pairs is :math:`e^{-D}`: at D = 64 the loss and its gradient vanished (~1e-16)
    even for latents far from the prior, and were exactly 0 at D = 256.
    """
    check_choice(kernel, "kernel", _MMD_BANDWIDTH_KERNELS)
    return _default_bandwidth(kernel, check_int(dim, "dim", 1))


# The mmd kernels that have a bandwidth (KernelSpec.bandwidth_units): those default_bandwidth knows.
_MMD_BANDWIDTH_KERNELS = tuple(k for k in MMD_KERNELS if KERNELS[k].bandwidth_units is not None)


def _default_bandwidth(kernel: str, dim: Any) -> Any:
    # KernelSpec.default_bandwidth without its method call (this is on every default-bandwidth call).
    # dim may be a torch.SymInt under torch.compile(dynamic=True): the units' rule stays symbolic.
    return (2.0 * dim) ** (0.5 * KERNELS[kernel].bandwidth_units.power)


# The presets of mmd and MMDLoss, in one place: kernel, estimator, and the bandwidth(s) as a function of D.
_PRESETS: Dict[str, Dict[str, Any]] = {
    # tolstikhin/wae wae.py mmd_penalty: IMQ, C = 2 D sigma^2 s over WAE_SCALES, unbiased within-sample terms.
    "wae": dict(kernel="imq", estimator="unbiased", bandwidth=lambda dim: tuple(2.0 * dim * s for s in WAE_SCALES)),
    # ShengjiaZhao/MMD-Variational-Autoencoder mmd_vae.py compute_kernel: exp(-r^2 / D^2), V-statistic.
    "infovae": dict(kernel="gaussian", estimator="biased", bandwidth=lambda dim: dim / math.sqrt(2.0)),
}


def _check_mmd_args(kernel: Any, bandwidth: Any, scales: Any, estimator: Any, preset: Any) -> Tuple[str, str]:
    """Validate the MMD arguments that do not depend on the data (called by :func:`mmd` and at
    :class:`~latentdiv.losses.MMDLoss` construction, so a bad argument fails where it is written).
    Returns the resolved (kernel, estimator)."""
    if preset is not None:
        check_choice(preset, "preset", tuple(_PRESETS))
        given = [name for name, v in (("kernel", kernel), ("bandwidth", bandwidth), ("scales", scales),
                                      ("estimator", estimator)) if v is not None]
        if given:
            raise ValueError(f"preset={preset!r} fixes kernel, bandwidth, scales and estimator; "
                             f"do not also pass {', '.join(given)}")
        return _PRESETS[preset]["kernel"], _PRESETS[preset]["estimator"]
    kernel = "gaussian" if kernel is None else check_choice(kernel, "kernel", _MMD_KERNELS)
    estimator = "unbiased" if estimator is None else check_choice(estimator, "estimator", _ESTIMATORS)
    spec = KERNELS[kernel]
    if spec.bandwidth_units is None:  # energy: k = -r has no scale
        if bandwidth is not None:
            raise ValueError(f"bandwidth is meaningless for kernel={kernel!r} (k = {spec.formula_text} has no scale); "
                             f"leave it None, got {bandwidth!r}")
        if scales is not None:
            raise ValueError(f"scales is meaningless for kernel={kernel!r} (no bandwidth); leave it None")
        return kernel, estimator
    if isinstance(bandwidth, str):
        if bandwidth != "median":
            raise ValueError(f"bandwidth must be a positive number, a sequence of them, 'median' or None, "
                             f"got {bandwidth!r}")
    elif bandwidth is not None:
        # Values only: a bandwidth tensor that requires grad is differentiated by pairwise_sum.
        bandwidth_scales(bandwidth.detach() if isinstance(bandwidth, torch.Tensor) else bandwidth, "bandwidth")
    if scales is not None:
        if bandwidth is not None and not isinstance(bandwidth, str) and (
                not isinstance(bandwidth, numbers.Real) or isinstance(bandwidth, bool)):
            raise TypeError("scales multiplies a single bandwidth: give bandwidth as one positive number "
                            f"(or 'median' or None), got {type(bandwidth).__name__}")
        bandwidth_scales(scales, "scales")
    return kernel, estimator


def _mmd_bandwidth(kernel: str, bandwidth: Any, scales: Optional[Sequence[float]], preset: Optional[str],
                   dim: int, x: torch.Tensor, y: Optional[torch.Tensor]) -> Any:
    """The bandwidth argument for pairwise_sum (a float or a tuple of floats), once the arguments are
    checked by :func:`_check_mmd_args`. ``"median"`` needs the data (x, y)."""
    if preset is not None:
        return _PRESETS[preset]["bandwidth"](dim)
    if KERNELS[kernel].bandwidth_units is None:
        return 1.0  # unused by the kernel (energy)
    if bandwidth is None:
        bandwidth = _default_bandwidth(kernel, dim)
    elif isinstance(bandwidth, str):  # "median"
        med = median_bandwidth(x, y)
        # The kernel's own units (KernelSpec.bandwidth_units): h = med for a distance, C = med^2 for imq.
        bandwidth = KERNELS[kernel].bandwidth_from_distance(med)
    if scales is None:
        return bandwidth
    base = check_positive(bandwidth, "bandwidth")
    return tuple(base * s for s in bandwidth_scales(scales, "scales"))


def _mmd_prior_closed_form(kernel: str, bandwidth: Any, preset: Optional[str]) -> bool:
    """Whether MMD^2 to N(0, I) has a closed form here: gaussian kernel with numeric bandwidths
    (including the default and the infovae preset) and the energy kernel."""
    return kernel == "energy" or (kernel == "gaussian" and not isinstance(bandwidth, str))


def mmd(
    x: torch.Tensor,                          # [n, D] or [B, n, D]
    y: Optional[torch.Tensor] = None,         # [m, D] or [B, m, D] (or [m, D] shared); None: N(0, I)
    kernel: Optional[str] = None,
    bandwidth: Bandwidth = None,
    scales: Optional[Sequence[float]] = None,
    estimator: Optional[str] = None,
    weights_x: Optional[torch.Tensor] = None,  # [n] or [B, n]
    weights_y: Optional[torch.Tensor] = None,  # [m] or [B, m]
    preset: Optional[str] = None,
    group: Any = None,
) -> torch.Tensor:                            # [] or [B]
    r"""Squared maximum mean discrepancy between two samples, or between x and N(0, I) (y = None).

    .. math::
        \mathrm{MMD}^2 = \frac{1}{n(n-1)}\sum_{i\ne j} k(x_i, x_j)
                       + \frac{1}{m(m-1)}\sum_{i\ne j} k(y_i, y_j)
                       - \frac{2}{nm}\sum_{i,j} k(x_i, y_j)

    (``estimator="unbiased"``, the U-statistic of Gretton et al. 2012; ``"biased"`` is the
    V-statistic with :math:`1/n^2`, :math:`1/m^2` and the diagonals). The unbiased value can be
    negative: never take its log.

    ``y=None``: the target is N(0, I_D) itself, in closed form, where one exists: the gaussian
    kernel with a numeric (or default) bandwidth, as :func:`mmd_to_normal`, and the energy kernel,
    as :func:`energy_distance` (with the unbiased estimator the within-sample term is over i != j).
    Other kernels (imq, laplacian, the ``"wae"`` preset, ``bandwidth="median"``) have no closed
    form against N(0, I): then y=None is a ValueError; pass a prior sample ``y=torch.randn_like(x)``
    as the WAE code does (or use :class:`~latentdiv.losses.MMDLoss`, which draws one).

    Kernels (the names and bandwidth meaning of :func:`latentdiv.pairwise_sum`, h = ``bandwidth``;
    default ``"gaussian"``; the registry's kernels with ``KernelSpec.mmd``):

{mmd_kernels}

    With ``"energy"`` MMD^2 is the energy distance; a kernel without a bandwidth takes none (passing
    one is an error). For ``"imq"`` h = C is a squared distance. ``bandwidth`` may be a sequence (the kernel
    summed over the scales, one pass over the pairs) or ``"median"`` (:func:`median_bandwidth` of
    the pooled sample, in the kernel's units: h = median distance, C = its square for imq; not
    traceable by torch.compile). ``scales`` multiplies one bandwidth: the kernel is summed over
    ``bandwidth * s``. Default bandwidth (None): :func:`default_bandwidth`, the median heuristic of
    the prior, which scales with D (gaussian and laplacian h = sqrt(2D), imq C = 2D), so that the
    default does not vanish in high D.

    Presets (they fix kernel, bandwidth, scales and estimator; passing any of those too is an error):

    - ``"wae"``: IMQ with :math:`C = 2 D \sigma^2 s`, :math:`\sigma^2 = 1` (the prior N(0, I)),
      summed over :data:`WAE_SCALES` = {0.1, 0.2, 0.5, 1, 2, 5, 10}; within-sample terms unbiased
      (i != j over n(n-1)), cross term over all n m pairs. Source: tolstikhin/wae ``wae.py``
      ``mmd_penalty`` (docs/formulas.md section 2), also cwae-pytorch's WAE baseline.
    - ``"infovae"``: :math:`k = e^{-r^2/D^2}` (gaussian with :math:`2h^2 = D^2`), biased
      V-statistic. Source: ShengjiaZhao/MMD-Variational-Autoencoder ``mmd_vae.py``
      ``compute_kernel`` (docs/formulas.md section 3; other ports use other bandwidths).

    Weights: :math:`\sum_{ij} a_i a_j k(x_i,x_j) + \sum b_i b_j k(y_i,y_j) - 2\sum a_i b_j k(x_i,y_j)`
    with a, b normalised to sum 1; the unbiased within-sample term is
    :math:`\sum_{i\ne j} a_i a_j k_{ij} / (1 - \sum_i a_i^2)` (uniform weights give back 1/(n(n-1))).
    Weights must be finite and non-negative with a positive sum (else ValueError). A NaN or inf in
    x or y gives a NaN result.

    Cost O((n + m)^2 D) through the fused engine, memory O((n + m) D).
    """
    if group is not None:  # the global batch of a torch.distributed group: latentdiv.distributed
        from . import distributed

        return distributed.mmd(x, y, kernel, bandwidth, scales, estimator, weights_x, weights_y, preset, group=group)
    kernel, estimator = _check_mmd_args(kernel, bandwidth, scales, estimator, preset)
    unbiased = estimator == "unbiased"
    why = " by the unbiased estimator (use estimator='biased' for n = 1)" if unbiased else ""
    _check_samples(x, "x", 2 if unbiased else 1, why)
    _check_w(weights_x, "weights_x", x, "x", unbiased)
    if y is None:
        if weights_y is not None:
            raise ValueError("weights_y was given but y is None (the prior N(0, I) has no weights)")
        if not _mmd_prior_closed_form(kernel, bandwidth, preset):
            what = f"preset={preset!r}" if preset is not None else (
                "bandwidth='median'" if isinstance(bandwidth, str) else f"kernel={kernel!r}")
            raise ValueError(f"y=None means N(0, I) in closed form, which exists for the gaussian kernel with a "
                             f"numeric bandwidth and for the energy kernel, not for {what}; pass a prior sample "
                             "(y=torch.randn_like(x), as the WAE code) or use latentdiv.losses.MMDLoss, which draws one")
        bw = _mmd_bandwidth(kernel, bandwidth, scales, preset, x.shape[-1], x, None)
        if kernel == "energy":
            impl = lambda x, weights_x: _energy_impl(x, None, weights_x, None, unbiased)  # noqa: E731
        else:
            hs = bandwidth_scales(bw, "bandwidth")
            impl = lambda x, weights_x: _mmd_to_normal_impl(x, weights_x, hs, unbiased)  # noqa: E731
        if x.dim() == 3:
            return _map_batch(impl, x, dict(weights_x=weights_x), dict(weights_x=2))
        return impl(x, weights_x)
    _check_y(x, y, 2 if unbiased else 1, why)
    _check_w(weights_y, "weights_y", y, "y", unbiased)
    if x.dim() == 3:
        return _map_batch(_mmd_impl, x, dict(y=y, weights_x=weights_x, weights_y=weights_y),
                          dict(y=3, weights_x=2, weights_y=2), kernel=kernel, bandwidth=bandwidth,
                          scales=scales, unbiased=unbiased, preset=preset)
    return _mmd_impl(x, y, weights_x, weights_y, kernel, bandwidth, scales, unbiased, preset)


if mmd.__doc__:  # None under python -OO
    mmd.__doc__ = mmd.__doc__.replace("{mmd_kernels}", kernels_doc(MMD_KERNELS))


def _mmd_impl(x, y, weights_x, weights_y, kernel, bandwidth, scales, unbiased, preset):
    out_dtype = x.dtype
    work = compute_dtype(x.dtype)
    xc, yc = x.to(work), y.to(work)
    bw = _mmd_bandwidth(kernel, bandwidth, scales, preset, x.shape[-1], xc, yc)
    a, b = _normalize(weights_x, work), _normalize(weights_y, work)
    fused = _fused_ops.mmd_value(xc, yc, a, b, kernel, bw, unbiased, out_dtype)  # one engine call (CPU)
    if fused is not None:  # (NaN for a NaN or inf in x or y: the engine call checks)
        return fused
    value = (_self_mean(xc, a, unbiased, kernel, bw) + _self_mean(yc, b, unbiased, kernel, bw)
             - 2.0 * _cross_mean(xc, yc, a, b, kernel, bw))
    return nan_if_nonfinite(value, x, y).to(out_dtype)


def mmd_to_normal(
    z: torch.Tensor,                        # [n, D] or [B, n, D]
    bandwidth: Union[float, Sequence[float], None] = None,
    estimator: str = "unbiased",
    weights: Optional[torch.Tensor] = None,  # [n] or [B, n]
    group: Any = None,
) -> torch.Tensor:                          # [] or [B]
    r"""Squared MMD between the sample and N(0, I_D) itself, in closed form (no prior samples), for
    the gaussian kernel :math:`k_h(x, y) = e^{-\lVert x-y\rVert^2/(2h^2)}` (``bandwidth`` = h, the
    meaning of :func:`latentdiv.pairwise_sum`'s ``"gaussian"``; a sequence sums over the scales):

    .. math::
        \mathrm{MMD}^2 = \frac{1}{n(n-1)}\sum_{i\ne j} k_h(z_i, z_j)
            - \frac{2}{n}\Big(\frac{h^2}{1+h^2}\Big)^{D/2}\sum_i e^{-\lVert z_i\rVert^2/(2(1+h^2))}
            + \Big(\frac{h^2}{2+h^2}\Big)^{D/2}

    using :math:`E_Y k_h(z, Y) = (h^2/(1+h^2))^{D/2} e^{-\lVert z\rVert^2/(2(1+h^2))}` and
    :math:`E k_h(Y, Y') = (h^2/(2+h^2))^{D/2}` (docs/formulas.md section 7d).
    ``estimator="unbiased"`` (default; an unbiased estimate of MMD^2, may be slightly negative)
    uses i != j; ``"biased"`` the V-statistic with :math:`1/n^2` (differs by a constant:
    :math:`k(z, z) = 1`). Weights as in :func:`mmd`. ``bandwidth=None`` (default): h = sqrt(2D)
    (:func:`default_bandwidth`; a fixed h = 1 makes every term vanish in high D: ~1e-16 at D = 64).
    A NaN or inf in z gives a NaN result. Cost O(n^2 D) through the engine; memory O(nD).
    """
    if group is not None:  # the global batch of a torch.distributed group: latentdiv.distributed
        from . import distributed

        return distributed.mmd_to_normal(z, bandwidth, estimator, weights, group=group)
    _check_choice(estimator, "estimator", _ESTIMATORS)
    unbiased = estimator == "unbiased"
    _check_samples(z, "z", 2 if unbiased else 1,
                   " by the unbiased estimator (use estimator='biased' for n = 1)" if unbiased else "")
    _check_w(weights, "weights", z, "z", unbiased)
    if isinstance(bandwidth, str):
        raise TypeError("mmd_to_normal needs a numeric bandwidth (no data-dependent heuristic against the "
                        f"fixed target), got {bandwidth!r}")
    hs = bandwidth_scales(_default_bandwidth("gaussian", z.shape[-1]) if bandwidth is None else bandwidth,
                          "bandwidth")
    if z.dim() == 3:
        return _map_batch(_mmd_to_normal_impl, z, dict(weights=weights), dict(weights=2), hs=hs, unbiased=unbiased)
    return _mmd_to_normal_impl(z, weights, hs, unbiased)


def _mmd_to_normal_impl(z, weights, hs, unbiased):
    out_dtype = z.dtype
    work = compute_dtype(z.dtype)
    zc = z.to(work)
    dim = z.shape[-1]
    a = _normalize(weights, work)
    fused = _fused_ops.mmd_to_normal_value(zc, a, hs, unbiased, out_dtype)  # one engine call (CPU)
    if fused is not None:  # (NaN for a NaN or inf in z: the engine call checks)
        return fused
    self_term = _self_mean(zc, a, unbiased, "gaussian", hs if len(hs) > 1 else hs[0])
    sq = _sq_norms(zc)  # [n] float64
    cross = sq.new_zeros(())
    prior = 0.0
    for h in hs:
        h2 = h * h
        # Prefactors in log space: (h^2/(1+h^2))^{D/2} underflows gracefully for large D / small h.
        log_pref = -0.5 * dim * math.log1p(1.0 / h2)
        cross = cross + _mean(torch.exp(log_pref - sq / (2.0 * (1.0 + h2))), a)
        prior += math.exp(-0.5 * dim * math.log1p(2.0 / h2))
    return nan_if_nonfinite(self_term - 2.0 * cross + prior, z).to(out_dtype)


# ---------------------------------------------------------------------------------------------------
# Cramer-Wold
# ---------------------------------------------------------------------------------------------------
def default_gamma(n: int) -> float:
    r"""CWAE's default KDE variance :math:`\gamma = (4/(3n))^{2/5}` (Silverman's rule with sigma = 1;
    Knop et al. 2020, p. 5; gmum/cwae-pytorch). 0.1611 for n = 128."""
    return (4.0 / (3.0 * n)) ** 0.4


def _check_cw_phi(phi: str, dim: int) -> None:
    _check_choice(phi, "phi", ("exact", "approx"))
    if phi == "approx" and dim < 2:
        raise ValueError(f"phi='approx' needs D >= 2 (its 1/(2D-3) factor), got D = {dim}; use phi='exact'")


def cramer_wold(
    x: torch.Tensor,                          # [n, D] or [B, n, D]
    y: Optional[torch.Tensor] = None,         # [m, D] or [B, m, D]; None: N(0, I) in closed form
    gamma: Optional[float] = None,
    phi: str = "exact",
    weights_x: Optional[torch.Tensor] = None,  # [n] or [B, n]
    weights_y: Optional[torch.Tensor] = None,  # [m] or [B, m]
    group: Any = None,
) -> torch.Tensor:                            # [] or [B]
    r"""Squared Cramer-Wold distance :math:`d_{cw}^2` (CWAE), the squared L2 distance between the
    gamma-smoothed 1-D projections averaged over all directions. With
    :math:`\varphi_D(s) = {}_1F_1(\frac12; \frac D2; -s)` and y = None (the target N(0, I)):

    .. math::
        d_{cw}^2(X, N(0,I)) = \frac{1}{2\sqrt\pi}\Big[\frac{1}{n^2\sqrt\gamma}\sum_{ij}
            \varphi_D\big(\tfrac{\lVert x_i-x_j\rVert^2}{4\gamma}\big) + \frac{1}{\sqrt{1+\gamma}}
            - \frac{2}{n\sqrt{\gamma+1/2}}\sum_i \varphi_D\big(\tfrac{\lVert x_i\rVert^2}{2+4\gamma}\big)\Big]

    and for two samples

    .. math::
        d_{cw}^2(X, Y) = \frac{1}{2\sqrt{\pi\gamma}}\Big[\frac{1}{n^2}\sum_{ij}\varphi_D(\cdot_{x_ix_j})
            + \frac{1}{m^2}\sum_{ij}\varphi_D(\cdot_{y_iy_j})
            - \frac{2}{nm}\sum_{ij}\varphi_D(\cdot_{x_iy_j})\Big],\quad \cdot_{uv} = \tfrac{\lVert u-v\rVert^2}{4\gamma}.

    Source: Knop et al., JMLR 21 (2020) (Theorems 1 and 3 in EszKnop/cw-torch's numbering);
    docs/formulas.md section 5. The paper states the two-sample form for n = m; with 1/n^2, 1/m^2, 1/(nm)
    (or normalised weights a, b: :math:`\sum a a\varphi + \sum b b\varphi - 2\sum a b\varphi`) it
    is exactly the same integral for any n, m. Diagonals included (V-statistic), so the value is
    >= 0 with the exact phi.

    ``phi="exact"``: :math:`\varphi_D` exactly (the engine's per-D fitted form, ~1e-9 relative, also
    for the O(n) cross term on the CPU engine; elsewhere that term uses :func:`latentdiv.special.phi_cw`). ``phi="approx"``: the CWAE paper's
    :math:`\varphi_D(s) \approx (1 + 4s/(2D-3))^{-1/2}` (D >= 2; its code uses it for D >= 8), which
    reproduces the reference code (``cw`` in gmum/cwae-pytorch computes :math:`2\sqrt\pi\,d_{cw}^2`)
    but biases :math:`d_{cw}^2` upward several-fold on Gaussian batches. Both modes return
    :math:`d_{cw}^2` with the :math:`1/(2\sqrt\pi)` factor.

    ``gamma`` (the KDE variance) defaults to :func:`default_gamma` of x's batch size n.
    Cost O((n + m)^2 D) through the engine, memory O((n + m) D).
    """
    if group is not None:  # the global batch of a torch.distributed group: latentdiv.distributed
        from . import distributed

        return distributed.cramer_wold(x, y, gamma, phi, weights_x, weights_y, group=group)
    return _cramer_wold_checked(x, y, gamma, phi, weights_x, weights_y)


def _cramer_wold_checked(x, y, gamma, phi, weights_x, weights_y, log_eps=None, names=("x", "weights_x")):
    """cramer_wold without a group: the arguments checked (x and its weights named as ``names``), then
    d_cw^2, or log(d_cw^2 + log_eps) (cwae_loss; folded into the fused engine call where there is one)."""
    _check_samples(x, names[0])
    _check_y(x, y)
    _check_w(weights_x, names[1], x, names[0])
    _check_w(weights_y, "weights_y", y, "y")
    if gamma is None:
        gamma = default_gamma(x.shape[-2])
    gamma = check_positive(gamma, "gamma")
    _check_cw_phi(phi, x.shape[-1])
    if x.dim() == 3:
        return _map_batch(_cramer_wold_impl, x, dict(y=y, weights_x=weights_x, weights_y=weights_y),
                          dict(y=3, weights_x=2, weights_y=2), gamma=gamma, phi=phi, log_eps=log_eps)
    return _cramer_wold_impl(x, y, weights_x, weights_y, gamma, phi, log_eps)


def _cramer_wold_impl(x, y, weights_x, weights_y, gamma, phi, log_eps=None):
    # log_eps: log(d_cw^2 + log_eps) (cwae_loss), folded into the fused engine call where there is one.
    out_dtype = x.dtype
    work = compute_dtype(x.dtype)
    xc = x.to(work)
    dim = x.shape[-1]
    a = _normalize(weights_x, work)
    exact = phi == "exact"
    kernel = "cramer_wold" if exact else "cramer_wold_approx"
    # The approximate kernel (gamma + r2/(2D-3))^{-1/2} already carries the 1/sqrt(gamma) factor.
    norm = 1.0 / math.sqrt(gamma) if exact else 1.0
    fused = _fused_ops.cramer_wold_value(xc, None if y is None else y.to(work), a, _normalize(weights_y, work),
                                         gamma, exact, out_dtype, log_eps)  # one engine call (CPU)
    if fused is not None:  # (NaN for a NaN or inf in x or y: the engine call checks)
        return fused
    xx = _self_mean(xc, a, False, kernel, 1.0, gamma=gamma)
    if y is None:
        sq = _sq_norms(xc)  # [n] float64
        if exact:
            from . import special

            t = special.phi_cw(sq / (2.0 + 4.0 * gamma), dim) / math.sqrt(gamma + 0.5)  # [n]
        else:
            t = torch.rsqrt(gamma + 0.5 + sq / (2.0 * dim - 3.0))  # [n]
        value = norm * xx + 1.0 / math.sqrt(1.0 + gamma) - 2.0 * _mean(t, a)
    else:
        yc = y.to(work)
        b = _normalize(weights_y, work)
        yy = _self_mean(yc, b, False, kernel, 1.0, gamma=gamma)
        xy = _cross_mean(xc, yc, a, b, kernel, 1.0, gamma=gamma)
        value = norm * (xx + yy - 2.0 * xy)
    d2 = nan_if_nonfinite(value / (2.0 * _SQRT_PI), x, y).to(out_dtype)
    return d2 if log_eps is None else torch.log(d2 + log_eps)


def cwae_loss(
    z: torch.Tensor,                        # [n, D] or [B, n, D]
    gamma: Optional[float] = None,
    phi: str = "exact",
    eps: float = 1e-7,
    weights: Optional[torch.Tensor] = None,  # [n] or [B, n]
    group: Any = None,
) -> torch.Tensor:                          # [] or [B]
    r"""The CWAE latent loss :math:`\log(d_{cw}^2(Z, N(0, I)) + \varepsilon)` (:func:`cramer_wold`,
    y = None).

    Source: gmum/cwae-pytorch (``rec + lambda * log(cw + 1e-7)``; the TF code takes ``log(cw)``).
    The reference's ``cw`` is the unscaled :math:`2\sqrt\pi\,d_{cw}^2` with the approximate phi, so
    its loss equals ``cwae_loss(z, phi="approx", eps=1e-7 / (2 sqrt(pi)))`` + :math:`\log(2\sqrt\pi)`
    exactly: same gradients, a constant offset. With the default eps = 1e-7 the difference is
    negligible. The exact phi (default) keeps :math:`d_{cw}^2 \ge 0` (up to ~1e-9 relative
    rounding of the fitted kernel, which eps absorbs); with the approximate phi the log guard is the
    reference's own.
    """
    eps = check_positive(eps, "eps")
    if group is not None:
        return torch.log(cramer_wold(z, None, gamma=gamma, phi=phi, weights_x=weights, group=group) + eps)
    # On the CPU engine one call with the log folded in (no torch op after it: issue 11's per-call overhead).
    return _cramer_wold_checked(z, None, gamma, phi, weights, None, log_eps=eps, names=("z", "weights"))


# ---------------------------------------------------------------------------------------------------
# Energy distance
# ---------------------------------------------------------------------------------------------------
def energy_distance(
    x: torch.Tensor,                          # [n, D] or [B, n, D]
    y: Optional[torch.Tensor] = None,         # [m, D] or [B, m, D]; None: N(0, I) in closed form
    weights_x: Optional[torch.Tensor] = None,  # [n] or [B, n]
    weights_y: Optional[torch.Tensor] = None,  # [m] or [B, m]
    group: Any = None,
) -> torch.Tensor:                            # [] or [B]
    r"""Energy distance (Szekely & Rizzo), V-statistics (diagonals are 0):

    .. math::
        \mathrm{ED}(X, Y) = \frac{2}{nm}\sum_{ij}\lVert x_i - y_j\rVert
            - \frac{1}{n^2}\sum_{ij}\lVert x_i - x_j\rVert - \frac{1}{m^2}\sum_{ij}\lVert y_i - y_j\rVert .

    With y = None the target is N(0, I_D) in closed form (docs/formulas.md sections 7c, 8):
    :math:`E\lVert z - Y\rVert = \sqrt2\,c_D\,{}_1F_1(-\frac12; \frac D2; -\frac{\lVert z\rVert^2}{2})`,
    :math:`E\lVert Y - Y'\rVert = 2 c_D`, :math:`c_D = \Gamma(\frac{D+1}{2})/\Gamma(\frac D2)`
    (:func:`latentdiv.special.expected_distance_to_normal`, ``expected_pair_distance_normal``).

    Note geomloss's ``SamplesLoss("energy")`` returns ED/2 and the R package ``energy`` scales by
    nm/(n+m); this is ED itself (>= 0, 0 iff the samples coincide as measures). Zero distances
    (duplicates) have gradient 0, never NaN. Weights as in :func:`mmd`. Cost O((n + m)^2 D) through
    the engine (kernel ``"energy"``), memory O((n + m) D).
    """
    if group is not None:  # the global batch of a torch.distributed group: latentdiv.distributed
        from . import distributed

        return distributed.energy_distance(x, y, weights_x, weights_y, group=group)
    _check_samples(x, "x")
    _check_y(x, y)
    _check_w(weights_x, "weights_x", x, "x")
    _check_w(weights_y, "weights_y", y, "y")
    if x.dim() == 3:
        return _map_batch(_energy_impl, x, dict(y=y, weights_x=weights_x, weights_y=weights_y),
                          dict(y=3, weights_x=2, weights_y=2))
    return _energy_impl(x, y, weights_x, weights_y)


def _energy_impl(x, y, weights_x, weights_y, unbiased=False):
    # unbiased: within-sample means over i != j (mmd(kernel="energy")); energy_distance is the V-statistic.
    out_dtype = x.dtype
    work = compute_dtype(x.dtype)
    xc = x.to(work)
    a = _normalize(weights_x, work)
    # kernel "energy" is -r: minus signs turn its sums into mean distances.
    if y is None:
        from . import special

        dim = x.shape[-1]
        if not unbiased:
            fused = _fused_ops.energy_to_normal_value(xc, a, out_dtype)  # one engine call (CPU, float32)
            if fused is not None:
                return fused
            rows = _fused_ops.expected_distance_to_normal(xc, dim)  # engine passes (CPU)
            if rows is not None:  # 2 E||x - Y|| - E||X - X'|| - E||Y - Y'||, the pair term fused
                pair = _fused_ops.energy_pair_value(xc, a, -special.expected_pair_distance_normal(dim))
                return nan_if_nonfinite(2.0 * _mean(rows, a) + pair, x, y).to(out_dtype)
        exy = _mean(special.expected_distance_to_normal(_sq_norms(xc), dim), a)
        eyy = special.expected_pair_distance_normal(dim)
    else:
        yc = y.to(work)
        b = _normalize(weights_y, work)
        # With k = -r, MMD^2 = 2 E||X - Y|| - E||X - X'|| - E||Y - Y'||: one engine call (CPU).
        fused = _fused_ops.mmd_value(xc, yc, a, b, "energy", 1.0, unbiased, out_dtype)
        if fused is not None:  # (NaN for a NaN or inf in x or y: the engine call checks)
            return fused
        eyy = -_self_mean(yc, b, unbiased, "energy", 1.0)
        exy = -_cross_mean(xc, yc, a, b, "energy", 1.0)
    exx = -_self_mean(xc, a, unbiased, "energy", 1.0)
    return nan_if_nonfinite(2.0 * exy - exx - eyy, x, y).to(out_dtype)


# ---------------------------------------------------------------------------------------------------
# Sliced Wasserstein
# ---------------------------------------------------------------------------------------------------
def _normal_pdf_at_quantile(u: torch.Tensor) -> torch.Tensor:
    r""":math:`\varphi(\Phi^{-1}(u))` for u in [0, 1], 0 at both ends, finite gradient (-Phi^{-1}(u)).
    u is kept inside [1e-300, 1 - 2^-53]: the clipped mass changes the result by < 1e-14."""
    inner = (u > 0) & (u < 1)
    uc = torch.where(inner, u, torch.full_like(u, 0.5)).clamp(1e-300, 1.0 - 2.0 ** -53)
    q = torch.special.ndtri(uc)
    pdf = torch.exp(-0.5 * q * q) / math.sqrt(2.0 * math.pi)
    return torch.where(inner, pdf, torch.zeros_like(pdf))


def _cumulative(w_sorted: Optional[torch.Tensor], n: int, like: torch.Tensor) -> torch.Tensor:
    """Right ends A_i of the quantile bins of a sorted sample: i/n, or cumulative weights. -> [L, n]."""
    if w_sorted is None:
        return (torch.arange(1, n + 1, dtype=like.dtype, device=like.device) / n).expand(like.shape[0], n)
    a = torch.cumsum(w_sorted, dim=1)
    # The last end is 1 exactly (normalised weights), whatever the rounding of the cumulative sum.
    return torch.cat([a[:, :-1], torch.ones_like(a[:, -1:])], dim=1)


def sliced_wasserstein(
    x: torch.Tensor,                           # [n, D] or [B, n, D]
    y: Optional[torch.Tensor] = None,          # [m, D] or [B, m, D]; None: N(0, I) exactly
    n_projections: int = 50,
    generator: Optional[torch.Generator] = None,
    projections: Optional[torch.Tensor] = None,  # [L, D] directions (normalised inside)
    weights_x: Optional[torch.Tensor] = None,  # [n] or [B, n]
    weights_y: Optional[torch.Tensor] = None,  # [m] or [B, m]
    group: Any = None,
) -> torch.Tensor:                             # [] or [B]
    r"""Sliced 2-Wasserstein distance, squared, averaged over L random directions
    :math:`\theta_l` (uniform on the sphere: normalised N(0, I) draws, L = 50 as in the SWAE
    reference):

    .. math:: SW_2^2 = \frac1L \sum_{l=1}^{L} W_2^2\big(\theta_l^\top X, \theta_l^\top Y\big).

    Two samples, n = m, uniform weights: :math:`W_2^2 = \frac1n\sum_i (x^\theta_{(i)} -
    y^\theta_{(i)})^2` (sorted projections; Kolouri et al., ICLR 2019; skolouri/swae,
    eifuentes/swae-pytorch). n != m or weights: the exact 1-D distance between the two empirical
    quantile functions, :math:`\int_0^1 (F_X^{-1}(u) - F_Y^{-1}(u))^2 du`, a sum over the merged
    quantile breakpoints (it equals the formula above when n = m and weights are uniform).

    y = None: against N(0, 1) per projection exactly (:math:`\theta^\top Y \sim N(0, 1)`), no prior
    samples, with :math:`q_i = \Phi^{-1}(A_i)`, :math:`A_i = i/n` (or cumulative weights),
    :math:`\varphi` the N(0, 1) pdf:

    .. math::
        W_2^2 = 1 + \frac1n\sum_i y_{(i)}^2 - 2\sum_i y_{(i)}\big[\varphi(q_{i-1}) - \varphi(q_i)\big]

    (docs/formulas.md section 4; not the biased midpoint shortcut :math:`\Phi^{-1}((i-\frac12)/n)`).

    Directions: ``projections`` (L, D) if given (rows are normalised), else ``n_projections``
    draws with ``generator`` (on x's device; None: the global RNG), shared by every batch element.
    Differentiable almost everywhere (through the sort). Cost O(L n D + L n log n).
    """
    if group is not None:  # the global batch of a torch.distributed group: latentdiv.distributed
        from . import distributed

        return distributed.sliced_wasserstein(x, y, n_projections, generator, projections, weights_x, weights_y, group=group)
    _check_samples(x, "x")
    _check_y(x, y)
    _check_w(weights_x, "weights_x", x, "x")
    _check_w(weights_y, "weights_y", y, "y")
    dim = x.shape[-1]
    work = compute_dtype(x.dtype)
    if projections is None:
        n_projections = check_int(n_projections, "n_projections", 1)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        theta = torch.randn(int(n_projections), dim, generator=generator, device=x.device, dtype=work)
    else:
        if not isinstance(projections, torch.Tensor) or not projections.is_floating_point():
            raise TypeError("projections must be a floating torch.Tensor of shape (L, D)")
        if projections.dim() != 2 or projections.shape[1] != dim or projections.shape[0] < 1:
            raise ValueError(f"projections must have shape (L, D) = (L, {dim}) with L >= 1, "
                             f"got {tuple(projections.shape)}")
        if projections.device != x.device:
            raise ValueError(f"projections must be on x's device {x.device}, got {projections.device}")
        theta = projections.to(work)
        _check_directions(projections)
    theta = torch.nn.functional.normalize(theta, dim=1)  # [L, D]
    if x.dim() == 3:
        return _map_batch(_sliced_impl, x, dict(y=y, weights_x=weights_x, weights_y=weights_y),
                          dict(y=3, weights_x=2, weights_y=2), theta=theta)
    return _sliced_impl(x, y, weights_x, weights_y, theta)


def _sorted_projections(x: torch.Tensor, w: Optional[torch.Tensor], theta: torch.Tensor):
    # float64 for the O(L n) assembly: W2^2 is a small difference of O(1) terms.
    p = (x.to(theta.dtype) @ theta.T).T.to(torch.float64)  # [L, n]
    ps, perm = torch.sort(p, dim=1)
    ws = None if w is None else w.to(torch.float64)[perm]  # [L, n]
    return ps, ws


def _sliced_impl(x, y, weights_x, weights_y, theta):
    out_dtype = x.dtype
    a = _normalize(weights_x, torch.float64)
    xs, wa = _sorted_projections(x, a, theta)  # [L, n]
    n = x.shape[0]
    if y is None:
        ends = _cumulative(wa, n, xs)  # [L, n]
        g = _normal_pdf_at_quantile(ends)
        g_prev = torch.cat([torch.zeros_like(g[:, :1]), g[:, :-1]], dim=1)
        coef = g_prev - g  # [L, n] = E[Y; Y in bin i] (no gradient needed when uniform)
        second = (xs * xs).mean(dim=1) if wa is None else (wa * xs * xs).sum(dim=1)
        w2 = 1.0 + second - 2.0 * (xs * coef).sum(dim=1)  # [L]
        return nan_if_nonfinite(w2.mean(), x).to(out_dtype)
    b = _normalize(weights_y, torch.float64)
    ys, wb = _sorted_projections(y, b, theta)  # [L, m]
    m = y.shape[0]
    if wa is None and wb is None and n == m:
        return nan_if_nonfinite(((xs - ys) ** 2).mean(), x, y).to(out_dtype)
    ea = _cumulative(wa, n, xs)  # [L, n]
    eb = _cumulative(wb, m, ys)  # [L, m]
    u, _ = torch.sort(torch.cat([ea, eb], dim=1), dim=1)  # [L, n + m] merged breakpoints
    u_prev = torch.cat([torch.zeros_like(u[:, :1]), u[:, :-1]], dim=1)
    mid = (0.5 * (u + u_prev)).detach()
    ix = torch.searchsorted(ea.detach().contiguous(), mid.contiguous()).clamp_max(n - 1)
    iy = torch.searchsorted(eb.detach().contiguous(), mid.contiguous()).clamp_max(m - 1)
    diff = xs.gather(1, ix) - ys.gather(1, iy)  # [L, n + m]
    return nan_if_nonfinite(((u - u_prev) * diff * diff).sum(dim=1).mean(), x, y).to(out_dtype)


# ---------------------------------------------------------------------------------------------------
# EDF vs CDF (Cramer-von Mises)
# ---------------------------------------------------------------------------------------------------
def _cvm(u: torch.Tensor) -> torch.Tensor:
    r"""Cramer-von Mises :math:`W^2 = \sum_k (u_{(k)} - \frac{2k-1}{2m})^2 + \frac{1}{12m}` along the
    last dimension. [..., m] -> [...]."""
    m = u.shape[-1]
    us, _ = torch.sort(u, dim=-1)
    target = (2.0 * torch.arange(1, m + 1, dtype=u.dtype, device=u.device) - 1.0) / (2.0 * m)
    return ((us - target) ** 2).sum(dim=-1) + 1.0 / (12.0 * m)


_CVM_DOC = r"""

    The statistic is Cramer-von Mises' :math:`W^2` of the values' CDF images
    :math:`u_{(1)} \le \dots \le u_{(m)}`:

    .. math:: W^2 = \sum_{k=1}^{m}\Big(u_{(k)} - \frac{2k-1}{2m}\Big)^2 + \frac{1}{12m}

    (identical to ``scipy.stats.cramervonmises(values, cdf).statistic``). Differentiable almost
    everywhere (through the sort), with the CDF derivative evaluated in log space, so it is finite
    for large D; gradients vanish for far outliers (the CDF saturates). Source: Duda, "Gaussian
    AutoEncoder", arXiv 1811.04751 v2/v3 (EDF vs CDF regularizers; his exact loss is unverified, this
    is its Cramer-von Mises form; docs/formulas.md section 6).
"""


def radii_cvm(z: torch.Tensor, group: Any = None) -> torch.Tensor:  # [n, D] or [B, n, D] -> [] or [B]
    r"""EDF-vs-CDF loss on the radii :math:`r_i = \lVert z_i\rVert`, whose law under N(0, I_D) is
    chi_D: :math:`F(r) = P(D/2, r^2/2)` (regularised lower incomplete gamma,
    :func:`latentdiv.special.chi_cdf`). Cost O(nD + n log n); radius 0 has gradient 0."""
    if group is not None:  # the global batch of a torch.distributed group: latentdiv.distributed
        from . import distributed

        return distributed.radii_cvm(z, group=group)
    _check_samples(z, "z")
    if z.dim() == 3:
        return _map_batch(radii_cvm, z, {}, {})
    from . import special

    r = _safe_sqrt(_sq_norms(z))  # [n] float64 (a NaN row would otherwise read as radius 0)
    return nan_if_nonfinite(_cvm(special.chi_cdf(r, z.shape[-1])), z).to(z.dtype)


def distances_cvm(z: torch.Tensor, group: Any = None) -> torch.Tensor:  # [n, D] or [B, n, D] -> [] or [B]
    r"""EDF-vs-CDF loss on the n(n-1)/2 pairwise distances :math:`d_{ij}`, i < j, whose marginal
    law under N(0, I_D) is :math:`\sqrt2\,\chi_D`: :math:`F(d) = P(D/2, d^2/4)` (the values are
    dependent; each has this marginal). Distances by :func:`latentdiv.pdist` (engine); the
    n(n-1)/2 values and their sort are O(n^2) memory and O(n^2 (D + log n)) time.
    Needs n >= 2; duplicate points (d = 0) have gradient 0."""
    if group is not None:  # the global batch of a torch.distributed group: latentdiv.distributed
        from . import distributed

        return distributed.distances_cvm(z, group=group)
    _check_samples(z, "z", 2, " (pairwise distances)")
    if z.dim() == 3:
        return _map_batch(distances_cvm, z, {}, {})
    from . import special

    d = pdist(z.to(compute_dtype(z.dtype)))  # [n (n - 1) / 2]
    return nan_if_nonfinite(_cvm(special.chi_cdf(d / math.sqrt(2.0), z.shape[-1])), z).to(z.dtype)


def coordinates_cvm(z: torch.Tensor, group: Any = None) -> torch.Tensor:  # [n, D] or [B, n, D] -> [] or [B]
    r"""EDF-vs-CDF loss per coordinate: each column :math:`z_{\cdot j}` against N(0, 1),
    :math:`u = \Phi(z)`; the D statistics :math:`W^2_j` are averaged (mean over j, so the scale
    does not grow with D). Cost O(nD log n)."""
    if group is not None:  # the global batch of a torch.distributed group: latentdiv.distributed
        from . import distributed

        return distributed.coordinates_cvm(z, group=group)
    _check_samples(z, "z")
    if z.dim() == 3:
        return _map_batch(coordinates_cvm, z, {}, {})
    u = torch.special.ndtr(z.to(torch.float64)).T  # [D, n]
    return nan_if_nonfinite(_cvm(u).mean(), z).to(z.dtype)


for _f in (radii_cvm, distances_cvm, coordinates_cvm):
    _f.__doc__ = (_f.__doc__ or "") + _CVM_DOC
del _f
