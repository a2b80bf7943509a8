"""Power (and size) of every test of latentdiv.stats against named alternatives, at latent-like sizes.

    PYTHONPATH=python python benchmarks/power_study.py --reps 40 --n-resamples 200      # docs/stats.md table
    PYTHONPATH=python python benchmarks/power_study.py --hz-beta-scan --reps 40          # default-beta choice

Prints Markdown tables of rejection rates at alpha = 0.05 (raw per-test p-values, no multiplicity
correction) over --reps samples per (alternative, D). Samples and nulls are seeded: the tables are
reproducible. Monte Carlo error of a rate p over R reps: sqrt(p (1 - p) / R).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from latentdiv import stats
from latentdiv.stats import alternatives
from latentdiv.stats.report import TEST_IDS


def power_table(n, dims, reps, n_resamples, target, alpha, seed):
    rows = {}
    for d in dims:
        for name, sampler in alternatives.ALTERNATIVES.items():
            rng = np.random.default_rng([seed, d, list(alternatives.ALTERNATIVES).index(name)])
            rej = np.zeros(len(TEST_IDS))
            for _ in range(reps):
                rep = stats.normality_report(sampler(rng, n, d), target=target, n_resamples=n_resamples,
                                             generator=seed)
                rej += np.array([r["pvalue"] < alpha for r in rep.rows])
            rows[(d, name)] = rej / reps
    return rows


def hz_beta_scan(n, dims, reps, n_resamples, alpha, seed, scales):
    out = {}
    for d in dims:
        for name, sampler in alternatives.ALTERNATIVES.items():
            rng = np.random.default_rng([seed, d, list(alternatives.ALTERNATIVES).index(name)])
            samples = [sampler(rng, n, d) for _ in range(reps)]
            for label, beta in [(f"{c:g}/sqrt(D)", c / math.sqrt(d)) for c in scales] + [("classical", "classical")]:
                p = [stats.henze_zirkler(z, beta=beta, n_resamples=n_resamples, generator=seed).pvalue for z in samples]
                out[(d, name, label)] = float(np.mean(np.array(p) < alpha))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--dims", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--n-resamples", type=int, default=200)
    ap.add_argument("--target", default="standard", choices=("standard", "estimated"))
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hz-beta-scan", action="store_true")
    ap.add_argument("--scales", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    args = ap.parse_args()
    t0 = time.perf_counter()
    names = list(alternatives.ALTERNATIVES)
    if args.hz_beta_scan:
        res = hz_beta_scan(args.n, args.dims, args.reps, args.n_resamples, args.alpha, args.seed, args.scales)
        labels = [f"{c:g}/sqrt(D)" for c in args.scales] + ["classical"]
        print(f"Henze-Zirkler rejection rate at alpha={args.alpha}, target=standard, n={args.n}, "
              f"{args.reps} reps, B={args.n_resamples}")
        print("| D | alternative | " + " | ".join(f"beta = {l}" for l in labels) + " |")
        print("|---|---|" + "---|" * len(labels))
        for d in args.dims:
            for name in names:
                print(f"| {d} | {name} | " + " | ".join(f"{res[(d, name, l)]:.2f}" for l in labels) + " |")
    else:
        res = power_table(args.n, args.dims, args.reps, args.n_resamples, args.target, args.alpha, args.seed)
        print(f"Rejection rate at alpha={args.alpha} (raw p-values), target={args.target}, n={args.n}, "
              f"{args.reps} reps, B={args.n_resamples}")
        for d in args.dims:
            print(f"\nD = {d}\n")
            print("| test | " + " | ".join(names) + " |")
            print("|---|" + "---|" * len(names))
            for i, tid in enumerate(TEST_IDS):
                print(f"| {tid} | " + " | ".join(f"{res[(d, name)][i]:.2f}" for name in names) + " |")
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
