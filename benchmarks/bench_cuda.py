"""latentdiv's CUDA kernels against plain torch on a GPU, side by side in one run.

Forward + backward of
  * gaussian MMD^2 between x [n, D] and y [n, D] (three pair sums; plain torch: cdist -> exp -> mean)
  * sum of pdist(x) (plain torch: torch.pdist)
for n in 1024 .. 65536 and D in {8, 64}. Reports the median time of a few repeats (CUDA events), the
ratio torch / latentdiv (> 1: latentdiv faster), and the peak memory of each (torch.cuda.max_memory_allocated
above the inputs). An out-of-memory is recorded as a result ("OOM"), not an error. Values and gradients
are compared before timing.

    python benchmarks/bench_cuda.py                       # the full grid on cuda:0
    python benchmarks/bench_cuda.py --sizes 1024 4096 --dims 8 --repeats 3
    python benchmarks/bench_cuda.py --device cpu --sizes 256 512   # smoke test of the script itself

Exits with status 1 and a message when --device cuda is asked for and no GPU is visible.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch

import latentdiv


def mmd_latentdiv(x: torch.Tensor, y: torch.Tensor, h: float) -> torch.Tensor:  # x [n, D], y [m, D]
    n, m = x.shape[0], y.shape[0]
    kxx = latentdiv.pairwise_sum(x, kernel="gaussian", bandwidth=h)
    kyy = latentdiv.pairwise_sum(y, kernel="gaussian", bandwidth=h)
    kxy = latentdiv.pairwise_sum(x, y, kernel="gaussian", bandwidth=h)
    return kxx / (n * n) + kyy / (m * m) - 2.0 * kxy / (n * m)


def mmd_torch(x: torch.Tensor, y: torch.Tensor, h: float) -> torch.Tensor:  # the usual 20 lines, n x m matrices
    def k(a, b):
        return torch.exp(-torch.cdist(a, b).pow(2) / (2.0 * h * h))

    return k(x, x).mean() + k(y, y).mean() - 2.0 * k(x, y).mean()


def pdist_latentdiv(x: torch.Tensor, y: torch.Tensor, h: float) -> torch.Tensor:
    return latentdiv.pdist(x).sum()


def pdist_torch(x: torch.Tensor, y: torch.Tensor, h: float) -> torch.Tensor:
    return torch.pdist(x).sum()


CASES: Dict[str, Tuple[Callable, Callable]] = {
    "mmd2_gaussian": (mmd_latentdiv, mmd_torch),
    "pdist_sum": (pdist_latentdiv, pdist_torch),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_once(fn: Callable, x: torch.Tensor, y: torch.Tensor, h: float):
    xa = x.detach().requires_grad_(True)
    ya = y.detach().requires_grad_(True)
    value = fn(xa, ya, h)
    grads = torch.autograd.grad(value, (xa, ya), allow_unused=True)
    return value.detach(), [g if g is not None else torch.zeros_like(t) for g, t in zip(grads, (xa, ya))]


def measure(fn: Callable, x: torch.Tensor, y: torch.Tensor, h: float, repeats: int):
    """(median seconds, peak extra bytes or None on CPU, result) or ("OOM", None, None)."""
    device = x.device
    try:
        result = run_once(fn, x, y, h)  # warm-up (and the value the comparison uses)
        _sync(device)
        times: List[float] = []
        peak: Optional[int] = None
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                run_once(fn, x, y, h)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
                peak = max(peak or 0, torch.cuda.max_memory_allocated(device) - base)
            else:
                t0 = time.perf_counter()
                run_once(fn, x, y, h)
                times.append(time.perf_counter() - t0)
        return statistics.median(times), peak, result
    except torch.OutOfMemoryError:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return "OOM", None, None


def check(ours, theirs, name: str) -> str:
    if ours is None or theirs is None:
        return "n/a"
    (v1, g1), (v2, g2) = ours, theirs
    scale = max(1e-30, float(v2.abs()))
    err_v = float((v1.double() - v2.double()).abs()) / scale
    err_g = max(float((a.double() - b.double()).abs().max()) / max(1e-30, float(b.double().abs().max()))
                for a, b in zip(g1, g2))
    status = "ok" if err_v < 1e-3 and err_g < 1e-3 else "MISMATCH"
    return f"{status} (rel {err_v:.1e}/{err_g:.1e})"


def fmt_time(t) -> str:
    return t if isinstance(t, str) else f"{t * 1e3:9.2f}"


def fmt_mem(b) -> str:
    return "-" if b is None else f"{b / 2**20:9.1f}"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:1, ... (cpu: smoke test of the script)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    parser.add_argument("--dims", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_cuda.py: no CUDA device is visible to torch (torch.cuda.is_available() is False; "
              f"torch {torch.__version__}, built with CUDA {torch.version.cuda}). Run it on a GPU machine; "
              "--device cpu only smoke-tests the script.", file=sys.stderr)
        return 1
    info = latentdiv.backend_info()
    if device.type == "cuda" and not info.get("cuda"):
        print("bench_cuda.py: warning: this latentdiv build has no CUDA kernels; latentdiv runs its pure-torch "
              "fallback on the GPU (rebuild with LATENTDIV_CUDA=ON).", file=sys.stderr)
    dtype = getattr(torch, args.dtype)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"# device {name}, torch {torch.__version__}, latentdiv cuda={info.get('cuda')} "
          f"archs={info.get('cuda_archs')}, {args.dtype}, median of {args.repeats}, forward+backward")
    print(f"{'case':14} {'n':>6} {'D':>3} {'ours ms':>9} {'torch ms':>9} {'torch/ours':>10} "
          f"{'ours MB':>9} {'torch MB':>9}  check")
    for case in args.cases:
        ours_fn, torch_fn = CASES[case]
        for d in args.dims:
            for n in args.sizes:
                gen = torch.Generator(device="cpu").manual_seed(n + d)
                x = torch.randn(n, d, generator=gen, dtype=dtype).to(device)
                y = (torch.randn(n, d, generator=gen, dtype=dtype) * 1.1 + 0.1).to(device)
                h = float(d) ** 0.5
                t_ours, m_ours, r_ours = measure(ours_fn, x, y, h, args.repeats)
                t_torch, m_torch, r_torch = measure(torch_fn, x, y, h, args.repeats)
                ratio = (f"{t_torch / t_ours:10.2f}" if not isinstance(t_ours, str) and not isinstance(t_torch, str)
                         else f"{'-':>10}")
                print(f"{case:14} {n:6d} {d:3d} {fmt_time(t_ours):>9} {fmt_time(t_torch):>9} {ratio} "
                      f"{fmt_mem(m_ours):>9} {fmt_mem(m_torch):>9}  {check(r_ours, r_torch, case)}", flush=True)
                del x, y, r_ours, r_torch
    return 0


if __name__ == "__main__":
    sys.exit(main())
