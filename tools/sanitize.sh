#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer over the engine: every CPU ISA variant this processor
# runs, the host emulation of the CUDA schedule, pdist. Three steps, each must be clean:
#   1. build latentdiv._C with -fsanitize=address,undefined in $BUILD (default build-sanitize) and stage
#      it with a copy of python/latentdiv in $BUILD/pkg (the developer module in python/ is untouched);
#   2. the C++ drivers of tests/cpp, compiled per ISA variant with the same flags (system allocator);
#   3. a subset of the Python suite (the engine's tests; $SANITIZE_TESTS to change it) against the
#      staged package, with the sanitizer runtimes preloaded into python (LD_PRELOAD) and leak
#      detection off (the interpreter does not free everything at exit).
# Any report stops the step with a non-zero exit (-fno-sanitize-recover, halt_on_error).
# Usage: bash tools/sanitize.sh [BUILD_DIR]      (GCC or Clang; Linux x86-64)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
CXX=${CXX:-g++}
BUILD=${1:-build-sanitize}
mkdir -p "$BUILD"
BUILD=$(cd "$BUILD" && pwd)
# vptr checks need every polymorphic type's RTTI from sanitized code (pybind11 types come from the
# unsanitized interpreter): off. Everything else of -fsanitize=undefined is on and fatal.
SAN_FLAGS="-fsanitize=address,undefined -fno-sanitize=vptr -fno-sanitize-recover=all -fno-omit-frame-pointer -g"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:halt_on_error=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

echo "== 1. sanitized build ($BUILD)"
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLATENTDIV_CUDA=OFF -DLATENTDIV_WERROR=ON \
  -DCMAKE_CXX_COMPILER="$CXX" -DCMAKE_CXX_FLAGS="$SAN_FLAGS" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" -DCMAKE_MODULE_LINKER_FLAGS="-fsanitize=address,undefined" \
  -Dpybind11_DIR="$("$PYTHON" -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(command -v "$PYTHON")" >/dev/null
cmake --build "$BUILD" -j 2
rm -rf "$BUILD/pkg" && mkdir -p "$BUILD/pkg"
cp -r python/latentdiv "$BUILD/pkg/latentdiv"
rm -f "$BUILD"/pkg/latentdiv/_C*.so
cp "$BUILD"/_C*.so "$BUILD/pkg/latentdiv/"

# The ISA variants this processor runs (the sanitized module itself says, with the runtime preloaded).
PRELOAD="$("$CXX" -print-file-name=libasan.so):$("$CXX" -print-file-name=libubsan.so)"
VARIANTS=$(LD_PRELOAD="$PRELOAD" PYTHONPATH="$BUILD/pkg" "$PYTHON" -c \
  "from latentdiv import _C; print(' '.join(_C.build_info()['cpu_isa_usable']))")
echo "   CPU variants run here: $VARIANTS"

echo "== 2. C++ drivers (tests/cpp), per variant"
declare -A ISA_FLAGS=([baseline]="" [avx2]="-mavx2 -mfma" [avx512]="-mavx512f -mavx512dq -mavx512vl -mavx512bw -mavx2 -mfma")
for v in $VARIANTS; do
  # The flags CMakeLists.txt gives each variant (latentdiv_cpu_variant); LD_SYSTEM_ALLOCATOR: the driver
  # keeps the system allocator, whose blocks the sanitizer guards (its bump arena would hide overruns).
  flags="-O1 -std=c++17 -fopenmp -fno-trapping-math -fno-math-errno ${ISA_FLAGS[$v]} -DLD_ISA_NS=cpu_$v \
    -DLD_SYSTEM_ALLOCATOR -I$ROOT/csrc/include $SAN_FLAGS"
  # shellcheck disable=SC2086
  "$CXX" $flags "$ROOT/csrc/cpu/pair_reduce_cpu.cpp" "$ROOT/csrc/cpu/validate.cpp" "$ROOT/tests/cpp/repeat_driver.cpp" \
    -o "$BUILD/repeat_driver_$v"
  OMP_NUM_THREADS=2 "$BUILD/repeat_driver_$v" 2 1 5 8 9 13 33 > "$BUILD/repeat_driver_$v.out"
  # (Also still deterministic: every case's count of repetitions that changed bits is 0.)
  awk '$5 != 0 { print "   differing repetitions: " $0; bad = 1 } END { exit bad }' "$BUILD/repeat_driver_$v.out"
  echo "   repeat_driver ($v): $(wc -l < "$BUILD/repeat_driver_$v.out") cases clean"
done

echo "== 3. Python suite subset (engine tests), runtime preloaded"
TESTS=${SANITIZE_TESTS:-tests/test_pairwise.py tests/test_isa.py tests/test_cuda.py tests/test_range.py tests/test_errors.py tests/test_memory.py}
# shellcheck disable=SC2086
LD_PRELOAD="$PRELOAD" PYTHONPATH="$BUILD/pkg" "$PYTHON" -m pytest -q -x -p no:cacheprovider $TESTS
echo "sanitize: clean"
