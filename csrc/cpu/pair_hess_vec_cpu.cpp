// The HESS_VEC mode of the CPU schedule (common.h, Mode::kHessVec): the pair reduction behind
// second-order gradients (docs/second_order.md). Compiled once per ISA variant like
// pair_reduce_cpu.cpp (CMakeLists.txt sets LD_ISA_NS and the -m flags); dispatch.cpp routes the mode
// here, so the first-order modes' code paths are untouched.
//
// Per pair, with d = x_i - y_j, u = wy_j vx_i - wx_i vy_j and the kernel's f', f'' at r2 = |d|^2:
//   out_grad[i] += 2 f' u + 4 f'' (d . u) d
//   out_rows[i] += 2 f' (d . vy_j)
// Everything is computed from direct differences in double (the inputs are read in their dtype and
// widened): second-order terms multiply d twice, and the dot-product form's cancellation near
// duplicates would be squared. Cost O(n m d), memory O(kRowBlock d) per thread.
//
// Determinism: row i is reduced by one thread over j = 0 .. m-1 in order, whatever the thread count.

#include <algorithm>
#include <cstddef>
#include <vector>

#include "latentdiv/engine.h"
#include "latentdiv/kernels.h"

#if defined(_OPENMP)
#include <omp.h>
#endif

#ifndef LD_ISA_NS
#error "LD_ISA_NS must name the ISA variant namespace (see CMakeLists.txt)"
#endif

namespace latentdiv {
namespace LD_ISA_NS {
namespace {

// Rows reduced together: each y_j (and vy_j) is read once per block of rows instead of once per row.
constexpr index_t kRowBlock = 16;

template <class K, class T>
void hess_vec_rows(const PairArgs& a) {
  const T* x = static_cast<const T*>(a.x);    // [n, d]
  const T* y = static_cast<const T*>(a.y);    // [m, d]
  const T* wx = static_cast<const T*>(a.wx);  // [n] or nullptr (ones)
  const T* wy = static_cast<const T*>(a.wy);  // [m] or nullptr (ones)
  const T* vx = static_cast<const T*>(a.vx);  // [n, d] or nullptr (zeros)
  const T* vy = static_cast<const T*>(a.vy);  // [m, d] or nullptr (zeros)
  T* out = static_cast<T*>(a.out_grad);       // [n, d]
  double* rows = a.out_rows;                  // [n] or nullptr
  const index_t n = a.n, m = a.m, d = a.d;
  const bool self = a.self_pairs != 0;
  const KernelParams kp = a.kernel;
  const index_t blocks = (n + kRowBlock - 1) / kRowBlock;

#if defined(_OPENMP)
#pragma omp parallel num_threads(a.num_threads > 0 ? a.num_threads : 1)
#endif
  {
    // Per thread: the block's rows and row vectors widened to double, and the accumulators.
    std::vector<double> xb(static_cast<std::size_t>(kRowBlock * d));
    std::vector<double> vb(static_cast<std::size_t>(kRowBlock * d), 0.0);
    std::vector<double> acc(static_cast<std::size_t>(kRowBlock * d));
    std::vector<double> yb(static_cast<std::size_t>(d));
    std::vector<double> wb(static_cast<std::size_t>(d), 0.0);
    double racc[kRowBlock];
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (index_t b = 0; b < blocks; ++b) {
      const index_t i0 = b * kRowBlock;
      const index_t rcount = std::min(kRowBlock, n - i0);
      for (index_t r = 0; r < rcount; ++r) {
        for (index_t k = 0; k < d; ++k) {
          xb[r * d + k] = static_cast<double>(x[(i0 + r) * d + k]);
          if (vx != nullptr) vb[r * d + k] = static_cast<double>(vx[(i0 + r) * d + k]);
        }
        racc[r] = 0.0;
      }
      std::fill(acc.begin(), acc.end(), 0.0);
      for (index_t j = 0; j < m; ++j) {
        for (index_t k = 0; k < d; ++k) yb[k] = static_cast<double>(y[j * d + k]);
        if (vy != nullptr) {
          for (index_t k = 0; k < d; ++k) wb[k] = static_cast<double>(vy[j * d + k]);
        }
        const double wyj = wy != nullptr ? static_cast<double>(wy[j]) : 1.0;
        for (index_t r = 0; r < rcount; ++r) {
          const index_t i = i0 + r;
          if (self && i == j) continue;  // GRAD's diagonal term is identically 0 (common.h)
          const double* xi = xb.data() + r * d;
          const double* vi = vb.data() + r * d;
          double r2 = 0.0, dot_x = 0.0, dot_y = 0.0;
#pragma omp simd reduction(+ : r2, dot_x, dot_y)
          for (index_t k = 0; k < d; ++k) {
            const double diff = xi[k] - yb[k];
            r2 += diff * diff;
            dot_x += diff * vi[k];
            dot_y += diff * wb[k];
          }
          double f, df, d2f;
          K::template eval2<double>(kp, r2, f, df, d2f);
          const double wxi = wx != nullptr ? static_cast<double>(wx[i]) : 1.0;
          const double cx = 2.0 * df * wyj;                        // on vx_i
          const double cy = 2.0 * df * wxi;                        // on vy_j (subtracted)
          const double cd = 4.0 * d2f * (wyj * dot_x - wxi * dot_y);  // on d
          double* ai = acc.data() + r * d;
#pragma omp simd
          for (index_t k = 0; k < d; ++k) ai[k] += cx * vi[k] - cy * wb[k] + cd * (xi[k] - yb[k]);
          racc[r] += 2.0 * df * dot_y;
        }
      }
      for (index_t r = 0; r < rcount; ++r) {
        for (index_t k = 0; k < d; ++k) out[(i0 + r) * d + k] = static_cast<T>(acc[r * d + k]);
        if (rows != nullptr) rows[i0 + r] = racc[r];
      }
    }
  }
}

template <class T>
Status hess_vec_dispatch(const PairArgs& a) {
  switch (static_cast<KernelId>(a.kernel.kernel)) {
#define LD_CASE(Functor, Id)          \
  case Id:                            \
    hess_vec_rows<Functor, T>(a);     \
    return kOk;
    LATENTDIV_FOR_EACH_KERNEL(LD_CASE)
#undef LD_CASE
  }
  return kUnknownKernel;
}

}  // namespace

Status pair_hess_vec_cpu(const PairArgs& a) {
  const Status s = validate(a);
  if (s != kOk) return s;
  if (a.mode != static_cast<std::int32_t>(Mode::kHessVec)) return kBadArgument;
  if (a.n == 0) return kOk;
  return a.dtype == static_cast<std::int32_t>(DType::kFloat32) ? hess_vec_dispatch<float>(a)
                                                               : hess_vec_dispatch<double>(a);
}

}  // namespace LD_ISA_NS
}  // namespace latentdiv
