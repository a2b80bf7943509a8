"""Global-batch MMD^2 forward + backward: W processes x 1 thread (gloo, group=) against 1 process x
1 thread on the same global batch (issue 15's bar: at most 0.6x the time at W = 2).

    PYTHONPATH=python python benchmarks/bench_distributed.py --n 8192 --dim 64 --world 2

The loss is ``latentdiv.functional.mmd(z)`` (gaussian kernel, default bandwidth, unbiased, the
closed form against N(0, I)); ``--two-sample`` uses ``mmd(z, y)`` with a prior sample y of the same
size instead. Each rank holds N / W rows (float32), computes the global value and the gradient of its
rows. Reported, wall-clock and CPU time of the process (the CPU time is the compute per rank;
on a machine whose cores are shared with other jobs the wall-clock time of two concurrent processes
measures the sharing, not the code): the single-process time (measured before and after the distributed run, to see the
machine's load drift), each rank's time per step (a step ends when the rank's backward returns; the
ranks start together after a barrier), and the ratio of the slowest rank's time to the single-process
time. Medians over ``--repeats`` steps after one warm-up step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import torch
import torch.multiprocessing as mp


def _data(n: int, dim: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (1.1 * torch.randn(n, dim, generator=g) + 0.1), torch.randn(n, dim, generator=g)


def _step(z: torch.Tensor, y, group):  # -> (wall seconds, CPU seconds of this process)
    import latentdiv.functional as F

    leaf = z.clone().requires_grad_()
    ys = None if y is None else y.clone().requires_grad_()
    t0, c0 = time.perf_counter(), time.process_time()
    F.mmd(leaf, ys, group=group).backward()
    return time.perf_counter() - t0, time.process_time() - c0


def _medians(steps):
    steps = list(steps)
    return statistics.median(s[0] for s in steps), statistics.median(s[1] for s in steps)


def _single(n: int, dim: int, two_sample: bool, repeats: int) -> float:
    torch.set_num_threads(1)
    x, y = _data(n, dim)
    y = y if two_sample else None
    _step(x, y, None)
    return _medians(_step(x, y, None) for _ in range(repeats))


def _rank(rank: int, world: int, init: str, n: int, dim: int, two_sample: bool, repeats: int, out) -> None:
    import torch.distributed as dist

    from latentdiv.distributed import WORLD

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    x, y = _data(n, dim)
    rows = slice(rank * n // world, (rank + 1) * n // world)
    xl, yl = x[rows].contiguous(), (y[rows].contiguous() if two_sample else None)
    _step(xl, yl, WORLD)
    times = []
    for _ in range(repeats):
        dist.barrier()
        times.append(_step(xl, yl, WORLD))
    out.put((rank, _medians(times)))
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8192)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--two-sample", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    before = _single(args.n, args.dim, args.two_sample, args.repeats)
    ctx = mp.get_context("spawn")
    fd, init = tempfile.mkstemp(prefix="latentdiv-bench-")
    os.close(fd)
    os.unlink(init)
    out = ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(r, args.world, init, args.n, args.dim, args.two_sample, args.repeats, out))
             for r in range(args.world)]
    for p in procs:
        p.start()
    per_rank = dict(out.get(timeout=1800) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    after = _single(args.n, args.dim, args.two_sample, args.repeats)
    single_wall = statistics.median([before[0], after[0]])
    single_cpu = statistics.median([before[1], after[1]])
    result = dict(n=args.n, dim=args.dim, world=args.world, two_sample=args.two_sample,
                  single_wall_s=[before[0], after[0]], single_cpu_s=[before[1], after[1]],
                  rank_wall_s=[per_rank[r][0] for r in range(args.world)],
                  rank_cpu_s=[per_rank[r][1] for r in range(args.world)],
                  wall_ratio=max(v[0] for v in per_rank.values()) / single_wall,
                  cpu_ratio=max(v[1] for v in per_rank.values()) / single_cpu,
                  load_average=os.getloadavg()[0])
    if args.json:
        print(json.dumps(result))
        return
    what = "mmd(z, y)" if args.two_sample else "mmd(z) (closed form vs N(0, I))"
    print(f"{what}, N = {args.n}, D = {args.dim}, float32, forward + backward")
    print(f"1 process x 1 thread: wall {before[0]:.3f} s before, {after[0]:.3f} s after the distributed run; "
          f"CPU {before[1]:.3f} s, {after[1]:.3f} s")
    for r in range(args.world):
        print(f"rank {r} of {args.world} (1 thread, N/W = {args.n // args.world} rows): wall {per_rank[r][0]:.3f} s, "
              f"CPU {per_rank[r][1]:.3f} s")
    print(f"slowest rank / single process: wall {result['wall_ratio']:.3f}, CPU {result['cpu_ratio']:.3f} "
          f"(load average {result['load_average']:.1f})")


if __name__ == "__main__":
    main()
