"""Shared pieces of the training-batch benchmarks (bench_training.py, overhead_probe.py): the
latentdiv losses of the catalog as (z, prior) -> scalar, the overhead-floor op, and a timer.

Timing: one "call" is a forward and a backward of the loss from a fresh leaf z (what a training
step pays for the regularizer). ``time_calls`` runs ``blocks`` blocks of ``inner`` calls of each
candidate, interleaved block by block, and returns the median per-call time of the blocks (wall
clock) or the fastest block (the calling thread's CPU time), so a burst of load from other processes
on a shared machine moves one block of every candidate, not the result. Compare within one process
(ratios), never across runs.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, Optional

import torch

import latentdiv

# ---- the overhead floor: a custom op that does no work, with a registered autograd --------------------
@torch.library.custom_op("latentdiv_bench::noop", mutates_args=())
def _noop(x: torch.Tensor) -> torch.Tensor:  # [n, D] -> [] (a fresh zero)
    return x.new_zeros(())


@_noop.register_fake
def _(x):
    return x.new_empty(())


def _noop_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])


def _noop_backward(ctx, grad):
    (x,) = ctx.saved_tensors
    return torch.zeros_like(x)


_noop.register_autograd(_noop_backward, setup_context=_noop_setup)


def overhead_floor(z, prior):
    """One custom-op call forward and one backward, no work: the least any engine-backed loss can cost."""
    return torch.ops.latentdiv_bench.noop(z)


LATENTDIV: Dict[str, Callable] = {
    "mmd_gaussian_biased": lambda z, p: latentdiv.mmd(z, p, kernel="gaussian", bandwidth=1.0, estimator="biased"),
    "mmd_wae": lambda z, p: latentdiv.mmd(z, p, preset="wae"),
    "mmd_infovae": lambda z, p: latentdiv.mmd(z, p, preset="infovae"),
    "mmd_to_normal": lambda z, p: latentdiv.mmd_to_normal(z),
    "cwae_loss": lambda z, p: latentdiv.cwae_loss(z),
    "cwae_loss_approx": lambda z, p: latentdiv.cwae_loss(z, phi="approx"),
    "energy_distance": lambda z, p: latentdiv.energy_distance(z),
    "sliced_wasserstein": lambda z, p: latentdiv.sliced_wasserstein(z),
    "pairwise_sum": lambda z, p: latentdiv.pairwise_sum(z),
}


def _leaf_call(fn: Callable, z: torch.Tensor, prior: torch.Tensor) -> Callable[[], None]:
    def once():
        zg = z.detach().requires_grad_(True)
        fn(zg, prior).backward()

    return once


def time_calls(fns: Dict[str, Callable], z: torch.Tensor, prior: torch.Tensor, inner: int = 50, blocks: int = 7,
               warmup: int = 5, clock: str = "wall") -> Dict[str, float]:
    """Seconds per forward+backward of each fn(z_leaf, prior), the candidates timed side by side: block
    b of every candidate runs before block b + 1 of any, so a burst of load from other processes falls
    on all of them alike. clock "wall": perf_counter, the median block; "thread": the calling thread's
    CPU time (time.thread_time: not the time spent waiting for a core on a loaded machine), the fastest
    block. "thread" is only meaningful when all the work runs in the calling thread (torch at one
    thread)."""
    if clock not in ("wall", "thread"):
        raise ValueError(f"clock must be 'wall' or 'thread', got {clock!r}")
    timer = time.perf_counter if clock == "wall" else time.thread_time
    calls = {name: _leaf_call(fn, z, prior) for name, fn in fns.items()}
    for once in calls.values():
        for _ in range(warmup):
            once()
    per_block: Dict[str, list] = {name: [] for name in calls}
    for _ in range(blocks):
        for name, once in calls.items():
            t0 = timer()
            for _ in range(inner):
                once()
            per_block[name].append((timer() - t0) / inner)
    pick = statistics.median if clock == "wall" else min
    return {name: pick(times) for name, times in per_block.items()}


def compiled(fn: Callable, z: torch.Tensor, prior: torch.Tensor) -> Optional[Callable]:
    """torch.compile(fn), warmed up (compiled) outside any timing; None with the error if it fails."""
    try:
        torch._dynamo.reset()
        cf = torch.compile(fn)
        for _ in range(3):
            zg = z.detach().requires_grad_(True)
            cf(zg, prior).backward()
        return cf
    except Exception as exc:  # recorded as a compile failure, not a crash of the benchmark
        compiled.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return None


compiled.last_error = ""


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"
