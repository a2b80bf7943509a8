"""Permutation MMD two-sample test, side by side in one process: latentdiv.stats.mmd_test (all
permutations in one batched engine pass) against a plain-torch permutation loop (the kernel matrix
computed once, then one matrix-vector product per permutation) and alibi-detect's MMDDrift with its
PyTorch backend (kernel matrix once, then the permuted matrix per permutation) and its KeOps backend
(no kernel matrix: symbolic LazyTensor reductions, all permutations batched, the n^2 pairs evaluated
again for each permutation), when alibi-detect (and pykeops, for the KeOps column) is importable; a column
whose library is missing or fails is skipped and its error recorded in the JSON. The same data, the
same gaussian kernel exp(-r^2 / (2 h^2)) with one fixed h (the median heuristic of the pooled sample,
computed once and passed to every implementation), the same number of permutations. Prints a
markdown table and writes JSON (``--out``).

    PYTHONPATH=python python benchmarks/bench_two_sample.py --sizes 2000 10000 --dim 32 --perms 500

``--baseline-perms K`` (optional) times the plain loop and alibi-detect's PyTorch backend on K
permutations only at sizes above ``--baseline-full-max`` and extrapolates their permutation loop
linearly to ``--perms`` (the loop is the same operation per permutation); ``--keops-perms K`` and
``--keops-full-max`` do the same for the KeOps backend; the table marks such cells. Without them every
implementation runs all ``--perms`` permutations. KeOps compiles its formulas with a C++ compiler at
first use: a small warm-up call (same D, excluded from the timing) does that before the timed run.
Timings: wall clock, median of ``--repeats`` runs for latentdiv and the plain loop (one run for
alibi-detect). ``--partial PATH`` rewrites PATH (JSON) after every measurement, so a long run that is
stopped keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

import latentdiv
from latentdiv.stats import mmd_test

sys.path.insert(0, os.path.dirname(__file__))
from training_lib import cpu_name  # noqa: E402  (benchmarks/: the CPU's model name)


def plain_torch_perm_test(x: torch.Tensor, y: torch.Tensor, h: float, perms: int, seed: int):
    """Unbiased MMD^2 and its permutation p-value with plain torch: K (float32, [N, N]) once, then
    a^T K0 a per permutation (K0 = K with a zero diagonal), with the row sums for the cross term."""
    z = torch.cat([x, y])
    total, n = z.shape[0], x.shape[0]
    m = total - n
    rows_k = []
    for i0 in range(0, total, 2048):
        d2 = torch.cdist(z[i0:i0 + 2048], z).square_()
        rows_k.append(torch.exp(d2.mul_(-0.5 / (h * h))))
    k = torch.cat(rows_k)
    k.fill_diagonal_(0.0)
    r = k.sum(dim=1, dtype=torch.float64)
    grand = float(r.sum())
    gen = torch.Generator().manual_seed(seed)

    def stat(a: torch.Tensor) -> float:  # a: [N] 0/1 float32
        s_xx = float(torch.dot(a, torch.mv(k, a)))
        ar = float((a.double() * r).sum())
        s_yy = grand - 2 * ar + s_xx
        return s_xx / (n * (n - 1)) + s_yy / (m * (m - 1)) - 2 * (ar - s_xx) / (n * m)

    a0 = torch.zeros(total)
    a0[:n] = 1.0
    observed = stat(a0)
    t_loop = time.perf_counter()
    null = []
    for _ in range(perms):
        a = torch.zeros(total)
        a[torch.randperm(total, generator=gen)[:n]] = 1.0
        null.append(stat(a))
    loop_seconds = time.perf_counter() - t_loop
    null = np.asarray(null)
    return observed, float((1 + np.count_nonzero(null >= observed)) / (1 + perms)), loop_seconds


def alibi_perm_test(x: torch.Tensor, y: torch.Tensor, h: float, perms: int, backend: str = "pytorch"):
    """alibi-detect's MMDDrift with ``backend`` ("pytorch" or "keops"); returns its MMD^2, its p-value
    (the fraction of permuted statistics >= the observed one, the observed one not counted) and the
    seconds of construction + predict."""
    from alibi_detect.cd import MMDDrift

    start = time.perf_counter()
    # Its GaussianRBF with sigma = our h; configure_kernel_from_x_ref=False keeps it (by default
    # MMDDrift re-estimates sigma from x_ref).
    cd = MMDDrift(x.numpy(), backend=backend, p_val=0.05, n_permutations=perms, device="cpu",
                  sigma=np.array([h], dtype=np.float32), configure_kernel_from_x_ref=False)
    setup = time.perf_counter() - start
    start = time.perf_counter()
    pred = cd.predict(y.numpy())
    return float(pred["data"]["distance"]), float(pred["data"]["p_val"]), setup + time.perf_counter() - start


def _have_keops() -> str | None:
    """None when alibi-detect's KeOps backend can run here, else why not (the error message)."""
    try:
        import pykeops  # noqa: F401
        from alibi_detect.cd.keops.mmd import MMDDriftKeops  # noqa: F401
    except Exception as exc:  # ImportError, or pykeops failing to set itself up
        return f"{type(exc).__name__}: {exc}"
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000])
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--perms", type=int, default=500)
    ap.add_argument("--shift", type=float, default=0.03, help="mean shift of y in every coordinate")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--baseline-perms", type=int, default=None)
    ap.add_argument("--baseline-full-max", type=int, default=2000)
    ap.add_argument("--keops-perms", type=int, default=None)
    ap.add_argument("--keops-full-max", type=int, default=2000)
    ap.add_argument("--no-alibi", action="store_true")
    ap.add_argument("--no-keops", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--partial", default=None, help="JSON rewritten after every measurement")
    args = ap.parse_args()

    try:
        import alibi_detect
        have_alibi = not args.no_alibi
        alibi_version = alibi_detect.__version__
    except ImportError:
        have_alibi, alibi_version = False, None
    keops_error = "not requested (--no-keops)" if args.no_keops else (
        "alibi-detect not importable" if not have_alibi else _have_keops())
    info = dict(cpu=cpu_name(), threads=torch.get_num_threads(), load_before=os.getloadavg(),
                torch=torch.__version__, isa=latentdiv.backend_info().get("cpu_isa_best"),
                numpy=np.__version__, alibi_detect=alibi_version, nice=os.nice(0))
    rows = []

    def checkpoint(row):
        if args.partial:
            with open(args.partial, "w") as fh:
                json.dump(dict(info=info, rows=rows + ([row] if row not in rows else [])), fh, indent=2)

    if keops_error is None:
        try:  # compile KeOps' formulas for this D once, outside the timing
            import pykeops
            start = time.perf_counter()
            warm = torch.randn(64, args.dim)
            alibi_perm_test(warm, warm + 1.0, 1.0, 2, backend="keops")
            info.update(keops_warmup_seconds=time.perf_counter() - start, pykeops=pykeops.__version__)
        except Exception as exc:
            keops_error = f"{type(exc).__name__}: {exc}"
    info["keops_error"] = keops_error
    for n in args.sizes:
        gen = torch.Generator().manual_seed(n)
        x = torch.randn(n, args.dim, generator=gen)
        y = torch.randn(n, args.dim, generator=gen) + args.shift
        h = latentdiv.median_bandwidth(x, y)
        row = dict(n=n, m=n, dim=args.dim, perms=args.perms, bandwidth=h)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            res = mmd_test(x, y, bandwidth=h, n_permutations=args.perms, generator=1)
            times.append(time.perf_counter() - start)
        row.update(latentdiv_seconds=statistics.median(times), latentdiv_stat=res.statistic, latentdiv_p=res.pvalue)
        checkpoint(row)
        base_perms = args.perms
        if args.baseline_perms is not None and n > args.baseline_full_max:
            base_perms = args.baseline_perms
        row["baseline_perms_run"] = base_perms
        times, loops = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            stat, p, loop = plain_torch_perm_test(x, y, h, base_perms, seed=2)
            times.append(time.perf_counter() - start)
            loops.append(loop)
        fixed = statistics.median(times) - statistics.median(loops)
        row.update(torch_seconds=fixed + statistics.median(loops) * args.perms / base_perms,
                   torch_stat=stat, torch_p=p)
        checkpoint(row)
        if have_alibi:
            if base_perms == args.perms:
                dist, p, t_run = alibi_perm_test(x, y, h, base_perms)
                row.update(alibi_seconds=t_run)
            else:
                _, _, t_one = alibi_perm_test(x, y, h, 1)  # the permutation-independent part
                dist, p, t_run = alibi_perm_test(x, y, h, base_perms)
                per_perm = max(t_run - t_one, 0.0) / max(base_perms - 1, 1)
                row.update(alibi_seconds=t_run + per_perm * (args.perms - base_perms))
            row.update(alibi_stat=dist, alibi_p=p)
            checkpoint(row)
        if keops_error is None:
            keops_perms = args.perms
            if args.keops_perms is not None and n > args.keops_full_max:
                keops_perms = args.keops_perms
            try:
                dist, p, t_run = alibi_perm_test(x, y, h, keops_perms, backend="keops")
                # No kernel matrix: the observed statistic and each permutation cost the same pass over
                # the pairs, so the time scales with perms + 1.
                row.update(keops_perms_run=keops_perms, keops_seconds=t_run * (args.perms + 1) / (keops_perms + 1),
                           keops_stat=dist, keops_p=p)
            except Exception as exc:
                row.update(keops_error=f"{type(exc).__name__}: {exc}")
            checkpoint(row)
        rows.append(row)
        print(json.dumps(row), flush=True)
    info["load_after"] = os.getloadavg()
    print(f"\nCPU: {info['cpu']}, {info['threads']} threads, ISA {info['isa']}, torch {info['torch']}, "
          f"load average before {info['load_before'][0]:.1f}, after {info['load_after'][0]:.1f}")
    if keops_error is not None:
        print(f"KeOps column skipped: {keops_error}")
    print("| n = m | D | B | latentdiv s | plain torch s | alibi PyTorch s | alibi KeOps s | vs alibi PyTorch "
          "| p latentdiv | p torch | p alibi PyTorch | p alibi KeOps |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")

    def cell(r, key, fmt, perms_run):
        if key not in r:
            return "n/a"
        extrapolated = perms_run != r["perms"]
        note = f" ({perms_run} perms{', extrapolated' if key.endswith('seconds') else ''})" if extrapolated else ""
        return format(r[key], fmt) + note

    for r in rows:
        base, kp = r["baseline_perms_run"], r.get("keops_perms_run", r["perms"])
        ratio = f"{r['alibi_seconds'] / r['latentdiv_seconds']:.0f}x" if "alibi_seconds" in r else "n/a"
        print(f"| {r['n']} | {r['dim']} | {r['perms']} | {r['latentdiv_seconds']:.2f} | "
              f"{cell(r, 'torch_seconds', '.1f', base)} | {cell(r, 'alibi_seconds', '.1f', base)} | "
              f"{cell(r, 'keops_seconds', '.1f', kp)} | {ratio} | {r['latentdiv_p']:.3f} | "
              f"{cell(r, 'torch_p', '.3f', base)} | {cell(r, 'alibi_p', '.3f', base)} | "
              f"{cell(r, 'keops_p', '.3f', kp)} |")
    for r in rows:
        if "keops_error" in r:
            print(f"KeOps failed at n = {r['n']}: {r['keops_error']}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(dict(info=info, rows=rows), fh, indent=2)


if __name__ == "__main__":
    main()
