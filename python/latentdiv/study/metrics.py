"""Distances between sets of points, with no pretrained network: Frechet distance, KID, k-NN
precision / recall (Kynkaanniemi et al., NeurIPS 2019) and density / coverage (Naeem et al., ICML
2020), and the small classifier whose penultimate layer is the feature space of the image metrics.

The k-NN parts use ``latentdiv.pdist`` (the library's engine) on the union of both sets.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
import torch
from scipy.spatial.distance import squareform
from torch import nn

from ..pairwise import pdist


def _as_float64(a, name: str) -> np.ndarray:
    arr = np.asarray(a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] < 2:
        raise ValueError(f"{name} must have shape (n, d) with n >= 2, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values")
    return arr


def frechet_distance(x, y) -> float:
    """||mu_x - mu_y||^2 + tr(S_x + S_y - 2 (S_x^{1/2} S_y S_x^{1/2})^{1/2}) between the Gaussians
    fitted to two feature sets x [n, d] and y [m, d] (Heusel et al. 2017; the unbiased n - 1
    covariance as pytorch-fid). The matrix square root is taken of the symmetric PSD matrix
    S_x^{1/2} S_y S_x^{1/2} through its eigenvalues (same trace as sqrtm(S_x S_y), stable)."""
    a, b = _as_float64(x, "x"), _as_float64(y, "y")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {a.shape[1]} and {b.shape[1]}")
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.cov(a, rowvar=False).reshape(a.shape[1], -1), np.cov(b, rowvar=False).reshape(b.shape[1], -1)
    w, v = np.linalg.eigh(sa)
    root_a = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    inner = root_a @ sb @ root_a
    eig = np.linalg.eigvalsh((inner + inner.T) / 2.0)
    value = float(mu @ mu + np.trace(sa) + np.trace(sb) - 2.0 * np.sqrt(np.clip(eig, 0.0, None)).sum())
    return max(value, 0.0)


def kernel_inception_distance(x, y, n_subsets: int = 10, subset_size: int = 500, seed: int = 0) -> Tuple[float, float]:
    """KID (Binkowski et al. 2018): the unbiased MMD^2 with the cubic polynomial kernel
    k(a, b) = (a.b / d + 1)^3, averaged over random subsets (without replacement) of both sets.
    Returns (mean, standard deviation over subsets)."""
    a, b = _as_float64(x, "x"), _as_float64(y, "y")
    d = a.shape[1]
    m = min(subset_size, a.shape[0], b.shape[0])
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_subsets):
        xa = a[rng.choice(a.shape[0], m, replace=False)]
        yb = b[rng.choice(b.shape[0], m, replace=False)]
        kxx = (xa @ xa.T / d + 1.0) ** 3
        kyy = (yb @ yb.T / d + 1.0) ** 3
        kxy = (xa @ yb.T / d + 1.0) ** 3
        off = m * (m - 1)
        values.append((kxx.sum() - np.trace(kxx)) / off + (kyy.sum() - np.trace(kyy)) / off - 2.0 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


def _distance_blocks(real: np.ndarray, fake: np.ndarray):  # -> [n, n], [m, m], [n, m]
    both = torch.from_numpy(np.concatenate([real, fake]))
    full = squareform(pdist(both).numpy(), checks=False)
    n = real.shape[0]
    return full[:n, :n], full[n:, n:], full[:n, n:]


def _kth_neighbour(dist: np.ndarray, k: int) -> np.ndarray:  # [n, n] self distances -> [n]
    # column 0 of the sorted row is the point itself (distance 0); the k-th neighbour is column k
    return np.partition(dist, k, axis=1)[:, k]


def prdc(real, fake, k: int = 5) -> Dict[str, float]:
    """k-NN precision, recall (Kynkaanniemi et al. 2019), density and coverage (Naeem et al. 2020)
    of ``fake`` [m, d] against ``real`` [n, d]; ball radius of a point = distance to its k-th nearest
    neighbour within its own set.

    precision: fraction of fake points inside some real ball; recall: fraction of real points inside
    some fake ball; density: (1 / (k m)) sum over fake points of the number of real balls containing
    it; coverage: fraction of real points whose ball contains some fake point."""
    a, b = _as_float64(real, "real"), _as_float64(fake, "fake")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"real and fake must have the same dimension, got {a.shape[1]} and {b.shape[1]}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < min(a.shape[0], b.shape[0]):
        raise ValueError(f"k must be an int in [1, min(n, m)), got {k!r}")
    d_rr, d_ff, d_rf = _distance_blocks(a, b)
    r_real = _kth_neighbour(d_rr, k)  # [n]
    r_fake = _kth_neighbour(d_ff, k)  # [m]
    inside_real = d_rf <= r_real[:, None]  # [n, m]: fake j inside the ball of real i
    inside_fake = d_rf <= r_fake[None, :]  # [n, m]: real i inside the ball of fake j
    return {
        "precision": float(inside_real.any(axis=0).mean()),
        "recall": float(inside_fake.any(axis=1).mean()),
        "density": float(inside_real.sum() / (k * b.shape[0])),
        "coverage": float((d_rf.min(axis=1) <= r_real).mean()),
    }


class FeatureClassifier(nn.Module):
    """A small MLP digit classifier P -> 256 -> 128 -> 10, trained once per study on the training
    split. Its feature space for FD / KID / PRDC is the 128-unit penultimate layer after its ReLU."""

    FEATURE_LAYER = "penultimate hidden layer (128 units, after ReLU)"

    def __init__(self, pixels: int, classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(pixels, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU())
        self.head = nn.Linear(128, classes)

    def forward(self, x):  # [n, P] -> [n, classes] logits
        return self.head(self.body(x))

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:  # [n, P] -> [n, 128]
        return self.body(x)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:  # [n, P] -> [n]
        return self.forward(x).argmax(dim=1)


def train_classifier(x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int = 0) -> FeatureClassifier:
    """x: [n, P] in [0, 1], y: [n] labels. Adam, batch 128, light input noise (dropout on pixels)
    so that the features also make sense for blurry generated digits."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = FeatureClassifier(x.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], 128):
            idx = perm[i:i + 128]
            xb = x[idx] * (torch.rand(idx.shape[0], x.shape[1], generator=gen) > 0.1)
            loss = nn.functional.cross_entropy(net(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    return net


def class_histogram(labels: torch.Tensor, classes: int = 10) -> Dict[str, object]:
    """Mode coverage of generated samples from their predicted classes: counts, total variation
    distance to the uniform class distribution, and the number of classes that get at least half
    their uniform share."""
    counts = np.bincount(labels.numpy(), minlength=classes)[:classes]
    freq = counts / max(1, counts.sum())
    return {
        "counts": counts.tolist(),
        "tv_to_uniform": float(0.5 * np.abs(freq - 1.0 / classes).sum()),
        "modes_covered": int((freq >= 0.5 / classes).sum()),
    }
