"""Shared machinery of the normality tests: input checks, the two targets, result objects, EDF
statistics, and Monte Carlo null distributions with an in-memory cache in front of an on-disk one
(``_null_cache``, docs/null_cache.md).

Monte Carlo p-values use p = (1 + #{T_null >= T}) / (1 + B) (Davison & Hinkley 1997, eq. 4.11;
``scipy.stats.monte_carlo_test`` does the same): with B null replicates exchangeable with the observed
statistic under H0, P(p <= alpha) <= alpha for every B, so the p-value is valid even when the null
sample is small or when the observed data happen to come from the same generator as the null cache.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import math
import os
import sys
import time
from typing import Any, Callable, Dict, Optional, Tuple, Union

import numpy as np
import torch

from .._validation import check_int, check_member, check_sample_array
from . import _null_cache

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
def whiten(x: torch.Tensor, ddof: int = 0, name: str = "z") -> torch.Tensor:  # [(B,) n, D] -> [(B,) n, D]
    r"""Symmetric (Mahalanobis) whitening :math:`y = (x - \bar x) S^{-1/2}`, S the covariance with
    divisor n - ddof (ddof = 0: the population covariance of Mardia / Henze-Zirkler / pingouin;
    ddof = 1: R's ``var`` as in energy::mvnorm.e). The symmetric square root makes every statistic
    built from inner products of the y_i affine invariant, so its null law depends on (n, D) only.
    Leading dimensions are independent samples (a batch of null replicates), each whitened alone."""
    n, d = x.shape[-2:]
    xc = x - x.mean(dim=-2, keepdim=True)  # [(B,) n, D]
    cov = xc.mT @ xc / (n - ddof)  # [(B,) D, D]
    evals, evecs = torch.linalg.eigh(cov)
    top = evals[..., -1]
    bad = ~(top > 0) | (evals[..., 0] <= 1e-12 * top)
    if bool(bad.any()):
        i = int(bad.reshape(-1).nonzero()[0])
        lo, hi = float(evals.reshape(-1, d)[i, 0]), float(evals.reshape(-1, d)[i, -1])
        raise ValueError(f"{name}'s sample covariance is singular (eigenvalues {lo:.3g} .. {hi:.3g}); "
                         "target='estimated' needs full-rank data (use target='standard' to test against N(0, I))")
    inv_sqrt = (evecs * evals.rsqrt().unsqueeze(-2)) @ evecs.mT  # [(B,) D, D]
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


def edf_statistics(u: np.ndarray, log_u: np.ndarray, log_1mu: np.ndarray) -> np.ndarray:  # [..., m] -> [..., 3]
    """(W^2, D_m, A^2) of m values whose hypothesised CDF values are u (sorted ascending along the
    last axis; leading axes are independent samples, e.g. a batch of null replicates), with
    log u and log(1 - u) computed accurately in the tails by the caller:

    W^2 = 1/(12m) + sum_k (u_k - (2k-1)/(2m))^2 (Cramer-von Mises),
    D_m = max_k max(k/m - u_k, u_k - (k-1)/m) (Kolmogorov-Smirnov),
    A^2 = -m - (1/m) sum_k (2k-1) (log u_k + log(1 - u_{m+1-k})) (Anderson-Darling).

    Logs are floored at log(1e-300) so that a point far in a tail gives a huge finite A^2, not inf.
    These are exactly scipy.stats.goodness_of_fit's 'cvm', 'ks' and 'ad' statistics."""
    m = u.shape[-1]
    k = np.arange(1, m + 1, dtype=np.float64)
    w2 = 1.0 / (12.0 * m) + np.sum((u - (2.0 * k - 1.0) / (2.0 * m)) ** 2, axis=-1)
    ks = np.maximum(np.max(k / m - u, axis=-1), np.max(u - (k - 1.0) / m, axis=-1))
    lu = np.maximum(log_u, _LOG_TINY)
    l1 = np.maximum(log_1mu, _LOG_TINY)
    a2 = -m - np.sum((2.0 * k - 1.0) * (lu + l1[..., ::-1]), axis=-1) / m
    return np.stack([w2, ks, a2], axis=-1)


def normal_edf_statistics(x: np.ndarray) -> np.ndarray:
    """EDF statistics of values x [..., m] against N(0, 1) (along the last axis) -> [..., 3]."""
    from scipy import special as sp

    xs = np.sort(x, axis=-1)
    return edf_statistics(sp.ndtr(xs), sp.log_ndtr(xs), sp.log_ndtr(-xs))


def chi_edf_statistics(r: np.ndarray, d: int, scale: float = 1.0) -> np.ndarray:
    """EDF statistics of values r against scale * chi_D (CDF P(D/2, (r/scale)^2 / 2), scipy's
    regularized incomplete gamma functions; the upper tail from gammaincc, not 1 - gammainc)."""
    from scipy import special as sp

    s = 0.5 * (np.sort(r, axis=-1) / scale) ** 2  # r: [..., m] -> [..., 3]
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


def clear_null_cache(disk: bool = False) -> None:
    """Forget every Monte Carlo null distribution cached in memory; ``disk=True`` also removes the
    tables of the on-disk cache directory (:func:`null_cache_info` says which)."""
    _NULL_CACHE.clear()
    if disk:
        _null_cache.clear()


def null_cache_info() -> Dict[str, Any]:
    """Entries and values held in memory, and the on-disk cache's directory (None: off) and files."""
    directory = _null_cache.cache_dir()
    return {"entries": len(_NULL_CACHE), "values": int(sum(v.size for v in _NULL_CACHE.values())),
            "disk_dir": None if directory is None else str(directory), "disk_entries": _null_cache.entries()}


use_null_cache = _null_cache.use_null_cache


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


@dataclasses.dataclass
class NullProbe:
    """What ``report.estimate_seconds`` installs as ``_NULL_PROBE`` while its probe report runs.
    Every null simulated appends (full key, seconds per replicate, [(batch size, seconds) per batch],
    the batch size of a real run, the threads of a real run) to ``records``; a batched null then
    runs its replicates in three batches, 1 (the one-off warm-up), k and 2k (k = (B - 1) // 3), one
    at a time, so that the per-batch and the per-replicate costs can be told apart. A null that the
    real run (B = ``n_resamples``, seed ``generator``, on-disk cache directory ``null_cache`` or
    False) will find cached is not simulated at all: its record has no times and the probe gets the
    cached table."""

    n_resamples: int
    generator: Any
    null_cache: Any
    records: list = dataclasses.field(default_factory=list)


_NULL_PROBE: Optional[NullProbe] = None


def _remember(full_key: tuple, table: np.ndarray) -> None:
    if len(_NULL_CACHE) >= _CACHE_MAX_ENTRIES:
        _NULL_CACHE.pop(next(iter(_NULL_CACHE)))
    _NULL_CACHE[full_key] = table


def null_key(key: tuple, n_resamples: int, generator: Generator) -> tuple:
    """The cache key of a null table: the test's key (name, target, n, D, null-relevant options)
    + (B, seed)."""
    return key + (n_resamples, 0 if generator is None else generator)


def cached_table(full_key: tuple) -> Optional[np.ndarray]:
    """The table of ``full_key`` from memory or (trustworthy) from disk, kept in memory; None on a miss."""
    if full_key in _NULL_CACHE:
        return _NULL_CACHE[full_key]
    table = _null_cache.load(full_key, full_key[-2])
    if table is not None:
        _remember(full_key, table)
    return table


def is_cached(full_key: tuple) -> bool:
    """Whether the table of ``full_key`` is in memory or (trustworthy) on disk."""
    return cached_table(full_key) is not None


def null_workers() -> int:
    """Threads that compute null batches at once: torch's intra-op thread count (the user's budget of
    cores; ``torch.set_num_threads(1)`` makes the simulation serial), at most the CPU count and 8.
    The batches' numpy, scipy and torch work releases the GIL (measured on 2 cores: 2.0-2.3x for the
    pair-distance EDF null, 1.4x for the Henze-Zirkler null, whose torch ops are threaded already)."""
    return max(1, min(torch.get_num_threads(), os.cpu_count() or 1, 8))


def simulate_null(key: tuple, statistic: Callable, n_resamples: int, generator: Generator, progress=None,
                  desc: str = "null", *, draw: Optional[Callable[[np.random.Generator, int], Any]] = None,
                  batch_size: int = 1) -> np.ndarray:  # -> [B, k]
    """B replicates of a vector statistic under H0.

    Without ``draw``, ``statistic(rng)`` draws one null sample and returns its statistics [k], one
    replicate after another. With ``draw``, ``draw(rng, b)`` draws b null samples and
    ``statistic(samples)`` returns their statistics [b, k] (vectorized or batched engine calls;
    ``batch_size`` = 1 with a sample that is not a batch gives [k]): the samples are drawn in order in
    the calling thread, ``batch_size`` at a time, and the statistics of up to :func:`null_workers`
    batches are computed at once in threads. ``draw`` must consume ``rng`` exactly as b successive
    single draws do (numpy fills an array of b draws in that order), so that the table is the same
    whatever ``batch_size`` and the number of threads are.

    Cached by ``key`` + (B, seed) when the generator is an int seed or None (seed 0): in memory,
    then on disk (``_null_cache``; the key must hold everything the null depends on). A numpy
    Generator is consumed and nothing is cached."""
    cacheable = not isinstance(generator, np.random.Generator)
    full_key = null_key(key, n_resamples, generator)
    probe = _NULL_PROBE
    if cacheable:
        table = cached_table(full_key)
        if table is not None:
            return table
    if probe is not None and not isinstance(probe.generator, np.random.Generator):
        with use_null_cache(probe.null_cache):
            real = cached_table(null_key(key, probe.n_resamples, probe.generator))
        if real is not None:  # the real run will not simulate this null: neither does the probe
            probe.records.append((full_key, [], [], 1, 1))
            return real
    rng = rng_for(generator, 0)
    bar = make_progress(progress, n_resamples, desc)
    step = max(1, int(batch_size)) if draw is not None else 1
    if probe is not None and step > 1 and n_resamples >= 4:  # the probe's three batches
        k = (n_resamples - 1) // 3
        sizes = [1, k, n_resamples - 1 - k]
    else:
        sizes = [min(step, n_resamples - i) for i in range(0, n_resamples, step)]
    workers = 1 if (draw is None or probe is not None) else null_workers()  # the probe times batches alone

    def timed(fn, arg, b):  # -> ([b, k] statistics, (b, seconds))
        start = time.perf_counter()
        out = np.asarray(fn(arg), dtype=np.float64).reshape(b, -1)
        return out, (b, time.perf_counter() - start)

    blocks, batches = [], []

    def keep(result):
        blocks.append(result[0])
        batches.append(result[1])
        if bar is not None:
            for _ in range(result[1][0]):  # one replicate at a time: the bar's counts keep their equal steps
                bar.update(1)

    # At most `workers` batches are in flight: memory stays bounded, and at Ctrl-C (raised in this
    # thread while it waits) or an error the queued ones are cancelled and the running ones end
    # within one batch's time.
    pool = None if workers == 1 else concurrent.futures.ThreadPoolExecutor(workers, "latentdiv-null")
    try:
        pending = collections.deque()
        for b in sizes:
            if pool is None:
                keep(timed(statistic, rng if draw is None else draw(rng, b), b))
                continue
            pending.append(pool.submit(timed, statistic, draw(rng, b), b))
            if len(pending) >= workers:
                keep(pending.popleft().result())
        while pending:
            keep(pending.popleft().result())
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
        if probe is not None:
            probe.records.append((full_key, [t / b for b, t in batches for _ in range(b)], batches, step,
                                  1 if draw is None else null_workers()))
    out = np.ascontiguousarray(np.concatenate(blocks))  # [B, k]
    out.setflags(write=False)
    if cacheable:
        _remember(full_key, out)
        _null_cache.store(full_key, out)
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


def standard_normal_batch(rng: np.random.Generator, b: int, n: int, d: int) -> torch.Tensor:  # -> [b, n, D]
    """b null samples at once: the same draws, in the same order, as b calls of
    :func:`standard_normal_sample` (numpy fills the array in C order from one stream)."""
    return torch.from_numpy(rng.standard_normal((b, n, d)))

