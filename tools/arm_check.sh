#!/usr/bin/env bash
# aarch64 check of the portable CPU variant (issue 11, item 5), on an x86 host: cross-compiles the
# baseline variant of csrc/cpu/pair_reduce_cpu.cpp (16-byte GCC vector extensions: NEON on aarch64)
# with Debian's aarch64 cross compiler and runs under qemu-user
#   1. tests/cpp/repeat_driver.cpp, the determinism driver (every repetition bit-identical, with the
#      scratch buffers placed back to back and far apart), and
#   2. tools/callgrind_driver.cpp's fixed engine calls, whose checksums must agree with the same calls
#      of the native baseline build to 1e-5 relative (float32 sums; different FMA contraction is allowed).
# Needs: apt-get install g++-aarch64-linux-gnu qemu-user. This is emulation: it shows the code builds
# and computes the same results on aarch64, not how fast it is on real ARM hardware.
set -euo pipefail
cd "$(dirname "$0")/.."
CROSS=${CROSS:-aarch64-linux-gnu-g++}
QEMU=${QEMU:-qemu-aarch64}
HOSTCXX=${CXX:-g++}
command -v "$CROSS" >/dev/null || { echo "arm_check: $CROSS not found (apt-get install g++-aarch64-linux-gnu)"; exit 2; }
command -v "$QEMU" >/dev/null || { echo "arm_check: $QEMU not found (apt-get install qemu-user)"; exit 2; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
FLAGS="-O3 -std=c++17 -fopenmp -fno-trapping-math -fno-math-errno -DLD_ISA_NS=cpu_baseline -Icsrc/include -Wall -Wextra"
# shellcheck disable=SC2086
$CROSS $FLAGS -static csrc/cpu/pair_reduce_cpu.cpp csrc/cpu/validate.cpp tests/cpp/repeat_driver.cpp -o "$WORK/repeat_arm"
# shellcheck disable=SC2086
$CROSS $FLAGS -static csrc/cpu/pair_reduce_cpu.cpp csrc/cpu/validate.cpp tools/callgrind_driver.cpp -o "$WORK/calls_arm"
# shellcheck disable=SC2086
$HOSTCXX $FLAGS csrc/cpu/pair_reduce_cpu.cpp csrc/cpu/validate.cpp tools/callgrind_driver.cpp -o "$WORK/calls_host"
echo "== determinism driver under $QEMU (columns: what mode D dtype repetitions-that-differed)"
OMP_NUM_THREADS=2 "$QEMU" "$WORK/repeat_arm" 4 5 13 | tee "$WORK/repeat.txt"
bad=$(awk '$5 != 0' "$WORK/repeat.txt" | wc -l)
fail=0
if [[ "$bad" != 0 ]]; then echo "FAIL: $bad cases changed bits between repetitions"; fail=1; fi
echo "== engine calls: aarch64 (qemu) vs native baseline checksums"
for c in gaussian:value:128:8 gaussian:value_grad:257:8 gaussian:value_grad_triangle:257:8 gaussian:value_grad:200:33 \
         imq7:value_grad:128:16 energy:value_grad:100:5 cw_approx:total:300:8 pdist:fwd:100:8 pdist:bwd:100:13; do
  IFS=: read -r kernel mode n d <<<"$c"
  a=$(OMP_NUM_THREADS=2 "$QEMU" "$WORK/calls_arm" "$kernel" "$mode" "$n" "$d" | awk '{print $4}')
  h=$(OMP_NUM_THREADS=2 "$WORK/calls_host" "$kernel" "$mode" "$n" "$d" | awk '{print $4}')
  ok=$(python3 -c "a, h = float('$a'), float('$h'); print('ok' if abs(a - h) <= 1e-5 * max(1.0, abs(h)) else 'FAIL')")
  printf '%-9s %-20s n=%-4s D=%-3s aarch64 %-24s host %-24s %s\n' "$kernel" "$mode" "$n" "$d" "$a" "$h" "$ok"
  [[ "$ok" == ok ]] || fail=1
done
if [[ "$fail" == 0 ]]; then echo "arm_check: PASS"; else echo "arm_check: FAIL"; fi
exit "$fail"
