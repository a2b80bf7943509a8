// latentdiv/pair_batched.h: many weightings of one pair of point sets in one engine pass (issue 14).
//
//   out[b] = sum_i sum_j W[b, i] f(|x_i - y_j|^2) V[b, j],   b = 0 .. B-1,
//
// the quadratic (bilinear) forms w_b^T K v_b of one kernel matrix K for B weight pairs. A permutation
// test, a bootstrap or a many-seed Monte Carlo is exactly this: B weightings of the same pairs. Each
// pair's kernel value is computed once and used for all B weightings: cost O(n m (d + B)) instead of
// B passes of O(n m d). Self pairs (y is x) may skip the diagonal (exclude_diagonal).
//
// Numerics (CPU, cpu/pair_batched_cpu.cpp): inputs are widened to double; r2 from direct differences,
// the kernel in double, every sum in double. Determinism: row i's B sums are reduced by one thread over
// j = 0 .. m-1 in order; rows are grouped in fixed groups of rows whose partial sums are added serially
// in group order, so the bits depend neither on the thread count nor on B (each weighting's arithmetic
// is the same whatever the other weightings are).
//
// Torch-free, like the rest of the engine: raw pointers and sizes in, a Status out.
#pragma once

#include <cstddef>
#include <cstdint>

#include "latentdiv/common.h"
#include "latentdiv/engine.h"

namespace latentdiv {

struct BatchedPairArgs {
  const void* x;   // [n, d], dtype
  const void* y;   // [m, d], dtype; equals x when self_pairs
  const void* w;   // [batch, n], dtype: the row-side weights W
  const void* v;   // [batch, m], dtype: the column-side weights V
  double* out;     // [batch]: out[b] = w_b^T K v_b
  void* workspace; // CUDA only: batched_cuda_workspace_bytes() bytes (per-block partial sums)
  index_t n, m, d, batch;
  std::int32_t dtype;             // DType
  std::int32_t self_pairs;        // 1: y is x (m == n); enables exclude_diagonal
  std::int32_t exclude_diagonal;  // 1: skip j == i; requires self_pairs
  std::int32_t symmetric;         // 1: v is w (and self pairs): the CPU schedule visits j >= i only
  std::int32_t num_threads;       // CPU: OpenMP threads
  KernelParams kernel;
};

// The checks every schedule of this mode (CPU, CUDA, the CUDA emulator) makes first; the Python layer
// validates user input before and names the argument.
inline Status validate_batched(const BatchedPairArgs& a) {
  if (a.dtype != static_cast<std::int32_t>(DType::kFloat32) && a.dtype != static_cast<std::int32_t>(DType::kFloat64)) {
    return kBadArgument;
  }
  if (a.n < 0 || a.m < 0 || a.d < 1 || a.batch < 0) return kBadArgument;
  if (a.x == nullptr || a.y == nullptr) return kBadArgument;
  if (a.batch > 0 && a.out == nullptr) return kBadArgument;
  if (a.batch > 0 && ((a.n > 0 && a.w == nullptr) || (a.m > 0 && a.v == nullptr))) return kBadArgument;
  if (a.self_pairs != 0 && (a.x != a.y || a.n != a.m)) return kBadArgument;
  if (a.exclude_diagonal != 0 && a.self_pairs == 0) return kBadArgument;
  if (a.symmetric != 0 && (a.self_pairs == 0 || a.v != a.w)) return kBadArgument;
  if (a.kernel.n_params < 0 || a.kernel.n_params > kMaxKernelParams) return kBadArgument;
  return kOk;
}

// One ISA variant of the CPU schedule of this mode (compiled per variant, like pair_reduce_cpu.cpp).
#define LATENTDIV_DECLARE_BATCHED_VARIANT(ns)          \
  namespace ns {                                       \
  Status pair_batched_cpu(const BatchedPairArgs& args); \
  }
LATENTDIV_DECLARE_BATCHED_VARIANT(cpu_baseline)
#if defined(LATENTDIV_HAVE_AVX2)
LATENTDIV_DECLARE_BATCHED_VARIANT(cpu_avx2)
#endif
#if defined(LATENTDIV_HAVE_AVX512)
LATENTDIV_DECLARE_BATCHED_VARIANT(cpu_avx512)
#endif
#undef LATENTDIV_DECLARE_BATCHED_VARIANT

// Dispatch (cpu/dispatch.cpp): kAuto picks the best variant, a forced one that is not available
// returns kUnsupported. Returns kInterrupted (out incomplete) after an interrupt (engine.h).
Status pair_batched_cpu(const BatchedPairArgs& args, CpuIsa isa);

#if defined(LATENTDIV_WITH_CUDA)
// CUDA schedule (cuda/batched_schedule.h, cuda/pair_batched_cuda.cu), on `stream` (a cudaStream_t).
Status pair_batched_cuda(const BatchedPairArgs& args, void* stream);
#endif

}  // namespace latentdiv
