"""Named samplers for power studies and the `latentdiv check` example. Every non-Gaussian law here has
mean 0 and covariance I (except ``scaled_gaussian``, covariance 1.21 I), so only a test that looks
beyond the first two moments, or at the fixed target N(0, I), can tell them from N(0, I)."""

from __future__ import annotations

import math
from typing import Callable, Dict

import numpy as np

MIXTURE_OFFSET = 0.8
SHELL_WIDTH = 0.01


def gaussian(rng: np.random.Generator, n: int, d: int) -> np.ndarray:  # -> [n, D]
    """N(0, I_D): the null."""
    return rng.standard_normal((n, d))


def uniform_cube(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """Uniform on the cube [-sqrt 3, sqrt 3]^D (unit variance per coordinate)."""
    return (rng.random((n, d)) - 0.5) * math.sqrt(12.0)


def student_t5(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """Independent Student-t coordinates with 5 degrees of freedom, scaled by sqrt(3/5) to unit variance."""
    return rng.standard_t(5, size=(n, d)) * math.sqrt(3.0 / 5.0)


def matched_mixture(rng: np.random.Generator, n: int, d: int, offset: float = MIXTURE_OFFSET) -> np.ndarray:
    """Moment-matched Gaussian mixture: z = a s + sqrt(1 - a^2) g, s uniform on {-1, 1}^D, g ~ N(0, I);
    i.e. the equal-weight mixture of the 2^D Gaussians N(a s, (1 - a^2) I): mean 0, covariance I exactly,
    bimodal coordinates (excess kurtosis -2 a^4), radii more concentrated than chi_D."""
    s = rng.integers(0, 2, size=(n, d)) * 2.0 - 1.0
    return offset * s + math.sqrt(1.0 - offset * offset) * rng.standard_normal((n, d))


def scaled_gaussian(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """1.1 g, g ~ N(0, I): Gaussian, but not the prior (covariance 1.21 I). Under target="estimated"
    this IS the null (rejection rate should be alpha)."""
    return 1.1 * rng.standard_normal((n, d))


def thin_shell(rng: np.random.Generator, n: int, d: int, width: float = SHELL_WIDTH) -> np.ndarray:
    """Isotropic directions at radius sqrt(D) (1 + width * eps), eps ~ N(0, 1): covariance ~ I, but
    every radius is ~ sqrt(D) (chi_D has sd ~ 1/sqrt 2)."""
    g = rng.standard_normal((n, d))
    r = math.sqrt(d) * (1.0 + width * rng.standard_normal((n, 1)))
    return g / np.linalg.norm(g, axis=1, keepdims=True) * r


ALTERNATIVES: Dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "gaussian (null)": gaussian,
    "uniform cube": uniform_cube,
    "student-t5": student_t5,
    "matched mixture": matched_mixture,
    "scaled gaussian 1.1": scaled_gaussian,
    "thin shell": thin_shell,
}
