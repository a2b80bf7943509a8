"""SIGReg (LeJEPA's sliced Epps-Pulley statistic, latentdiv.sigreg) as a normality test with a Monte
Carlo null (docs/sigreg.md). The statistic is O(n D S), so the null replicates are computed as batches
of samples (B, n, D) through the batched statistic, not one Python call per replicate."""

from __future__ import annotations

import numpy as np
import torch

from .. import _sigreg as S
from . import _common as C
from ._common import NormalityTestResult

# Null replicates per batched evaluation (memory: chunk x n x num_slices x knots values).
_MAX_CHUNK_ELEMS = 1 << 24


def sigreg_test(z, *, target: str = "standard", num_slices: int = S.NUM_SLICES, t_max: float = S.T_MAX,
                knots: int = S.KNOTS, n_resamples: int = 1000, generator: C.Generator = 0,
                progress=False) -> NormalityTestResult:
    r"""Normality test with the SIGReg statistic (mean over ``num_slices`` unit directions of the
    Epps-Pulley statistic of the projections, LeJEPA's defaults: 256 slices, 17 knots on [0, 3];
    :func:`latentdiv.sigreg`, biased estimator). Directions from ``generator`` (stream 1),
    the same for the sample and every null replicate. target="estimated" whitens first (population
    covariance, as :func:`latentdiv.stats.henze_zirkler`). p-value: Monte Carlo, (1 + #{T_b >= T}) / (1 + B)."""
    x = C.as_sample(z)
    target = C.check_target(target)
    n, d = x.shape
    C.check_estimated_size(n, d, target)
    generator = C.check_generator(generator)
    nres = C.check_n_resamples(n_resamples)
    S._check_args(x, num_slices, t_max, knots, "biased")
    dir_seed = int(C.rng_for(generator, 1).integers(0, 2**62))
    directions = S.slice_directions(d, int(num_slices), dir_seed)

    def statistic(batch: torch.Tensor) -> np.ndarray:  # [b, n, D] -> [b]
        if target == "estimated":
            batch = torch.stack([C.whiten(b) for b in batch])
        return S.slice_statistics(batch, directions, t_max, knots, "biased").mean(dim=-1).numpy()

    observed = float(statistic(x.unsqueeze(0))[0])
    rng = C.rng_for(generator, 0)
    chunk = max(1, _MAX_CHUNK_ELEMS // (n * int(num_slices) * int(knots)))
    bar = C.make_progress(progress, nres, "sigreg null")
    null = np.empty(nres)
    try:
        for b0 in range(0, nres, chunk):
            b = min(chunk, nres - b0)
            sample = torch.from_numpy(rng.standard_normal((b, n, d)))
            null[b0:b0 + b] = statistic(sample)
            if bar is not None:
                bar.update(b)
    finally:
        if bar is not None:
            bar.close()
    details = dict(num_slices=int(num_slices), t_max=float(t_max), knots=int(knots), direction_seed=dir_seed)
    return NormalityTestResult(observed, C.mc_pvalue(observed, null), "sigreg", target, "monte carlo", nres, n, d,
                               details)
