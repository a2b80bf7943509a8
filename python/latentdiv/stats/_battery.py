"""The tests: Mardia, Henze-Zirkler, energy (Szekely-Rizzo) and EDF tests (Cramer-von Mises,
Kolmogorov-Smirnov, Anderson-Darling) on radii, pairwise distances, random 1-D projections and
coordinates. Formulas: docs/formulas.md section 7; docs/stats.md for the choices.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional, Union

import numpy as np
import torch
from scipy import special as sp  # not scipy.stats: its import is a fifth of a warm `latentdiv check` (_edf_pvalues)

from .. import special
from .._validation import check_int
from ..pairwise import pairwise_sum, pdist
from . import _common as C
from . import _edf_pvalues as E
from ..distributed import global_sample as _global_sample
from ._common import MardiaResult, NormalityTestResult

BetaArg = Union[None, str, float]


def _prepare(x: torch.Tensor, target: str, ddof: int = 0, name: str = "z") -> torch.Tensor:  # [n, D] -> [n, D]
    return x if target == "standard" else C.whiten(x, ddof=ddof, name=name)


def _resolve_null(null: str, has_asymptotic: bool, test: str, target: str, auto_asymptotic: bool = False) -> str:
    """"auto" is "monte carlo" except where the test's null law is exactly (or asymptotically, with
    scipy's finite-n corrections) known: EDF tests of i.i.d. values with a fully specified CDF."""
    C.check_null(null)
    if null == "asymptotic" and not has_asymptotic:
        raise ValueError(f"null='asymptotic' is not available for {test} with target={target!r} "
                         "(no valid limit law); use null='monte carlo' or 'auto'")
    if null == "auto":
        return "asymptotic" if auto_asymptotic else "monte carlo"
    return null


# ---------------------------------------------------------------------------------------------------
# batched null replicates
# ---------------------------------------------------------------------------------------------------
# The Monte Carlo nulls draw ``chunk`` null samples at once ([b, n, D], the same draws in the same
# order as one at a time: C.standard_normal_batch) and compute their statistics in one vectorized
# pass: O(nD) statistics directly, O(n^2) ones from the b Gram matrices y y^T (BLAS), which hold the
# pair distances of a N(0, I) sample to ~1e-15 relative (no cancellation: ||y||^2 ~ D, ||y_i - y_j||^2
# ~ 2D). The observed statistic keeps the engine's exact pair sums (its data may be far from the
# origin); the two agree to rounding, so the p-values are those of the per-replicate loop.
# Values per batched temporary ([b, n, n] or [b, n, D]): 8 MiB of float64. 32 MiB temporaries sit at
# glibc's largest mmap threshold, so each one was mapped and page-faulted afresh: 2^20 cut the system
# time of a battery's nulls 2-3x (1.1-1.4 s -> 0.35-0.5 s for B = 300 at 256 x 64) at equal user time.
_BATCH_VALUES = 1 << 20
_BATCH_MAX_N = 2048       # above this n, one replicate at a time through the engine (memory O(n D))


def _batch_size(n: int, d: int, pairs: bool) -> int:
    """Null replicates per batched evaluation; 0 when the statistic is evaluated one at a time."""
    if pairs and n > _BATCH_MAX_N:
        return 0
    per = n * n if pairs else n * max(d, 1)
    return max(1, _BATCH_VALUES // per)


def _gram_sq_distances(y: torch.Tensor) -> torch.Tensor:  # y: [b, n, D] -> [b, n, n]
    """Squared pair distances from the Gram matrices, exactly 0 on the diagonal, never negative."""
    sq = (y * y).sum(dim=-1)  # [b, n]
    d2 = torch.baddbmm(sq.unsqueeze(-1) + sq.unsqueeze(-2), y, y.mT, alpha=-2.0)  # ||y_i||^2 + ||y_j||^2 - 2 y_i.y_j
    d2.clamp_min_(0.0)
    torch.diagonal(d2, dim1=-2, dim2=-1).zero_()
    return d2


def _simulate(key: tuple, n: int, d: int, target: str, statistic, pairs: bool, nres: int, generator,
              progress, desc: str, ddof: int = 0) -> np.ndarray:  # -> [B, k]
    """C.simulate_null of ``statistic`` (a prepared sample [n, D] -> [k], or a batch [b, n, D] ->
    [b, k]): over batches of replicates where the size allows (``pairs``: an O(n^2) statistic), else
    one replicate at a time; the null samples are whitened per sample for the estimated target."""
    chunk = _batch_size(n, d, pairs)
    if chunk == 0:
        return C.simulate_null(key, lambda y: statistic(_prepare(y, target, ddof=ddof)), nres, generator, progress,
                               desc, draw=lambda rng, b: C.standard_normal_sample(rng, n, d))
    return C.simulate_null(key, lambda y: statistic(_prepare(y, target, ddof=ddof)), nres, generator, progress,
                           desc, draw=lambda rng, b: C.standard_normal_batch(rng, b, n, d), batch_size=chunk)


def _column(value, y: torch.Tensor) -> np.ndarray:
    """A scalar statistic as the one column of a null table: [1] for one sample, [b, 1] for a batch."""
    return np.reshape(value, (*y.shape[:-2], 1))


# ---------------------------------------------------------------------------------------------------
# Mardia
# ---------------------------------------------------------------------------------------------------
def _mardia_stats(y: torch.Tensor, chunk: int) -> np.ndarray:  # y: [n, D] -> [2], or [b, n, D] -> [b, 2]
    """(n b1 / 6, (b2 - D(D+2)) sqrt(n / (8 D (D+2)))) with m_ij = y_i . y_j.

    b1 = mean_ij m_ij^3 is O(n^2 D): for one sample by row blocks of the Gram matrix (memory
    O(n chunk)); for a batch of null samples from their whole Gram matrices (the batch is sized for them)."""
    n, d = y.shape[-2:]
    if y.dim() == 2:
        total = 0.0
        for start in range(0, n, chunk):
            g = y[start:start + chunk] @ y.T  # [c, n]
            total += float((g * g * g).sum())
        b1 = np.float64(total / (n * n))
    else:
        b1 = (y @ y.mT).pow_(3).sum(dim=(-2, -1)).numpy() / (n * n)  # [b]
    sq = (y * y).sum(dim=-1)  # [(b,) n]
    b2 = (sq * sq).mean(dim=-1).numpy()
    return np.stack([n * b1 / 6.0, (b2 - d * (d + 2)) * math.sqrt(n / (8.0 * d * (d + 2)))], axis=-1)


def mardia(z, *, target: str = "standard", null: str = "auto", n_resamples: int = 1000,
           generator: C.Generator = 0, chunk: int = 1024, progress=False, group=None) -> MardiaResult:
    r"""Mardia's multivariate skewness and kurtosis.

    With :math:`m_{ij} = y_i^\top y_j` (target="standard": y = z; "estimated": y = whitened z with
    the population covariance, as Mardia 1970 / R MVN), :math:`b_1 = n^{-2}\sum_{ij} m_{ij}^3`,
    :math:`b_2 = n^{-1}\sum_i m_{ii}^2`; statistics :math:`n b_1/6` (upper tail) and
    :math:`(b_2 - D(D+2))\sqrt{n/(8D(D+2))}` (two-sided).

    null: "auto" = "monte carlo" (the chi^2 / N(0,1) limits fail at latent sizes, e.g. n = 256,
    D = 64, and do not apply to the standard target at all); "asymptotic" (target="estimated" only):
    chi^2 with D(D+1)(D+2)/6 degrees of freedom and N(0, 1).

    ``skewness.statistic`` is always :math:`n b_1/6`, whatever the null. For n < 20 the asymptotic
    p-value is that of Mardia's small-sample corrected statistic :math:`k\,n b_1/6`,
    :math:`k = (D+1)(n+1)(n+3) / (n((n+1)(D+1) - 6))` (Mardia 1974; R MVN), which is reported in
    ``skewness.details["corrected_statistic"]`` with ``details["small_sample_factor"]`` = k.
    """
    if group is not None:  # the global sample of a torch.distributed group (latentdiv.distributed)
        z = _global_sample(z, group)
    x = C.as_sample(z)
    target = C.check_target(target)
    n, d = x.shape
    C.check_estimated_size(n, d, target)
    null = _resolve_null(null, target == "estimated", "mardia", target)
    chunk = check_int(chunk, "chunk", 1)
    obs = _mardia_stats(_prepare(x, target), chunk)
    details = {}
    skew = obs[0]  # n b1 / 6, the statistic reported for every null
    if null == "asymptotic":
        df = d * (d + 1) * (d + 2) / 6.0
        tested = skew
        if n < 20:
            k = (d + 1) * (n + 1) * (n + 3) / (n * ((n + 1) * (d + 1) - 6))
            tested = skew * k
            details["small_sample_factor"] = k
            details["corrected_statistic"] = float(tested)
        p_skew = float(sp.chdtrc(df, tested))  # chi^2_df upper tail
        p_kurt = float(2.0 * sp.ndtr(-abs(obs[1])))  # two-sided normal
        details["df"] = df
        b = 0
    else:
        generator = C.check_generator(generator)
        b = C.check_n_resamples(n_resamples)

        table = _simulate(("mardia", target, n, d), n, d, target, lambda y: _mardia_stats(y, chunk), True, b, generator, progress, "Mardia null")
        p_skew = C.mc_pvalue(obs[0], table[:, 0])
        p_kurt = C.mc_pvalue_two_sided(obs[1], table[:, 1])
    common = dict(target=target, null=null, n_resamples=b, n=n, dim=d)
    return MardiaResult(
        skewness=NormalityTestResult(float(skew), p_skew, "Mardia skewness", details=dict(details), **common),
        kurtosis=NormalityTestResult(float(obs[1]), p_kurt, "Mardia kurtosis", **common),
    )


# ---------------------------------------------------------------------------------------------------
# Henze-Zirkler
# ---------------------------------------------------------------------------------------------------
# Default beta = HZ_BETA_SCALE / sqrt(D): the kernel exp(-beta^2 r^2 / 2) then weighs typical pair
# distances (r^2 ~ 2D) by exp(-HZ_BETA_SCALE^2) whatever D is, whereas the classical beta gives ~e^-42 at
# D = 64 (HZ == 1 for every law). 3 won the power scan over {0.5, 1, 2, 3, 4, 6} at n = 256, D = 8 and
# 64 (docs/stats.md; benchmarks/power_study.py --hz-beta-scan): near the classical beta's power at D = 8,
# far above it at D = 64.
HZ_BETA_SCALE = 3.0


def classical_beta(n: int, d: int) -> float:
    """Henze & Zirkler's (and pingouin's / MVN's) smoothing parameter
    (1/sqrt 2) ((2D+1)/4)^{1/(D+4)} n^{1/(D+4)}."""
    return (1.0 / math.sqrt(2.0)) * ((2.0 * d + 1.0) / 4.0) ** (1.0 / (d + 4.0)) * n ** (1.0 / (d + 4.0))


def default_beta(n: int, d: int) -> float:
    """latentdiv's default: HZ_BETA_SCALE / sqrt(D) (see docs/stats.md for the power experiment)."""
    return HZ_BETA_SCALE / math.sqrt(d)


def _resolve_beta(beta: BetaArg, n: int, d: int) -> float:
    if beta is None:
        return default_beta(n, d)
    if beta == "classical":
        return classical_beta(n, d)
    if isinstance(beta, str) or isinstance(beta, bool) or not isinstance(beta, numbers.Real):
        raise TypeError(f"beta must be None, 'classical' or a positive float, got {beta!r}")
    if not (beta > 0 and math.isfinite(beta)):
        raise ValueError(f"beta must be a positive finite float, got {beta!r}")
    return float(beta)


def _hz_stat(y: torch.Tensor, beta: float):  # y: [n, D] prepared -> float, or [b, n, D] -> [b] numpy
    r"""n * MMD^2 (V-statistic) of y against N(0, I) with the Gaussian kernel exp(-beta^2 r^2/2):
    HZ = n^{-1} sum_ij e^{-beta^2 r_ij^2/2} - 2 (1+beta^2)^{-D/2} sum_j e^{-beta^2 |y_j|^2/(2(1+beta^2))}
         + n (1+2 beta^2)^{-D/2}   (docs/formulas.md 7b). The pair sum of one sample runs on the fused
    engine (h = 1/beta); that of a batch of null samples from their Gram matrices."""
    n, d = y.shape[-2:]
    b2 = beta * beta
    if y.dim() == 2:
        pair = pairwise_sum(y, kernel="gaussian", bandwidth=1.0 / beta)
    else:
        pair = torch.exp(-0.5 * b2 * _gram_sq_distances(y)).sum(dim=(-2, -1))  # [b]
    sq = (y * y).sum(dim=-1)  # [(b,) n]
    cross = math.exp(-0.5 * d * math.log1p(b2)) * torch.exp(-b2 * sq / (2.0 * (1.0 + b2))).sum(dim=-1)
    const = math.exp(-0.5 * d * math.log1p(2.0 * b2))
    out = pair / n - 2.0 * cross + n * const
    return float(out) if y.dim() == 2 else out.numpy()


def _hz_lognormal_pvalue(hz: float, beta: float, d: int) -> float:
    """pingouin's / Henze-Zirkler's lognormal approximation (docs/formulas.md 7b)."""
    b2 = beta * beta
    a = 1.0 + 2.0 * b2
    w = (1.0 + b2) * (1.0 + 3.0 * b2)
    mu = 1.0 - a ** (-d / 2.0) * (1.0 + d * b2 / a + d * (d + 2) * b2 * b2 / (2.0 * a * a))
    si2 = (2.0 * (1.0 + 4.0 * b2) ** (-d / 2.0)
           + 2.0 * a ** (-d) * (1.0 + 2.0 * d * b2 ** 2 / a ** 2 + 3.0 * d * (d + 2) * b2 ** 4 / (4.0 * a ** 4))
           - 4.0 * w ** (-d / 2.0) * (1.0 + 3.0 * d * b2 ** 2 / (2.0 * w) + d * (d + 2) * b2 ** 4 / (2.0 * w ** 2)))
    pmu = math.log(math.sqrt(mu ** 4 / (si2 + mu ** 2)))
    psi = math.sqrt(math.log1p(si2 / mu ** 2))
    return float(sp.ndtr((pmu - math.log(hz)) / psi)) if hz > 0 else 1.0  # lognormal(pmu, psi) upper tail


def henze_zirkler(z, *, beta: BetaArg = None, target: str = "standard", null: str = "auto",
                  n_resamples: int = 1000, generator: C.Generator = 0, progress=False, group=None) -> NormalityTestResult:
    r"""Henze-Zirkler (BHEP_beta) test: n x the Gaussian-kernel MMD^2 between the sample and N(0, I)
    with kernel width h = 1/beta (docs/formulas.md 7b).

    beta: None = latentdiv's default HZ_BETA_SCALE / sqrt(D) (useful in any D); "classical" = Henze &
    Zirkler's (1/sqrt 2)((2D+1)/4)^{1/(D+4)} n^{1/(D+4)} (pingouin / R MVN; degenerate, HZ ~ 1 for every
    law, when D >~ 16); or a positive float.
    null: "auto" = "monte carlo"; "asymptotic" (target="estimated" only) = the lognormal approximation
    of Henze & Zirkler as in pingouin.
    """
    if group is not None:  # the global sample of a torch.distributed group (latentdiv.distributed)
        z = _global_sample(z, group)
    x = C.as_sample(z)
    target = C.check_target(target)
    n, d = x.shape
    C.check_estimated_size(n, d, target)
    null = _resolve_null(null, target == "estimated", "henze_zirkler", target)
    b = _resolve_beta(beta, n, d)
    hz = _hz_stat(_prepare(x, target), b)
    details = {"beta": b, "beta_rule": "default" if beta is None else str(beta)}
    if null == "asymptotic":
        p = _hz_lognormal_pvalue(hz, b, d)
        nres = 0
    else:
        generator = C.check_generator(generator)
        nres = C.check_n_resamples(n_resamples)
        table = _simulate(("hz", target, n, d, b), n, d, target, lambda y: _column(_hz_stat(y, b), y), True, nres, generator, progress,
                          "Henze-Zirkler null")
        p = C.mc_pvalue(hz, table[:, 0])
    return NormalityTestResult(float(hz), p, "Henze-Zirkler", target, null, nres, n, d, details)


# ---------------------------------------------------------------------------------------------------
# Energy
# ---------------------------------------------------------------------------------------------------
def _energy_stat(y: torch.Tensor):  # y: [n, D] prepared -> float, or [b, n, D] -> [b] numpy
    r"""E_n = n ( (2/n) sum_i E||y_i - Y|| - E||Y - Y'|| - (1/n^2) sum_ij ||y_i - y_j|| ) (Szekely & Rizzo
    2005; energy::mvnorm.e); E||y - Y|| and E||Y - Y'|| in closed form (latentdiv.special). The pair
    sum of one sample runs on the fused engine (the 'energy' kernel is -r); that of a batch of null
    samples from their Gram matrices."""
    n, d = y.shape[-2:]
    sq = (y * y).sum(dim=-1)  # [(b,) n]
    mean_to_normal = special.expected_distance_to_normal(sq, d).sum(dim=-1) / n
    if y.dim() == 2:
        pair_mean = -pairwise_sum(y, kernel="energy") / (n * n)
    else:
        pair_mean = _gram_sq_distances(y).sqrt().sum(dim=(-2, -1)) / (n * n)  # [b]
    out = n * (2.0 * mean_to_normal - special.expected_pair_distance_normal(d) - pair_mean)
    return float(out) if y.dim() == 2 else out.numpy()


def energy_test(z, *, target: str = "standard", null: str = "auto", n_resamples: int = 1000,
                generator: C.Generator = 0, progress=False, group=None) -> NormalityTestResult:
    r"""Szekely-Rizzo energy test of normality. target="estimated" whitens with the unbiased (n - 1)
    covariance and its symmetric inverse square root, exactly as R's ``energy::mvnorm.e``. The p-value
    is always Monte Carlo (parametric bootstrap, as ``energy::mvnorm.test``)."""
    if group is not None:  # the global sample of a torch.distributed group (latentdiv.distributed)
        z = _global_sample(z, group)
    x = C.as_sample(z)
    target = C.check_target(target)
    n, d = x.shape
    C.check_estimated_size(n, d, target)
    null = _resolve_null(null, False, "energy_test", target)
    stat = _energy_stat(_prepare(x, target, ddof=1))
    generator = C.check_generator(generator)
    nres = C.check_n_resamples(n_resamples)
    table = _simulate(("energy", target, n, d), n, d, target, lambda y: _column(_energy_stat(y), y), True, nres, generator, progress, "energy null",
                      ddof=1)
    return NormalityTestResult(float(stat), C.mc_pvalue(stat, table[:, 0]), "energy", target, null, nres, n, d)


# ---------------------------------------------------------------------------------------------------
# EDF tests
# ---------------------------------------------------------------------------------------------------
# Above this many values the chi CDF is interpolated (see _chi_edf_fast): the n (n - 1) / 2 pair
# distances from n = 201 on (the exact CDF of 20,000 values per null replicate costs more than the
# rest of the battery's replicate).
_INTERP_MIN = 20_000
_INTERP_GRID = 8193


def _chi_edf_fast(r: np.ndarray, d: int, scale: float, presorted: bool = False) -> np.ndarray:
    """EDF statistics against scale * chi_D for many values (pairwise distances): the exact CDF on a
    grid, interpolated. The interpolated quantity is the normal score z = Phi^{-1}(F(r)) (computed
    from P in the lower half and from Q in the upper half, so both tails stay accurate) as a function
    of t = (r/scale)^{2/3} (Wilson-Hilferty: z is nearly linear in t), on 8193 points spanning the
    data; then F = Phi(z), log F = log Phi(z), log(1 - F) = log Phi(-z). Measured: the three
    statistics agree with the exact CDF's to < 1e-6 relative for D = 2..300 (tests/test_stats.py), far
    below their Monte Carlo error; the same code computes the observed and the null values."""
    rs = r if presorted else np.sort(r, axis=-1)  # r: [..., m] -> [..., 3]
    if rs.shape[-1] < _INTERP_MIN:
        return C.chi_edf_statistics(rs, d, scale)
    if rs.ndim > 1:  # a batch of samples: one interpolation grid per sample (each spans its own data)
        return np.stack([_chi_edf_fast(row, d, scale, True) for row in rs.reshape(-1, rs.shape[-1])]).reshape(
            *rs.shape[:-1], 3)
    t = (rs / scale) ** (2.0 / 3.0)
    grid = np.linspace(t[0], t[-1], _INTERP_GRID)
    s = 0.5 * grid ** 3
    a = 0.5 * d
    # P below the median of chi^2_D / 2 and Q above it (each where it is the smaller, accurate one)
    lower = s < sp.gammaincinv(a, 0.5)
    zg = np.empty_like(s)
    zg[lower] = sp.ndtri(sp.gammainc(a, s[lower]))
    zg[~lower] = -sp.ndtri(sp.gammaincc(a, s[~lower]))
    zg = np.clip(zg, -37.0, 37.0)  # ndtri(0) = -inf: keep the table finite (Phi(-37) ~ 1e-300)
    # Linear interpolation on the uniform grid, the cell found arithmetically (np.interp's binary
    # search costs more than the rest of the EDF for 10^4..10^5 values).
    h = (grid[-1] - grid[0]) / (_INTERP_GRID - 1)
    pos = (t - grid[0]) / h if h > 0 else np.zeros_like(t)
    cell = np.clip(np.floor(pos), 0, _INTERP_GRID - 2).astype(np.intp)
    zv = zg[cell] + (pos - cell) * (zg[cell + 1] - zg[cell])
    # z is clipped to [-37, 37], where Phi(z) >= 5.7e-300 is accurate to relative precision (scipy's
    # ndtr goes through erfc in the lower tail): its log is log_ndtr's, at a fraction of the cost.
    u = sp.ndtr(zv)
    return C.edf_statistics(u, np.log(u), np.log(sp.ndtr(-zv)))


# Each family maps a prepared sample y [n, D] -> its (W^2, D_m, A^2) [3], or a batch of null
# samples [b, n, D] -> [b, 3] (the same EDF code along the last axis).
def _family_radii(y: torch.Tensor) -> np.ndarray:
    d = y.shape[-1]
    return C.chi_edf_statistics(torch.linalg.vector_norm(y, dim=-1).numpy(), d)


def _family_distances(y: torch.Tensor) -> np.ndarray:
    d = y.shape[-1]
    if y.dim() == 2:
        return _chi_edf_fast(pdist(y).numpy(), d, math.sqrt(2.0))
    n = y.shape[-2]
    iu = torch.triu_indices(n, n, offset=1)
    r = _gram_sq_distances(y)[:, iu[0], iu[1]].sqrt()  # [b, n (n - 1) / 2]
    return _chi_edf_fast(r.numpy(), d, math.sqrt(2.0))


def _family_projections(y: torch.Tensor, theta: torch.Tensor) -> np.ndarray:  # theta: [D, L] unit columns
    proj = (y @ theta).mT.numpy()  # [(b,) L, n]
    return C.normal_edf_statistics(proj).max(axis=-2)  # the worst direction


def _family_coordinates(y: torch.Tensor) -> np.ndarray:
    return C.normal_edf_statistics(y.reshape(*y.shape[:-2], -1).numpy())


def _directions(d: int, n_projections: int, generator: C.Generator) -> torch.Tensor:  # -> [D, L]
    g = C.rng_for(generator, 1).standard_normal((d, n_projections))
    return torch.from_numpy(g / np.linalg.norm(g, axis=0, keepdims=True))


def _uniform_ad_null(m: int, n_resamples: int, generator: C.Generator, progress) -> np.ndarray:  # [B]
    def statistic(u):  # [b, m] uniform samples, drawn as b successive rng.random(m) -> [b, 1]
        u = np.sort(u, axis=-1)
        return C.edf_statistics(u, np.log(u), np.log1p(-u))[:, 2:]

    return C.simulate_null(("uniform-ad", m), statistic, n_resamples, generator, progress, "Anderson-Darling null",
                           draw=lambda rng, b: rng.random((b, m)), batch_size=max(1, _BATCH_VALUES // m))[:, 0]


_EDF_INDEX = {"cvm": 0, "ks": 1, "ad": 2}
_FAMILY_LABEL = {"radii": "radii", "distances": "pairwise distances", "projections": "random projections",
                 "coordinates": "coordinates"}


def _edf_test(family: str, z, statistic: str, target: str, null: str, n_resamples: int,
              generator: C.Generator, progress, n_projections: Optional[int] = None) -> NormalityTestResult:
    x = C.as_sample(z)
    target = C.check_target(target)
    statistic = C.check_statistic(statistic)
    n, d = x.shape
    C.check_estimated_size(n, d, target)
    generator = C.check_generator(generator)
    C.check_n_resamples(n_resamples)  # checked even when the asymptotic branch does not use it
    # i.i.d. values with a fully specified CDF: radii and coordinates under the standard target
    iid = target == "standard" and family in ("radii", "coordinates")
    null = _resolve_null(null, iid, f"{family} {statistic}", target, auto_asymptotic=iid)
    details = {"statistic": statistic}
    y = _prepare(x, target)
    if family == "projections":
        n_projections = check_int(n_projections, "n_projections", 1)
        theta = _directions(d, n_projections, generator)
        fam = lambda yy: _family_projections(yy, theta)  # noqa: E731
        details["n_projections"] = n_projections
        details["combination"] = "max over projections"
        key_extra = (n_projections,)
    elif family == "coordinates":
        if target == "estimated":
            # After estimating the covariance there are no canonical axes; a Haar-random rotation of
            # the whitened sample makes the null law exactly that of a whitened N(0, I) sample.
            y = y @ C.haar_rotation(d, C.rng_for(generator, 2))
            details["rotation"] = "random (Haar)"
        fam = _family_coordinates
        key_extra = ()
    else:
        fam = {"radii": _family_radii, "distances": _family_distances}[family]
        key_extra = ()
    obs = fam(y)
    k = _EDF_INDEX[statistic]
    method = f"{EDF_LABEL[statistic]} on {_FAMILY_LABEL[family]}"
    nres = 0
    if iid and (null == "asymptotic" or (null == "monte carlo" and statistic == "ad")):
        # The asymptotic branch: the laws of CvM and KS for m i.i.d. values (_edf_pvalues); AD via
        # uniform order statistics.
        m = y.numel() if family == "coordinates" else n
        if statistic == "ad":
            nres = C.check_n_resamples(n_resamples)
            p = C.mc_pvalue(obs[2], _uniform_ad_null(m, nres, generator, progress))
            details["null_law"] = "uniform order statistics (fully specified CDF)"
        else:
            p = (E.cvm_pvalue if statistic == "cvm" else E.ks_pvalue)(float(obs[k]), m)
            details["null_law"] = ("Cramer-von Mises limit law with Csorgo-Faraway's 1/m correction"
                                   if statistic == "cvm" else "exact Kolmogorov-Smirnov law (Simard-L'Ecuyer regimes)")
        if statistic == "ad":
            null = "monte carlo"
        return NormalityTestResult(float(obs[k]), p, method, target, null, nres, n, d, details)
    nres = C.check_n_resamples(n_resamples)
    table = _simulate((family, target, n, d) + key_extra,  # the directions are a function of (D, L, seed)
                      n, d, target, fam, family == "distances", nres, generator, progress,
                      f"{_FAMILY_LABEL[family]} null")
    p = C.mc_pvalue(obs[k], table[:, k])
    return NormalityTestResult(float(obs[k]), p, method, target, "monte carlo", nres, n, d, details)


EDF_LABEL = C.EDF_NAMES


def radii_test(z, *, statistic: str = "cvm", target: str = "standard", null: str = "auto",
               n_resamples: int = 1000, generator: C.Generator = 0, progress=False, group=None) -> NormalityTestResult:
    r"""EDF test of the radii ||y_i|| against chi_D (CDF P(D/2, r^2/2)).

    target="standard": the radii are i.i.d. chi_D under H0, so "auto" gives scipy's CvM / KS p-values
    (asymptotic with finite-n corrections / exact) and a Monte Carlo AD p-value from uniform order
    statistics. target="estimated": Mahalanobis radii of the whitened sample (dependent: they satisfy
    sum r_i^2 = n D), Monte Carlo null."""
    if group is not None:  # the global sample of a torch.distributed group (latentdiv.distributed)
        z = _global_sample(z, group)
    return _edf_test("radii", z, statistic, target, null, n_resamples, generator, progress)


def distance_test(z, *, statistic: str = "cvm", target: str = "standard", null: str = "auto",
                  n_resamples: int = 1000, generator: C.Generator = 0, progress=False, group=None) -> NormalityTestResult:
    r"""EDF test of the n(n-1)/2 pairwise distances ||y_i - y_j|| (``latentdiv.pdist``) against
    sqrt(2) chi_D (CDF P(D/2, d^2/4)). The distances are dependent (a U-process): Monte Carlo null."""
    if group is not None:  # the global sample of a torch.distributed group (latentdiv.distributed)
        z = _global_sample(z, group)
    return _edf_test("distances", z, statistic, target, null, n_resamples, generator, progress)


def projection_test(z, *, statistic: str = "cvm", n_projections: int = 32, target: str = "standard",
                    null: str = "auto", n_resamples: int = 1000, generator: C.Generator = 0,
                    progress=False, group=None) -> NormalityTestResult:
    r"""EDF tests of 1-D projections y theta_l against N(0, 1) for ``n_projections`` directions drawn
    uniformly on the sphere from ``generator``; the statistic is the maximum over directions (the
    worst direction), with a Monte Carlo null (the projections share the data: dependent)."""
    if group is not None:  # the global sample of a torch.distributed group (latentdiv.distributed)
        z = _global_sample(z, group)
    return _edf_test("projections", z, statistic, target, null, n_resamples, generator, progress,
                     n_projections=n_projections)


def coordinate_test(z, *, statistic: str = "cvm", target: str = "standard", null: str = "auto",
                    n_resamples: int = 1000, generator: C.Generator = 0, progress=False, group=None) -> NormalityTestResult:
    r"""EDF test of all n D coordinates pooled against N(0, 1).

    target="standard": i.i.d. N(0, 1) under H0: scipy's CvM / KS p-values, AD by Monte Carlo over
    uniform order statistics. target="estimated": coordinates of the whitened sample after a random
    (Haar, from ``generator``) rotation, Monte Carlo null."""
    if group is not None:  # the global sample of a torch.distributed group (latentdiv.distributed)
        z = _global_sample(z, group)
    return _edf_test("coordinates", z, statistic, target, null, n_resamples, generator, progress)
