"""Samplers of latent codes for a trained decoder: the prior itself, and three densities fitted to
the training codes after training (the "ex-post density estimation" answer, Ghosh et al. 2020, and
the flows answer)."""

from __future__ import annotations

from typing import Callable, Dict

import numpy as np
import torch

from ._deps import require

SAMPLERS = ("prior", "gaussian", "gmm", "flow")
SAMPLER_LABELS = {"prior": "z ~ N(0, I)", "gaussian": "full-cov Gaussian", "gmm": "GMM (10)",
                  "flow": "flow (zuko MAF)"}

Sampler = Callable[[int, int], torch.Tensor]  # (m, seed) -> [m, D] float32


def fit_prior(codes: torch.Tensor, seed: int, **_) -> Sampler:  # codes: [n, D] (only D is used)
    dim = codes.shape[1]
    return lambda m, s: torch.randn(m, dim, generator=torch.Generator().manual_seed(s))


def fit_gaussian(codes: torch.Tensor, seed: int, **_) -> Sampler:  # codes: [n, D]
    z = codes.double()
    mean = z.mean(0)
    cov = torch.cov(z.T).reshape(z.shape[1], z.shape[1])
    jitter = 1e-6 * float(cov.diagonal().mean()) + 1e-12
    chol = torch.linalg.cholesky(cov + jitter * torch.eye(z.shape[1], dtype=z.dtype))

    def sample(m, s):
        eps = torch.randn(m, z.shape[1], generator=torch.Generator().manual_seed(s), dtype=z.dtype)
        return (mean + eps @ chol.T).float()

    return sample


def fit_gmm(codes: torch.Tensor, seed: int, components: int = 10, **_) -> Sampler:  # codes: [n, D]
    mixture = require("sklearn.mixture")
    gmm = mixture.GaussianMixture(n_components=components, covariance_type="full", reg_covar=1e-5,
                                  random_state=seed, max_iter=200)
    gmm.fit(codes.double().numpy())

    def sample(m, s):
        gmm.random_state = s
        x, _ = gmm.sample(m)
        x = x[np.random.default_rng(s).permutation(m)]  # sklearn returns the samples grouped by component
        return torch.as_tensor(x, dtype=torch.float32)

    return sample


def fit_flow(codes: torch.Tensor, seed: int, steps: int = 500, **_) -> Sampler:  # codes: [n, D]
    """A masked autoregressive flow (zuko.flows.MAF, 3 transforms, 2 x 64 hidden units) fitted by
    maximum likelihood to the standardised codes (Adam, batch 256, ``steps`` steps)."""
    zuko = require("zuko")
    torch.manual_seed(seed)
    z = codes.float()
    mean, std = z.mean(0), z.std(0).clamp_min(1e-6)
    u = (z - mean) / std
    flow = zuko.flows.MAF(features=z.shape[1], transforms=3, hidden_features=(64, 64))
    opt = torch.optim.Adam(flow.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, u.shape[0], (min(256, u.shape[0]),), generator=gen)
        loss = -flow().log_prob(u[idx]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    flow.eval()

    def sample(m, s):
        torch.manual_seed(s)
        with torch.no_grad():
            x = flow().sample((m,))
        return torch.nan_to_num(x * std + mean)

    return sample


FITTERS: Dict[str, Callable[..., Sampler]] = {"prior": fit_prior, "gaussian": fit_gaussian, "gmm": fit_gmm,
                                              "flow": fit_flow}
