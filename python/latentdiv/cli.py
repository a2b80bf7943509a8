"""The ``latentdiv`` command line (also ``python -m latentdiv``).

``latentdiv demo``: prints what was built, then a forward+backward gaussian pairwise sum at
n = 65536 (O(n) memory) next to plain torch at the largest size it handles here, with timings.
``latentdiv info``: the backend as JSON. ``latentdiv check``: normality tests (cli_check.py).
Without a subcommand it prints the help.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from typing import List, Optional


def _rss_peak_mb() -> float:
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 2**20


def _rss_now_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return _rss_peak_mb()


def _plain_torch_sum(x, bandwidth: float):
    """What users write today: an n x n matrix, exp, sum, autograd."""
    import torch

    r2 = torch.cdist(x, x).pow(2)
    return torch.exp(-r2 / (2 * bandwidth**2)).sum()


def run_demo(n: int, dim: int, torch_n: int, seed: int) -> int:
    import torch

    import latentdiv

    info = latentdiv.backend_info()
    print("latentdiv", latentdiv.__version__, "| backend:", info["backend"], "| threads:", info["threads"],
          "| CPU ISA:", info.get("cpu_isa_selected", "-"), "| CUDA kernels:", "yes" if info.get("cuda") else "no")
    gen = torch.Generator().manual_seed(seed)
    bandwidth = float(dim) ** 0.5

    def timed(fn, x):
        x = x.detach().requires_grad_(True)
        t0 = time.perf_counter()
        value = fn(x)
        value.backward()
        return value.item(), time.perf_counter() - t0, x.grad

    rows = []
    x = torch.randn(n, dim, generator=gen)
    before = _rss_now_mb()
    peak_before = _rss_peak_mb()
    value, seconds, _ = timed(lambda z: latentdiv.pairwise_sum(z, kernel="gaussian", bandwidth=bandwidth), x)
    extra = max(0.0, _rss_peak_mb() - max(before, peak_before))
    rows.append(("latentdiv", n, seconds, extra, value))

    xt = x[:torch_n]
    before = _rss_now_mb()
    peak_before = _rss_peak_mb()
    t_value, t_seconds, t_grad = timed(lambda z: _plain_torch_sum(z, bandwidth), xt)
    t_extra = max(0.0, _rss_peak_mb() - max(before, peak_before))
    l_value, l_seconds, l_grad = timed(lambda z: latentdiv.pairwise_sum(z, kernel="gaussian", bandwidth=bandwidth), xt)
    rows.append(("plain torch", torch_n, t_seconds, t_extra, t_value))
    rows.append(("latentdiv", torch_n, l_seconds, float("nan"), l_value))

    print(f"\nforward+backward of sum_ij exp(-|x_i - x_j|^2 / (2 h^2)), D = {dim}, h = {bandwidth:.3g}, float32")
    print(f"{'implementation':<14} {'n':>7} {'seconds':>9} {'extra peak RSS (MB)':>20} {'value':>16}")
    for name, size, sec, mem, val in rows:
        mem_s = "-" if mem != mem else f"{mem:.0f}"
        print(f"{name:<14} {size:>7} {sec:>9.3f} {mem_s:>20} {val:>16.6g}")
    rel = abs(l_value - t_value) / abs(t_value)
    grad_rel = float((l_grad - t_grad).norm() / t_grad.norm())
    print(f"\nat n = {torch_n}: latentdiv is {t_seconds / l_seconds:.1f}x faster than plain torch; "
          f"relative difference of values {rel:.1e}, of gradients {grad_rel:.1e}")
    scale = (n / torch_n) ** 2
    print(f"plain torch at n = {n} would hold n x n matrices of {n * n * 4 / 2**30:.0f} GiB each "
          f"(extrapolated: about {t_extra * scale / 1024:.0f} GiB and {t_seconds * scale:.0f} s); "
          f"latentdiv used {rows[0][3]:.0f} MB extra.")
    return 0


DESCRIPTION = """latentdiv: how far is a batch of latent codes from N(0, I)? Fused C++/CUDA pair sums,
torch losses and a normality-test battery. Run a subcommand with --help for its options."""


def main(argv: Optional[List[str]] = None) -> int:
    from . import __version__

    parser = argparse.ArgumentParser(prog="latentdiv", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"latentdiv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="backend report and a large pairwise sum next to plain torch")
    demo.add_argument("--n", type=int, default=65536, help="points for latentdiv (default 65536)")
    demo.add_argument("--dim", type=int, default=8, help="dimension D (default 8)")
    demo.add_argument("--torch-n", type=int, default=8192, help="points for the plain torch comparison (default 8192)")
    demo.add_argument("--seed", type=int, default=0)
    sub.add_parser("info", help="print backend_info() as JSON")
    from . import cli_check  # `latentdiv check`: normality tests (latentdiv.stats)

    cli_check.add_check_parser(sub)
    from .study import cli as study_cli  # `latentdiv study` (optional extra: latentdiv[study])

    study_cli.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "check":
        return cli_check.run_check(args)
    if args.command == "study":
        return study_cli.run(args)
    if args.command is None:  # no subcommand: say what there is (the demo runs for a minute)
        parser.print_help()
        return 0
    if args.command == "demo":
        if args.n < 2 or args.torch_n < 2 or args.dim < 1:
            parser.error("--n and --torch-n must be >= 2 and --dim >= 1")
        return run_demo(args.n, args.dim, min(args.torch_n, args.n), args.seed)
    if args.command == "info":
        import latentdiv

        print(json.dumps(latentdiv.backend_info(), indent=2, default=str))
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
