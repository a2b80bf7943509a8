#!/usr/bin/env bash
# Developer build: compile latentdiv._C in ./build (or $1) and copy it into python/latentdiv, so
# `PYTHONPATH=python python -m pytest` runs against the working tree without installing anything.
# Uses the interpreter $PYTHON (default: python3) for pybind11's CMake files. Extra arguments after
# the build directory go to CMake (e.g. -DLATENTDIV_CUDA=ON).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
BUILD=${1:-build}
shift || true
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLATENTDIV_CUDA=${LATENTDIV_CUDA:-OFF} \
  -Dpybind11_DIR="$("$PYTHON" -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(command -v "$PYTHON")" "$@" >/dev/null
cmake --build "$BUILD" -j 2
# Copy then rename: a running Python that has the old module mapped keeps its (unchanged) file.
for so in "$BUILD"/_C*.so; do cp "$so" "python/latentdiv/.$(basename "$so").tmp" && mv -f "python/latentdiv/.$(basename "$so").tmp" "python/latentdiv/$(basename "$so")"; done
echo "built $(ls python/latentdiv/_C*.so)"
