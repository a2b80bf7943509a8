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
from ._batched_ops import batched_pairwise_sum
from ._sigreg import SIGRegLoss, sigreg
from .functional import (
    WAE_SCALES,
    coordinates_cvm,
    cramer_wold,
    cwae_loss,
    default_bandwidth,
    default_gamma,
    distances_cvm,
    energy_distance,
    kl_normal,
    median_bandwidth,
    mmd,
    mmd_to_normal,
    radii_cvm,
    sliced_wasserstein,
)

__version__ = "0.1.0"

if _ext._C is not None:
    check_against_build(dict(_ext._C.build_info()["kernels"]))

# Submodules loaded on first use (``latentdiv.stats`` imports scipy; keep ``import latentdiv`` light).
_LAZY_SUBMODULES = ("special", "stats")


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))


__all__ = [
    "KERNELS",
    "SIGRegLoss",
    "WAE_SCALES",
    "backend_info",
    "batched_pairwise_sum",
    "coordinates_cvm",
    "cramer_wold",
    "cwae_loss",
    "default_bandwidth",
    "default_gamma",
    "distances_cvm",
    "energy_distance",
    "functional",
    "get_backend",
    "kl_normal",
    "losses",
    "median_bandwidth",
    "mmd",
    "mmd_to_normal",
    "pairwise_sum",
    "pdist",
    "radii_cvm",
    "set_backend",
    "sigreg",
    "sliced_wasserstein",
    "special",
    "stats",
]
