r"""MMD estimators for samples too large even for O(n^2) pairs: the linear-time estimator and the
block (B-test) estimator, as differentiable losses and (latentdiv.stats.two_sample) as tests with
asymptotic normal p-values (docs/two_sample.md).

Linear time (Gretton et al., JMLR 2012, section 6): with P = floor(min(n, m) / 2) disjoint pairs of
each sample, :math:`h_p = k(x_{2p}, x_{2p+1}) + k(y_{2p}, y_{2p+1}) - k(x_{2p}, y_{2p+1}) - k(x_{2p+1}, y_{2p})`
and :math:`\widehat{\mathrm{MMD}}^2_l = \frac1P\sum_p h_p`: unbiased for MMD^2, cost O(P D). The h_p are
i.i.d., so :math:`\sqrt P\,\widehat{\mathrm{MMD}}^2_l / \hat\sigma_h \to N(0, 1)` under H0 (sigma_h^2 estimated by
the sample variance of the h_p).

Block (Zaremba, Gretton and Blaschko, NeurIPS 2013): the samples cut into nb = floor(min(n, m) / b)
blocks of b points each; :math:`\eta_k` the unbiased MMD^2 U-statistic of block k; the statistic is their
mean, unbiased for MMD^2, cost O(nb b^2 D) = O(n b D). The eta_k are i.i.d.: the mean over its estimated
standard error sd(eta) / sqrt(nb) is asymptotically N(0, 1) under H0 (as nb grows). Default block size
b = floor(sqrt(min(n, m))) (the paper's recommendation), at least 2.

Both use the samples in the given order: shuffle them first if the order carries structure. Kernels
and bandwidths as :func:`latentdiv.mmd` (``bandwidth=None``: :func:`latentdiv.default_bandwidth`;
``"median"``: the median heuristic of the pooled sample, not differentiated).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ._registry import get_kernel
from ._validation import check_int
from .functional import _check_mmd_args, _mmd_bandwidth

# Blocks per chunk of the block estimator (memory: chunk x b x b kernel values per term).
_MAX_BLOCK_ELEMS = 1 << 22


def _kernel_fn(kernel: str, bandwidth: Any, dim: int):
    spec = get_kernel(kernel)
    return lambda r: spec.formula(r, bandwidth, dim, {})  # noqa: E731


def _check_xy(x: Any, y: Any, min_rows: int) -> None:
    for t, name in ((x, "x"), (y, "y")):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape (n, D), got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must have a floating dtype, got {t.dtype}")
        if t.dim() != 2 or t.shape[1] < 1:
            raise ValueError(f"{name} must have shape (n, D) with D >= 1, got shape {tuple(t.shape)}")
        if t.shape[0] < min_rows:
            raise ValueError(f"{name} has {t.shape[0]} row(s); this estimator needs at least {min_rows}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension D, got {x.shape[1]} and {y.shape[1]}")
    if x.device != y.device or x.dtype != y.dtype:
        raise ValueError(f"x and y must have the same device and dtype, got {x.device}/{x.dtype} and "
                         f"{y.device}/{y.dtype}")


def _resolve(x, y, kernel, bandwidth, scales):
    kernel_name, _ = _check_mmd_args(kernel, bandwidth, scales, None, None)
    bw = _mmd_bandwidth(kernel_name, bandwidth, scales, None, x.shape[1], x.detach(), y.detach())
    return _kernel_fn(kernel_name, bw, x.shape[1]), kernel_name, bw


def _dist(a: Tensor, b: Tensor) -> Tensor:  # row-wise ||a_p - b_p||, [P, D] x [P, D] -> [P]
    return torch.linalg.vector_norm(a - b, dim=-1)


def linear_mmd_terms(x: Tensor, y: Tensor, kernel: Optional[str] = None, bandwidth: Any = None,
                     scales: Optional[Sequence[float]] = None) -> Tensor:  # [n, D], [m, D] -> [P]
    """The P = floor(min(n, m) / 2) i.i.d. terms h_p of the linear-time estimator (module docstring)."""
    _check_xy(x, y, 2)
    k, _, _ = _resolve(x, y, kernel, bandwidth, scales)
    p = min(x.shape[0], y.shape[0]) // 2
    x0, x1 = x[0:2 * p:2], x[1:2 * p:2]
    y0, y1 = y[0:2 * p:2], y[1:2 * p:2]
    return k(_dist(x0, x1)) + k(_dist(y0, y1)) - k(_dist(x0, y1)) - k(_dist(x1, y0))


def linear_mmd(x: Tensor,                   # [n, D]
               y: Tensor,                   # [m, D]
               kernel: Optional[str] = None,
               bandwidth: Any = None,
               scales: Optional[Sequence[float]] = None) -> Tensor:  # []
    r"""Linear-time unbiased estimate of MMD^2 (Gretton et al. 2012): the mean of the h_p over
    floor(min(n, m) / 2) disjoint pairs. Differentiable in x and y; cost O(min(n, m) D)."""
    return linear_mmd_terms(x, y, kernel, bandwidth, scales).mean()


def default_block_size(n: int) -> int:
    return max(2, int(math.isqrt(n)))


def block_mmd_terms(x: Tensor, y: Tensor, block_size: Optional[int] = None, kernel: Optional[str] = None,
                    bandwidth: Any = None, scales: Optional[Sequence[float]] = None) -> Tensor:  # -> [nb]
    """The nb i.i.d. block statistics eta_k (unbiased MMD^2 of each block of b points of x and of y)."""
    _check_xy(x, y, 2)
    size = min(x.shape[0], y.shape[0])
    b = default_block_size(size) if block_size is None else check_int(block_size, "block_size", 2)
    if b > size:
        raise ValueError(f"block_size={b} is larger than the smaller sample ({size} points)")
    k, _, _ = _resolve(x, y, kernel, bandwidth, scales)
    nb = size // b
    d = x.shape[1]
    xb = x[:nb * b].reshape(nb, b, d)
    yb = y[:nb * b].reshape(nb, b, d)
    off = ~torch.eye(b, dtype=torch.bool, device=x.device)
    chunk = max(1, _MAX_BLOCK_ELEMS // (b * b))
    out = []
    for c0 in range(0, nb, chunk):
        xc, yc = xb[c0:c0 + chunk], yb[c0:c0 + chunk]
        # Direct differences (the matmul form of cdist is inaccurate for near duplicates, and its
        # diagonal is not exactly 0); the diagonal is masked out of the within-block terms.
        # The diagonal distance (0) is replaced by 1 before the kernel and masked after: its gradient
        # through the norm at 0 would be NaN, and NaN * 0 is NaN.
        kxx = k(torch.where(off, torch.linalg.vector_norm(xc.unsqueeze(2) - xc.unsqueeze(1), dim=-1), 1.0))
        kyy = k(torch.where(off, torch.linalg.vector_norm(yc.unsqueeze(2) - yc.unsqueeze(1), dim=-1), 1.0))
        kxy = k(torch.linalg.vector_norm(xc.unsqueeze(2) - yc.unsqueeze(1), dim=-1))
        within = torch.where(off, kxx + kyy, 0.0).sum(dim=(1, 2)) / (b * (b - 1))
        out.append(within - 2.0 * kxy.mean(dim=(1, 2)))
    return torch.cat(out)


def block_mmd(x: Tensor,                   # [n, D]
              y: Tensor,                   # [m, D]
              block_size: Optional[int] = None,
              kernel: Optional[str] = None,
              bandwidth: Any = None,
              scales: Optional[Sequence[float]] = None) -> Tensor:  # []
    r"""Block (B-test) estimate of MMD^2 (Zaremba et al. 2013): the mean of the unbiased MMD^2 of
    floor(min(n, m) / b) blocks of ``block_size`` = b points (default floor(sqrt(min(n, m)))).
    Unbiased; differentiable in x and y; cost O(min(n, m) b D)."""
    return block_mmd_terms(x, y, block_size, kernel, bandwidth, scales).mean()


def standardized(terms: Tensor) -> Tuple[float, float, float]:
    """(mean, its standard error sd / sqrt(count), mean / standard error) of i.i.d. terms, float64."""
    t = terms.detach().to(torch.float64)
    count = t.shape[0]
    if count < 2:
        raise ValueError(f"the asymptotic test needs at least 2 terms (pairs or blocks), got {count}")
    mean = float(t.mean())
    se = float(t.std(unbiased=True)) / math.sqrt(count)
    z = mean / se if se > 0 else (math.inf if mean > 0 else (-math.inf if mean < 0 else 0.0))
    return mean, se, z
