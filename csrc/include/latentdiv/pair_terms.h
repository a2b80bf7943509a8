// latentdiv/pair_terms.h: several pair reductions of one loss in one engine call (issue 11: at
// training batch sizes the per-term overhead of separate calls was most of a loss's time).
//
//   L = sum_t coef_t S_t,   S_t = sum_ij a_i b_j f_t(|u_i - v_j|^2),
//
// with u, v two of up to kMaxPointSets point sets (for the Python layer: x, y and the origin, one
// point at 0). Every side that needs a gradient is computed in the same call through the
// schedule's VALUE_GRAD mode, so the caller gets L and dL/d(points), dL/d(weights) at once.
// Torch-free, CPU only (the CUDA entry lowers VALUE_GRAD to separate launches; this entry is the
// CPU schedule's one-pass form).
#pragma once

#include "latentdiv/common.h"
#include "latentdiv/engine.h"

namespace latentdiv {

constexpr int kMaxPointSets = 3;

struct PairTerm {
  std::int32_t left, right;       // point sets; left == right: self pairs (weights of the set on both sides)
  std::int32_t exclude_diagonal;  // 1: skip i == j (self pairs only)
  // 1: the term is sum_i a_i b r2_i f(r2_i) against a set of one point (f times r2; energy_distance's
  // closed form E||x - Y||, Y ~ N(0, I), needs (r2 / D) phi_{D+2}(r2 / 2)). r2 must be finite in double.
  std::int32_t times_r2;
  double coef;                    // c_t
  KernelParams kernel;
};

struct PairTermsArgs {
  const void* points[kMaxPointSets];  // [rows[s], d], dtype; unused sets may be null
  index_t rows[kMaxPointSets];
  const void* weights[kMaxPointSets];  // [rows[s]] dtype, or null (ones)
  void* grads[kMaxPointSets];          // [rows[s], d] dtype, or null: += dL/d(points), zero-initialised by the caller
  double* weight_grads[kMaxPointSets]; // [rows[s]] double, or null: += dL/d(weights)
  index_t d;
  std::int32_t dtype;
  std::int32_t num_threads;
  const PairTerm* terms;  // [n_terms]
  std::int32_t n_terms;
  double* out_total;  // [1] L (terms added in order)
};

// Runs the terms in order; the result does not depend on the thread count (each pass is the
// deterministic schedule of pair_reduce_cpu, the accumulations are serial in a fixed order).
Status pair_terms_cpu(const PairTermsArgs& args, CpuIsa isa);

}  // namespace latentdiv
