"""Shared fixtures: deterministic seeds, both backends, and the float32 tolerance rule."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest
import torch

import latentdiv
from latentdiv import _ext


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# Until the per-test fixture below sets its own: no test, and no subprocess started from a module's
# import-time environment, ever reads or writes the user's cache directory.
_SESSION_NULL_CACHE = tempfile.mkdtemp(prefix="latentdiv-test-null-cache-")
os.environ["LATENTDIV_NULL_CACHE"] = _SESSION_NULL_CACHE
atexit.register(shutil.rmtree, _SESSION_NULL_CACHE, True)


@pytest.fixture(autouse=True)
def _private_null_cache(tmp_path_factory, monkeypatch):
    """Every test gets an empty on-disk Monte Carlo null cache of its own (never the user's cache
    directory; a test that clears the in-memory cache then really recomputes)."""
    monkeypatch.setenv("LATENTDIV_NULL_CACHE", str(tmp_path_factory.mktemp("null-cache")))


@pytest.fixture
def reference_backend():
    """Run the public functions on the pure-torch fallback for the duration of a test."""
    previous = latentdiv.set_backend("reference")
    yield
    latentdiv.set_backend(previous)


requires_compiled = pytest.mark.skipif(not _ext.compiled_available(), reason="latentdiv._C is not built")


def assert_float32_rule(ours32: torch.Tensor, torch32: torch.Tensor, exact64: torch.Tensor, what: str, eps: float = 1e-6):
    """docs/formulas.md section 10: error(ours) <= 2 x error(plain torch, same dtype) + a small epsilon
    (relative to the size of the exact value)."""
    exact = exact64.double()
    scale = exact.abs().max().clamp_min(1e-30)
    err_ours = (ours32.double() - exact).abs().max()
    err_torch = (torch32.double() - exact).abs().max()
    bound = 2.0 * err_torch + eps * scale
    assert err_ours <= bound, f"{what}: float32 error {err_ours:.3e} > 2 x torch's {err_torch:.3e} + eps ({bound:.3e})"
