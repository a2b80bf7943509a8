"""Training-batch table (issue 11): every loss of the catalog, forward + backward (dz), at the batch
sizes users train with, next to plain torch eager, torch.compile of the same plain-torch code (the
fair anchor: inductor fuses the elementwise work), and the reference implementation users copy from
the method's public repository (plain_losses.py). One process, side by side, blocks of calls
interleaved across the candidates (training_lib.time_calls); at --threads 1 the time is the calling
thread's CPU time of the fastest block (--clock thread), else the median block's wall-clock time.

    PYTHONPATH=python python benchmarks/bench_training.py                       # n 64..512, D 8 32 64
    PYTHONPATH=python python benchmarks/bench_training.py --n 128 --dims 8 --no-compile
    PYTHONPATH=python python benchmarks/bench_training.py --markdown > table.md

Columns: ours | plain eager | plain compiled | reference | overhead floor (one no-op custom op with
autograd, fwd+bwd) and the ratios. A compile failure is recorded as "compile failed" (the message
goes to stderr), not skipped silently.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))

import plain_losses as pl  # noqa: E402
import training_lib as tl  # noqa: E402

LOSSES = list(tl.LATENTDIV)


def fmt(t):
    if t is None:
        return "-"
    if isinstance(t, str):
        return t
    return f"{t * 1e6:.0f} us" if t < 1e-2 else f"{t * 1e3:.1f} ms"


def ratio(a, b):
    if not isinstance(a, float) or not isinstance(b, float):
        return "-"
    return f"{b / a:.1f}x"


def run(ns, dims, losses, use_compile: bool, inner: int, blocks: int, seed: int = 0, clock: str = "wall"):
    rows = []
    for n in ns:
        for d in dims:
            gen = torch.Generator().manual_seed(seed)
            z = torch.randn(n, d, generator=gen)
            prior = torch.randn(n, d, generator=gen)
            for name in losses:
                if name in ("cwae_loss", "cwae_loss_approx") and d < 2:
                    continue
                plain_fn = pl.PLAIN[name]
                fns = {"floor": tl.overhead_floor, "ours": tl.LATENTDIV[name], "plain": plain_fn}
                comp = None
                if use_compile:
                    cf = tl.compiled(plain_fn, z, prior)
                    if cf is None:
                        comp = "compile failed"
                        print(f"[{name} n={n} D={d}] torch.compile failed: {tl.compiled.last_error}", file=sys.stderr)
                    else:
                        fns["compiled"] = cf
                if pl.REFERENCE.get(name) is not None:
                    fns["reference"] = pl.REFERENCE[name]
                t = tl.time_calls(fns, z, prior, inner, blocks, clock=clock)
                rows.append(dict(n=n, d=d, loss=name, ours=t["ours"], plain=t["plain"],
                                 compiled=t.get("compiled", comp), reference=t.get("reference"), floor=t["floor"]))
                r = rows[-1]
                print(f"n={n:4d} D={d:3d} {name:22s} ours {fmt(r['ours']):>9} plain {fmt(r['plain']):>9} "
                      f"compiled {fmt(r['compiled']):>9} ref {fmt(r['reference']):>9} floor {fmt(r['floor']):>7}",
                      file=sys.stderr)
    return rows


def markdown(rows) -> str:
    out = ["| n | D | loss | latentdiv | plain eager | plain compiled | reference | vs eager | vs compiled "
           "| vs reference | / floor |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['n']} | {r['d']} | {r['loss']} | {fmt(r['ours'])} | {fmt(r['plain'])} | {fmt(r['compiled'])} "
                   f"| {fmt(r['reference'])} | {ratio(r['ours'], r['plain'])} | {ratio(r['ours'], r['compiled'])} "
                   f"| {ratio(r['ours'], r['reference'])} | {r['ours'] / r['floor']:.2f} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--dims", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--losses", nargs="+", default=LOSSES, choices=LOSSES)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile column")
    parser.add_argument("--inner", type=int, default=20, help="calls per timed block")
    parser.add_argument("--blocks", type=int, default=5, help="timed blocks per candidate, interleaved")
    parser.add_argument("--clock", choices=("wall", "thread"), default=None,
                        help="wall: the median block's wall-clock time; thread: the fastest block's CPU time of the "
                             "calling thread (default with --threads 1, where all work runs in that thread; else wall)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--markdown", action="store_true", help="print the markdown table on stdout")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    isa = os.environ.get("LATENTDIV_ISA", "auto")
    print(f"CPU: {tl.cpu_name()}, threads {torch.get_num_threads()}, LATENTDIV_ISA={isa}, torch {torch.__version__}",
          file=sys.stderr)
    clock = args.clock or ("thread" if torch.get_num_threads() == 1 else "wall")
    if clock == "thread" and torch.get_num_threads() != 1:
        parser.error("--clock thread needs torch at one thread (--threads 1): other threads' work is not counted")
    print(f"clock: {clock}", file=sys.stderr)
    rows = run(args.n, args.dims, args.losses, not args.no_compile, args.inner, args.blocks, clock=clock)
    if args.markdown:
        print(markdown(rows))


if __name__ == "__main__":
    main()
