"""``latentdiv check [FILE]``: are my latents N(0, I)?

Reads an (n, D) sample from .npy, .npz (its only array, or --key), .pt (a tensor, or a dict holding
one tensor, or --key), .csv (comma-separated numbers, one header line allowed) or .txt (numbers
separated by whitespace or commas, as ``numpy.savetxt`` writes them), runs
:func:`latentdiv.stats.normality_report` and prints it (``--json`` for machines, ``--plot out.png``
for people). The checks of the sample are the API's own (:func:`latentdiv.stats._common.as_sample`).
Exit status: see :data:`EXIT_STATUS`. Without FILE: a built-in example, a Gaussian sample next to a
moment-matched (mean 0, covariance I) non-Gaussian mixture.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

EXIT_PASS, EXIT_REJECT, EXIT_INPUT, EXIT_PLOT = 0, 1, 2, 3
EXIT_STATUS = f"""exit status:
  {EXIT_PASS}  no test rejects at --alpha after Holm's correction
  {EXIT_REJECT}  some test rejects
  {EXIT_INPUT}  unusable input or options (message on stderr), nothing was computed
  {EXIT_PLOT}  the report was printed but the --plot file could not be written
The built-in example (no FILE) exits {EXIT_PASS} when it ran: it demonstrates the tests on two
samples of its own (the second is meant to fail) and judges no data of yours."""

DESCRIPTION = """Are the latent codes in FILE a sample of N(0, I)? Runs the latentdiv.stats battery
(Mardia, Henze-Zirkler, energy, and Cramer-von Mises / Kolmogorov-Smirnov / Anderson-Darling tests
on radii, pairwise distances, random projections and coordinates) with Holm's correction.

FILE: .npy; .npz (its only array, or --key); .pt (a tensor, or a dict with one tensor, or --key);
.csv (comma-separated, one header line allowed); .txt (whitespace- or comma-separated, as
numpy.savetxt writes). Without FILE: a built-in example, a Gaussian sample next to a moment-matched
(mean 0, covariance I) non-Gaussian mixture.

Large samples are subsampled to --max-n rows (seeded; reported in the output), and a time estimate
is printed on stderr before the Monte Carlo work, with progress lines while it runs."""

DEFAULT_MAX_N = 1000
_TEXT_EXTENSIONS = (".csv", ".txt")
_EXTENSIONS = ".npy, .npz, .pt, .csv or .txt"


class InputError(Exception):
    """Unusable input: reported on stderr with exit status 2."""


def add_check_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("check", help="normality tests: are the latents in FILE N(0, I)?",
                       description=DESCRIPTION, epilog=EXIT_STATUS,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", nargs="?", help=f"{_EXTENSIONS} file holding an (n, D) array; omit for the built-in example")
    p.add_argument("--key", help="array name in a .npz / key in a .pt dict")
    p.add_argument("--target", choices=("standard", "estimated"), default="standard",
                   help="standard: H0 = N(0, I) (default); estimated: H0 = some Gaussian N(mu, Sigma)")
    p.add_argument("--alpha", type=float, default=0.05, help="family-wise level (Holm) for pass/fail (default 0.05)")
    p.add_argument("--n-resamples", type=int, default=1000, help="Monte Carlo null replicates (default 1000)")
    p.add_argument("--max-n", type=int, default=DEFAULT_MAX_N,
                   help=f"test a random subsample of at most this many rows, drawn without replacement with --seed "
                        f"(default {DEFAULT_MAX_N}: the O(n^2) tests then take minutes, not hours; 0 = every row)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the Monte Carlo nulls, random projections and the subsample (default 0)")
    p.add_argument("--tests", help="comma-separated test ids or families (default: all)")
    p.add_argument("--json", action="store_true", help="print the report as JSON (progress still goes to stderr)")
    p.add_argument("--plot", metavar="PNG", help="write Q-Q plots (radii, distances, projections) and a 2-D projection "
                                                 "scatter (needs matplotlib; checked before the work starts)")
    p.add_argument("--no-cache", action="store_true",
                   help="neither read nor write the on-disk cache of Monte Carlo null tables (also: "
                        "LATENTDIV_NULL_CACHE=0; a directory there moves the cache)")
    p.add_argument("--no-progress", action="store_true", help="no time estimate and no progress on stderr")
    return p


# ---------------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------------
def load_sample(path: str, key: Optional[str] = None) -> np.ndarray:  # -> [n, D] float64
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory; give a data file ({_EXTENSIONS})")
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise InputError(f"{path}: not a regular file")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif ext == ".npz":
            arr = _load_npz(path, key)
        elif ext in (".pt", ".pth"):
            arr = _load_torch(path, key)
        elif ext in _TEXT_EXTENSIONS:
            arr = _load_text(path, ext)
        else:
            raise InputError(f"{path}: unknown extension {ext!r} (use {_EXTENSIONS})")
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


def _load_npz(path: str, key: Optional[str]) -> np.ndarray:
    with np.load(path, allow_pickle=False) as f:
        names = list(f.files)
        if not names:
            raise InputError(f"{path}: the .npz archive holds no array")
        if key is not None:
            if key not in names:
                raise InputError(f"{path}: no array {key!r} (arrays: {', '.join(names)})")
            return f[key]
        if len(names) > 1:
            raise InputError(f"{path}: the .npz archive holds {len(names)} arrays ({', '.join(names)}); "
                             "choose one with --key")
        return f[names[0]]


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


def _load_text(path: str, ext: str) -> np.ndarray:
    """Numbers as text: .csv comma-separated; .txt whitespace-separated (numpy.savetxt's default) or
    comma-separated. One header line is allowed. Binary data is refused with a message, not a codec error."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if b"\0" in head:
        raise InputError(f"{path}: not a text file (it holds binary data); a {ext} file must be numbers as text "
                         "(save arrays with numpy.save as .npy)")
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line for line in (f.readline(), f.readline()) if line.strip()]
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a text file (it is not UTF-8 text: {exc.reason}); a {ext} file must be "
                         "numbers as text (save arrays with numpy.save as .npy)") from None
    if not lines:
        raise InputError(f"{path}: the file is empty")
    data_line = lines[-1]
    delimiter = "," if ext == ".csv" or "," in data_line else None
    try:
        [float(c) for c in lines[0].strip().split(delimiter)]
        skip = 0
    except ValueError:
        skip = 1  # a header line
    try:
        return np.loadtxt(path, delimiter=delimiter, skiprows=skip, ndmin=2)
    except ValueError as exc:
        sep = "commas" if delimiter == "," else "whitespace"
        raise InputError(f"{path}: cannot parse it as numbers separated by {sep}: {exc}") from None


def validate(arr: np.ndarray, target: str, what: str) -> None:
    """The API's own checks of a sample (shape, n >= MIN_SAMPLES, NaN/inf rows named, n >= D + 2 for
    the estimated target), reported as InputError."""
    from .stats import _common as C

    try:
        C.as_sample(arr, name=what)
        C.check_estimated_size(arr.shape[0], arr.shape[1], target, name=what)
    except (TypeError, ValueError) as exc:
        raise InputError(str(exc)) from None


def subsample(arr: np.ndarray, max_n: int, seed: int) -> Tuple[np.ndarray, Optional[Dict[str, Any]]]:
    """At most ``max_n`` rows (0: all), drawn uniformly without replacement from a stream of ``seed``
    of its own (the Monte Carlo nulls and directions use other streams), kept in file order."""
    from .stats import _common as C

    n = arr.shape[0]
    if max_n == 0 or n <= max_n:
        return arr, None
    rows = np.sort(C.rng_for(seed, 3).choice(n, size=max_n, replace=False))
    return arr[rows], {"rows_used": int(max_n), "rows_total": int(n), "seed": int(seed),
                       "method": "uniform without replacement"}


def check_plot_target(path: str) -> None:
    """Before any work: matplotlib is importable, the format is known and the file can be written
    (it is opened for appending; a file created by this check is removed again)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError as exc:
        raise InputError("--plot needs matplotlib: pip install 'latentdiv[plot]' (or pip install matplotlib)") from exc
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    formats = FigureCanvasAgg.get_supported_filetypes()
    if ext and ext not in formats:
        raise InputError(f"--plot {path}: unknown image format {ext!r} (use one of {', '.join(sorted(formats))})")
    if os.path.isdir(path):
        raise InputError(f"--plot {path}: is a directory; give a file name such as out.png")
    existed = os.path.exists(path)
    try:
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise InputError(f"--plot {path}: cannot write it: {exc.strerror or exc}") from None
    if not existed:
        os.remove(path)


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
                            generator=args.seed, tests=tests, progress=not args.no_progress,
                            null_cache=False if args.no_cache else None)


def _fmt_seconds(sec: float) -> str:
    if sec < 90:
        return f"{sec:.0f} s"
    if sec < 5400:
        return f"{sec / 60:.0f} min"
    return f"{sec / 3600:.1f} h"


def _usage_error(message: str) -> int:
    print(f"latentdiv check: {message}", file=sys.stderr)
    return EXIT_INPUT


def run_check(args) -> int:
    from ._validation import check_int, check_open_unit
    from .stats import MIN_SAMPLES, alternatives, estimate_seconds, resamples_warning

    try:  # the API's own checks of these options (normality_report makes them too), named as flags
        check_open_unit(args.alpha, "--alpha")
        check_int(args.n_resamples, "--n-resamples", 1)
        check_int(args.seed, "--seed", 0)
    except (TypeError, ValueError) as exc:
        return _usage_error(str(exc))
    if args.max_n != 0 and args.max_n < MIN_SAMPLES:
        return _usage_error(f"--max-n must be 0 (every row) or >= {MIN_SAMPLES}, got {args.max_n}")
    tests = None if not args.tests else [t.strip() for t in args.tests.split(",") if t.strip()]
    try:
        if args.plot:
            check_plot_target(args.plot)
        warning = resamples_warning(args.alpha, args.n_resamples, tests, args.target)  # also checks --tests
        if args.file is None:
            rng = np.random.default_rng(args.seed)
            n, d = 256, 64
            samples = [("Gaussian N(0, I)", alternatives.gaussian(rng, n, d)),
                       (f"moment-matched mixture (mean 0, covariance I, a = {alternatives.MIXTURE_OFFSET})",
                        alternatives.matched_mixture(rng, n, d))]
            if not args.json:
                print(f"No FILE given: built-in example, two {n} x {d} samples with the same mean (0) and "
                      "covariance (I).\nOnly the first is Gaussian; which tests notice?\n"
                      f"(The example exits {EXIT_PASS} when it ran; it judges no data of yours.)\n")
        else:
            samples = [(args.file, load_sample(args.file, args.key))]
        prepared = []
        for what, z in samples:
            validate(z, args.target, what)
            z, sub = subsample(z, args.max_n, args.seed)
            validate(z, args.target, what)  # n >= D + 2 for the estimated target, after subsampling
            prepared.append((what, z, sub))
        if warning:
            print(f"latentdiv check: warning: {warning}", file=sys.stderr)
        if not args.no_progress:
            what, z, sub = prepared[0]
            t0 = time.perf_counter()
            est = estimate_seconds(z, target=args.target, n_resamples=args.n_resamples, tests=tests,
                                   generator=args.seed, null_cache=False if args.no_cache else None)
            est += time.perf_counter() - t0  # nothing of the probe is reused
            # Later samples of the same shape reuse the cached nulls: count their statistics only.
            print(f"latentdiv check: {z.shape[0]} x {z.shape[1]} sample"
                  + (f" (subsample of {sub['rows_total']} rows)" if sub else "")
                  + f", B = {args.n_resamples}: estimated time about {_fmt_seconds(est)} here "
                  "(--max-n, --n-resamples and --tests shorten it)", file=sys.stderr, flush=True)
        reports = [(what, sub, _report(z, args, tests)) for what, z, sub in prepared]
    except (InputError, ValueError) as exc:
        # ValueError: e.g. a singular covariance under --target estimated, an unknown --tests id
        return _usage_error(str(exc))
    if args.json:
        out = [dict(r.to_dict(), sample=what, subsample=sub) for what, sub, r in reports]
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2))
    else:
        for what, sub, r in reports:
            print(f"== {what}")
            if sub:
                print(f"subsample: {sub['rows_used']} of {sub['rows_total']} rows, drawn without replacement "
                      f"(seed {sub['seed']}; --max-n 0 tests every row)")
            print(r)
            print()
    sys.stdout.flush()
    if args.plot:
        what, z, _ = prepared[-1]
        try:
            write_plot(z, args.plot, args.target, args.seed, what)
        except Exception as exc:  # the report is out; say why the picture is not
            print(f"latentdiv check: the report is above, but --plot {args.plot} could not be written: {exc}",
                  file=sys.stderr)
            return EXIT_PLOT
        if not args.json:
            print(f"plots written to {args.plot}")
    if args.file is None:
        return EXIT_PASS  # the example demonstrates; it does not judge a user's data (EXIT_STATUS)
    return EXIT_PASS if reports[0][2].passed else EXIT_REJECT


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="latentdiv")
    sub = parser.add_subparsers(dest="command")
    add_check_parser(sub)
    args = parser.parse_args(["check", *(argv or [])])
    return run_check(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
