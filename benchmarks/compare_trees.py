"""Before / after on a noisy shared machine: the per-call time of losses of the catalog (forward +
backward from a fresh leaf, one torch thread, thread CPU time of the fastest block,
training_lib.time_calls) in two checkouts, each in its own process, the processes alternating for
``--rounds`` rounds; prints the median per tree and the ratio after / before.

    PYTHONPATH=python python benchmarks/compare_trees.py BEFORE_TREE AFTER_TREE [--n 128] [--d 8] [--rounds 5]

A tree is a checkout with its built module in python/latentdiv (tools/dev_build.sh). The loss
definitions are this checkout's (training_lib.LATENTDIV, public API only), so both trees run the
same calls.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def child(tree: str, n: int, d: int, losses, inner: int, blocks: int) -> None:
    """In a fresh process: the tree's latentdiv first on the path, then time every loss."""
    sys.path.insert(0, os.path.join(os.path.abspath(tree), "python"))
    sys.path.insert(1, HERE)
    import torch

    torch.set_num_threads(1)
    import training_lib as tl

    gen = torch.Generator().manual_seed(0)
    z, prior = torch.randn(n, d, generator=gen), torch.randn(n, d, generator=gen)
    fns = {name: tl.LATENTDIV[name] for name in losses}
    times = tl.time_calls(fns, z, prior, inner=inner, blocks=blocks, clock="thread")
    import latentdiv

    print(json.dumps({"module": latentdiv.__file__, "times": times}))


def run_child(tree: str, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", tree, "--n", str(args.n), "--d", str(args.d),
           "--inner", str(args.inner), "--blocks", str(args.blocks), "--losses", *args.losses]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only the tree's module
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"timing in {tree} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trees", nargs="*", help="BEFORE_TREE AFTER_TREE")
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--d", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--inner", type=int, default=100)
    parser.add_argument("--blocks", type=int, default=9)
    parser.add_argument("--losses", nargs="+", default=None,
                        help="names of training_lib.LATENTDIV (default: every engine-backed one)")
    parser.add_argument("--child", metavar="TREE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # (before importing latentdiv here: the child's must be the tree's)
        child(args.child, args.n, args.d, args.losses, args.inner, args.blocks)
        return 0
    sys.path.insert(0, HERE)
    import training_lib as tl

    if args.losses is None:
        args.losses = [k for k in tl.LATENTDIV if k != "sliced_wasserstein"]
    unknown = sorted(set(args.losses) - set(tl.LATENTDIV))
    if unknown:
        parser.error(f"unknown losses {unknown}; choose from {list(tl.LATENTDIV)}")
    if len(args.trees) != 2:
        parser.error("give two trees: BEFORE_TREE AFTER_TREE")
    runs = {tree: [] for tree in args.trees}
    for _ in range(args.rounds):
        for tree in args.trees:
            result = run_child(tree, args)
            runs[tree].append(result["times"])
    before, after = args.trees
    print(f"n = {args.n}, D = {args.d}, 1 thread, thread CPU time per fwd+bwd, median of {args.rounds} "
          f"alternating runs\n{'loss':22s} {'before':>10s} {'after':>10s} {'after/before':>13s}")
    for name in args.losses:
        b = statistics.median(r[name] for r in runs[before])
        a = statistics.median(r[name] for r in runs[after])
        print(f"{name:22s} {b * 1e6:8.1f}us {a * 1e6:8.1f}us {a / b:13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
