"""Benchmark grid selection: `--grid default` (a few minutes on 2 cores) or `--grid full`
(n in 256..65536, D in {2, 8, 32, 64, 128}, every kernel and implementation, with budgets)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import bench_lib as bl  # noqa: E402

IMPLS = ["latentdiv", "torch_matmul", "torch_cdist", "chunked", "pykeops", "geomloss"]


def pytest_addoption(parser):
    parser.addoption("--grid", default="default", choices=["default", "full"], help="benchmark grid")


def _default_mmd():
    cases = []
    for d in (8, 64):  # the bar: gaussian MMD^2 fwd+bwd, n = 4096, every implementation side by side
        for impl in IMPLS:
            cases.append(("gaussian", impl, 4096, d, "fwdbwd"))
    for n in (1024, 16384, 65536):  # n^2 scaling and the n = 65536 memory bar
        cases.append(("gaussian", "latentdiv", n, 64, "fwdbwd"))
    for n in (1024, 16384):
        cases.append(("gaussian", "torch_matmul", n, 64, "fwdbwd"))
    cases.append(("gaussian", "torch_matmul", 65536, 64, "fwdbwd"))  # recorded as out-of-memory
    for d in (2, 32, 128):
        for impl in ("latentdiv", "torch_matmul"):
            cases.append(("gaussian", impl, 4096, d, "fwdbwd"))
    for k in bl.KERNEL_NAMES:
        for mode in ("fwd", "fwdbwd"):
            for impl in ("latentdiv", "torch_matmul", "torch_cdist"):
                if (k, impl, 4096, 64, mode) not in cases:
                    cases.append((k, impl, 4096, 64, mode))
    cases.append(("imq7", "pykeops", 4096, 64, "fwdbwd"))
    return cases


def _full_mmd():
    cases = []
    for k in bl.KERNEL_NAMES:
        for d in (2, 8, 32, 64, 128):
            for n in (256, 1024, 4096, 16384, 65536):
                for impl in IMPLS:
                    for mode in ("fwd", "fwdbwd"):
                        cases.append((k, impl, n, d, mode))
    return cases


def _pdist_cases(full):
    ns = (256, 1024, 4096, 16384) if full else (4096,)
    ds = (2, 8, 32, 64, 128) if full else (8, 64)
    return [(impl, n, d, mode) for n in ns for d in ds for impl in ("latentdiv", "torch") for mode in ("fwd", "fwdbwd")]


def pytest_generate_tests(metafunc):
    full = metafunc.config.getoption("--grid") == "full"
    if "mmd_case" in metafunc.fixturenames:
        cases = _full_mmd() if full else _default_mmd()
        metafunc.parametrize("mmd_case", cases, ids=["-".join(map(str, c)) for c in cases])
    if "pdist_case" in metafunc.fixturenames:
        cases = _pdist_cases(full)
        metafunc.parametrize("pdist_case", cases, ids=["-".join(map(str, c)) for c in cases])
