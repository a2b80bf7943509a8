"""`normality_report`: the whole battery on one sample, with Holm's multiple-testing correction."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from . import _battery as B
from . import _common as C

FAMILIES = ("mardia", "henze_zirkler", "energy", "radii", "distances", "projections", "coordinates")
TEST_IDS = (
    "mardia_skewness", "mardia_kurtosis", "henze_zirkler", "energy",
    *(f"{fam}_{s}" for fam in ("radii", "distances", "projections", "coordinates") for s in C.EDF_STATISTICS),
)


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

    @property
    def passed(self) -> bool:
        return not any(r["reject"] for r in self.rows)

    @property
    def results(self) -> Dict[str, float]:
        return {r["test"]: r["pvalue"] for r in self.rows}

    def to_dict(self) -> Dict[str, Any]:
        return {"n": self.n, "dim": self.dim, "target": self.target, "alpha": self.alpha,
                "n_resamples": self.n_resamples, "seed": self.seed, "correction": "holm",
                "passed": self.passed, "tests": [dict(r) for r in self.rows]}

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
        out.append(verdict)
        return "\n".join(out)


def _fmt_p(p: float) -> str:
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.2e}"


def normality_report(z, *, target: str = "standard", alpha: float = 0.05, n_resamples: int = 1000,
                     generator: C.Generator = 0, tests: Optional[Sequence[str]] = None, beta=None,
                     n_projections: int = 32, progress=False) -> NormalityReport:
    """Run the battery (all of :data:`TEST_IDS`, or those named in ``tests``: ids or family names such
    as "radii"), then Holm's correction at ``alpha``. Monte Carlo nulls are cached (a second report on
    a sample of the same (n, D) costs only the statistics)."""
    x = C.as_sample(z)
    target = C.check_target(target)
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    wanted = _select(tests)
    opts = dict(target=target, n_resamples=n_resamples, generator=generator, progress=progress)
    results: List[C.NormalityTestResult] = []
    ids: List[str] = []
    if {"mardia_skewness", "mardia_kurtosis"} & wanted:
        m = B.mardia(x, **opts)
        for tid, res in (("mardia_skewness", m.skewness), ("mardia_kurtosis", m.kurtosis)):
            if tid in wanted:
                ids.append(tid)
                results.append(res)
    if "henze_zirkler" in wanted:
        ids.append("henze_zirkler")
        results.append(B.henze_zirkler(x, beta=beta, **opts))
    if "energy" in wanted:
        ids.append("energy")
        results.append(B.energy_test(x, **opts))
    fns = {"radii": B.radii_test, "distances": B.distance_test, "coordinates": B.coordinate_test,
           "projections": lambda zz, **kw: B.projection_test(zz, n_projections=n_projections, **kw)}
    for fam in ("radii", "distances", "projections", "coordinates"):
        for s in C.EDF_STATISTICS:
            tid = f"{fam}_{s}"
            if tid in wanted:
                ids.append(tid)
                results.append(fns[fam](x, statistic=s, **opts))
    adj = holm([r.pvalue for r in results])
    rows = []
    for tid, r, pa in zip(ids, results, adj):
        rows.append({"test": tid, "method": r.method, "statistic": r.statistic, "pvalue": r.pvalue,
                     "pvalue_holm": float(pa), "reject": bool(pa < alpha), "null": r.null,
                     "n_resamples": r.n_resamples, "details": r.details})
    seed = generator if not isinstance(generator, np.random.Generator) else "numpy.random.Generator"
    return NormalityReport(x.shape[0], x.shape[1], target, float(alpha), int(n_resamples), seed, rows)


def _select(tests: Optional[Sequence[str]]) -> set:
    if tests is None:
        return set(TEST_IDS)
    if isinstance(tests, str):
        tests = [tests]
    out = set()
    for t in tests:
        if t in TEST_IDS:
            out.add(t)
        elif t in FAMILIES:
            out.update(i for i in TEST_IDS if i == t or i.startswith(t + "_") or (t == "energy" and i == "energy"))
        else:
            raise ValueError(f"tests: unknown test {t!r}; choose among {TEST_IDS} or families {FAMILIES}")
    return out
