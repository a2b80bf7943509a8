"""The quick side-by-side: forward+backward (dX) of the gaussian MMD^2(X, Y) with latentdiv next to
what users write today (plain torch: cdist or the matmul form of r2, exp, sum, autograd), in one
process, and the ratio. The full suite (every kernel, n from 256 to 65536, peers, memory) is
test_bench.py; this script is the one-screen answer.

    PYTHONPATH=python python benchmarks/ratio_vs_torch.py            # n = 4096, D = 8 and 64
    python benchmarks/ratio_vs_torch.py --n 2048 --dims 2 8 32 --repeats 5
    python benchmarks/ratio_vs_torch.py --pdist                      # pdist vs torch.pdist instead
"""

from __future__ import annotations

import argparse
import time

import torch

import latentdiv
from bench_lib import mmd_fn


def best_time(fn, x, y, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        xg = x.detach().requires_grad_(True)
        t0 = time.perf_counter()
        fn(xg, y).backward()
        best = min(best, time.perf_counter() - t0)
    return best


def pdist_times(pdist, x, w, repeats: int):
    """Best forward, and best forward + backward of sum(w * pdist(x)) (a non-uniform upstream gradient,
    as in a loss on the distances)."""
    fwd, fwdbwd = float("inf"), float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        pdist(x)
        fwd = min(fwd, time.perf_counter() - t0)
        xg = x.detach().requires_grad_(True)
        t0 = time.perf_counter()
        (pdist(xg) * w).sum().backward()
        fwdbwd = min(fwdbwd, time.perf_counter() - t0)
    return fwd, fwdbwd


def main_pdist(args) -> None:
    print(f"{'D':>4} {'mode':>7} {'latentdiv':>11} {'torch.pdist':>12} {'ratio':>7}")
    gen = torch.Generator().manual_seed(0)
    for d in args.dims:
        x = torch.randn(args.n, d, generator=gen)
        w = torch.randn(args.n * (args.n - 1) // 2, generator=gen)
        ours = pdist_times(latentdiv.pdist, x, w, args.repeats)
        theirs = pdist_times(torch.pdist, x, w, args.repeats)
        for mode, a, b in zip(("fwd", "fwdbwd"), ours, theirs):
            print(f"{d:>4} {mode:>7} {a * 1e3:>9.1f}ms {b * 1e3:>10.1f}ms {b / a:>6.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--dims", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pdist", action="store_true", help="compare latentdiv.pdist with torch.pdist instead")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile(plain torch) column")
    args = parser.parse_args()
    info = latentdiv.backend_info()
    print(f"latentdiv {latentdiv.__version__}: backend {info['backend']}, CPU ISA {info.get('cpu_isa_selected')}, "
          f"{info['threads']} threads; torch {torch.__version__}; float32, n = {args.n}, best of {args.repeats}")
    if args.pdist:
        main_pdist(args)
        return
    print(f"{'D':>4} {'latentdiv':>11} {'torch cdist':>12} {'torch matmul':>13} {'compiled matmul':>16} "
          f"{'ratio (best eager)':>19} {'ratio (compiled)':>17}")
    gen = torch.Generator().manual_seed(0)
    for d in args.dims:
        x = torch.randn(args.n, d, generator=gen)
        y = torch.randn(args.n, d, generator=gen)
        times = {impl: best_time(mmd_fn(impl, "gaussian", d, args.n), x, y, args.repeats)
                 for impl in ("latentdiv", "torch_cdist", "torch_matmul")}
        best_torch = min(times["torch_cdist"], times["torch_matmul"])
        # torch.compile of the same plain-torch code (the fair anchor, issue 11), compiled and warmed up
        # outside the timing; a compile failure is reported as such.
        compiled_text, ratio_text = "failed", "-"
        if not args.no_compile:
            try:
                torch._dynamo.reset()
                fn = torch.compile(mmd_fn("torch_matmul", "gaussian", d, args.n))
                best_time(fn, x, y, 1)
                t = best_time(fn, x, y, args.repeats)
                compiled_text, ratio_text = f"{t:.3f}s", f"{t / times['latentdiv']:.1f}x"
            except Exception as exc:  # noqa: BLE001 - recorded, not fatal
                print(f"torch.compile failed at D = {d}: {type(exc).__name__}: {exc}")
        else:
            compiled_text = "skipped"
        print(f"{d:>4} {times['latentdiv']:>10.3f}s {times['torch_cdist']:>11.3f}s {times['torch_matmul']:>12.3f}s "
              f"{compiled_text:>16} {best_torch / times['latentdiv']:>18.1f}x {ratio_text:>17}")


if __name__ == "__main__":
    main()
