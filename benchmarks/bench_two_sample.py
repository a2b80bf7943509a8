"""Permutation MMD two-sample test, side by side in one process: latentdiv.stats.mmd_test (all
permutations in one batched engine pass) against a plain-torch permutation loop (the kernel matrix
computed once, then one matrix-vector product per permutation) and alibi-detect's MMDDrift with its
PyTorch backend (kernel matrix once, then the permuted matrix per permutation), when alibi-detect is
importable. The same data, the same gaussian kernel exp(-r^2 / (2 h^2)) with one fixed h (the median
heuristic of the pooled sample, computed once and passed to every implementation), the same number of
permutations. Prints a markdown table and writes JSON (``--out``).

    PYTHONPATH=python python benchmarks/bench_two_sample.py --sizes 2000 10000 --dim 32 --perms 500

``--baseline-perms K`` (optional) times the two baselines on K permutations only at sizes above
``--baseline-full-max`` and extrapolates their permutation loop linearly to ``--perms`` (the loop is
the same operation per permutation); the table marks such rows. Timings: wall clock, median of
``--repeats`` runs for latentdiv and the plain loop (one run for alibi-detect).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import torch

import latentdiv
from latentdiv.stats import mmd_test


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


def alibi_perm_test(x: torch.Tensor, y: torch.Tensor, h: float, perms: int):
    from alibi_detect.cd import MMDDrift

    start = time.perf_counter()
    # Its GaussianRBF with sigma = our h; configure_kernel_from_x_ref=False keeps it (by default
    # MMDDrift re-estimates sigma from x_ref).
    cd = MMDDrift(x.numpy(), backend="pytorch", p_val=0.05, n_permutations=perms, device="cpu",
                  sigma=np.array([h], dtype=np.float32), configure_kernel_from_x_ref=False)
    setup = time.perf_counter() - start
    start = time.perf_counter()
    pred = cd.predict(y.numpy())
    return pred["data"]["distance"], pred["data"]["p_val"], setup + time.perf_counter() - start


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000])
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--perms", type=int, default=500)
    ap.add_argument("--shift", type=float, default=0.03, help="mean shift of y in every coordinate")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--baseline-perms", type=int, default=None)
    ap.add_argument("--baseline-full-max", type=int, default=2000)
    ap.add_argument("--no-alibi", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    try:
        import alibi_detect  # noqa: F401
        have_alibi = not args.no_alibi
    except ImportError:
        have_alibi = False
    info = dict(cpu=_cpu_name(), threads=torch.get_num_threads(),
                load_before=os.getloadavg(), torch=torch.__version__, isa=latentdiv.backend_info().get("cpu_isa_best"))
    rows = []
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
        if have_alibi:
            start = time.perf_counter()
            _, _, kernel_only = alibi_perm_test(x, y, h, 1)  # the permutation-independent part
            t_one = time.perf_counter() - start
            start = time.perf_counter()
            dist, p, _ = alibi_perm_test(x, y, h, base_perms)
            t_run = time.perf_counter() - start
            per_perm = max(t_run - t_one, 0.0) / max(base_perms - 1, 1)
            row.update(alibi_seconds=t_run + per_perm * (args.perms - base_perms), alibi_stat=dist, alibi_p=p)
        rows.append(row)
        print(json.dumps(row), flush=True)
    info["load_after"] = os.getloadavg()
    print(f"\nCPU: {info['cpu']}, {info['threads']} threads, ISA {info['isa']}, torch {info['torch']}, "
          f"load average before {info['load_before'][0]:.1f}, after {info['load_after'][0]:.1f}")
    print("| n = m | D | B | latentdiv s | plain torch s | alibi-detect s | p latentdiv | p torch | p alibi |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        mark = " (extrapolated from %d perms)" % r["baseline_perms_run"] if r["baseline_perms_run"] != r["perms"] else ""
        al = f"{r['alibi_seconds']:.1f}{mark}" if "alibi_seconds" in r else "n/a"
        pa = f"{r['alibi_p']:.3f}" if "alibi_p" in r else "n/a"
        pa_note = "" if "alibi_p" not in r or r["baseline_perms_run"] == r["perms"] else f" ({r['baseline_perms_run']} perms)"
        print(f"| {r['n']} | {r['dim']} | {r['perms']} | {r['latentdiv_seconds']:.2f} | {r['torch_seconds']:.1f}{mark} | "
              f"{al} | {r['latentdiv_p']:.3f} | {r['torch_p']:.3f} | {pa}{pa_note} |")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(dict(info=info, rows=rows), fh, indent=2)


if __name__ == "__main__":
    main()
