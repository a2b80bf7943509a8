"""``latentdiv check [FILE]``: are my latents N(0, I)?

Reads an (n, D) sample from .npy, .npz (first array or --key), .pt (a tensor, or a dict holding one
tensor or --key) or .csv (numeric, header allowed), runs :func:`latentdiv.stats.normality_report` and
prints it (``--json`` for machines, ``--plot out.png`` for people). Exit status: 0 if no test rejects at
``--alpha`` (Holm-corrected), 1 if some test rejects, 2 for unusable input. Without FILE: a built-in
example, a Gaussian sample next to a moment-matched (mean 0, covariance I) non-Gaussian mixture.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

import numpy as np


class InputError(Exception):
    """Unusable input: reported on stderr with exit status 2."""


def add_check_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("check", help="normality tests: are the latents in FILE N(0, I)?",
                       description=__doc__.split("\n\n")[0] + " " + __doc__.split("\n\n")[1])
    p.add_argument("file", nargs="?", help=".npy, .npz, .pt or .csv holding an (n, D) array; omit for the built-in example")
    p.add_argument("--key", help="array name in a .npz / key in a .pt dict")
    p.add_argument("--target", choices=("standard", "estimated"), default="standard",
                   help="standard: H0 = N(0, I) (default); estimated: H0 = some Gaussian N(mu, Sigma)")
    p.add_argument("--alpha", type=float, default=0.05, help="family-wise level (Holm) for pass/fail (default 0.05)")
    p.add_argument("--n-resamples", type=int, default=1000, help="Monte Carlo null replicates (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the Monte Carlo nulls and random projections (default 0)")
    p.add_argument("--tests", help="comma-separated test ids or families (default: all)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--plot", metavar="PNG", help="write Q-Q plots (radii, distances, projections) and a 2-D projection scatter")
    p.add_argument("--no-progress", action="store_true", help="no progress bar for the Monte Carlo work")
    return p


# ---------------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------------
def load_sample(path: str, key: Optional[str] = None) -> np.ndarray:  # -> [n, D] float64
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif ext == ".npz":
            with np.load(path, allow_pickle=False) as f:
                names = list(f.files)
                if not names:
                    raise InputError(f"{path}: the .npz archive holds no array")
                if key is not None and key not in names:
                    raise InputError(f"{path}: no array {key!r} (arrays: {', '.join(names)})")
                arr = f[key if key is not None else names[0]]
        elif ext in (".pt", ".pth"):
            arr = _load_torch(path, key)
        elif ext in (".csv", ".txt"):
            arr = _load_csv(path)
        else:
            raise InputError(f"{path}: unknown extension {ext!r} (use .npy, .npz, .pt or .csv)")
    except InputError:
        raise
    except Exception as exc:  # corrupt files raise many types (ValueError, OSError, pickle errors...)
        raise InputError(f"{path}: cannot read it as {ext or 'a data file'}: {exc}") from exc
    arr = np.asarray(arr)
    if arr.dtype.kind not in "fiu":
        raise InputError(f"{path}: the array must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise InputError(f"{path}: need a 2-D (n, D) array, got shape {arr.shape}")
    return arr.astype(np.float64)


def _load_torch(path: str, key: Optional[str]) -> np.ndarray:
    import torch

    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, torch.Tensor):
        return obj.detach().to(torch.float64).numpy() if obj.is_floating_point() else obj.numpy()
    if isinstance(obj, dict):
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if key is not None:
            if key not in tensors:
                raise InputError(f"{path}: no tensor {key!r} (tensors: {', '.join(map(str, tensors)) or 'none'})")
            t = tensors[key]
        elif len(tensors) == 1:
            t = next(iter(tensors.values()))
        else:
            raise InputError(f"{path}: the dict holds {len(tensors)} tensors ({', '.join(map(str, tensors))}); "
                             "choose one with --key")
        return t.detach().to(torch.float64).numpy() if t.is_floating_point() else t.numpy()
    raise InputError(f"{path}: expected a tensor or a dict of tensors, got {type(obj).__name__}")


def _load_csv(path: str) -> np.ndarray:
    with open(path) as f:
        first = f.readline()
    try:
        [float(c) for c in first.strip().split(",")]
        skip = 0
    except ValueError:
        skip = 1  # a header line
    arr = np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2)
    return arr


def validate(arr: np.ndarray, target: str, what: str) -> None:
    from .stats import MIN_SAMPLES

    n, d = arr.shape
    if n < MIN_SAMPLES or d < 1:
        raise InputError(f"{what}: need n >= {MIN_SAMPLES} rows and D >= 1 columns, got shape {arr.shape}")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise InputError(f"{what}: {rows.size} row(s) contain NaN or inf (first: {rows[:5].tolist()}); "
                         "remove them before testing")
    if target == "estimated" and n < d + 2:
        raise InputError(f"{what}: target 'estimated' needs n >= D + 2, got shape {arr.shape}")


# ---------------------------------------------------------------------------------------------------
# plotting
# ---------------------------------------------------------------------------------------------------
def write_plot(z: np.ndarray, path: str, target: str, seed: int, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise InputError("--plot needs matplotlib: pip install 'latentdiv[plot]' (or pip install matplotlib)") from exc
    import torch
    from scipy import special as sp
    from scipy import stats as st

    from . import pdist
    from .stats import _common as C

    y = torch.from_numpy(z)
    if target == "estimated":
        y = C.whiten(y)
    n, d = y.shape
    yn = y.numpy()
    rng = C.rng_for(seed, 1)
    theta = rng.standard_normal((d, 4))
    theta /= np.linalg.norm(theta, axis=0, keepdims=True)
    proj = yn @ theta  # [n, 4]
    radii = np.sort(np.linalg.norm(yn, axis=1))
    dist = pdist(y).numpy()
    if dist.size > 20000:  # a Q-Q plot needs no more points than the eye can see
        dist = rng.choice(dist, 20000, replace=False)
    dist = np.sort(dist)

    def q(m):
        return (np.arange(1, m + 1) - 0.5) / m

    fig, axes = plt.subplots(2, 2, figsize=(10, 9))
    ax = axes[0, 0]
    ax.plot(st.chi.ppf(q(radii.size), d), radii, ".", ms=3)
    ax.set(title=f"radii vs chi_{d}", xlabel="chi_D quantiles", ylabel="sorted ||z_i||")
    ax = axes[0, 1]
    ax.plot(np.sqrt(2.0) * st.chi.ppf(q(dist.size), d), dist, ".", ms=2)
    ax.set(title=f"pairwise distances vs sqrt(2) chi_{d}", xlabel="sqrt(2) chi_D quantiles", ylabel="sorted ||z_i - z_j||")
    ax = axes[1, 0]
    nq = sp.ndtri(q(n))
    for l in range(proj.shape[1]):
        ax.plot(nq, np.sort(proj[:, l]), ".", ms=3, label=f"direction {l + 1}")
    ax.set(title="random projections vs N(0, 1)", xlabel="N(0, 1) quantiles", ylabel="sorted z . theta")
    ax.legend(fontsize=8)
    ax = axes[1, 1]
    ax.plot(proj[:, 0], proj[:, 1], ".", ms=3)
    t = np.linspace(0, 2 * np.pi, 200)
    for rad in (1.0, 2.0, 3.0):
        ax.plot(rad * np.cos(t), rad * np.sin(t), "k-", lw=0.5)
    ax.set(title="two random projections (circles: 1, 2, 3 sd)", xlabel="direction 1", ylabel="direction 2", aspect="equal")
    for a in axes.flat[:3]:
        lo, hi = a.get_xlim()
        a.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------
def _report(z, args, tests):
    from .stats import normality_report

    return normality_report(z, target=args.target, alpha=args.alpha, n_resamples=args.n_resamples,
                            generator=args.seed, tests=tests, progress=not args.no_progress and not args.json)


def run_check(args) -> int:
    from .stats import alternatives

    if not 0 < args.alpha < 1:
        print("latentdiv check: --alpha must be in (0, 1)", file=sys.stderr)
        return 2
    if args.n_resamples < 1 or args.seed < 0:
        print("latentdiv check: --n-resamples must be >= 1 and --seed >= 0", file=sys.stderr)
        return 2
    tests = None if not args.tests else [t.strip() for t in args.tests.split(",") if t.strip()]
    try:
        if args.file is None:
            rng = np.random.default_rng(args.seed)
            n, d = 256, 64
            samples = [("Gaussian N(0, I)", alternatives.gaussian(rng, n, d)),
                       (f"moment-matched mixture (mean 0, covariance I, a = {alternatives.MIXTURE_OFFSET})",
                        alternatives.matched_mixture(rng, n, d))]
            if not args.json:
                print(f"No FILE given: built-in example, two {n} x {d} samples with the same mean (0) and "
                      "covariance (I).\nOnly the first is Gaussian; which tests notice?\n")
        else:
            samples = [(args.file, load_sample(args.file, args.key))]
        for what, z in samples:
            validate(z, args.target, what)
        reports = [(what, _report(z, args, tests)) for what, z in samples]
        if args.plot:
            what, z = samples[-1]
            write_plot(z, args.plot, args.target, args.seed, what)
    except InputError as exc:
        print(f"latentdiv check: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # e.g. a singular covariance under --target estimated, an unknown --tests id
        print(f"latentdiv check: {exc}", file=sys.stderr)
        return 2
    if args.json:
        out = [dict(r.to_dict(), sample=what) for what, r in reports]
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2))
    else:
        for what, r in reports:
            print(f"== {what}")
            print(r)
            print()
        if args.plot:
            print(f"plots written to {args.plot}")
    if args.file is None:
        return 0  # the example demonstrates; it does not judge a user's data
    return 0 if reports[0][1].passed else 1


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="latentdiv")
    sub = parser.add_subparsers(dest="command")
    add_check_parser(sub)
    args = parser.parse_args(["check", *(argv or [])])
    return run_check(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
