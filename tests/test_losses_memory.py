"""The O(n^2) losses run through the engine: forward+backward of cramer_wold(z) and mmd_to_normal(z)
without any n x n buffer (issue 3 bar: n = 65536, D = 64 in < 200 MB extra peak RSS)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import requires_compiled

_SCRIPT = textwrap.dedent(
    """
    import json, resource, torch, latentdiv
    n, dim, which = {n}, {dim}, {which!r}
    def loss(z):
        if which == "cramer_wold":
            return latentdiv.cramer_wold(z)
        return latentdiv.mmd_to_normal(z, bandwidth=dim ** 0.5)
    warm = torch.randn(64, dim).requires_grad_(True)
    loss(warm).backward()  # load the extension, fit phi_D, allocate allocator pools first
    x = torch.randn(n, dim).requires_grad_(True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    value = loss(x)
    value.backward()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({{"extra_mb": (after - before) / 1024, "value": float(value),
                       "finite": bool(torch.isfinite(x.grad).all())}}))
    """
)


def _extra_memory_mb(n: int, dim: int, which: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _SCRIPT.format(n=n, dim=dim, which=which)],
                         capture_output=True, text=True, check=True, timeout=7200)
    return json.loads(out.stdout.strip().splitlines()[-1])


@requires_compiled
@pytest.mark.parametrize("which", ["cramer_wold", "mmd_to_normal"])
def test_loss_memory_is_linear_small(which):
    """Default-suite version: n = 4096, D = 64 (plain torch: ~200 MB of n x n float32 buffers)."""
    result = _extra_memory_mb(4096, 64, which)
    assert result["finite"]
    assert result["extra_mb"] < 30, result


@requires_compiled
@pytest.mark.slow
@pytest.mark.parametrize("which", ["cramer_wold", "mmd_to_normal"])
def test_loss_memory_bar_n65536_d64(which):
    """n = 65536, D = 64: 4.3e9 pairs per pass (minutes on 2 cores); the x, grad buffers are 16 MB each."""
    result = _extra_memory_mb(65536, 64, which)
    assert result["finite"]
    assert result["extra_mb"] < 200, result
