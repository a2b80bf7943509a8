"""The autoencoders of the study: one shared architecture, one regularizer per model.

Every regularizer is the library's own (``latentdiv.losses`` / ``latentdiv.functional``, and
``latentdiv.SIGRegLoss``); the model only chooses which one and its weight. The training objective
of every model is

    loss = BCE(x, decoder(z)) summed over pixels, averaged over the batch  +  weight * P * R(z)

with P the number of pixels (so ``weight`` is per pixel, comparable between MNIST and load_digits),
except the VAE, whose KL enters the ELBO with beta = 1 and no pixel factor (the KL is already per
image), and the plain AE (no R).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import nn

from .. import SIGRegLoss
from .. import functional as LF
from .. import losses as LL


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    base_weight: float       # the centre of the weight sweep (per pixel); 0 = no regularizer
    sweep: bool              # whether the weight is swept (False: plain AE, VAE with beta = 1)
    stochastic: bool = False  # VAE: the encoder outputs (mu, logvar)


# Base weights: the middle of each sweep, set so that on load_digits and MNIST the middle weight
# raises the validation reconstruction error by a visible but moderate factor over the plain AE
# (calibrated once by a small sweep; the sweep spans two decades around it, so the exact centre
# only decides which weights are tried, not the comparison at matched distortion). SIGReg's was set
# the same way, later; its sweep is in docs/study.md ("SIGReg").
MODELS: Dict[str, ModelSpec] = {s.name: s for s in [
    ModelSpec("ae", "plain autoencoder (no regularizer)", 0.0, False),
    ModelSpec("rae", "RAE-L2: 0.5 |z|^2 code penalty (kl_normal with logvar = 0) + decoder weight decay", 1e-2, True),
    ModelSpec("vae", "VAE: KL(q(z|x) || N(0, I)) per point, beta = 1 (kl_normal)", 1.0, False, True),
    ModelSpec("infovae", "InfoVAE / MMD-VAE: gaussian MMD, preset 'infovae' (closed form to N(0, I))", 1.0, True),
    ModelSpec("wae", "WAE-MMD: IMQ multi-scale MMD, preset 'wae' (against prior draws)", 1.0, True),
    ModelSpec("swae", "SWAE: sliced 2-Wasserstein to N(0, 1) per projection, 50 projections", 1.0, True),
    ModelSpec("cwae", "CWAE: log Cramer-Wold distance to N(0, I) (cwae_loss)", 0.1, True),
    ModelSpec("radii_cvm", "EDF vs CDF: Cramer-von Mises of the radii against chi_D", 1e-3, True),
    ModelSpec("distances_cvm", "EDF vs CDF: Cramer-von Mises of pairwise distances against sqrt(2) chi_D", 1e-4, True),
    ModelSpec("mmd_to_normal", "closed-form gaussian MMD to N(0, I), h^2 = D (no prior samples)", 1.0, True),
    ModelSpec("sigreg", "SIGReg (LeJEPA): sliced Epps-Pulley, 256 slices redrawn every step", 1e-2, True),
]}


def check_models(names) -> Tuple[str, ...]:
    names = tuple(names)
    if not names:
        raise ValueError("models must name at least one model")
    for n in names:
        if n not in MODELS:
            raise ValueError(f"unknown model {n!r}; models are: {', '.join(MODELS)}")
    return names


def check_latent_dims(dims) -> Tuple[int, ...]:
    dims = tuple(dims)
    if not dims:
        raise ValueError("latent_dims must name at least one latent size")
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ValueError(f"latent_dims must be integers >= 1, got {d!r}")
    return dims


def make_regularizer(name: str, dim: int, generator: torch.Generator) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
    """R(z) for a batch of codes z: [n, D] -> [] (None for the plain AE and the VAE)."""
    if name in ("ae", "vae"):
        return None
    if name == "rae":
        # 0.5 |z|^2 per code: exactly kl_normal with log sigma^2 = 0 (the mean term of the KL).
        return lambda z: LF.kl_normal(z, torch.zeros_like(z))
    if name == "infovae":
        return LL.MMDLoss(preset="infovae")
    if name == "wae":
        return LL.MMDLoss(preset="wae", generator=generator)
    if name == "swae":
        return LL.SlicedWassersteinLoss(n_projections=50, generator=generator)
    if name == "cwae":
        return LL.CramerWoldLoss(log=True)
    if name == "radii_cvm":
        return LL.RadiiCvMLoss()
    if name == "distances_cvm":
        return LL.DistancesCvMLoss()
    if name == "mmd_to_normal":
        return LL.MMDToNormalLoss(bandwidth=math.sqrt(dim))
    if name == "sigreg":
        # LeJEPA's published defaults (256 slices, 17 knots on [0, 3], the biased estimator); the
        # module redraws its slices at every call (seed + step), as LeJEPA does per training step.
        # The seed comes from the run's generator, so a run is reproducible and seeds differ.
        return SIGRegLoss(seed=int(torch.randint(0, 2**31 - 1, (), generator=generator)))
    raise ValueError(f"unknown model {name!r}; models are: {', '.join(MODELS)}")


def _mlp(sizes) -> nn.Sequential:
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class _ConvEncoder(nn.Module):
    def __init__(self, side: int, out: int, width: int = 32) -> None:
        super().__init__()
        self.side = side
        s = (side + 3) // 4
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.ReLU(),
            nn.Flatten(), nn.Linear(2 * width * s * s, out))

    def forward(self, x):  # [n, P] -> [n, out]
        return self.net(x.view(-1, 1, self.side, self.side))


class _ConvDecoder(nn.Module):
    def __init__(self, side: int, dim: int, width: int = 32) -> None:
        super().__init__()
        if side % 4:
            raise ValueError(f"the conv architecture needs an image side divisible by 4, got {side}")
        self.s, self.width = side // 4, width
        self.fc = nn.Sequential(nn.Linear(dim, 2 * width * self.s * self.s), nn.ReLU())
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(width, 1, 4, 2, 1), nn.Flatten())

    def forward(self, z):  # [n, D] -> [n, P] logits
        return self.net(self.fc(z).view(-1, 2 * self.width, self.s, self.s))


class Autoencoder(nn.Module):
    """Encoder P -> D (or 2D: mean and log-variance for the VAE), decoder D -> P Bernoulli logits."""

    def __init__(self, side: int, dim: int, hidden: Tuple[int, ...], stochastic: bool,
                 architecture: str = "mlp") -> None:
        super().__init__()
        pixels = side * side
        self.dim, self.stochastic = dim, stochastic
        out = 2 * dim if stochastic else dim
        if architecture == "mlp":
            self.encoder = _mlp((pixels,) + tuple(hidden) + (out,))
            self.decoder = _mlp((dim,) + tuple(reversed(hidden)) + (pixels,))
        elif architecture == "conv":
            self.encoder = _ConvEncoder(side, out)
            self.decoder = _ConvDecoder(side, dim)
        else:
            raise ValueError(f"architecture must be 'mlp' or 'conv', got {architecture!r}")

    def encode(self, x: torch.Tensor):  # [n, P] -> mu [n, D], logvar [n, D] or None
        h = self.encoder(x)
        if self.stochastic:
            return h[:, :self.dim], h[:, self.dim:].clamp(-12.0, 8.0)
        return h, None

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:  # [n, D] -> [n, P]
        return self.decoder(z)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:  # [n, D] -> [n, P] in [0, 1]
        return torch.sigmoid(self.decoder(z))
