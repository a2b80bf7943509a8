"""Normality tests for latent codes: is Z (n x D) a sample of N(0, I) (target="standard") or of some
Gaussian (target="estimated")? See docs/stats.md.

Tests: :func:`mardia`, :func:`henze_zirkler`, :func:`energy_test`, and EDF tests (Cramer-von Mises,
Kolmogorov-Smirnov, Anderson-Darling) on radii (:func:`radii_test`), pairwise distances
(:func:`distance_test`), random projections (:func:`projection_test`) and coordinates
(:func:`coordinate_test`); :func:`normality_report` runs them all with Holm's correction.
SIGReg (LeJEPA's sliced Epps-Pulley statistic): :func:`sigreg_test`.
Two-sample permutation tests (docs/two_sample.md): :func:`mmd_test`, :func:`energy_two_sample_test`;
with asymptotic normal p-values for very large samples: :func:`linear_mmd_test`, :func:`block_mmd_test`.
"""

from __future__ import annotations

from ._battery import (
    HZ_BETA_SCALE,
    classical_beta,
    coordinate_test,
    default_beta,
    distance_test,
    energy_test,
    henze_zirkler,
    mardia,
    projection_test,
    radii_test,
)
from ._common import MIN_SAMPLES, MardiaResult, NormalityTestResult, clear_null_cache, null_cache_info
from .sigreg_test import sigreg_test
from .two_sample import block_mmd_test, energy_two_sample_test, linear_mmd_test, mmd_test
from .report import NormalityReport, estimate_seconds, holm, min_resamples, normality_report, resamples_warning

__all__ = [
    "HZ_BETA_SCALE",
    "MIN_SAMPLES",
    "MardiaResult",
    "NormalityReport",
    "NormalityTestResult",
    "block_mmd_test",
    "classical_beta",
    "clear_null_cache",
    "coordinate_test",
    "default_beta",
    "distance_test",
    "energy_test",
    "energy_two_sample_test",
    "estimate_seconds",
    "henze_zirkler",
    "holm",
    "linear_mmd_test",
    "mardia",
    "min_resamples",
    "mmd_test",
    "normality_report",
    "null_cache_info",
    "projection_test",
    "radii_test",
    "resamples_warning",
    "sigreg_test",
]
