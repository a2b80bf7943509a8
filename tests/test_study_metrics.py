"""latentdiv.study's metrics against independent references: Frechet distance (scipy sqrtm formula,
closed form on Gaussians), k-NN precision / recall / density / coverage (hand-computed toy sets and
a brute-force loop), KID (unbiased), the class histogram; and the rank-correlation helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn", reason="the study extra is not installed: pip install '.[study]'")
scipy_linalg = pytest.importorskip("scipy.linalg")
from scipy import stats as st  # noqa: E402

from latentdiv.study import analysis as A  # noqa: E402
from latentdiv.study import metrics as M  # noqa: E402


def _with_moments(rng, n, mean, cov):  # -> [n, d] whose sample mean / (n-1) covariance are exactly mean, cov
    x = rng.standard_normal((n, len(mean)))
    x -= x.mean(0)
    w, v = np.linalg.eigh(np.cov(x, rowvar=False))
    x = x @ (v / np.sqrt(w)) @ v.T                     # exact identity covariance
    w, v = np.linalg.eigh(cov)
    return x @ (v * np.sqrt(w)) @ v.T + mean


def _fd_scipy(a, b):  # the pytorch-fid formula with scipy.linalg.sqrtm
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy_linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_frechet_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).standard_normal((300, 16)) @ np.random.default_rng(1).standard_normal((16, 16))
    assert M.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8 * np.trace(np.cov(x, rowvar=False)))


def test_frechet_matches_scipy_sqrtm_formula_on_random_gaussians():
    rng = np.random.default_rng(2)
    for d in (3, 12, 40):
        a = rng.standard_normal((500, d)) @ rng.standard_normal((d, d)) + rng.standard_normal(d)
        b = rng.standard_normal((400, d)) @ rng.standard_normal((d, d))
        assert M.frechet_distance(a, b) == pytest.approx(_fd_scipy(a, b), rel=1e-7)


def test_frechet_known_answer_for_gaussians_with_given_moments():
    # diagonal covariances: FD = |mu1 - mu2|^2 + sum (sqrt a - sqrt b)^2
    rng = np.random.default_rng(3)
    va, vb = np.array([1.0, 4.0, 0.25, 9.0]), np.array([4.0, 1.0, 1.0, 1.0])
    ma, mb = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, 3.0])
    a = _with_moments(rng, 200, ma, np.diag(va))
    b = _with_moments(rng, 300, mb, np.diag(vb))
    expected = ((ma - mb) ** 2).sum() + ((np.sqrt(va) - np.sqrt(vb)) ** 2).sum()
    assert M.frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_prdc_hand_computed_toy_set():
    real = np.array([[0.0], [1.0], [2.0], [3.0], [4.0]])   # k = 1: every real radius is 1
    fake = np.array([[0.5], [10.0], [2.2], [20.0]])         # fake radii: 1.7, 7.8, 1.7, 10
    out = M.prdc(real, fake, k=1)
    assert out["precision"] == pytest.approx(0.5)   # 0.5 and 2.2 lie in real balls
    assert out["recall"] == pytest.approx(1.0)      # 4 is reached by the ball of 10 (radius 7.8)
    assert out["density"] == pytest.approx(1.0)     # (2 + 0 + 2 + 0) / (1 * 4)
    assert out["coverage"] == pytest.approx(0.8)    # every real point but 4 has a fake within 1


def test_prdc_identical_and_disjoint_sets():
    x = np.random.default_rng(4).standard_normal((200, 5))
    same = M.prdc(x, x.copy(), k=5)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    far = M.prdc(x, x + 100.0, k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def _prdc_loops(real, fake, k):  # brute force, straight from the definitions
    def kth(points, i):
        d = sorted(np.linalg.norm(points - points[i], axis=1))
        return d[k]
    rr = [kth(real, i) for i in range(len(real))]
    rf = [kth(fake, j) for j in range(len(fake))]
    dist = lambda a, b: float(np.linalg.norm(a - b))  # noqa: E731
    prec = np.mean([any(dist(f, r) <= rr[i] for i, r in enumerate(real)) for f in fake])
    rec = np.mean([any(dist(r, f) <= rf[j] for j, f in enumerate(fake)) for r in real])
    dens = sum(dist(f, r) <= rr[i] for f in fake for i, r in enumerate(real)) / (k * len(fake))
    cov = np.mean([min(dist(r, f) for f in fake) <= rr[i] for i, r in enumerate(real)])
    return {"precision": prec, "recall": rec, "density": dens, "coverage": cov}


def test_prdc_matches_brute_force_definitions():
    rng = np.random.default_rng(5)
    real, fake = rng.standard_normal((60, 3)), 1.3 * rng.standard_normal((45, 3)) + 0.4
    got, ref = M.prdc(real, fake, k=3), _prdc_loops(real, fake, 3)
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-12), key


def test_kid_is_unbiased_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(6)
    values = [M.kernel_inception_distance(rng.standard_normal((100, 8)), rng.standard_normal((100, 8)),
                                          n_subsets=1, subset_size=100, seed=i)[0] for i in range(200)]
    mean, se = np.mean(values), np.std(values) / np.sqrt(len(values))
    assert abs(mean) < 4 * se                       # unbiased: mean ~ 0 (a biased V-statistic is > 0)
    shifted = M.kernel_inception_distance(rng.standard_normal((100, 8)), rng.standard_normal((100, 8)) + 0.5,
                                          n_subsets=5, subset_size=100)[0]
    assert shifted > 20 * se


def test_metric_bad_input():
    with pytest.raises(ValueError, match="x must have shape"):
        M.frechet_distance(np.zeros(5), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="same dimension"):
        M.frechet_distance(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="k must be"):
        M.prdc(np.zeros((5, 2)), np.ones((5, 2)), k=5)
    with pytest.raises(ValueError, match="non-finite"):
        M.prdc(np.full((5, 2), np.nan), np.ones((5, 2)), k=2)


def test_class_histogram():
    h = M.class_histogram(torch.tensor([0, 0, 0, 1, 2, 3, 4, 5, 6, 7]), classes=10)
    assert h["counts"] == [3, 1, 1, 1, 1, 1, 1, 1, 0, 0]
    assert h["modes_covered"] == 8
    assert h["tv_to_uniform"] == pytest.approx(0.5 * (0.2 + 6 * 0.0 + 2 * 0.1))


def test_rowwise_rank_correlations_match_scipy_with_ties():
    rng = np.random.default_rng(7)
    x = rng.integers(0, 5, (20, 15)).astype(float)   # many ties (as in a cluster bootstrap)
    y = x + rng.integers(0, 3, (20, 15))
    s, k = A._rowwise_spearman(x.copy(), y.copy()), A._rowwise_kendall(x, y)
    for i in range(20):
        assert s[i] == pytest.approx(st.spearmanr(x[i], y[i])[0], abs=1e-12)
        assert k[i] == pytest.approx(st.kendalltau(x[i], y[i])[0], abs=1e-12)


def test_cluster_bootstrap_resamples_whole_clusters():
    clusters = ["a", "a", "b", "c", "c", "c"]
    for idx in A.bootstrap_indices(clusters, 50, seed=0):
        drawn = [clusters[i] for i in idx]
        for c in set(drawn):  # a drawn cluster comes with all its members, as often as it was drawn
            assert drawn.count(c) % clusters.count(c) == 0
