"""latentdiv.stats: statistics against independent transcriptions of the published definitions (R
energy::mvnorm.e fixtures, pingouin's Henze-Zirkler, scipy's 1-D EDF tests), p-value calibration,
power on the moment-matched example, input validation, caching."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import scipy.special as sp
import scipy.stats as st
import torch

from latentdiv import stats
from latentdiv.stats import _battery as B
from latentdiv.stats import _common as C
from latentdiv.stats import alternatives

DATA = os.path.join(os.path.dirname(__file__), "data")


# ---------------------------------------------------------------------------------------------------
# agreement with published definitions
# ---------------------------------------------------------------------------------------------------
def _numpy_mvnorm_e(x: np.ndarray) -> float:
    """docs/formulas.md 7c, transcribed independently: R's mvnorm.e (symmetric whitening with var(x), n - 1)."""
    n, d = x.shape
    xc = x - x.mean(axis=0)
    s = np.cov(x, rowvar=False, ddof=1).reshape(d, d)
    ev, evec = np.linalg.eigh(s)
    y = xc @ (evec @ np.diag(ev ** -0.5) @ evec.T)
    c = math.exp(math.lgamma((d + 1) / 2) - math.lgamma(d / 2))
    yy = (y ** 2).sum(axis=1)
    mean2 = math.sqrt(2) * c * sp.hyp1f1(-0.5, d / 2, -yy / 2)  # E||y - Y||
    pair = np.sqrt(np.maximum(((y[:, None, :] - y[None, :, :]) ** 2).sum(-1), 0))
    return n * (2 * mean2.mean() - 2 * c - pair.sum() / n ** 2)


def test_energy_matches_r_energy_fixtures():
    # tests/data/make_energy_fixtures.R, R energy 1.7.11 (mvnorm.e)
    with open(os.path.join(DATA, "energy_mvnorm_e_fixtures.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    for row in rows:
        x = np.loadtxt(os.path.join(DATA, row["file"]), delimiter=",")
        ours = stats.energy_test(x, target="estimated", n_resamples=9).statistic
        assert ours == pytest.approx(float(row["statistic"]), rel=1e-10), row["file"]
        assert _numpy_mvnorm_e(x) == pytest.approx(float(row["statistic"]), rel=1e-10), row["file"]


def test_energy_standard_target_matches_numpy():
    rng = np.random.default_rng(3)
    z = rng.standard_normal((40, 5)) * 1.3 + 0.2
    n, d = z.shape
    c = math.exp(math.lgamma((d + 1) / 2) - math.lgamma(d / 2))
    mean2 = math.sqrt(2) * c * sp.hyp1f1(-0.5, d / 2, -(z ** 2).sum(1) / 2)
    pair = np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1))
    expected = n * (2 * mean2.mean() - 2 * c - pair.sum() / n ** 2)
    assert stats.energy_test(z, n_resamples=9).statistic == pytest.approx(expected, rel=1e-10)


def _pingouin_hz(x: np.ndarray):
    """docs/formulas.md 7b: pingouin.multivariate_normality, transcribed."""
    n, p = x.shape
    s = np.cov(x, rowvar=False, bias=True)
    s_inv = np.linalg.pinv(s)
    diff = x - x.mean(0)
    dj = np.einsum("ij,jk,ik->i", diff, s_inv, diff)
    y = x @ s_inv @ x.T
    y_diag = np.diag(y)
    djk = -2 * y.T + y_diag[:, None] + y_diag[None, :]
    b = 1 / np.sqrt(2) * ((2 * p + 1) / 4) ** (1 / (p + 4)) * n ** (1 / (p + 4))
    hz = n * (1 / n ** 2 * np.exp(-(b ** 2) / 2 * djk).sum()
              - 2 * (1 + b ** 2) ** (-p / 2) * (1 / n) * np.exp(-((b ** 2) / (2 * (1 + b ** 2))) * dj).sum()
              + (1 + 2 * b ** 2) ** (-p / 2))
    a = 1 + 2 * b ** 2
    mu = 1 - a ** (-p / 2) * (1 + p * b ** 2 / a + (p * (p + 2) * (b ** 4)) / (2 * a ** 2))
    wb = (1 + b ** 2) * (1 + 3 * b ** 2)
    si2 = (2 * (1 + 4 * b ** 2) ** (-p / 2) + 2 * a ** (-p) * (1 + (2 * p * b ** 4) / a ** 2
           + (3 * p * (p + 2) * b ** 8) / (4 * a ** 4))
           - 4 * wb ** (-p / 2) * (1 + (3 * p * b ** 4) / (2 * wb) + (p * (p + 2) * b ** 8) / (2 * wb ** 2)))
    pmu = np.log(np.sqrt(mu ** 4 / (si2 + mu ** 2)))
    psi = np.sqrt(np.log1p(si2 / mu ** 2))
    return hz, st.lognorm.sf(hz, psi, scale=np.exp(pmu))


@pytest.mark.parametrize("shape,seed", [((60, 4), 1), ((30, 2), 2), ((100, 7), 3)])
def test_henze_zirkler_classical_matches_pingouin(shape, seed):
    x = np.random.default_rng(seed).standard_t(6, size=shape)
    res = stats.henze_zirkler(x, beta="classical", target="estimated", null="asymptotic")
    hz, p = _pingouin_hz(x)
    assert res.statistic == pytest.approx(hz, rel=1e-10)
    assert res.pvalue == pytest.approx(p, rel=1e-8)
    try:
        import pingouin
    except ImportError:  # optional; the transcription above is the reference then
        return
    ref = pingouin.multivariate_normality(x)
    assert res.statistic == pytest.approx(float(ref.hz), rel=1e-10)
    assert res.pvalue == pytest.approx(float(ref.pval), rel=1e-8)


def test_hz_classical_beta_degenerates_in_high_dim_but_default_does_not():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((256, 64))
    u = alternatives.uniform_cube(rng, 256, 64)
    # HZ = 1 (the diagonal) + the off-diagonal signal: the classical beta leaves ~1e-10 of signal
    # (lost in float32 rounding, and below the lognormal's resolution); 3/sqrt(D) leaves ~1e-3.
    classic = [B._hz_stat(torch.from_numpy(a), stats.classical_beta(256, 64)) for a in (z, u)]
    assert abs(classic[0] - 1.0) < 1e-8 and abs(classic[1] - 1.0) < 1e-8
    default = [B._hz_stat(torch.from_numpy(a), stats.default_beta(256, 64)) for a in (z, u)]
    assert default[1] - default[0] > 5e-4


def test_mardia_matches_numpy_definition_and_asymptotics():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((50, 3)) @ np.array([[1, .3, 0], [0, 1, .2], [0, 0, 1.]])
    n, p = x.shape
    xc = x - x.mean(0)
    s = np.cov(x, rowvar=False, bias=True)
    m = xc @ np.linalg.inv(s) @ xc.T
    b1 = (m ** 3).sum() / n ** 2
    b2 = (np.diag(m) ** 2).mean()
    res = stats.mardia(x, target="estimated", null="asymptotic")
    assert res.skewness.statistic == pytest.approx(n * b1 / 6, rel=1e-9)
    z = (b2 - p * (p + 2)) * math.sqrt(n / (8 * p * (p + 2)))
    assert res.kurtosis.statistic == pytest.approx(z, rel=1e-9)
    assert res.skewness.pvalue == pytest.approx(st.chi2.sf(n * b1 / 6, p * (p + 1) * (p + 2) / 6), rel=1e-9)
    assert res.kurtosis.pvalue == pytest.approx(2 * st.norm.sf(abs(z)), rel=1e-9)
    # chunking of the O(n^2 D) b1 sum does not change it
    assert B._mardia_stats(torch.from_numpy(xc), 7)[0] == pytest.approx(B._mardia_stats(torch.from_numpy(xc), 1000)[0], rel=1e-12)


def test_edf_statistics_match_scipy():
    rng = np.random.default_rng(5)
    x = rng.standard_normal(200) * 1.1 + 0.1
    ours = C.normal_edf_statistics(x)
    for k, name in enumerate(("cvm", "ks", "ad")):
        ref = st.goodness_of_fit(st.norm, x, known_params={"loc": 0, "scale": 1}, statistic=name,
                                 n_mc_samples=9, rng=0).statistic
        assert ours[k] == pytest.approx(ref, rel=1e-10), name
    assert ours[0] == pytest.approx(st.cramervonmises(x, "norm").statistic, rel=1e-10)
    assert ours[1] == pytest.approx(st.kstest(x, "norm").statistic, rel=1e-12)


def test_radii_and_coordinate_pvalues_match_scipy():
    rng = np.random.default_rng(6)
    z = rng.standard_normal((300, 5))
    r = np.linalg.norm(z, axis=1)
    res = stats.radii_test(z, statistic="cvm")
    assert res.null == "asymptotic"
    ref = st.cramervonmises(r, st.chi(5).cdf)
    assert res.statistic == pytest.approx(ref.statistic, rel=1e-9)
    assert res.pvalue == pytest.approx(ref.pvalue, rel=1e-6)
    res = stats.coordinate_test(z, statistic="ks")
    ref = st.kstest(z.ravel(), "norm")
    assert res.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert res.pvalue == pytest.approx(ref.pvalue, rel=1e-8)


@pytest.mark.parametrize("m", [1, 2, 5, 20, 139, 140, 141, 300, 2000, 16384, 150_000])
def test_iid_edf_pvalues_match_scipy(m):
    """stats/_edf_pvalues (scipy.special only) against scipy.stats' laws: CvM (Csorgo-Faraway) to
    1e-12, two-sided KS (scipy.stats.kstwo) to 1e-9 relative in the tail and 5e-6 absolute elsewhere
    (our exact matrix where scipy's Pelz-Good expansion is used, m = 141-1000 or so)."""
    from scipy.stats._hypotests import _cdf_cvm

    from latentdiv.stats import _edf_pvalues as E

    root = math.sqrt(m)
    ds = np.unique(np.concatenate([np.geomspace(0.3 / m, 0.999, 25), np.array([0.4, 0.8, 1.0, 1.3, 1.6, 2.5, 4]) / root]))
    for d in ds[(ds > 0) & (ds < 1)]:
        ref = float(st.kstwo.sf(d, m))
        ours = E.ks_pvalue(float(d), m)
        assert 0.0 <= ours <= 1.0
        if ref < 1e-3:
            assert ours == pytest.approx(ref, rel=1e-9, abs=1e-300), (m, d)
        else:
            assert ours == pytest.approx(ref, abs=5e-6), (m, d)
    for w in np.linspace(1.001 / (12 * m), min(m / 3.0, 2.5), 30):
        ref = float(np.clip(1.0 - _cdf_cvm(w, m), 0.0, 1.0))
        assert E.cvm_pvalue(float(w), m) == pytest.approx(ref, abs=1e-12), (m, w)
    assert E.ks_pvalue(1.0, m) == 0.0 and E.ks_pvalue(0.4 / m, m) == 1.0
    assert E.cvm_pvalue(1.0 / (12 * m), m) == 1.0 and E.cvm_pvalue(m / 3.0, m) == 0.0
    assert math.isnan(E.cvm_pvalue(math.nan, m)) and math.isnan(E.ks_pvalue(math.nan, m))


def test_battery_imports_no_scipy_stats():
    """latentdiv.stats and the CLI stay off scipy.stats (a fifth of a warm `latentdiv check`)."""
    code = "import sys, latentdiv.stats, latentdiv.cli, latentdiv.cli_check; print('scipy.stats' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p)))
    assert out.returncode == 0 and out.stdout.strip() == "False", (out.stdout, out.stderr[-2000:])


def test_interpolated_chi_cdf_is_accurate():
    rng = np.random.default_rng(7)
    for d in (2, 8, 64, 300):
        r = np.sqrt(2) * np.sqrt(rng.chisquare(d, size=B._INTERP_MIN + 10)) * rng.uniform(0.7, 1.3, B._INTERP_MIN + 10)
        exact = C.chi_edf_statistics(r, d, math.sqrt(2))
        fast = B._chi_edf_fast(r, d, math.sqrt(2))
        np.testing.assert_allclose(fast, exact, rtol=1e-6)


def test_distance_statistic_uses_all_pairs():
    rng = np.random.default_rng(8)
    z = rng.standard_normal((30, 4))
    d = np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1))[np.triu_indices(30, 1)]
    ref = st.cramervonmises(d / math.sqrt(2), st.chi(4).cdf).statistic
    assert stats.distance_test(z, n_resamples=9).statistic == pytest.approx(ref, rel=1e-9)


# ---------------------------------------------------------------------------------------------------
# Monte Carlo machinery
# ---------------------------------------------------------------------------------------------------
def test_mc_pvalue_formula_and_two_sided():
    null = np.arange(1.0, 100.0)  # 99 values
    assert C.mc_pvalue(1000.0, null) == pytest.approx(1 / 100)
    assert C.mc_pvalue(-1.0, null) == 1.0
    assert C.mc_pvalue(50.0, null) == pytest.approx(51 / 100)
    assert C.mc_pvalue_two_sided(-5.0, null) == pytest.approx(2 / 100)


def test_null_cache_is_keyed_and_reused():
    stats.clear_null_cache()
    rng = np.random.default_rng(9)
    z = rng.standard_normal((20, 3))
    a = stats.energy_test(z, n_resamples=50, generator=1)
    info = stats.null_cache_info()
    t0 = time.perf_counter()
    b = stats.energy_test(z, n_resamples=50, generator=1)
    assert time.perf_counter() - t0 < 0.5
    assert stats.null_cache_info() == info and a == b
    c = stats.energy_test(z, n_resamples=50, generator=2)
    assert stats.null_cache_info()["entries"] == info["entries"] + 1
    assert c.statistic == a.statistic
    # a numpy Generator is consumed, never cached
    stats.energy_test(z, n_resamples=20, generator=np.random.default_rng(0))
    assert stats.null_cache_info()["entries"] == info["entries"] + 1


def test_results_are_scipy_like():
    z = np.random.default_rng(10).standard_normal((32, 3))
    res = stats.henze_zirkler(z, n_resamples=19)
    stat, p = res
    assert (stat, p) == (res.statistic, res.pvalue)
    assert res.method == "Henze-Zirkler" and res.target == "standard" and res.null == "monte carlo"
    assert res.n_resamples == 19 and res.details["beta"] == pytest.approx(stats.HZ_BETA_SCALE / math.sqrt(3))
    assert 1 / 20 <= p <= 1
    m = stats.mardia(z, n_resamples=19)
    assert m.pvalue == min(1.0, 2 * min(m.skewness.pvalue, m.kurtosis.pvalue))
    assert set(m.to_dict()) == {"skewness", "kurtosis", "pvalue"}


def test_holm():
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03, 0.5]), [0.04, 0.09, 0.09, 0.5])


def test_report_table_and_json():
    z = np.random.default_rng(11).standard_normal((40, 4))
    rep = stats.normality_report(z, n_resamples=39)
    assert len(rep.rows) == 16
    text = str(rep)
    assert "Holm" in text and "radii_cvm" in text and ("PASS" in text or "FAIL" in text)
    table = text.splitlines()[1:3 + len(rep.rows)]  # header, rule, one line per test
    widths = {len(line) for line in table}
    assert len(widths) == 1, "table rows are aligned"
    # B = 39 < 320: the Monte Carlo tests cannot reject under Holm over 16 tests, and the report says so
    assert text.splitlines()[-1].startswith("warning: n_resamples = 39 is too small")
    import json

    d = json.loads(rep.to_json())
    assert d["correction"] == "holm" and len(d["tests"]) == 16
    sub = stats.normality_report(z, n_resamples=39, tests=["radii", "energy"])
    assert [r["test"] for r in sub.rows] == ["energy", "radii_cvm", "radii_ks", "radii_ad"]
    with pytest.raises(ValueError, match="tests"):
        stats.normality_report(z, tests=["nope"])


# ---------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [stats.mardia, stats.henze_zirkler, stats.energy_test, stats.radii_test,
                                stats.distance_test, stats.projection_test, stats.coordinate_test])
def test_bad_input(fn):
    ok = np.random.default_rng(0).standard_normal((20, 3))
    with pytest.raises(ValueError, match="2-D"):
        fn(ok[:, 0])
    with pytest.raises(ValueError, match="n >= 8"):
        fn(ok[:5])
    bad = ok.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fn(bad)
    with pytest.raises(TypeError, match="z must"):
        fn("abc")
    with pytest.raises(ValueError, match="target"):
        fn(ok, target="prior")
    with pytest.raises(ValueError, match="n_resamples"):
        fn(ok, n_resamples=0)
    with pytest.raises(ValueError, match="n >= D"):
        fn(np.random.default_rng(0).standard_normal((10, 9)), target="estimated")
    with pytest.raises(ValueError, match="singular"):
        fn(np.repeat(ok[:, :1], 3, axis=1), target="estimated")


def test_bad_options():
    z = np.random.default_rng(0).standard_normal((20, 3))
    with pytest.raises(ValueError, match="beta"):
        stats.henze_zirkler(z, beta=-1.0)
    with pytest.raises(TypeError, match="beta"):
        stats.henze_zirkler(z, beta="big")
    with pytest.raises(ValueError, match="asymptotic"):
        stats.energy_test(z, null="asymptotic")
    with pytest.raises(ValueError, match="asymptotic"):
        stats.mardia(z, null="asymptotic")  # no limit law for the standard target
    with pytest.raises(ValueError, match="statistic"):
        stats.radii_test(z, statistic="chi2")
    with pytest.raises(ValueError, match="n_projections"):
        stats.projection_test(z, n_projections=0)
    with pytest.raises(TypeError, match="generator"):
        stats.energy_test(z, generator="seed")


# ---------------------------------------------------------------------------------------------------
# power: the moment-matched example is caught
# ---------------------------------------------------------------------------------------------------
def test_matched_mixture_is_caught_and_gaussian_passes():
    rng = np.random.default_rng(0)
    g = alternatives.gaussian(rng, 256, 64)
    mix = alternatives.matched_mixture(rng, 256, 64)
    assert abs(mix.mean()) < 0.05 and np.abs(np.cov(mix, rowvar=False) - np.eye(64)).mean() < 0.1
    tests = ["radii", "coordinates", "henze_zirkler"]
    assert stats.normality_report(g, n_resamples=199, tests=tests).passed
    rep = stats.normality_report(mix, n_resamples=199, tests=tests)
    assert not rep.passed
    assert rep.results["coordinates_cvm"] < 1e-6


# ---------------------------------------------------------------------------------------------------
# calibration
# ---------------------------------------------------------------------------------------------------
def _rejection_rates(n, d, target, reps, n_resamples, seed, tests=None):
    rng = np.random.default_rng([seed, n, d])  # a different stream from the null cache's
    count = None
    for _ in range(reps):
        z = rng.standard_normal((n, d))
        if target == "estimated":  # the composite null: any Gaussian
            z = z @ rng.standard_normal((d, d)) + rng.standard_normal(d) * 3
        rep = stats.normality_report(z, target=target, n_resamples=n_resamples, generator=seed, tests=tests)
        row = np.array([r["pvalue"] < 0.05 for r in rep.rows], dtype=float)
        count = row if count is None else count + row
    return dict(zip([r["test"] for r in rep.rows], count / reps))


@pytest.mark.parametrize("target", ["standard", "estimated"])
def test_calibration_smoke(target):
    # 60 null samples, n = 24, D = 3: the expected rejection rate is 0.05 (3 of 60); a test whose
    # p-values are not ~uniform (e.g. a wrong null law) rejects far more often than 12 times.
    rates = _rejection_rates(24, 3, target, 60, 99, 5)
    assert max(rates.values()) <= 0.2, rates
    assert np.mean(list(rates.values())) <= 0.11, rates


@pytest.mark.slow
@pytest.mark.parametrize("n,d,target", [(256, 64, "standard"), (256, 64, "estimated"), (50, 5, "standard"),
                                        (50, 5, "estimated"), (100, 16, "standard")])
def test_calibration(n, d, target):
    reps, b = 300, 199
    rates = _rejection_rates(n, d, target, reps, b, 7)
    # Two sources of Monte Carlo error: the reps, and the single cached null sample of size B that all
    # reps share (the rate conditional on it is ~ Beta(0.05 (B+1), 0.95 (B+1)): sd ~ 0.015 at B = 199).
    se = math.sqrt(0.05 * 0.95 / reps + 0.05 * 0.95 / (b + 2))
    for tid, rate in rates.items():
        assert abs(rate - 0.05) <= 3.3 * se, (tid, rate, rates)


@pytest.mark.slow
def test_monte_carlo_speed_n1000_d64():
    # the brief's bar: a 1000-resample Monte Carlo p-value at n = 1000, D = 64 in under a minute
    z = np.random.default_rng(12).standard_normal((1000, 64))
    for fn in (stats.energy_test, stats.henze_zirkler):
        stats.clear_null_cache()
        t0 = time.perf_counter()
        fn(z, n_resamples=1000, generator=3)
        elapsed = time.perf_counter() - t0
        assert elapsed < 60, (fn.__name__, elapsed)


# ---------------------------------------------------------------------------------------------------
# issue 10 items 7 and 10: which Mardia statistic; estimates and warnings before long work
# ---------------------------------------------------------------------------------------------------
def test_mardia_small_sample_statistic_is_named():
    """n < 20, asymptotic: `statistic` is n b1 / 6 as documented (it was the corrected k n b1 / 6);
    the corrected statistic, whose chi^2 tail is the p-value, is in details."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((12, 2))
    n, p = x.shape
    xc = x - x.mean(0)
    m = xc @ np.linalg.inv(np.cov(x, rowvar=False, bias=True)) @ xc.T
    plain = n * (m ** 3).sum() / n ** 2 / 6
    k = (p + 1) * (n + 1) * (n + 3) / (n * ((n + 1) * (p + 1) - 6))
    res = stats.mardia(x, target="estimated", null="asymptotic")
    assert res.skewness.statistic == pytest.approx(plain, rel=1e-9)
    assert res.skewness.details["small_sample_factor"] == pytest.approx(k, rel=1e-12)
    assert res.skewness.details["corrected_statistic"] == pytest.approx(k * plain, rel=1e-9)
    assert res.skewness.pvalue == pytest.approx(st.chi2.sf(k * plain, p * (p + 1) * (p + 2) / 6), rel=1e-9)
    # the Monte Carlo null reports the same statistic
    assert stats.mardia(x, target="estimated", n_resamples=9).skewness.statistic == pytest.approx(plain, rel=1e-9)


def test_report_warns_when_n_resamples_cannot_reach_alpha():
    z = np.random.default_rng(0).standard_normal((20, 3)) * 1e30
    rep = stats.normality_report(z, n_resamples=10, tests=["energy", "distances"])
    assert rep.passed and rep.warnings and "use n_resamples >= 80" in rep.warnings[0]
    assert "could not reject" in str(rep) and rep.to_dict()["warnings"] == rep.warnings
    assert not stats.normality_report(z, n_resamples=80, tests=["energy"]).warnings
    # asymptotic-only selections can reject whatever B is: no warning
    assert stats.resamples_warning(0.05, 1, ["radii_cvm", "coordinates_ks"]) is None
    assert stats.resamples_warning(0.05, 1, ["radii_cvm"], target="estimated") is not None


def test_estimate_seconds_is_measured_and_leaves_no_cache():
    z = np.random.default_rng(0).standard_normal((60, 3))
    stats.clear_null_cache()
    small = stats.estimate_seconds(z, n_resamples=10, tests=["energy", "distances"])
    big = stats.estimate_seconds(z, n_resamples=10_000, tests=["energy", "distances"])
    assert 0 < small < big and big > 20 * small  # grows with B (~1000x here; timing noise allowed)
    assert stats.null_cache_info()["entries"] == 0
