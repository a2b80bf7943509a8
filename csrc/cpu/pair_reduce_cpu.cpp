// The CPU schedule of the pair-reduction engine. This file is compiled once per ISA variant
// (CMakeLists.txt sets LD_ISA_NS and the -m flags), so it must not define anything outside that
// namespace.
//
// Determinism: row i is always reduced by one thread, over j in increasing order, into a double
// accumulator; the total is then summed over rows serially. The bits therefore do not depend on the
// thread count or on the OpenMP schedule.
#include <algorithm>
#include <cmath>
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

// Columns evaluated per batch: r2 for a tile, then the functor over the tile, then the reduction,
// so each phase is a simple loop the compiler can vectorize.
constexpr index_t kColTile = 64;

int thread_count(std::int32_t requested) { return requested > 0 ? requested : 1; }

template <class T>
T squared_distance(const T* xi,  // [d]
                   const T* yj,  // [d]
                   index_t d) {
  // Direct differences, not |x|^2 + |y|^2 - 2 x.y: exact zeros for duplicates, no cancellation.
  T acc = T(0);
  for (index_t k = 0; k < d; ++k) {
    const T diff = xi[k] - yj[k];
    acc += diff * diff;
  }
  return acc;
}

template <class K, class T>
void value_rows(const PairArgs& a) {
  const T* x = static_cast<const T*>(a.x);    // [n, d]
  const T* y = static_cast<const T*>(a.y);    // [m, d]
  const T* wy = static_cast<const T*>(a.wy);  // [m] or nullptr
  double* rows = a.out_rows;                  // [n]
  const index_t n = a.n, m = a.m, d = a.d;
  const bool skip_diag = a.exclude_diagonal != 0;
  const KernelParams p = a.kernel;

#pragma omp parallel for schedule(static) num_threads(thread_count(a.num_threads))
  for (index_t i = 0; i < n; ++i) {
    const T* xi = x + i * d;
    T r2[kColTile], f[kColTile], df[kColTile];
    double acc = 0.0;
    for (index_t j0 = 0; j0 < m; j0 += kColTile) {
      const index_t cols = std::min(kColTile, m - j0);
      for (index_t c = 0; c < cols; ++c) r2[c] = squared_distance(xi, y + (j0 + c) * d, d);
      for (index_t c = 0; c < cols; ++c) K::eval(p, r2[c], f[c], df[c]);
      if (skip_diag && i >= j0 && i < j0 + cols) f[i - j0] = T(0);
      if (wy != nullptr) {
        for (index_t c = 0; c < cols; ++c) acc += static_cast<double>(wy[j0 + c]) * static_cast<double>(f[c]);
      } else {
        for (index_t c = 0; c < cols; ++c) acc += static_cast<double>(f[c]);
      }
    }
    rows[i] = acc;
  }

  const T* wx = static_cast<const T*>(a.wx);  // [n] or nullptr
  double total = 0.0;
  for (index_t i = 0; i < n; ++i) total += wx != nullptr ? static_cast<double>(wx[i]) * rows[i] : rows[i];
  *a.out_total = total;
}

template <class K, class T>
void grad_rows(const PairArgs& a) {
  const T* x = static_cast<const T*>(a.x);    // [n, d]
  const T* y = static_cast<const T*>(a.y);    // [m, d]
  const T* wy = static_cast<const T*>(a.wy);  // [m] or nullptr
  T* out = static_cast<T*>(a.out_grad);       // [n, d]
  const index_t n = a.n, m = a.m, d = a.d;
  const KernelParams p = a.kernel;

#pragma omp parallel num_threads(thread_count(a.num_threads))
  {
    std::vector<double> acc(static_cast<std::size_t>(d));
#pragma omp for schedule(static)
    for (index_t i = 0; i < n; ++i) {
      const T* xi = x + i * d;
      std::fill(acc.begin(), acc.end(), 0.0);
      T r2[kColTile], f[kColTile], df[kColTile];
      for (index_t j0 = 0; j0 < m; j0 += kColTile) {
        const index_t cols = std::min(kColTile, m - j0);
        for (index_t c = 0; c < cols; ++c) r2[c] = squared_distance(xi, y + (j0 + c) * d, d);
        for (index_t c = 0; c < cols; ++c) K::eval(p, r2[c], f[c], df[c]);
        for (index_t c = 0; c < cols; ++c) {
          // The diagonal (self pairs) contributes x_i - x_i = 0 whatever the slope: nothing to skip.
          const double coef = 2.0 * static_cast<double>(df[c]) * (wy != nullptr ? static_cast<double>(wy[j0 + c]) : 1.0);
          const T* yj = y + (j0 + c) * d;
          for (index_t k = 0; k < d; ++k) acc[k] += coef * static_cast<double>(xi[k] - yj[k]);
        }
      }
      for (index_t k = 0; k < d; ++k) out[i * d + k] = static_cast<T>(acc[k]);
    }
  }
}

template <class K, class T>
Status run(const PairArgs& a) {
  if (a.mode == static_cast<std::int32_t>(Mode::kValue)) {
    value_rows<K, T>(a);
  } else {
    grad_rows<K, T>(a);
  }
  return kOk;
}

template <class T>
Status dispatch_kernel(const PairArgs& a) {
  switch (static_cast<KernelId>(a.kernel.kernel)) {
#define LD_CASE(Functor, Id) \
  case Id:                   \
    return run<Functor, T>(a);
    LATENTDIV_FOR_EACH_KERNEL(LD_CASE)
#undef LD_CASE
  }
  return kUnknownKernel;
}

template <class T>
void pdist_forward(const PdistArgs& a) {
  const T* x = static_cast<const T*>(a.x);  // [n, d]
  T* out = static_cast<T*>(a.out);          // [n (n - 1) / 2]
  const index_t n = a.n, d = a.d;
  // Row i owns n - 1 - i outputs: dynamic scheduling balances the triangle; each output is written
  // by exactly one thread from the same arithmetic, so results do not depend on the schedule.
#pragma omp parallel for schedule(dynamic, 16) num_threads(thread_count(a.num_threads))
  for (index_t i = 0; i < n; ++i) {
    const T* xi = x + i * d;
    T* row = out + condensed_index(n, i, i + 1);
    for (index_t j = i + 1; j < n; ++j) row[j - i - 1] = ld_sqrt(squared_distance(xi, x + j * d, d));
  }
}

template <class T>
void pdist_backward(const PdistArgs& a) {
  const T* x = static_cast<const T*>(a.x);     // [n, d]
  const T* g = static_cast<const T*>(a.grad_out);  // [n (n - 1) / 2]
  const T* dist = static_cast<const T*>(a.dist);   // [n (n - 1) / 2]
  T* out = static_cast<T*>(a.out);             // [n, d]
  const index_t n = a.n, d = a.d;
  // grad_i = sum_{j != i} g_ij (x_i - x_j) / d_ij, with 0 where d_ij = 0 (subgradient of the norm).
#pragma omp parallel num_threads(thread_count(a.num_threads))
  {
    std::vector<double> acc(static_cast<std::size_t>(d));
#pragma omp for schedule(static)
    for (index_t i = 0; i < n; ++i) {
      std::fill(acc.begin(), acc.end(), 0.0);
      const T* xi = x + i * d;
      for (index_t j = 0; j < n; ++j) {
        if (j == i) continue;
        const index_t c = j > i ? condensed_index(n, i, j) : condensed_index(n, j, i);
        const double dij = static_cast<double>(dist[c]);
        if (!(dij > 0.0)) continue;
        const double coef = static_cast<double>(g[c]) / dij;
        const T* xj = x + j * d;
        for (index_t k = 0; k < d; ++k) acc[k] += coef * static_cast<double>(xi[k] - xj[k]);
      }
      for (index_t k = 0; k < d; ++k) out[i * d + k] = static_cast<T>(acc[k]);
    }
  }
}

}  // namespace

Status pair_reduce_cpu(const PairArgs& a) {
  const Status s = validate(a);
  if (s != kOk) return s;
  if (a.mode == static_cast<std::int32_t>(Mode::kValue) && a.n == 0) {
    *a.out_total = 0.0;
    return kOk;
  }
  return a.dtype == static_cast<std::int32_t>(DType::kFloat32) ? dispatch_kernel<float>(a) : dispatch_kernel<double>(a);
}

Status pdist_cpu(const PdistArgs& a) {
  const Status s = validate(a, false);
  if (s != kOk) return s;
  if (a.dtype == static_cast<std::int32_t>(DType::kFloat32)) {
    pdist_forward<float>(a);
  } else {
    pdist_forward<double>(a);
  }
  return kOk;
}

Status pdist_backward_cpu(const PdistArgs& a) {
  const Status s = validate(a, true);
  if (s != kOk) return s;
  if (a.dtype == static_cast<std::int32_t>(DType::kFloat32)) {
    pdist_backward<float>(a);
  } else {
    pdist_backward<double>(a);
  }
  return kOk;
}

}  // namespace LD_ISA_NS
}  // namespace latentdiv
