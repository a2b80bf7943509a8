"""Memory stays O(n): forward+backward at n = 65536 without an n x n buffer (issue bar: < 100 MB)."""

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
    n, dim, kernel = {n}, {dim}, {kernel!r}
    x = torch.randn(n, dim).requires_grad_(True)
    warm = torch.randn(64, dim).requires_grad_(True)
    latentdiv.pairwise_sum(warm, kernel=kernel, bandwidth=2.0).backward()  # load everything first
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    value = latentdiv.pairwise_sum(x, kernel=kernel, bandwidth=2.0)
    value.backward()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({{"extra_mb": (after - before) / 1024, "finite": bool(torch.isfinite(x.grad).all())}}))
    """
)


def _extra_memory_mb(n: int, dim: int, kernel: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _SCRIPT.format(n=n, dim=dim, kernel=kernel)],
                         capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


@requires_compiled
def test_memory_is_linear_small():
    """Default-suite version: n = 8192 (plain torch would need ~1 GB of n x n float32 buffers)."""
    result = _extra_memory_mb(8192, 8, "gaussian")
    assert result["finite"]
    assert result["extra_mb"] < 40, result


@requires_compiled
@pytest.mark.slow
def test_memory_bar_n65536():
    result = _extra_memory_mb(65536, 8, "gaussian")
    assert result["finite"]
    assert result["extra_mb"] < 100, result
