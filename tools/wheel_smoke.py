"""Torch-free check of an installed latentdiv wheel: load latentdiv._C WITHOUT importing the package
(whose __init__ imports torch), call its engine entries on tiny inputs from ctypes buffers and compare
with the exact values computed here in pure Python, for every CPU instruction-set variant this CPU
runs; check that the engine's OpenMP team really forms (the process gains worker threads), which
OpenMP runtimes the process maps, and what the build reports (CUDA kernels, architectures).

Run by tools/build_wheels.sh in a fresh venv where only the wheel is installed (--no-deps: no torch,
no numpy), from a directory outside the source tree:

    python wheel_smoke.py [--expect-cuda] [--expect-archs sm_75,...,compute_90]

Prints one JSON line (what it checked) and exits non-zero, naming the problem, on any failure.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import importlib.machinery
import importlib.util
import json
import math
import os
import re
import sys

# Engine codes (python/latentdiv/_ext.py and csrc/include/latentdiv/common.h).
DEVICE_CPU, MODE_VALUE, DTYPE_FLOAT64, KERNEL_GAUSSIAN, ISA_AUTO = 0, 0, 1, 0, -1
ISA_CODES = {"baseline": 0, "avx2": 1, "avx512": 2}
# An OpenMP runtime, under any of its names: GNU libgomp, LLVM libomp, Intel libiomp5, and the
# hash-renamed copies auditwheel grafts into wheels (libgomp-a34b3233.so.1).
OPENMP_RUNTIME = re.compile(r"^lib(gomp|omp|iomp\d*)([-.].*)?\.so(\.\d+)*$")


def fail(message: str) -> None:
    print(f"wheel_smoke: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def load_engine():
    """latentdiv._C from the installed package, without running latentdiv/__init__.py."""
    spec = importlib.util.find_spec("latentdiv")  # finds the package; does not import it
    if spec is None or not spec.submodule_search_locations:
        fail("no installed latentdiv package found")
    package_dir = list(spec.submodule_search_locations)[0]
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    candidates = [p for p in glob.glob(os.path.join(package_dir, "_C*")) if p.endswith(suffixes)]
    if len(candidates) != 1:
        fail(f"expected one _C extension for this interpreter in {package_dir}, found {candidates}")
    loader = importlib.machinery.ExtensionFileLoader("latentdiv._C", candidates[0])
    module_spec = importlib.util.spec_from_file_location("latentdiv._C", candidates[0], loader=loader)
    module = importlib.util.module_from_spec(module_spec)
    loader.exec_module(module)
    return module, candidates[0]


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def openmp_runtimes_mapped() -> list:
    paths = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and OPENMP_RUNTIME.match(os.path.basename(fields[5])):
                paths.add(os.path.realpath(fields[5]))
    return sorted(paths)


def doubles(values) -> ctypes.Array:
    return (ctypes.c_double * len(values))(*values)


def addr(buffer) -> int:
    return ctypes.addressof(buffer)


def exact_gaussian_rows(points, a):
    """rows_i = sum_j exp(-a |p_i - p_j|^2), diagonal included, in Python floats."""
    return [math.fsum(math.exp(-a * math.fsum((u - v) ** 2 for u, v in zip(p, q))) for q in points) for p in points]


def check_pair_reduce(C, isa: int, threads: int, points, d: int, a: float) -> None:
    n = len(points)
    x = doubles([v for p in points for v in p])  # [n, d] float64, row-major
    rows, total = doubles([0.0] * n), doubles([math.nan])
    status = C.pair_reduce(device=DEVICE_CPU, isa=isa, mode=MODE_VALUE, dtype=DTYPE_FLOAT64, x=addr(x), y=addr(x),
                           wx=0, wy=0, out_rows=addr(rows), out_total=addr(total), out_grad=0, workspace=0,
                           n=n, m=n, d=d, self_pairs=True, exclude_diagonal=False, num_threads=threads,
                           kernel=KERNEL_GAUSSIAN, params=[a], stream=0)
    if status != C.STATUS_OK:
        fail(f"pair_reduce(isa={isa}, threads={threads}) returned status {status}")
    want = exact_gaussian_rows(points, a)
    for i, (got, ref) in enumerate(zip(rows, want)):
        if not abs(got - ref) <= 1e-13 * abs(ref):
            fail(f"pair_reduce(isa={isa}) row {i}: {got!r} != exact {ref!r}")
    if not abs(total[0] - math.fsum(want)) <= 1e-13 * math.fsum(want):
        fail(f"pair_reduce(isa={isa}) total {total[0]!r} != exact {math.fsum(want)!r}")


def check_pdist(C, isa: int, points, d: int) -> None:
    n = len(points)
    x = doubles([v for p in points for v in p])
    out = doubles([math.nan] * (n * (n - 1) // 2))  # condensed, torch.pdist's order
    status = C.pdist(device=DEVICE_CPU, isa=isa, dtype=DTYPE_FLOAT64, x=addr(x), out=addr(out), n=n, d=d,
                     num_threads=2, stream=0)
    if status != C.STATUS_OK:
        fail(f"pdist(isa={isa}) returned status {status}")
    want = [math.dist(points[i], points[j]) for i in range(n) for j in range(i + 1, n)]
    for k, (got, ref) in enumerate(zip(out, want)):
        if not abs(got - ref) <= 1e-14 * ref:
            fail(f"pdist(isa={isa}) entry {k}: {got!r} != exact {ref!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--expect-cuda", action="store_true", help="fail unless the build has CUDA kernels")
    parser.add_argument("--expect-archs", default="", help="comma-separated archs build_info must report")
    args = parser.parse_args()

    C, so_path = load_engine()
    if "torch" in sys.modules:
        fail("loading latentdiv._C imported torch (the engine must be torch-free)")
    info = dict(C.build_info())
    if args.expect_cuda and not info["cuda"]:
        fail("the wheel has no CUDA kernels (build_info()['cuda'] is False)")
    archs = [a for a in info["cuda_archs"].split(",") if a]
    missing = [a for a in args.expect_archs.split(",") if a and a not in archs]
    if missing:
        fail(f"CUDA architectures {missing} missing from build_info()['cuda_archs'] = {info['cuda_archs']!r}")

    # 7 points in D = 3 (odd sizes: tails of every tile); values well inside float64's range.
    points = [[0.1 * i - 0.3, 0.05 * i * i - 0.2, (-1) ** i * 0.4 + 0.01 * i] for i in range(7)]
    if not info["openmp"]:
        fail("the wheel was built without OpenMP (the CPU schedule would run on one thread)")
    # The OpenMP team: a parallel region with T threads leaves T - 1 pooled worker threads (libgomp
    # keeps them for the next region), counted in /proc/self/task; no clock involved. First call of
    # the process, so no earlier region has started any.
    team = 4
    before = thread_count()
    check_pair_reduce(C, ISA_AUTO, team, points, 3, 0.5)
    grew = thread_count() - before
    if grew < team - 1:
        fail(f"the engine asked for {team} threads but the process gained only {grew} (OpenMP team not formed)")
    usable = list(info["cpu_isa_usable"])
    for name in usable:
        check_pair_reduce(C, ISA_CODES[name], 2, points, 3, 0.5)
        check_pdist(C, ISA_CODES[name], points, 3)

    runtimes = openmp_runtimes_mapped()
    if len(runtimes) != 1:
        fail(f"expected exactly one OpenMP runtime mapped, found {runtimes}")
    bundled_dirs = (os.path.dirname(so_path), os.path.dirname(so_path) + ".libs")  # latentdiv/, latentdiv.libs/
    if os.path.dirname(runtimes[0]) in bundled_dirs:
        fail(f"the OpenMP runtime {runtimes[0]} comes from the wheel (it must not bundle one; see docs/install.md)")

    print(json.dumps({
        "python": sys.version.split()[0], "module": so_path, "cuda": info["cuda"], "cuda_archs": info["cuda_archs"],
        "cpu_isa_checked": usable, "openmp_team_threads_started": grew, "openmp_runtime": runtimes[0],
    }))


if __name__ == "__main__":
    main()
