"""Study configurations: ``quick`` (load_digits, a few minutes), ``default`` (MNIST 5k, about 15
minutes on 2 cores), ``full`` (hours). Every field can be overridden (``dataclasses.replace``)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, Tuple

from .models import MODELS, check_latent_dims, check_models

MODES = ("quick", "default", "full")


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    mode: str = "default"
    dataset: str = "mnist5k"
    models: Tuple[str, ...] = tuple(MODELS)
    latent_dims: Tuple[int, ...] = (8, 32)
    seeds: Tuple[int, ...] = (0,)
    sweep_dims: Tuple[int, ...] = (8,)           # latent sizes at which every weight is swept
    weight_grid: Tuple[float, ...] = (0.1, 1.0, 10.0)  # multiples of each model's base weight
    architecture: str = "mlp"
    hidden: Tuple[int, ...] = (256, 128)
    epochs: int = 20
    batch_size: int = 100
    lr: float = 1e-3
    classifier_epochs: int = 20
    flow_steps: int = 400
    n_generated: int = 1000                      # samples per sampler (capped by the test set size)
    k: int = 5                                   # k of the k-NN metrics
    n_resamples: int = 100                       # Monte Carlo null size for the tests at full n
    subsample_n: int = 100                       # n of the subsamples for rejection rates
    n_subsamples: int = 20
    subsample_resamples: int = 200               # Monte Carlo null size at subsample_n
    alpha: float = 0.05
    distortion_multiple: float = 1.25             # matched distortion: val MSE closest to this x AE's
    bootstrap: int = 1000
    split_seed: int = 0

    def __post_init__(self):
        check_models(self.models)
        check_latent_dims(self.latent_dims)
        if self.sweep_dims:
            check_latent_dims(self.sweep_dims)
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ValueError(f"seeds must be non-negative integers, got {self.seeds!r}")
        for name in ("epochs", "batch_size", "classifier_epochs", "n_generated", "n_resamples", "subsample_n",
                     "n_subsamples", "subsample_resamples", "bootstrap"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if isinstance(self.flow_steps, bool) or not isinstance(self.flow_steps, int) or self.flow_steps < 0:
            raise ValueError(f"flow_steps must be a non-negative integer, got {self.flow_steps!r}")
        if not self.weight_grid or any(not (w > 0) for w in self.weight_grid):
            raise ValueError(f"weight_grid must hold positive multiples, got {self.weight_grid!r}")

    def to_dict(self) -> Dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def training_key(self) -> Dict[str, Any]:
        """The fields a finished run depends on: a results directory written under other values
        is refused rather than silently mixed."""
        d = self.to_dict()
        for volatile in ("mode", "models", "latent_dims", "seeds", "sweep_dims", "weight_grid", "bootstrap"):
            d.pop(volatile)
        return d


def preset(mode: str) -> StudyConfig:
    if mode == "quick":
        return StudyConfig(mode="quick", dataset="digits", latent_dims=(8,), seeds=(0, 1), sweep_dims=(),
                           weight_grid=(1.0,), hidden=(128, 64), epochs=40, classifier_epochs=30,
                           flow_steps=300, n_generated=500, n_resamples=100, subsample_n=100,
                           n_subsamples=20, subsample_resamples=200)
    if mode == "default":
        return StudyConfig()
    if mode == "full":
        return StudyConfig(mode="full", seeds=(0, 1, 2), sweep_dims=(8, 32),
                           weight_grid=(0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0), architecture="conv",
                           epochs=60, flow_steps=2000, n_resamples=500, n_subsamples=50,
                           subsample_resamples=500, bootstrap=2000)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
