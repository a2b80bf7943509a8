"""Known defect, kept runnable until it is root-caused (issue 5 note): with the AVX-512 variant and one
OpenMP thread, when the process shares its core with another busy process (frequent context switches),
a float64 pair reduction repeated on the same input occasionally differs in the last bit. The AVX2 and
baseline variants show no difference under the same stress. Slow (about a minute) and expected to fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import requires_compiled

_STRESS = textwrap.dedent(
    """
    import torch, latentdiv
    torch.set_num_threads(1)
    ops = torch.ops.latentdiv
    torch.manual_seed(172)
    x = torch.randn(45, 5, dtype=torch.float64)
    ref_rows = ops.pair_rows(x, None, None, 2, [1.0], False)      # imq
    ref_grad = ops.pair_grad(x, None, None, 0, [0.5], False)      # gaussian
    bad = 0
    for _ in range(10000):
        bad += not torch.equal(ops.pair_rows(x, None, None, 2, [1.0], False), ref_rows)
        bad += not torch.equal(ops.pair_grad(x, None, None, 0, [0.5], False), ref_grad)
    print(bad)
    """
)


def _mismatches_under_contention(isa: str) -> int:
    busy = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", "while True: pass"])
    try:
        env = dict(os.environ, LATENTDIV_ISA=isa)
        out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", _STRESS], env=env,
                             capture_output=True, text=True, timeout=600, check=True)
    finally:
        busy.kill()
    return int(out.stdout.strip().splitlines()[-1])


@requires_compiled
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset to share one core")
@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512"])
def test_repeated_calls_are_bit_identical_under_core_contention(isa):
    import latentdiv

    if isa not in latentdiv.backend_info()["cpu_isa_usable"]:
        pytest.skip(f"{isa} not usable on this CPU")
    mismatches = _mismatches_under_contention(isa)
    if isa == "avx512" and mismatches:
        pytest.xfail(f"known defect (issue 5): {mismatches} of 20000 AVX-512 calls differed under contention")
    assert mismatches == 0
