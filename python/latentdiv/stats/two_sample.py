r"""Two-sample tests: are x (n x D) and y (m x D) samples of the same distribution? (docs/two_sample.md)

:func:`mmd_test` and :func:`energy_two_sample_test` are permutation tests. All B permutations go
through one batched engine pass (latentdiv._batched_ops): with z the pooled sample (N = n + m points),
K0 its kernel matrix with a zero diagonal, r = K0 1 its row sums and a_b the 0/1 indicator of the
points that permutation b assigns to the x side,

.. math::
    S_{XX} = a_b^\top K_0 a_b,\quad S_{XY} = a_b^\top r - S_{XX},\quad S_{YY} = 1^\top r - 2 a_b^\top r + S_{XX},

so every permuted statistic costs O(N (D + B)) per point pair once, not B passes over the pairs.
The observed split is row 0 of the same batch, so the observed statistic and its permuted copies are
computed by the same arithmetic (a permutation that reproduces the observed split ties exactly).
p-value: (1 + #{T_perm >= T}) / (1 + B) (Phipson and Smyth 2010), the observed statistic counted once.

:func:`linear_mmd_test` and :func:`block_mmd_test` (``latentdiv.linear_mmd``) are the O(n D) and
O(n b D) estimators with asymptotic normal p-values, for samples too large even for O(n^2).
"""

from __future__ import annotations

import numbers
from typing import Any, Optional, Sequence

import numpy as np
import torch

from .. import _batched_ops
from .._registry import get_kernel
from .._validation import check_int
from ..functional import _check_mmd_args, _mmd_bandwidth
from . import _common as C
from ._common import NormalityTestResult

TARGET = "two-sample"  # the result objects' target field for a two-sample test: H0 is P_x = P_y
NULL = "permutation"
# Permutations per engine call: bounds the (chunk x N) indicator matrix (the pair work is repeated
# once per call, so calls are as few as memory allows).
_MAX_INDICATOR_ELEMS = 1 << 24


def _as_points(t: Any, name: str, min_rows: int) -> torch.Tensor:  # array-like [n, D] -> [n, D] tensor
    """A finite (n, D) sample as a contiguous float32 / float64 tensor on its device (numpy and lists
    become float64 CPU tensors)."""
    if isinstance(t, torch.Tensor):
        if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"{name} must be a real floating tensor of shape (n, D), got dtype {t.dtype}")
        x = t.detach()
        if x.dtype not in (torch.float32, torch.float64):
            x = x.to(torch.float64 if not x.is_floating_point() else torch.float32)
    elif isinstance(t, (np.ndarray, list, tuple)):
        a = np.asarray(t)
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise TypeError(f"{name} must be a real array of shape (n, D), got dtype {a.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy array of shape (n, D), got {type(t).__name__}")
    if x.dim() != 2 or x.shape[1] < 1:
        raise ValueError(f"{name} must have shape (n, D) with D >= 1, got shape {tuple(x.shape)}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} has {x.shape[0]} row(s); this test needs at least {min_rows}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return x.contiguous()


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # -> pooled [n + m, D]
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension D, got {x.shape[1]} and {y.shape[1]}")
    if x.device != y.device:
        raise ValueError(f"x and y must be on the same device, got {x.device} and {y.device}")
    # float64 throughout: the batched engine widens to float64 anyway, and the row sums r (one VALUE
    # pass) must be as accurate as the batched sums they are combined with.
    return torch.cat([x.to(torch.float64), y.to(torch.float64)]).contiguous()


def permutation_indicators(n: int, m: int, n_permutations: int, rng: np.random.Generator) -> np.ndarray:
    """[1 + B, n + m] 0/1 matrix: row 0 the observed split (the first n pooled points on the x side),
    row b >= 1 the x side of the b-th uniformly random permutation of the pooled sample."""
    total = n + m
    a = np.zeros((1 + n_permutations, total), dtype=np.float64)
    a[0, :n] = 1.0
    for b in range(1, 1 + n_permutations):
        a[b, rng.permutation(total)[:n]] = 1.0
    return a


def _kernel_at_zero(kernel: str, bandwidth: Any, dim: int) -> float:
    """f(0) = k(z, z), the diagonal of the kernel matrix (radial kernels: the same for every point)."""
    return float(get_kernel(kernel).formula(torch.zeros(1, dtype=torch.float64), bandwidth, dim, {})[0])


def permutation_statistics(z: torch.Tensor,        # [n + m, D] pooled sample, x first
                           indicators: np.ndarray,  # [P, n + m] 0/1: the x side of each split
                           n: int, kernel: str, bandwidth: Any, unbiased: bool):  # -> ([P], float)
    """MMD^2 of every split in one batched engine pass per chunk of splits (module docstring), and the
    magnitude of the kernel values (mean |k| off the diagonal + |k(0)|) that their rounding errors are
    relative to."""
    total = z.shape[0]
    m = total - n
    rows = _batched_ops.self_row_sums(z, kernel, bandwidth, True)  # [N] float64, r = K0 1
    grand = float(rows.sum())
    f0 = 0.0 if unbiased else _kernel_at_zero(kernel, bandwidth, z.shape[1])
    chunk = max(1, _MAX_INDICATOR_ELEMS // total)
    out = np.empty(indicators.shape[0], dtype=np.float64)
    rows_np = rows.cpu().numpy()
    for c0 in range(0, indicators.shape[0], chunk):
        a = indicators[c0:c0 + chunk]
        at = torch.from_numpy(a).to(device=z.device, dtype=z.dtype)
        s_xx = _batched_ops.batched_pairwise_sum(z, weights_x=at, kernel=kernel, bandwidth=bandwidth,
                                                 exclude_diagonal=True).cpu().numpy()
        # a^T r as a row-wise sum of a * r: each row reduced by the same arithmetic, so identical splits
        # give identical bits (a matrix-vector product may block rows differently).
        ar = (a * rows_np[None, :]).sum(axis=1)
        s_xy = ar - s_xx
        s_yy = grand - 2.0 * ar + s_xx
        if unbiased:
            out[c0:c0 + chunk] = s_xx / (n * (n - 1)) + s_yy / (m * (m - 1)) - 2.0 * s_xy / (n * m)
        else:
            out[c0:c0 + chunk] = ((s_xx + n * f0) / (n * n) + (s_yy + m * f0) / (m * m) - 2.0 * s_xy / (n * m))
    scale = float(np.abs(rows_np).sum()) / (total * (total - 1)) + abs(_kernel_at_zero(kernel, bandwidth, z.shape[1]))
    return out, scale


# Relative tolerance of a tie between a permuted and the observed statistic: splits that are equal in
# exact arithmetic (e.g. a split and its complement when n = m: MMD(X, Y) = MMD(Y, X)) may differ by
# rounding, and must count as T_perm >= T (scipy.stats.permutation_test does the same, relative to |T|;
# here relative to the kernel's magnitude, since T itself is near 0 under H0).
_TIE_RTOL = 1e-10


def permutation_pvalue(observed: float, null: np.ndarray, scale: float) -> float:
    """(1 + #{T_b >= T}) / (1 + B), T_b within _TIE_RTOL * scale below T counted as ties (>=)."""
    return float((1 + np.count_nonzero(null >= observed - _TIE_RTOL * scale)) / (1 + null.shape[0]))


def _bandwidth_detail(bw: Any) -> Any:
    if isinstance(bw, (tuple, list)):
        return tuple(float(b) for b in bw)
    return float(bw) if isinstance(bw, numbers.Real) else bw


def _permutation_test(x, y, kernel, bandwidth, scales, estimator, n_permutations, generator, method):
    if kernel == "energy" and isinstance(bandwidth, str) and bandwidth == "median":
        bandwidth = None  # mmd_test's default; the energy kernel has no bandwidth
    kernel_name, est = _check_mmd_args(kernel, bandwidth, scales, estimator, None)
    unbiased = est == "unbiased"
    min_rows = 2 if unbiased else 1
    xs = _as_points(x, "x", min_rows)
    ys = _as_points(y, "y", min_rows)
    z = _check_pair(xs, ys)
    nperm = check_int(n_permutations, "n_permutations", 1)
    generator = C.check_generator(generator)
    n, m, d = xs.shape[0], ys.shape[0], xs.shape[1]
    bw = _mmd_bandwidth(kernel_name, bandwidth, scales, None, d, z[:n], z[n:])
    indicators = permutation_indicators(n, m, nperm, C.rng_for(generator, 3))
    stats, tie_scale = permutation_statistics(z, indicators, n, kernel_name, bw, unbiased)
    observed, null = float(stats[0]), stats[1:]
    pvalue = permutation_pvalue(observed, null, tie_scale)
    details = dict(m=m, kernel=kernel_name, bandwidth=None if kernel_name == "energy" else _bandwidth_detail(bw),
                   estimator=est, null_statistics=null.tolist())
    return NormalityTestResult(observed, pvalue, method, TARGET, NULL, nperm, n, d, details)


def mmd_test(
    x,                                  # [n, D] tensor or array
    y,                                  # [m, D]
    *,
    kernel: Optional[str] = None,
    bandwidth: Any = "median",
    scales: Optional[Sequence[float]] = None,
    estimator: Optional[str] = None,
    n_permutations: int = 1000,
    generator: C.Generator = 0,
) -> NormalityTestResult:
    r"""MMD permutation two-sample test (Gretton et al., JMLR 2012), H0: x and y have the same law.

    Statistic: :func:`latentdiv.mmd` of (x, y) with the same ``kernel`` / ``bandwidth`` / ``scales`` /
    ``estimator`` arguments (default kernel gaussian, unbiased U-statistic). ``bandwidth="median"``
    (default) is the median heuristic of the pooled sample (:func:`latentdiv.median_bandwidth`, in
    the kernel's units; ignored for ``kernel="energy"``, which has no bandwidth); None is
    :func:`latentdiv.default_bandwidth` (the N(0, I) heuristic), a number or a sequence of numbers
    is used as given. The bandwidth is chosen once from the pooled
    sample, which is permutation invariant, so the test stays exact.

    p-value: (1 + #{T_b >= T}) / (1 + B) over ``n_permutations`` = B uniformly random permutations of
    the pooled sample (never 0; exact level under H0). ``generator``: a seed or a numpy Generator; the
    same seed gives the same permutations. Result: ``statistic`` (MMD^2), ``pvalue``, ``null =
    "permutation"``, ``target = "two-sample"``, ``n`` / ``dim`` of x, ``details`` with ``m``, the kernel,
    the bandwidth used, the estimator and ``null_statistics`` (the B permuted statistics).

    Cost: one engine pass over the (n + m)^2 pairs for all B permutations, O((n + m)^2 (D + B)).
    """
    return _permutation_test(x, y, kernel, bandwidth, scales, estimator, n_permutations, generator,
                             "mmd permutation")


def energy_two_sample_test(
    x,  # [n, D]
    y,  # [m, D]
    *,
    estimator: str = "biased",
    n_permutations: int = 1000,
    generator: C.Generator = 0,
) -> NormalityTestResult:
    r"""Energy-distance permutation two-sample test (Szekely and Rizzo 2004; R's ``energy::eqdist.etest``).

    Statistic: the energy distance :math:`2 E\lVert X - Y\rVert - E\lVert X - X'\rVert - E\lVert Y - Y'\rVert`
    estimated with ``estimator="biased"`` (default; V-statistic means over all pairs, as
    ``eqdist.etest`` up to its factor nm / (n + m), which does not change the permutation p-value) or
    ``"unbiased"`` (within-sample means over i != j). It is :func:`mmd_test` with the kernel
    k = -||x - y||. p-value, generator and result as :func:`mmd_test`.
    """
    if estimator not in ("biased", "unbiased"):
        raise ValueError(f"estimator must be 'biased' or 'unbiased', got {estimator!r}")
    return _permutation_test(x, y, "energy", None, None, estimator, n_permutations, generator,
                             "energy permutation")


# ---------------------------------------------------------------------------------------------------
# linear-time and block estimators, asymptotic normal p-values (latentdiv.linear_mmd)
# ---------------------------------------------------------------------------------------------------
def _asymptotic_test(x, y, terms_fn, method, kernel, bandwidth, scales, extra) -> NormalityTestResult:
    from scipy import stats as sps

    from .. import linear_mmd as L

    xs = _as_points(x, "x", 2)
    ys = _as_points(y, "y", 2)
    _check_pair(xs, ys)
    xs, ys = xs.to(torch.float64), ys.to(torch.float64)
    if kernel == "energy" and isinstance(bandwidth, str) and bandwidth == "median":
        bandwidth = None
    terms = terms_fn(xs, ys, kernel=kernel, bandwidth=bandwidth, scales=scales)
    mean, se, zscore = L.standardized(terms)
    kernel_name, _ = _check_mmd_args(kernel, bandwidth, scales, None, None)
    bw = None if kernel_name == "energy" else _bandwidth_detail(
        _mmd_bandwidth(kernel_name, bandwidth, scales, None, xs.shape[1], xs, ys))
    details = dict(m=ys.shape[0], kernel=kernel_name, bandwidth=bw, zscore=zscore, standard_error=se,
                   n_terms=int(terms.shape[0]), **extra)
    # One-sided: MMD^2 >= 0, large values reject.
    return NormalityTestResult(mean, float(sps.norm.sf(zscore)), method, TARGET, "asymptotic", 0,
                               xs.shape[0], xs.shape[1], details)


def linear_mmd_test(x, y, *, kernel: Optional[str] = None, bandwidth: Any = "median",
                    scales: Optional[Sequence[float]] = None) -> NormalityTestResult:
    r"""Linear-time MMD test (Gretton et al. 2012, section 6): statistic the linear-time estimate of
    MMD^2 (:func:`latentdiv.linear_mmd.linear_mmd`, floor(min(n, m) / 2) disjoint pairs), p-value
    1 - Phi(z) with z = estimate / (sd of the pair terms / sqrt(pairs)), asymptotically N(0, 1) under
    H0. O(n D): for samples far beyond the O(n^2) tests. ``details`` has the z-score and the standard
    error. Kernels and bandwidth as :func:`mmd_test`. Uses the samples in their order (shuffle first
    if it carries structure)."""
    from .. import linear_mmd as L

    return _asymptotic_test(x, y, L.linear_mmd_terms, "linear mmd", kernel, bandwidth, scales, {})


def block_mmd_test(x, y, *, block_size: Optional[int] = None, kernel: Optional[str] = None,
                   bandwidth: Any = "median", scales: Optional[Sequence[float]] = None) -> NormalityTestResult:
    r"""B-test (Zaremba, Gretton and Blaschko 2013): statistic the mean of the unbiased MMD^2 of blocks
    of ``block_size`` points (default floor(sqrt(min(n, m)))), p-value 1 - Phi(z), z = mean / (sd of the
    block statistics / sqrt(blocks)). O(n b D). ``details`` has the block size, the number of blocks,
    the z-score and the standard error."""
    from .. import linear_mmd as L

    size = min(int(np.shape(x)[0]), int(np.shape(y)[0]))
    b = L.default_block_size(size) if block_size is None else block_size
    fn = lambda xx, yy, **kw: L.block_mmd_terms(xx, yy, b, **kw)  # noqa: E731
    return _asymptotic_test(x, y, fn, "block mmd", kernel, bandwidth, scales, dict(block_size=b))
