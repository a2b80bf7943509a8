#!/usr/bin/env bash
# Instruction counts of the engine's hot loops (issue 11, item 6): a regression of a few percent is
# invisible in wall-clock time on a shared machine (30-50% noise) but exact in instructions.
# Builds tools/callgrind_driver.cpp against each ISA variant of csrc/cpu/pair_reduce_cpu.cpp (one
# translation unit with the private headers of csrc/cpu/pair_reduce/; the flags of CMakeLists.txt's
# latentdiv_cpu_variant; keep them in step) and runs a fixed set of engine
# calls under `valgrind --tool=callgrind`, collecting only inside the calls. Prints one line per
# (variant, case): instructions (Ir) per call, and the top functions of the call when VERBOSE=1.
# A variant the CPU cannot run is still counted: valgrind emulates AVX2 (not AVX-512: valgrind 3.19
# has no AVX-512, so that variant is skipped with a note unless the host's valgrind supports it).
#
#   bash tools/callgrind_bench.sh                  # every variant, the default cases
#   VARIANTS="avx2" CASES="gaussian:value_grad:128:8" bash tools/callgrind_bench.sh
#   OUT=counts.txt bash tools/callgrind_bench.sh   # also write the table to a file (diff two runs)
#   HASH=1 VARIANTS=avx512 bash tools/callgrind_bench.sh  # static per-function fingerprints instead
#     (tools/objcode_hash.py; for a variant valgrind cannot run: diff two runs to show code unchanged)
set -euo pipefail
cd "$(dirname "$0")/.."
CXX=${CXX:-g++}
VARIANTS=${VARIANTS:-"baseline avx2 avx512"}
CASES=${CASES:-"gaussian:value:128:8 gaussian:value_grad:128:8 gaussian:total:128:8 imq7:value_grad:128:8 \
gaussian:value_grad:512:8 gaussian:value_grad:512:16 gaussian:value_grad:512:32 gaussian:value_grad:512:64 \
energy:value_grad:512:8 cw_approx:value_grad:512:8 pdist:fwd:512:8 pdist:bwd:512:8"}
REPEATS=${REPEATS:-3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
declare -A FLAGS=([baseline]="" [avx2]="-mavx2 -mfma" [avx512]="-mavx512f -mavx512dq -mavx512vl -mavx512bw -mavx2 -mfma")
OUTPUT=()
for v in $VARIANTS; do
  flags="-O3 -std=c++17 -fopenmp -fno-trapping-math -fno-math-errno ${FLAGS[$v]} -DLD_ISA_NS=cpu_$v -Icsrc/include"
  # shellcheck disable=SC2086
  $CXX $flags -c csrc/cpu/pair_reduce_cpu.cpp -o "$WORK/schedule_$v.o"
  if [[ "${HASH:-0}" == 1 ]]; then
    while IFS= read -r line; do OUTPUT+=("$v $line"); echo "$v $line"; done < <(python3 tools/objcode_hash.py "$WORK/schedule_$v.o" | sort)
    continue
  fi
  # shellcheck disable=SC2086
  $CXX $flags "$WORK/schedule_$v.o" csrc/cpu/validate.cpp tools/callgrind_driver.cpp -o "$WORK/driver_$v"
  for c in $CASES; do
    IFS=: read -r kernel mode n d <<<"$c"
    out="$WORK/cg.$v.$kernel.$mode.$n.$d"
    if ! OMP_NUM_THREADS=1 valgrind --tool=callgrind --collect-atstart=no --callgrind-out-file="$out" \
        "$WORK/driver_$v" "$kernel" "$mode" "$n" "$d" "$REPEATS" >"$out.stdout" 2>"$out.log"; then
      line=$(printf '%-9s %-10s %-11s n=%-6s D=%-4s %s' "$v" "$kernel" "$mode" "$n" "$d" "not run (valgrind: $(grep -m1 -iE 'unrecognised|illegal|SIGILL' "$out.log" || echo failed))")
      OUTPUT+=("$line"); echo "$line"; continue
    fi
    total=$(grep -E '^summary:|^totals:' "$out" | head -1 | awk '{print $2}')
    per=$((total / REPEATS))
    line=$(printf '%-9s %-10s %-11s n=%-6s D=%-4s %14d Ir/call  %s' "$v" "$kernel" "$mode" "$n" "$d" "$per" "$(cut -d' ' -f3- "$out.stdout")")
    OUTPUT+=("$line"); echo "$line"
    if [[ "${VERBOSE:-0}" == 1 ]]; then
      callgrind_annotate --inclusive=no "$out" 2>/dev/null | grep -E "^ *[0-9,]+ \(" | sed -n "2,9p" | cut -c1-160 | sed "s/^/    /"
    fi
  done
done
if [[ -n "${OUT:-}" ]]; then printf '%s\n' "${OUTPUT[@]}" >"$OUT"; fi
