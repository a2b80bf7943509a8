"""Where the time of one loss call goes at a training size (default n = 128, D = 8), in thread CPU
time (time.thread_time: on a loaded shared machine wall-clock time also counts the time the process
waits for a core). Prints, best of blocks, per call: the overhead floor (a no-op custom op with
autograd, fwd+bwd), the fused op with no terms, the fused op with the three terms of an MMD (fwd+bwd and
no-grad), the public latentdiv.mmd, and the raw engine call (_C.pair_terms) alone.

    PYTHONPATH=python python benchmarks/overhead_probe.py [--n 128] [--d 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))

import training_lib  # noqa: E402,F401  (registers the floor op)
import latentdiv  # noqa: E402
from latentdiv import _ext, _fused_ops  # noqa: E402


def cpu_time(fn, inner=100, blocks=9) -> float:
    fn()
    best = float("inf")
    for _ in range(blocks):
        t0 = time.thread_time()
        for _ in range(inner):
            fn()
        best = min(best, (time.thread_time() - t0) / inner)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--d", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    n, d = args.n, args.d
    z, p = torch.randn(n, d), torch.randn(n, d)
    zg = z.clone().requires_grad_(True)
    kid, params = _fused_ops.kernel_params_cached("gaussian", (1.0,), d, None)
    mmd_terms = _fused_ops.Terms()
    mmd_terms.add(0, 0, kid, params, 1.0 / n**2).add(1, 1, kid, params, 1.0 / n**2).add(0, 1, kid, params, -2.0 / n**2)
    empty = _fused_ops.Terms()
    gx, tot, origin = torch.zeros_like(z), torch.zeros((), dtype=torch.float64), z.new_zeros((1, d))

    def raw(grad_ptr):
        return lambda: _ext._C.pair_terms(-1, 0, d, 1, [z.data_ptr(), p.data_ptr(), origin.data_ptr()], [n, n, 1],
                                          [0, 0, 0], [grad_ptr, 0, 0], [0, 0, 0], mmd_terms.desc, mmd_terms.params,
                                          mmd_terms.coefs, tot.data_ptr())

    probes = [
        ("overhead floor (no-op custom op), fwd+bwd", lambda: torch.ops.latentdiv_bench.noop(zg).backward()),
        ("fused op, no terms, fwd+bwd", lambda: empty.run(zg, p).backward()),
        ("fused op, 3 MMD terms, fwd+bwd", lambda: mmd_terms.run(zg, p).backward()),
        ("fused op, 3 MMD terms, no grad", lambda: mmd_terms.run(z, p)),
        ("latentdiv.mmd(biased), fwd+bwd", lambda: latentdiv.mmd(zg, p, estimator="biased").backward()),
        ("latentdiv.mmd(preset='wae'), fwd+bwd", lambda: latentdiv.mmd(zg, p, preset="wae").backward()),
        ("latentdiv.cwae_loss, fwd+bwd", lambda: latentdiv.cwae_loss(zg).backward()),
        ("engine only: _C.pair_terms with dz", raw(gx.data_ptr())),
        ("engine only: _C.pair_terms, no grad", raw(0)),
    ]
    print(f"n = {n}, D = {d}, 1 thread, thread CPU time per call (best of 9 blocks of 100)")
    for name, fn in probes:
        print(f"{name:45s} {cpu_time(fn):8.0f} us")


if __name__ == "__main__":
    main()
