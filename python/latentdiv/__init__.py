"""latentdiv: how far is a batch of latent codes from N(0, I), and how to push it there, fast.

The O(n^2) terms run in a fused C++ (OpenMP/SIMD) or CUDA engine that never builds the n x n
matrix; everything is exposed as differentiable torch functions (custom ops, torch.compile-able),
with a pure-torch fallback.
"""

from __future__ import annotations

from . import _ext, ops  # noqa: F401  (ops registers torch.ops.latentdiv.*)
from ._ext import backend_info, get_backend, set_backend
from ._registry import KERNELS, check_against_build
from .pairwise import pairwise_sum, pdist
from . import functional, losses  # noqa: E402  (after the ops are registered)
from .functional import (
    coordinates_cvm,
    cramer_wold,
    cwae_loss,
    distances_cvm,
    energy_distance,
    kl_normal,
    mmd,
    mmd_to_normal,
    radii_cvm,
    sliced_wasserstein,
)

__version__ = "0.1.0"

if _ext._C is not None:
    check_against_build(dict(_ext._C.build_info()["kernels"]))

__all__ = [
    "KERNELS",
    "backend_info",
    "coordinates_cvm",
    "cramer_wold",
    "cwae_loss",
    "distances_cvm",
    "energy_distance",
    "functional",
    "get_backend",
    "kl_normal",
    "losses",
    "mmd",
    "mmd_to_normal",
    "pairwise_sum",
    "pdist",
    "radii_cvm",
    "set_backend",
    "sliced_wasserstein",
]
