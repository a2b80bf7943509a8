#!/usr/bin/env bash
# After `pip install .` with LATENTDIV_CUDA=ON: fail loudly unless nvcc is present and the INSTALLED
# latentdiv reports CUDA kernels (cuda=True, a non-empty arch list), imports without a GPU/driver
# (cudart linked statically: no libcudart.so dependency) and does not initialise CUDA at import.
# Run it from outside the source tree's python/ directory so the installed package is imported.
set -euo pipefail

if ! command -v nvcc >/dev/null 2>&1; then
  echo "cuda_build_check: FAIL: nvcc is not on PATH, so the CUDA kernels cannot have been built" >&2
  exit 1
fi
echo "cuda_build_check: $(nvcc --version | tail -1)"

cd "${TMPDIR:-/tmp}"  # never import a source checkout's python/latentdiv by accident
python - <<'PY'
import os
import subprocess
import sys

import torch
import latentdiv

info = latentdiv.backend_info()
problems = []
if not info.get("compiled"):
    problems.append(f"latentdiv._C is not importable: {info.get('import_error')}")
if info.get("cuda") is not True:
    problems.append("the installed latentdiv reports cuda=False (built without the CUDA kernels; "
                    "was LATENTDIV_CUDA=ON passed to pip install, and was nvcc found by CMake?)")
archs = info.get("cuda_archs") or ""
if not archs:
    problems.append("the installed latentdiv reports no CUDA architectures")
if torch.cuda.is_initialized():
    problems.append("importing latentdiv initialised CUDA")
so = latentdiv._ext._C.__file__ if latentdiv._ext._C is not None else None
if so:
    ldd = subprocess.run(["ldd", so], capture_output=True, text=True).stdout
    if "libcudart" in ldd:
        problems.append(f"{os.path.basename(so)} links libcudart dynamically (expected cudart_static):\n{ldd}")
if problems:
    print("cuda_build_check: FAIL\n  - " + "\n  - ".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"cuda_build_check: OK: cuda=True, archs={archs}, module {so}, "
      f"GPU visible: {torch.cuda.is_available()}")
PY
