// csrc/cpu/pair_reduce/gemm.h: the GEMM micro-kernels of the gradient (row side and the transposed column
// side) and the fixed-order sums of the VALUE lanes.
//
// Private to the CPU schedule: included only by csrc/cpu/pair_reduce_cpu.cpp, which is compiled once
// per ISA variant, so everything here lives in latentdiv::LD_ISA_NS's anonymous namespace (no symbol
// of one variant can be merged with another's; tests/test_determinism.py checks there are no weak
// symbols).
#pragma once

#include "latentdiv/common.h"
#include "simd.h"

#ifndef LD_ISA_NS
#error "LD_ISA_NS must name the ISA variant namespace (see CMakeLists.txt)"
#endif

namespace latentdiv {
namespace LD_ISA_NS {
namespace {

// G[Out][dp] (double) += A x Ys[Terms][dp], where A (Out x Terms) is read from a tile C with strides:
// A[o][t] = C[o * kOut + t * kTerm]. The pair reduction's GRAD uses A = the row-major tile
// (Terms = kNR, rows of Ys = the panel's points); pdist's backward also uses A = the tile transposed
// (Terms = kMR, rows of Ys = the block's points, Out = kColGroup columns at a time) for the column
// side of each pair. KV vectors of columns of d at a time, accumulated in T over the Terms before
// entering double.
template <class T, int KV, int Out, int Terms, int kOut, int kTerm>
void gemm_chunk(const T* C,   // tile read as A[o][t] = C[o * kOut + t * kTerm], o < Out, t < Terms
                const T* ys,  // [Terms, dp]
                index_t dp, index_t k0, double* G) {  // G: [Out, dp]
  constexpr int L = lanes<T>();
  V<T> acc[Out][KV];
  for (int r = 0; r < Out; ++r)
    for (int v = 0; v < KV; ++v) acc[r][v] = vbroadcast(T(0));
  for (int t = 0; t < Terms; ++t) {
    V<T> yv[KV];
    for (int v = 0; v < KV; ++v) yv[v] = vload(ys + t * dp + k0 + v * L);
    for (int r = 0; r < Out; ++r) {
      const V<T> cb = vbroadcast(C[r * kOut + t * kTerm]);
      for (int v = 0; v < KV; ++v) acc[r][v] += cb * yv[v];
    }
  }
  for (int r = 0; r < Out; ++r) {
    T tmp[KV * L];
    std::memcpy(tmp, acc[r], sizeof tmp);
    double* g = G + r * dp + k0;
#pragma omp simd
    for (int e = 0; e < KV * L; ++e) g[e] += static_cast<double>(tmp[e]);
  }
}

template <class T, int Out, int Terms, int kOut, int kTerm>
void gemm_strided(const T* C, const T* ys, index_t dp, double* G) {
  constexpr int L = lanes<T>();
  index_t k0 = 0;
  for (; k0 + 2 * L <= dp; k0 += 2 * L) gemm_chunk<T, 2, Out, Terms, kOut, kTerm>(C, ys, dp, k0, G);
  if (k0 < dp) gemm_chunk<T, 1, Out, Terms, kOut, kTerm>(C, ys, dp, k0, G);
}

// G[kMR][dp] += C[kMR][kNR] x Ys[kNR][dp] (C row-major).
template <class T>
void gemm_tile(const T* C, const T* ys, index_t dp, double* G) {
  gemm_strided<T, kMR, panel_cols<T>(), panel_cols<T>(), 1>(C, ys, dp, G);
}

// Output rows per call of the transposed (column-side) GEMM: divides kNR (4, 8, 16 or 32) and keeps
// Out x 2 accumulators plus the loads within the vector registers (32 on AVX-512, 16 otherwise).
constexpr int kColGroup = kVecBytes == 64 ? 8 : 4;

// Panels whose VALUE terms are summed in T before entering the double lanes: 4 for float (error
// ~ 4 eps of one lane's partial, far below plain float32 torch's), 1 for double (straight to double).
template <class T>
constexpr int kValuePanels() {
  return sizeof(T) == sizeof(float) ? 4 : 1;
}

// Fixed-order sum of a row's lane accumulators.
inline double lane_sum(const double* a, int count) {
  double s = 0.0;
  for (int c = 0; c < count; ++c) s += a[c];
  return s;
}

}  // namespace
}  // namespace LD_ISA_NS
}  // namespace latentdiv
