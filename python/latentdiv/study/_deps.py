"""Optional dependencies of the study (the ``study`` extra): a missing one is named with the command
that installs it, instead of a bare ImportError deep inside a worker process."""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRA_HINT = 'pip install "latentdiv[study]"  (from a checkout: pip install ".[study]")'

# import name -> the PyPI distribution that provides it
_DISTRIBUTIONS = {
    "sklearn": "scikit-learn",
    "mlxtend": "mlxtend",
    "zuko": "zuko",
    "matplotlib": "matplotlib",
    "tqdm": "tqdm",
}


class MissingDependencyError(ImportError):
    """An optional dependency of ``latentdiv study`` is not installed."""


def require(module: str) -> ModuleType:
    """Import ``module`` or raise MissingDependencyError naming the ``study`` extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        dist = _DISTRIBUTIONS.get(top, top)
        raise MissingDependencyError(
            f"latentdiv study needs the optional package {dist!r} (import {top!r} failed: {exc}); "
            f"install the study extra: {EXTRA_HINT}") from exc


def check_all() -> None:
    """Fail early, in the parent process, when any dependency of the study is missing."""
    for module in _DISTRIBUTIONS:
        require(module)
