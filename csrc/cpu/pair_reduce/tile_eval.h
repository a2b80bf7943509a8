// csrc/cpu/pair_reduce/tile_eval.h: the kernel functor over one tile of r2 values: the generic omp simd
// loop, one pass per scale for sums over scales, and the exact Cramer-Wold tile evaluator.
//
// Private to the CPU schedule: included only by csrc/cpu/pair_reduce_cpu.cpp, which is compiled once
// per ISA variant, so everything here lives in latentdiv::LD_ISA_NS's anonymous namespace (no symbol
// of one variant can be merged with another's; tests/test_determinism.py checks there are no weak
// symbols).
#pragma once

#include <type_traits>

#include "latentdiv/common.h"
#include "latentdiv/cw_phi.h"
#include "latentdiv/kernels.h"
#include "latentdiv/ld_math.h"
#include "simd.h"

#ifndef LD_ISA_NS
#error "LD_ISA_NS must name the ISA variant namespace (see CMakeLists.txt)"
#endif

namespace latentdiv {
namespace LD_ISA_NS {
namespace {

// The functor over a tile: the generic batched helper (the functor interface stays scalar, so the
// CUDA schedule shares it); omp simd vectorizes it with host_math's exp/sqrt.
template <class K, class T>
void eval_tile_generic(const KernelParams& p, const T* __restrict R, T* __restrict F, T* __restrict DF, int count) {
  // A local copy: stores to F / DF provably cannot change the params, so no run-time alias check
  // sends the loop to its scalar version.
  const KernelParams q = p;
#pragma omp simd
  for (int e = 0; e < count; ++e) K::eval(q, R[e], F[e], DF[e]);
}

// Kernels whose functor declares TileForm::kSumOverScales (kernels.h): f = sum over params[s] of a
// one-scale f_s. GCC does not vectorize the tile loop around the functor's runtime loop over scales, so
// for these the schedule calls the functor once per scale with a one-scale copy of the params (one
// vectorized pass each) and sums in the functor's own order (f = 0 + f_0 + f_1 ...): bit-identical to
// one call for Gaussian and Imq; Laplacian divides its slope by 2r per scale instead of once (same value
// to rounding).
template <class K>
constexpr bool kSumOverScales = K::kTileForm == TileForm::kSumOverScales;

// A kernel with a tile evaluator of its own (kernels.h TileForm; today the exact Cramer-Wold one).
template <class K>
constexpr bool kOwnTileEvaluator = K::kTileForm == TileForm::kCramerWoldExact;

// The exact Cramer-Wold functor (cw_phi.h) runs a Clenshaw loop over its N coefficients: a run-time
// trip count inside the per-element loop, which GCC does not vectorize (the generic tile ran at ~7%
// of the SGEMM rate). Its CPU tile evaluator turns the loops inside out: coefficients outside, the
// tile's elements inside, each inner loop a fixed-length loop over aligned per-element state that
// omp simd vectorizes; the Clenshaw steps themselves run on vector registers (below).
// Per element the arithmetic is cw_phi_of_r2's (same formulas, same order of operations, so the same
// bits where the contraction into FMA is the same; tests/test_isa.py compares with the scalar functor
// of the CUDA schedule's emulation), including clamp, kind = exp (D = 1) and the NaN / inf rules.
// Without Slope (VALUE / TOTAL passes) the derivative recurrence is skipped and DF is not written; F
// is the same arithmetic either way.
template <class T, int Count, bool Slope>
void cw_exact_tile(const KernelParams& p, const T* __restrict R, T* __restrict F, T* __restrict DF) {
  const double* params = p.params;
  if (static_cast<int>(params[1]) == kCwPhiKindExp) {
    const T sc = T(params[0]);
#pragma omp simd
    for (int e = 0; e < Count; ++e) {
      const T r2 = cw_detail::clamp_nonneg(R[e]);
      const T f = ld_exp(-sc * r2);
      F[e] = f;
      if constexpr (Slope) DF[e] = -sc * f;
    }
    return;
  }
  const int n = cw_detail::cheb_terms<T>(params, p.n_params);  // (float: N32 of the N coefficients)
  const double* c = params + kCwPhiHeader;
  const T A = T(params[4]);  // a / s_scale: r2 units
  // Per element: 1 / (x + A), w, t and the Clenshaw state b_{k+1}, b_{k+2} and their t-derivatives.
  alignas(kAlign) T inv[Count], w[Count], t[Count], b1[Count], b2[Count], d1[Count], d2[Count];
#pragma omp simd
  for (int e = 0; e < Count; ++e) {
    const T x = cw_detail::clamp_nonneg(R[e]);
    inv[e] = T(1) / (x + A);
    w[e] = A * inv[e];
    t[e] = T(1) - T(2) * w[e];
  }
  // The Clenshaw steps k = n-1 .. 1 with each element's state in vector registers: a group of kChains
  // vectors runs every step before the next group starts (several independent recurrences hide the
  // latency of each one's chain b1 -> b0). Per element the same operations in the same order as
  // cw_detail::cheb_eval. (State in per-element arrays, loaded and stored at every step, made the pass with
  // gradient 12% slower at n = 128, D = 8.)
  constexpr int L = lanes<T>();
  constexpr int kChains = kVecBytes == 64 ? 4 : 2;  // 32 vector registers (AVX-512), else 16
  static_assert(Count % (L * kChains) == 0, "a tile is whole groups of vectors");
  const V<T> two = vbroadcast(T(2));
  for (int e0 = 0; e0 < Count; e0 += L * kChains) {
    V<T> t2[kChains], vb1[kChains], vb2[kChains], vd1[kChains], vd2[kChains];
    for (int q = 0; q < kChains; ++q) {
      const V<T> tq = vload(t + e0 + q * L);
      t2[q] = tq + tq;
      vb1[q] = vb2[q] = vd1[q] = vd2[q] = vbroadcast(T(0));
    }
    for (int k = n - 1; k >= 1; --k) {
      const V<T> ck = vbroadcast(T(c[k]));
      for (int q = 0; q < kChains; ++q) {
        const V<T> b0 = ck + t2[q] * vb1[q] - vb2[q];
        if constexpr (Slope) {
          const V<T> d0 = two * vb1[q] + t2[q] * vd1[q] - vd2[q];
          vd2[q] = vd1[q];
          vd1[q] = d0;
        }
        vb2[q] = vb1[q];
        vb1[q] = b0;
      }
    }
    for (int q = 0; q < kChains; ++q) {
      vstore(b1 + e0 + q * L, vb1[q]);
      vstore(b2 + e0 + q * L, vb2[q]);
      if constexpr (Slope) {
        vstore(d1 + e0 + q * L, vd1[q]);
        vstore(d2 + e0 + q * L, vd2[q]);
      }
    }
  }
  const T c0 = n > 0 ? T(c[0]) : T(0);
#pragma omp simd
  for (int e = 0; e < Count; ++e) {
    const T g = c0 + t[e] * b1[e] - b2[e];
    const T sw = ld_sqrt(w[e]);
    F[e] = sw * g;
    if constexpr (Slope) {
      const T gt = b1[e] + t[e] * d1[e] - d2[e];
      DF[e] = sw * inv[e] * (T(2) * w[e] * gt - T(0.5) * g);
    }
  }
}

// The functor over one tile of kMR x kNR r2 values, as its kTileForm says (kernels.h). Kernels get the
// generic loop or, if they are sums over scales, one pass per scale; a kernel may add its own tile
// evaluator (optional: only a kernel whose functor does not vectorize as a per-element call needs one;
// the CUDA schedule always uses the scalar functor). Slope = false: only F is needed (a tile evaluator may skip DF; the others
// compute it anyway, it is a multiply or two).
template <class K, bool Slope, class T>
void eval_tile(const KernelParams& p, const T* __restrict R, T* __restrict F, T* __restrict DF) {
  constexpr int count = kMR * panel_cols<T>();
  if constexpr (K::kTileForm == TileForm::kCramerWoldExact) {
    cw_exact_tile<T, count, Slope>(p, R, F, DF);
  } else if constexpr (!kSumOverScales<K>) {
    eval_tile_generic<K>(p, R, F, DF, count);
  } else if (p.n_params == 1) {
    // One scale (the common case): the functor writes F and DF itself. Bit-identical to the loop
    // below, whose F = 0 + f adds to the functor's own 0 + ... (never -0), without clearing the tile
    // and reading it back.
    const KernelParams q = p;
#pragma omp simd
    for (int e = 0; e < count; ++e) K::eval(q, R[e], F[e], DF[e]);
  } else {
    for (int e = 0; e < count; ++e) F[e] = DF[e] = T(0);
    for (int s = 0; s < p.n_params; ++s) {
      KernelParams q = p;  // a fully initialised copy, reduced to one scale
      q.n_params = 1;
      q.params[0] = p.params[s];
#pragma omp simd
      for (int e = 0; e < count; ++e) {
        T f, df;
        K::eval(q, R[e], f, df);
        F[e] += f;
        DF[e] += df;
      }
    }
  }
}

}  // namespace
}  // namespace LD_ISA_NS
}  // namespace latentdiv
