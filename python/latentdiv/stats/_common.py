"""Shared machinery of the normality tests: input checks, the two targets, result objects, EDF
statistics, and Monte Carlo null distributions with an in-memory cache.

Monte Carlo p-values use p = (1 + #{T_null >= T}) / (1 + B) (Davison & Hinkley 1997, eq. 4.11;
``scipy.stats.monte_carlo_test`` does the same): with B null replicates exchangeable with the observed
statistic under H0, P(p <= alpha) <= alpha for every B, so the p-value is valid even when the null
sample is small or when the observed data happen to come from the same generator as the null cache.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from typing import Any, Callable, Dict, Optional, Tuple, Union

import numpy as np
import torch

from .._validation import check_int, check_member, check_sample_array

TARGETS = ("standard", "estimated")
NULLS = ("auto", "asymptotic", "monte carlo")
EDF_STATISTICS = ("cvm", "ks", "ad")
EDF_NAMES = {"cvm": "Cramer-von Mises", "ks": "Kolmogorov-Smirnov", "ad": "Anderson-Darling"}

# The smallest sample every test accepts. Below it EDF and moment statistics say little and the
# Monte Carlo null of the estimated target (which needs n > D) is mostly degenerate.
MIN_SAMPLES = 8

Generator = Union[None, int, np.random.Generator]


# ---------------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class NormalityTestResult:
    """Result of one test, in the style of scipy.stats results (``statistic``, ``pvalue``).

    ``method``: the test's name; ``target``: "standard" (H0: N(0, I)) or "estimated" (H0: some
    N(mu, Sigma)); ``null``: how the p-value was obtained ("asymptotic", "exact", or "monte carlo");
    ``n_resamples``: Monte Carlo replicates (0 otherwise); ``n``, ``dim``: the sample's shape;
    ``details``: test-specific extras (beta, degrees of freedom, number of projections, ...).
    """

    statistic: float
    pvalue: float
    method: str
    target: str
    null: str
    n_resamples: int
    n: int
    dim: int
    details: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def __iter__(self):  # tuple-unpacking like scipy's results: stat, p = test(z)
        return iter((self.statistic, self.pvalue))

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class MardiaResult:
    """Mardia's test: ``skewness`` and ``kurtosis`` are full results; ``statistic`` is the pair of
    their statistics and ``pvalue`` their Bonferroni combination min(1, 2 min(p_skew, p_kurt))."""

    skewness: NormalityTestResult
    kurtosis: NormalityTestResult

    @property
    def statistic(self) -> Tuple[float, float]:
        return (self.skewness.statistic, self.kurtosis.statistic)

    @property
    def pvalue(self) -> float:
        return min(1.0, 2.0 * min(self.skewness.pvalue, self.kurtosis.pvalue))

    def __iter__(self):
        return iter((self.statistic, self.pvalue))

    def to_dict(self) -> Dict[str, Any]:
        return {"skewness": self.skewness.to_dict(), "kurtosis": self.kurtosis.to_dict(),
                "pvalue": self.pvalue}


# ---------------------------------------------------------------------------------------------------
# arguments
# ---------------------------------------------------------------------------------------------------
def as_sample(z, name: str = "z") -> torch.Tensor:  # [n, D] array-like -> [n, D] float64 CPU tensor
    """A finite (n, D) floating sample with n >= MIN_SAMPLES, as a contiguous float64 CPU tensor
    (the statistics are sums of many small terms; float64 keeps e.g. Henze-Zirkler's exp(-40) terms)."""
    return check_sample_array(z, name, MIN_SAMPLES, f"the normality tests need n >= {MIN_SAMPLES}",
                              "no normality test can answer for such a sample (remove those rows)")


def check_target(target) -> str:
    return check_member(target, "target", TARGETS)


def check_null(null) -> str:
    return check_member(null, "null", NULLS)


def check_statistic(statistic) -> str:
    return check_member(statistic, "statistic", EDF_STATISTICS)


def check_n_resamples(n_resamples) -> int:
    return check_int(n_resamples, "n_resamples", 1)


def check_generator(generator) -> Generator:
    if generator is None or isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, bool) or not isinstance(generator, (int, np.integer)) or generator < 0:
        raise TypeError(f"generator must be a non-negative int seed, a numpy.random.Generator or None, "
                        f"got {generator!r}")
    return int(generator)


def check_estimated_size(n: int, d: int, target: str, name: str = "z") -> None:
    if target == "estimated" and n < d + 2:
        raise ValueError(f"target='estimated' estimates a D x D covariance: {name} needs n >= D + 2 rows, "
                         f"got n={n}, D={d}")


def rng_for(generator: Generator, stream: int) -> np.random.Generator:
    """Independent streams from one seed: ``stream`` separates the null simulation (0), random
    directions (1), and random rotations (2), so that e.g. the directions never coincide with the
    first null replicate's data."""
    if isinstance(generator, np.random.Generator):
        return generator
    seed = 0 if generator is None else generator
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream,)))


# ---------------------------------------------------------------------------------------------------
# the two targets
# ---------------------------------------------------------------------------------------------------
def whiten(x: torch.Tensor, ddof: int = 0, name: str = "z") -> torch.Tensor:  # [n, D] -> [n, D]
    r"""Symmetric (Mahalanobis) whitening :math:`y = (x - \bar x) S^{-1/2}`, S the covariance with
    divisor n - ddof (ddof = 0: the population covariance of Mardia / Henze-Zirkler / pingouin;
    ddof = 1: R's ``var`` as in energy::mvnorm.e). The symmetric square root makes every statistic
    built from inner products of the y_i affine invariant, so its null law depends on (n, D) only."""
    n, d = x.shape
    xc = x - x.mean(dim=0, keepdim=True)  # [n, D]
    cov = xc.T @ xc / (n - ddof)  # [D, D]
    evals, evecs = torch.linalg.eigh(cov)
    top = float(evals[-1])
    if not top > 0 or float(evals[0]) <= 1e-12 * top:
        raise ValueError(f"{name}'s sample covariance is singular (eigenvalues {float(evals[0]):.3g} .. {top:.3g}); "
                         "target='estimated' needs full-rank data (use target='standard' to test against N(0, I))")
    inv_sqrt = (evecs * evals.rsqrt()) @ evecs.T  # [D, D]
    return xc @ inv_sqrt


def haar_rotation(d: int, rng: np.random.Generator) -> torch.Tensor:  # -> [D, D]
    """A uniformly random orthogonal matrix (QR of a Gaussian matrix with the sign fix of Mezzadri 2007)."""
    g = rng.standard_normal((d, d))
    q, r = np.linalg.qr(g)
    q = q * np.sign(np.diag(r))
    return torch.from_numpy(q)


# ---------------------------------------------------------------------------------------------------
# EDF statistics of sorted CDF values
# ---------------------------------------------------------------------------------------------------
_LOG_TINY = math.log(1e-300)


def edf_statistics(u: np.ndarray, log_u: np.ndarray, log_1mu: np.ndarray) -> np.ndarray:
    """(W^2, D_m, A^2) of m values whose hypothesised CDF values are u (sorted ascending), with
    log u and log(1 - u) computed accurately in the tails by the caller:

    W^2 = 1/(12m) + sum_k (u_k - (2k-1)/(2m))^2 (Cramer-von Mises),
    D_m = max_k max(k/m - u_k, u_k - (k-1)/m) (Kolmogorov-Smirnov),
    A^2 = -m - (1/m) sum_k (2k-1) (log u_k + log(1 - u_{m+1-k})) (Anderson-Darling).

    Logs are floored at log(1e-300) so that a point far in a tail gives a huge finite A^2, not inf.
    These are exactly scipy.stats.goodness_of_fit's 'cvm', 'ks' and 'ad' statistics."""
    m = u.shape[0]
    k = np.arange(1, m + 1, dtype=np.float64)
    w2 = 1.0 / (12.0 * m) + float(np.sum((u - (2.0 * k - 1.0) / (2.0 * m)) ** 2))
    ks = max(float(np.max(k / m - u)), float(np.max(u - (k - 1.0) / m)))
    lu = np.maximum(log_u, _LOG_TINY)
    l1 = np.maximum(log_1mu, _LOG_TINY)
    a2 = -m - float(np.dot(2.0 * k - 1.0, lu + l1[::-1])) / m
    return np.array([w2, ks, a2])


def normal_edf_statistics(x: np.ndarray) -> np.ndarray:
    """EDF statistics of values x against N(0, 1)."""
    from scipy import special as sp

    xs = np.sort(x)
    return edf_statistics(sp.ndtr(xs), sp.log_ndtr(xs), sp.log_ndtr(-xs))


def chi_edf_statistics(r: np.ndarray, d: int, scale: float = 1.0) -> np.ndarray:
    """EDF statistics of values r against scale * chi_D (CDF P(D/2, (r/scale)^2 / 2), scipy's
    regularized incomplete gamma functions; the upper tail from gammaincc, not 1 - gammainc)."""
    from scipy import special as sp

    s = 0.5 * (np.sort(r) / scale) ** 2
    a = 0.5 * d
    with np.errstate(divide="ignore"):
        u = sp.gammainc(a, s)
        v = sp.gammaincc(a, s)
        return edf_statistics(u, np.log(u), np.log(v))


# ---------------------------------------------------------------------------------------------------
# Monte Carlo nulls
# ---------------------------------------------------------------------------------------------------
_NULL_CACHE: Dict[tuple, np.ndarray] = {}
_CACHE_MAX_ENTRIES = 256


def clear_null_cache() -> None:
    """Forget every cached Monte Carlo null distribution."""
    _NULL_CACHE.clear()


def null_cache_info() -> Dict[str, int]:
    return {"entries": len(_NULL_CACHE), "values": int(sum(v.size for v in _NULL_CACHE.values()))}


class _PlainProgress:
    """Fallback progress on a terminal's stderr when tqdm is not installed: one line rewritten with
    '\r' at every 10% of the work (the count only grows, and ends at the total)."""

    def __init__(self, total: int, desc: str, stream=None):
        self.total, self.desc, self.done = total, desc, 0
        self.stream = sys.stderr if stream is None else stream
        self.step = max(1, math.ceil(total / 10))
        self.next_mark = self.step

    def update(self, k: int = 1) -> None:
        self.done += k
        if self.done >= self.next_mark or self.done == self.total:
            print(f"\r{self.desc}: {self.done}/{self.total}", end="", file=self.stream, flush=True)
            while self.next_mark <= self.done:
                self.next_mark += self.step

    def close(self) -> None:
        print(file=self.stream, flush=True)


class LineProgress:
    """Progress for a stderr that is not a terminal (a log file, a pipe, CI, ``--json`` runs piped
    into another program): whole lines, never '\r', at 0 and at every 10% of the work, each with the
    elapsed time and an estimate of the time left. The count grows by equal steps and the last line
    is the total (no jump from 0 to the end)."""

    def __init__(self, total: int, desc: str, stream=None):
        self.total, self.desc, self.done = total, desc, 0
        self.stream = sys.stderr if stream is None else stream
        self.step = max(1, math.ceil(total / 10))
        self.next_mark = self.step
        self.start = time.perf_counter()
        print(f"{desc}: 0/{total}", file=self.stream, flush=True)

    def update(self, k: int = 1) -> None:
        self.done += k
        if self.done >= self.next_mark or self.done == self.total:
            elapsed = time.perf_counter() - self.start
            left = elapsed * (self.total - self.done) / max(self.done, 1)
            print(f"{self.desc}: {self.done}/{self.total} ({elapsed:.1f} s elapsed, ~{left:.0f} s left)",
                  file=self.stream, flush=True)
            while self.next_mark <= self.done:
                self.next_mark += self.step

    def close(self) -> None:
        pass


def make_progress(progress, total: int, desc: str):
    """``progress``: False/None (silent), True (on stderr: a tqdm bar on a terminal, plain '\r'
    updates there without tqdm, :class:`LineProgress` lines when stderr is not a terminal), or a
    callable (total, desc) -> object with update(k) and close()."""
    if not progress:
        return None
    if callable(progress):
        return progress(total, desc)
    stream = sys.stderr
    if not (hasattr(stream, "isatty") and stream.isatty()):
        return LineProgress(total, desc, stream)
    try:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, leave=False, file=stream)
    except ImportError:
        return _PlainProgress(total, desc, stream)


# Seconds spent computing Monte Carlo null replicates, accumulated while a list is installed here
# (report.estimate_seconds uses it to separate the per-replicate cost from the observed statistics).
_NULL_TIMER: Optional[list] = None


def simulate_null(key: tuple, compute: Callable[[np.random.Generator], np.ndarray], n_resamples: int,
                  generator: Generator, progress=None, desc: str = "null") -> np.ndarray:  # -> [B, k]
    """B replicates of a vector statistic under H0 (``compute(rng)`` draws one null sample and
    returns its statistics). Cached by ``key`` + (B, seed) when the generator is an int seed or None
    (seed 0); a numpy Generator is consumed and nothing is cached."""
    cacheable = not isinstance(generator, np.random.Generator)
    full_key = key + (n_resamples, 0 if generator is None else generator)
    if cacheable and full_key in _NULL_CACHE:
        return _NULL_CACHE[full_key]
    rng = rng_for(generator, 0)
    bar = make_progress(progress, n_resamples, desc)
    rows = []
    seconds = []
    try:
        for _ in range(n_resamples):
            start = time.perf_counter()
            rows.append(np.asarray(compute(rng), dtype=np.float64))
            seconds.append(time.perf_counter() - start)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if _NULL_TIMER is not None:
            _NULL_TIMER.append(seconds)
    out = np.stack(rows)  # [B, k]
    out.setflags(write=False)
    if cacheable:
        if len(_NULL_CACHE) >= _CACHE_MAX_ENTRIES:
            _NULL_CACHE.pop(next(iter(_NULL_CACHE)))
        _NULL_CACHE[full_key] = out
    return out


def mc_pvalue(observed: float, null: np.ndarray) -> float:
    """Upper-tail Monte Carlo p-value (1 + #{T_null >= T}) / (1 + B)."""
    return float((1 + np.count_nonzero(null >= observed)) / (1 + null.shape[0]))


def mc_pvalue_two_sided(observed: float, null: np.ndarray) -> float:
    """Two-sided Monte Carlo p-value min(1, 2 min(upper, lower)), each tail as in :func:`mc_pvalue`."""
    b = null.shape[0]
    upper = (1 + np.count_nonzero(null >= observed)) / (1 + b)
    lower = (1 + np.count_nonzero(null <= observed)) / (1 + b)
    return float(min(1.0, 2.0 * min(upper, lower)))


def standard_normal_sample(rng: np.random.Generator, n: int, d: int) -> torch.Tensor:  # -> [n, D] float64
    return torch.from_numpy(rng.standard_normal((n, d)))

