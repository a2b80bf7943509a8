"""Shared pieces of the benchmark suite: the problems, the implementations compared, the flop model,
the memory probe and the budgets. Used by test_bench.py (pytest-benchmark) and report.py.

Problem: the (biased) MMD^2 between X and Y with one radial kernel,
    S = sum_ij k(x_i, x_j) + sum_ij k(y_i, y_j) - 2 sum_ij k(x_i, y_j),
"fwd" = S, "fwdbwd" = S and dS/dX (X is the encoder output, Y a prior sample: no gradient).
pdist: "fwd" = torch.pdist-style condensed distances, "fwdbwd" = their sum and its gradient.

Flop model (documented, not measured): a pair costs
    VALUE pass: 2D (dot product, D FMAs) + 3 (r2 from norms) + K   flops
    GRAD pass:  4D (dot product + the GEMM-like accumulation of c_ij y_j) + 5 + K   flops
with K the kernel's flops per pair: per scale gaussian 12, laplacian 14, imq 4, imq_sqrt 5, and energy 10,
cramer_wold_approx 12, cramer_wold 4 * 11 (Clenshaw). MMD fwd = 3 VALUE passes of n^2 pairs;
fwdbwd adds 2 GRAD passes (dS/dX: self term and cross term). pdist fwd = n^2/2 (2D + 3 + 10); its
backward one GRAD pass of n^2 pairs without kernel. "Percent of peak" = model flops / time / the
float32 SGEMM rate (torch.mm, 2048^3) measured in the same run.
"""

from __future__ import annotations

import math
import os
import time
from typing import Callable, Dict, Optional, Tuple

import torch

import latentdiv
from latentdiv import reference
from latentdiv._registry import get_kernel

try:
    from latentdiv import special  # noqa: F401  (exact Cramer-Wold kernel)

    HAVE_CW_EXACT = True
except ImportError:  # not merged yet
    HAVE_CW_EXACT = False

try:
    import pykeops  # noqa: F401
    from pykeops.torch import LazyTensor

    HAVE_KEOPS = True
except Exception:  # pragma: no cover - optional extra
    HAVE_KEOPS = False

try:
    from geomloss import SamplesLoss

    HAVE_GEOMLOSS = HAVE_KEOPS
except Exception:  # pragma: no cover
    HAVE_GEOMLOSS = False

# Budgets: plain torch cases whose estimated memory or time exceeds these are recorded as
# "oom" / "too_slow" results instead of being run.
MEM_BUDGET_BYTES = int(float(os.environ.get("LATENTDIV_BENCH_MEM_GB", "4")) * 2**30)
TIME_BUDGET_S = float(os.environ.get("LATENTDIV_BENCH_TIME_S", "120"))


def kernel_setup(name: str, d: int, n: int) -> Tuple[str, object, Dict, int]:
    """(engine kernel, bandwidth, options, kernel flops per pair) with data-scaled parameters."""
    if name == "gaussian":
        return "gaussian", math.sqrt(d), {}, 12
    if name == "imq7":  # WAE: C = 2 D sigma^2 s, seven scales
        return "imq", [2.0 * d * s for s in (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)], {}, 7 * 4
    if name == "imq_sqrt":  # (1 + r2 / C)^(-1/2), C = 2D (the median heuristic of N(0, I))
        return "imq_sqrt", 2.0 * d, {}, 5
    if name == "laplacian":
        return "laplacian", math.sqrt(d), {}, 14
    if name == "energy":
        return "energy", 1.0, {}, 10
    gamma = (4.0 / (3.0 * n)) ** 0.4
    if name == "cramer_wold_approx":
        return "cramer_wold_approx", 1.0, {"gamma": gamma, "dim": max(d, 2)}, 12
    if name == "cramer_wold":
        return "cramer_wold", 1.0, {"gamma": gamma, "dim": d}, 44
    raise ValueError(name)


KERNEL_NAMES = ["gaussian", "imq7", "imq_sqrt", "laplacian", "energy", "cramer_wold_approx"] + (
    ["cramer_wold"] if HAVE_CW_EXACT else [])


def _formula_r2(name: str, r2: torch.Tensor, bw, opts, d: int) -> torch.Tensor:
    """Plain-torch kernel of r2 (the way a user writes it)."""
    if name == "gaussian":
        return torch.exp(-r2 / (2.0 * bw * bw))
    if name == "imq":
        return sum(c / (c + r2) for c in bw)
    if name == "imq_sqrt":
        return torch.sqrt(bw / (bw + r2))
    if name == "laplacian":
        return torch.exp(-torch.sqrt(r2) / bw)
    if name == "energy":
        return -torch.sqrt(r2)
    if name == "cramer_wold_approx":
        return torch.rsqrt(opts["gamma"] + r2 / (2.0 * opts["dim"] - 3.0))
    if name == "cramer_wold":
        return special.phi_cw(r2 / (4.0 * opts["gamma"]), d)
    raise ValueError(name)


def _r2_matmul(a, b):
    return ((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T).clamp_min(0.0)


def _r2_cdist(a, b):
    return torch.cdist(a, b) ** 2


def mmd_fn(impl: str, kname: str, d: int, n: int) -> Optional[Callable]:
    """A function (x, y) -> MMD^2 sum for one implementation, or None if it does not apply."""
    kernel, bw, opts, _ = kernel_setup(kname, d, n)
    if impl == "latentdiv":
        def f(x, y):
            kw = dict(kernel=kernel, bandwidth=bw, **opts)
            return (latentdiv.pairwise_sum(x, **kw) + latentdiv.pairwise_sum(y, **kw)
                    - 2.0 * latentdiv.pairwise_sum(x, y, **kw))
        return f
    if impl in ("torch_matmul", "torch_cdist"):
        r2f = _r2_matmul if impl == "torch_matmul" else _r2_cdist
        if kernel in ("energy", "laplacian") and impl == "torch_matmul":
            pass  # sqrt of a clamped r2: the diagonal's gradient is NaN-prone; still what users write
        def f(x, y):
            k = lambda a, b: _formula_r2(kernel, r2f(a, b), bw, opts, d).sum()
            return k(x, x) + k(y, y) - 2.0 * k(x, y)
        return f
    if impl == "chunked":
        spec = get_kernel(kernel)
        def f(x, y):
            s = lambda a, b: reference.pairwise_sum(a, b, None, None, spec, bw, opts, False)
            return s(x, None) + s(y, None) - 2.0 * s(x, y)
        return f
    if impl == "pykeops":
        if not HAVE_KEOPS or kernel == "cramer_wold":
            return None
        def f(x, y):
            def s(a, b):
                A, B = LazyTensor(a[:, None, :]), LazyTensor(b[None, :, :])
                r2 = ((A - B) ** 2).sum(-1)
                if kernel == "gaussian":
                    k = (-r2 / (2.0 * bw * bw)).exp()
                elif kernel == "imq":
                    k = sum(c / (c + r2) for c in bw)
                elif kernel == "imq_sqrt":
                    k = (bw / (bw + r2)).sqrt()
                elif kernel == "laplacian":
                    k = (-r2.sqrt() / bw).exp()
                elif kernel == "energy":
                    k = -r2.sqrt()
                else:
                    k = (opts["gamma"] + r2 / (2.0 * opts["dim"] - 3.0)).rsqrt()
                return k.sum(1).sum()
            return s(x, x) + s(y, y) - 2.0 * s(x, y)
        return f
    if impl == "geomloss":
        if not HAVE_GEOMLOSS or kernel not in ("gaussian", "energy", "laplacian"):
            return None
        loss = SamplesLoss(kernel, blur=float(bw), backend="online")
        nx = n
        # geomloss returns (1/2) MMD^2 with uniform weights 1/n; rescale to the sum convention.
        return lambda x, y: loss(x, y) * (2.0 * nx * nx)
    raise ValueError(impl)


def mmd_flops(kname: str, d: int, n: int, mode: str) -> float:
    kf = kernel_setup(kname, d, n)[3]
    value = 2 * d + 3 + kf
    grad = 4 * d + 5 + kf
    return float(n) * n * (3 * value + (2 * grad if mode == "fwdbwd" else 0))


def pdist_flops(d: int, n: int, mode: str) -> float:
    fwd = n * (n - 1) / 2.0 * (2 * d + 13)
    return fwd + (float(n) * n * (2 * d + 5) if mode == "fwdbwd" else 0.0)


def plain_torch_bytes(n: int, mode: str, impl: str) -> float:
    """Rough peak of the n x n float32 temporaries plain torch keeps (3 terms x ~4 matrices, autograd)."""
    per = 4.0 * n * n
    return per * (4 if mode == "fwd" else 8)


def sgemm_gflops(size: int = 2048, repeats: int = 3) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2.0 * size ** 3 / best / 1e9


class PeakMemory:
    """Extra peak resident memory of a block (Linux: VmHWM reset through /proc/self/clear_refs)."""

    def __enter__(self):
        self.ok = os.path.exists("/proc/self/clear_refs")
        if self.ok:
            try:
                with open("/proc/self/clear_refs", "w") as fh:
                    fh.write("5")
            except OSError:
                self.ok = False
        self.before = _status_kb("VmRSS") if self.ok else None
        return self

    def __exit__(self, *exc):
        self.extra_bytes = (_status_kb("VmHWM") - self.before) * 1024 if self.ok else None


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0
