"""Packaging contracts of the installed (or source-tree) latentdiv: one OpenMP runtime per process, the
engine's OpenMP team, the single-sourced version, and the CMake configure with the Makefile generator.

The OpenMP design (docs/install.md): the wheel does not bundle libgomp (auditwheel repair --exclude
libgomp.so.1); _C's DT_NEEDED libgomp.so.1 is satisfied by the libgomp that torch has already loaded,
because latentdiv imports torch before _C. Every check runs in a fresh interpreter, so what other tests
have loaded or started does not matter, and none of them reads a clock.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import latentdiv
from latentdiv import _ext

ROOT = Path(__file__).resolve().parents[1]

linux_openmp_build = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not _ext.compiled_available()
    or not _ext._C.build_info()["openmp"],
    reason="needs Linux (/proc) and a compiled latentdiv._C built with OpenMP")

# The probe run in a fresh interpreter. It prints JSON: the OpenMP runtimes mapped after each import,
# and how many threads the process gained during an engine call and then during a torch op.
PROBE = textwrap.dedent(r"""
    import json, os, re, sys
    runtime = re.compile(r"^lib(gomp|omp|iomp\d*)([-.].*)?\.so(\.\d+)*$")  # also hash-renamed copies

    def runtimes():
        found = set()
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split()
                if len(fields) >= 6 and runtime.match(os.path.basename(fields[5])):
                    found.add(os.path.realpath(fields[5]))
        return sorted(found)

    def threads():
        return len(os.listdir("/proc/self/task"))

    out = {}
    if sys.argv[1] == "torch-first":
        import torch
        out["after_torch"] = runtimes()
    import latentdiv, torch
    out["after_latentdiv"] = runtimes()
    out["parallel_backend_openmp"] = "parallel backend: OpenMP" in torch.__config__.parallel_info()

    # A team larger than any parallel region run so far in this process (torch ran none larger than its
    # default thread count): the engine's region must start new pooled worker threads.
    team = torch.get_num_threads() + 4
    out["team"], out["default_threads"] = team, torch.get_num_threads()
    torch.set_num_threads(team)
    # Large enough that the engine uses the whole team (small calls take fewer threads, _fused_ops.thread_count).
    x = torch.randn(3000, 5, dtype=torch.float64)
    before = threads()
    latentdiv.pairwise_sum(x, kernel="gaussian", bandwidth=2.0)
    out["engine_started"] = threads() - before
    # torch's own parallel op with the same team size: with ONE runtime it reuses the engine's pool.
    big = torch.randn(4_000_000, dtype=torch.float64)
    before = threads()
    big.exp_()
    out["torch_started"] = threads() - before
    print(json.dumps(out))
""")


def _probe(order: str) -> dict:
    env = dict(os.environ)
    # The latentdiv these tests import (installed, or the source tree on PYTHONPATH) is the one probed.
    env["PYTHONPATH"] = os.pathsep.join([str(Path(latentdiv.__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    for name in ("OMP_NUM_THREADS", "OMP_DYNAMIC", "OMP_THREAD_LIMIT", "GOMP_SPINCOUNT"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-c", PROBE, order], capture_output=True, text=True, env=env,
                          timeout=300, cwd=str(Path(latentdiv.__file__).resolve().parents[1]))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@linux_openmp_build
@pytest.mark.parametrize("order", ["torch-first", "latentdiv-only"])
def test_one_openmp_runtime_and_a_parallel_engine(order):
    out = _probe(order)
    assert len(out["after_latentdiv"]) == 1, (
        f"expected exactly one OpenMP runtime mapped after import, found {out['after_latentdiv']}")
    if order == "torch-first":
        assert out["after_latentdiv"] == out["after_torch"], (
            f"import latentdiv mapped another OpenMP runtime: {out['after_torch']} -> {out['after_latentdiv']}")
    # The engine ran its region on `team` threads: the shared pool grew to team - 1 workers, of which at
    # most default_threads - 1 could exist before.
    assert out["engine_started"] >= out["team"] - out["default_threads"], out
    if out["parallel_backend_openmp"]:
        # torch's region of the same size found those workers in ITS runtime's pool: the same runtime.
        assert out["torch_started"] == 0, out


def test_version_is_single_sourced():
    assert re.fullmatch(r"\d+\.\d+\.\d+([abrc]+\d+|\.dev\d+|\.post\d+)?", latentdiv.__version__), latentdiv.__version__
    pyproject = ROOT / "pyproject.toml"
    if pyproject.is_file():  # source tree: pyproject.toml reads the version from __init__.py, has none itself
        text = pyproject.read_text()
        assert re.search(r'^dynamic\s*=\s*\[[^]]*"version"', text, re.M), "pyproject.toml: version must be dynamic"
        assert not re.search(r"^version\s*=", text, re.M), "pyproject.toml: a static version duplicates __init__.py's"
        assert 'input = "python/latentdiv/__init__.py"' in text
    from importlib import metadata

    try:
        dist = metadata.distribution("latentdiv")
    except metadata.PackageNotFoundError:
        return  # a source tree on PYTHONPATH, not installed
    installed_init = Path(str(dist.locate_file("latentdiv/__init__.py"))).resolve()
    if installed_init == Path(latentdiv.__file__).resolve():  # the tests import this installation
        assert dist.version == latentdiv.__version__


CMAKE, NVCC = shutil.which("cmake"), shutil.which("nvcc")


@pytest.mark.skipif(not (ROOT / "CMakeLists.txt").is_file(), reason="CMakeLists.txt not present (outside the source tree)")
@pytest.mark.skipif(CMAKE is None or NVCC is None or shutil.which("make") is None, reason="needs cmake, make and nvcc")
def test_cmake_configure_with_the_makefile_generator_and_cuda(tmp_path):
    """A plain `cmake -G "Unix Makefiles" -DLATENTDIV_CUDA=ON` configures and generates (it used to stop
    with "CUDA_ARCHITECTURES is empty for target _C"), and its CUDA flags carry every documented arch."""
    pybind11 = pytest.importorskip("pybind11")
    build = tmp_path / "build"
    done = subprocess.run(
        [CMAKE, "-S", str(ROOT), "-B", str(build), "-G", "Unix Makefiles", "-DLATENTDIV_CUDA=ON",
         f"-Dpybind11_DIR={pybind11.get_cmake_dir()}", f"-DPython_EXECUTABLE={sys.executable}"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "CUDA_ARCHITECTURES is empty" not in done.stderr
    flags = (build / "CMakeFiles" / "latentdiv_cuda.dir" / "flags.make").read_text()
    for arch in ("sm_75", "sm_80", "sm_86", "sm_89", "sm_90", "sm_100", "sm_120"):
        assert f"code=[{arch}]" in flags or f",{arch}]" in flags, f"{arch} SASS missing from the nvcc flags: {flags}"
    assert "arch=compute_90,code=[compute_90" in flags, "compute_90 PTX missing from the nvcc flags"
