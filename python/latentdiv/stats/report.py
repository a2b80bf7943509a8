"""`normality_report`: the whole battery on one sample, with Holm's multiple-testing correction."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .._validation import check_open_unit
from . import _battery as B
from . import _common as C
from .sigreg_test import sigreg_test
from ..distributed import global_sample as _global_sample

FAMILIES = ("mardia", "henze_zirkler", "energy", "radii", "distances", "projections", "coordinates")
TEST_IDS = (
    "mardia_skewness", "mardia_kurtosis", "henze_zirkler", "energy",
    *(f"{fam}_{s}" for fam in ("radii", "distances", "projections", "coordinates") for s in C.EDF_STATISTICS),
)
# Tests run only when named in ``tests`` (not in the default battery): SIGReg's Monte Carlo null
# (256 slices x 17 knots per replicate) would cost more than the rest of the battery together.
OPTIONAL_TEST_IDS = ("sigreg",)
ALL_TEST_IDS = TEST_IDS + OPTIONAL_TEST_IDS


# Tests whose p-value is not Monte Carlo under null="auto": i.i.d. values with a fully specified CDF.
_ASYMPTOTIC_UNDER_STANDARD = ("radii_cvm", "radii_ks", "coordinates_cvm", "coordinates_ks")


def min_resamples(alpha: float, n_tests: int) -> int:
    """The smallest B at which a Monte Carlo p-value can reject under Holm's correction over
    ``n_tests`` tests at level ``alpha``: its smallest value 1/(B + 1), times n_tests, must be below
    alpha, i.e. B + 1 > n_tests / alpha (B >= 320 for 16 tests at alpha = 0.05)."""
    return int(math.floor(n_tests / alpha + 1e-9))


def monte_carlo_tests(tests: Optional[Sequence[str]], target: str) -> List[str]:
    """The ids among ``tests`` (None: all) whose p-value is Monte Carlo with null="auto"."""
    wanted = _select(tests)
    return [t for t in ALL_TEST_IDS if t in wanted and not (target == "standard" and t in _ASYMPTOTIC_UNDER_STANDARD)]


def resamples_warning(alpha: float, n_resamples: int, tests: Optional[Sequence[str]] = None,
                      target: str = "standard") -> Optional[str]:
    """A sentence when ``n_resamples`` is too small for any Monte Carlo test to reject at ``alpha``
    (then a PASS says nothing about those tests), else None."""
    m = len(_select(tests))
    mc = monte_carlo_tests(tests, target)
    need = min_resamples(alpha, m)
    if not mc or n_resamples >= need:
        return None
    return (f"n_resamples = {n_resamples} is too small for alpha = {alpha} with Holm's correction over {m} tests: "
            f"a Monte Carlo p-value is at least 1/(B + 1) = {1.0 / (n_resamples + 1):.3g}, so {len(mc)} of the tests "
            f"({', '.join(mc)}) cannot reject whatever the data; use n_resamples >= {need}")


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (controls the family-wise error rate under any dependence):
    p_(i) -> max_{j <= i} min(1, (m - j + 1) p_(j))."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = p.shape[0]
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adj = np.maximum.accumulate(adj)
    out = np.empty(m)
    out[order] = adj
    return out


@dataclasses.dataclass
class NormalityReport:
    """Rows of (test, statistic, p-value, Holm-adjusted p-value, reject at alpha). ``passed`` is True
    when no Holm-adjusted p-value is below ``alpha`` (the sample is compatible with the target at
    family-wise level alpha). ``str(report)`` is an aligned table; ``to_dict()``/``to_json()`` for machines."""

    n: int
    dim: int
    target: str
    alpha: float
    n_resamples: int
    seed: Any
    rows: List[Dict[str, Any]]
    warnings: List[str] = dataclasses.field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not any(r["reject"] for r in self.rows)

    @property
    def results(self) -> Dict[str, float]:
        return {r["test"]: r["pvalue"] for r in self.rows}

    def to_dict(self) -> Dict[str, Any]:
        return {"n": self.n, "dim": self.dim, "target": self.target, "alpha": self.alpha,
                "n_resamples": self.n_resamples, "seed": self.seed, "correction": "holm",
                "passed": self.passed, "warnings": list(self.warnings), "tests": [dict(r) for r in self.rows]}

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def __str__(self) -> str:
        head = ("test", "statistic", "p-value", "p (Holm)", "null", "verdict")
        lines = []
        for r in self.rows:
            lines.append((r["test"], f"{r['statistic']:.6g}", _fmt_p(r["pvalue"]), _fmt_p(r["pvalue_holm"]),
                          r["null"] + (f" (B={r['n_resamples']})" if r["n_resamples"] else ""),
                          "REJECT" if r["reject"] else "ok"))
        widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(head)]
        fmt = lambda cells: "  ".join(  # noqa: E731
            c.ljust(w) if i in (0, 4, 5) else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        target = "N(0, I)" if self.target == "standard" else "N(mu, Sigma), mu and Sigma estimated"
        out = [f"normality of {self.n} x {self.dim} sample vs {target}; alpha = {self.alpha} "
               f"(family-wise, Holm's correction over {len(self.rows)} tests)",
               fmt(head), fmt(tuple("-" * w for w in widths))]
        out += [fmt(l) for l in lines]
        verdict = "PASS: no test rejects" if self.passed else (
            "FAIL: rejected by " + ", ".join(r["test"] for r in self.rows if r["reject"]))
        if self.passed and self.warnings:
            verdict += " (but see the warning: some tests could not reject)"
        out.append(verdict)
        out += [f"warning: {w}" for w in self.warnings]
        return "\n".join(out)


def _fmt_p(p: float) -> str:
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.2e}"


def normality_report(z, *, target: str = "standard", alpha: float = 0.05, n_resamples: int = 1000,
                     generator: C.Generator = 0, tests: Optional[Sequence[str]] = None, beta=None,
                     n_projections: int = 32, progress=False, group=None, null_cache=None) -> NormalityReport:
    """Run the battery (all of :data:`TEST_IDS`, or those named in ``tests``: ids or family names such
    as "radii", and the optional "sigreg", :func:`latentdiv.stats.sigreg_test`), then Holm's
    correction at ``alpha``. Monte Carlo nulls are cached in memory and on disk (a second report on a
    sample of the same (n, D), in this process or a later one, costs only the statistics):
    ``null_cache`` True follows ``$LATENTDIV_NULL_CACHE``, None the same or an enclosing
    ``use_null_cache`` block, False keeps this report off the disk cache, a path uses that directory
    (docs/null_cache.md)."""
    with C.use_null_cache(null_cache):
        return _normality_report(z, target=target, alpha=alpha, n_resamples=n_resamples, generator=generator,
                                 tests=tests, beta=beta, n_projections=n_projections, progress=progress,
                                 group=group)


def _normality_report(z, *, target, alpha, n_resamples, generator, tests, beta, n_projections, progress,
                      group) -> NormalityReport:
    if group is not None:  # the global sample of a torch.distributed group (latentdiv.distributed)
        z = _global_sample(z, group)
    x = C.as_sample(z)
    target = C.check_target(target)
    check_open_unit(alpha, "alpha")
    wanted = _select(tests)
    n_resamples = C.check_n_resamples(n_resamples)
    progress = _numbered_progress(progress, len(wanted))
    opts = dict(target=target, n_resamples=n_resamples, generator=generator, progress=progress)
    results: List[C.NormalityTestResult] = []
    ids: List[str] = []
    if {"mardia_skewness", "mardia_kurtosis"} & wanted:
        _advance(progress, len({"mardia_skewness", "mardia_kurtosis"} & wanted))
        m = B.mardia(x, **opts)
        for tid, res in (("mardia_skewness", m.skewness), ("mardia_kurtosis", m.kurtosis)):
            if tid in wanted:
                ids.append(tid)
                results.append(res)
    if "henze_zirkler" in wanted:
        _advance(progress)
        ids.append("henze_zirkler")
        results.append(B.henze_zirkler(x, beta=beta, **opts))
    if "energy" in wanted:
        _advance(progress)
        ids.append("energy")
        results.append(B.energy_test(x, **opts))
    fns = {"radii": B.radii_test, "distances": B.distance_test, "coordinates": B.coordinate_test,
           "projections": lambda zz, **kw: B.projection_test(zz, n_projections=n_projections, **kw)}
    for fam in ("radii", "distances", "projections", "coordinates"):
        for s in C.EDF_STATISTICS:
            tid = f"{fam}_{s}"
            if tid in wanted:
                _advance(progress)
                ids.append(tid)
                results.append(fns[fam](x, statistic=s, **opts))
    if "sigreg" in wanted:
        _advance(progress)
        ids.append("sigreg")
        results.append(sigreg_test(x, **opts))
    adj = holm([r.pvalue for r in results])
    rows = []
    for tid, r, pa in zip(ids, results, adj):
        rows.append({"test": tid, "method": r.method, "statistic": r.statistic, "pvalue": r.pvalue,
                     "pvalue_holm": float(pa), "reject": bool(pa < alpha), "null": r.null,
                     "n_resamples": r.n_resamples, "details": r.details})
    seed = generator if not isinstance(generator, np.random.Generator) else "numpy.random.Generator"
    warning = resamples_warning(alpha, n_resamples, tests, target)
    return NormalityReport(x.shape[0], x.shape[1], target, float(alpha), int(n_resamples), seed, rows,
                           [warning] if warning else [])


class _numbered_progress:
    """Wraps ``progress=True`` so that each bar is labelled with the test it belongs to, "[k/m] ..."
    (k: the number of the running test, m: the tests selected; Mardia's two tests share one null,
    labelled with the first); other values pass through unchanged."""

    def __new__(cls, progress, total_tests: int):
        if progress is not True:
            return progress
        self = super().__new__(cls)
        self.started, self.current, self.total = 0, 0, total_tests
        return self

    def __call__(self, total: int, desc: str):
        return C.make_progress(True, total, f"[{self.current}/{self.total}] {desc}")


def _advance(progress, k: int = 1) -> None:
    """k tests start now (2 for Mardia's skewness and kurtosis, computed together)."""
    if isinstance(progress, _numbered_progress):
        progress.current = progress.started + 1
        progress.started += k


_PROBE_SEED = 0x5EED0F7E57  # estimate_seconds' own seed: its null samples are never a user's


def estimate_seconds(z, *, target: str = "standard", n_resamples: int = 1000, tests: Optional[Sequence[str]] = None,
                     beta=None, n_projections: int = 32, probe: int = 4, generator: C.Generator = 0,
                     null_cache=None) -> float:
    """Seconds :func:`normality_report` with these options would take here, measured, not modelled:
    the report is run once with 1 + 3 ``probe`` Monte Carlo replicates per null, each replicate (or
    batch of replicates) is timed, and the estimate is the observed statistics' time plus, for each
    null, B times its median replicate (the first pays one-off warm-up costs) or, for a batched null,
    its per-batch and per-replicate costs fitted to batches of ``probe`` and 2 ``probe`` replicates. The probe uses a seed of its own and its cache
    entries are removed afterwards, so the tests that share one null simulation (the three EDF
    statistics of a family) share it here too, as in the real run, and nothing of the probe remains.
    Costs about 3 ``probe`` + 2 replicates of every test. A null that the real run (B = ``n_resamples``,
    seed ``generator``) will find in the memory or on-disk cache (``null_cache`` as in
    :func:`normality_report`) counts nothing; the probe itself never writes to the disk cache."""
    n_resamples = C.check_n_resamples(n_resamples)
    probe = C.check_int(probe, "probe", 1)
    generator = C.check_generator(generator)
    before = set(C._NULL_CACHE)
    with C.use_null_cache(null_cache):  # the real run's on-disk cache (the probe itself runs without one)
        real_dir = C._null_cache.cache_dir()
    C._NULL_PROBE = timer = C.NullProbe(n_resamples, generator, False if real_dir is None else str(real_dir))
    start = time.perf_counter()
    try:
        with C.use_null_cache(False):
            normality_report(z, target=target, n_resamples=1 + 3 * probe, generator=_PROBE_SEED, tests=tests,
                             beta=beta, n_projections=n_projections)
    finally:
        C._NULL_PROBE = None
        for key in set(C._NULL_CACHE) - before:
            if key[-1] == _PROBE_SEED:  # the cached real tables the probe read stay
                del C._NULL_CACHE[key]
    total = time.perf_counter() - start
    spent_on_nulls = sum(sum(rec[1]) for rec in timer.records)
    nulls = 0.0
    for full_key, t, batches, step, workers in timer.records:
        if not t:  # cached for the real run (C.NullProbe)
            continue
        if len(batches) == 3:  # batched: cost(b) = per_batch + b per_replicate, from the k and 2k batches
            (k1, t1), (k2, t2) = batches[1], batches[2]
            slope = (t2 - t1) / (k2 - k1) if k2 > k1 else 0.0
            # Timing noise can make the larger batch look no dearer: then no split, all per replicate.
            per_replicate = slope if slope > 0.0 else t2 / k2
            per_batch = max(0.0, t1 - k1 * per_replicate)
            serial = math.ceil(n_resamples / step) * per_batch + n_resamples * per_replicate
            in_flight = min(workers, math.ceil(n_resamples / step))
        else:  # one replicate at a time (the first pays one-off warm-up costs: the median)
            serial = float(np.median(t)) * n_resamples
            in_flight = min(workers, n_resamples)
        # The real run computes `in_flight` batches at once (C.simulate_null): perfect scaling assumed.
        nulls += serial / in_flight
    return max(0.0, total - spent_on_nulls) + nulls


def _select(tests: Optional[Sequence[str]]) -> set:
    if tests is None:
        return set(TEST_IDS)
    if isinstance(tests, str):
        tests = [tests]
    out = set()
    for t in tests:
        if t in ALL_TEST_IDS:
            out.add(t)
        elif t in FAMILIES:
            out.update(i for i in TEST_IDS if i == t or i.startswith(t + "_") or (t == "energy" and i == "energy"))
        else:
            raise ValueError(f"tests: unknown test {t!r}; choose among {ALL_TEST_IDS} or families {FAMILIES}")
    return out
