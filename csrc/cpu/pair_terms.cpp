// Several pair reductions of one loss in one call (latentdiv/pair_terms.h). Each term is one or two
// passes of the CPU schedule (pair_reduce_cpu, dispatched to the ISA variant): its row side always,
// in VALUE_GRAD mode when those points need a gradient; the column side (a second pass with the
// roles swapped) only when those points or weights need a gradient and the term is not a self term
// (a self term's gradient is twice its row side). Gradients are accumulated here, serially, in a
// fixed order of terms, so the bits do not depend on the thread count.
#include "latentdiv/pair_terms.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace latentdiv {

namespace {

bool valid_set(const PairTermsArgs& a, std::int32_t s) {
  return s >= 0 && s < kMaxPointSets && a.points[s] != nullptr && a.rows[s] >= 0;
}

// A pass against one point y turned into the times-r2 term: rows R_i = b f(r2_i) and gradient rows
// G_i = 2 b f'(r2_i) (x_i - y) become r2_i R_i and r2_i G_i + 2 R_i (x_i - y) (the derivative of
// r2 f(r2) is f + r2 f'). Returns the new total sum_i a_i r2_i R_i (fixed order).
template <class T>
double times_r2_rows(const PairArgs& p, double* rows, T* grad, bool with_grad) {  // rows: [n]; grad: [n, d]
  const T* x = static_cast<const T*>(p.x);    // [n, d]
  const T* y = static_cast<const T*>(p.y);    // [1, d]
  const T* wx = static_cast<const T*>(p.wx);  // [n] or nullptr
  double total = 0.0;
  for (index_t i = 0; i < p.n; ++i) {
    double r2 = 0.0;
    for (index_t k = 0; k < p.d; ++k) {
      const double diff = static_cast<double>(x[i * p.d + k]) - static_cast<double>(y[k]);
      r2 += diff * diff;
    }
    if (with_grad) {
      for (index_t k = 0; k < p.d; ++k) {
        const double diff = static_cast<double>(x[i * p.d + k]) - static_cast<double>(y[k]);
        grad[i * p.d + k] = static_cast<T>(r2 * static_cast<double>(grad[i * p.d + k]) + 2.0 * rows[i] * diff);
      }
    }
    rows[i] *= r2;
    total += wx != nullptr ? static_cast<double>(wx[i]) * rows[i] : rows[i];
  }
  return total;
}

template <class T>
Status run_terms(const PairTermsArgs& a, CpuIsa isa) {
  index_t max_rows = 0;
  for (int s = 0; s < kMaxPointSets; ++s) max_rows = std::max(max_rows, a.points[s] != nullptr ? a.rows[s] : 0);
  std::vector<double> rows(static_cast<std::size_t>(std::max<index_t>(max_rows, 1)));
  std::vector<T> grad(static_cast<std::size_t>(std::max<index_t>(max_rows * a.d, 1)));
  double total = 0.0;
  for (int t = 0; t < a.n_terms; ++t) {
    const PairTerm& term = a.terms[t];
    if (!valid_set(a, term.left) || !valid_set(a, term.right)) return kBadArgument;
    const bool self = term.left == term.right;
    if (term.exclude_diagonal != 0 && !self) return kBadArgument;
    const bool times_r2 = term.times_r2 != 0;
    // times r2: against one point whose side needs nothing (the origin), so one pass with its rows.
    if (times_r2 && (self || a.rows[term.right] != 1 || a.grads[term.right] != nullptr ||
                     a.weight_grads[term.right] != nullptr)) {
      return kBadArgument;
    }
    // A self term sums each ordered pair from both ends: its gradients are twice the row side's.
    const double scale = self ? 2.0 * term.coef : term.coef;
    for (int side = 0; side < (self ? 1 : 2); ++side) {
      const std::int32_t u = side == 0 ? term.left : term.right;
      const std::int32_t v = side == 0 ? term.right : term.left;
      T* g_out = static_cast<T*>(a.grads[u]);
      double* w_out = a.weight_grads[u];
      if (side == 1 && g_out == nullptr && w_out == nullptr) continue;
      PairArgs p{};
      p.x = a.points[u];
      p.y = a.points[v];
      p.wx = a.weights[u];
      p.wy = self ? a.weights[u] : a.weights[v];
      p.n = a.rows[u];
      p.m = a.rows[v];
      p.d = a.d;
      p.dtype = a.dtype;
      p.self_pairs = self ? 1 : 0;
      p.exclude_diagonal = term.exclude_diagonal;
      p.num_threads = a.num_threads;
      p.kernel = term.kernel;
      double term_total = 0.0;
      p.out_total = &term_total;
      p.out_rows = rows.data();
      if (g_out != nullptr) {
        // Self terms over the triangle (half the pairs, deterministic stripes; pair_reduce_cpu.cpp).
        p.mode = static_cast<std::int32_t>(self ? Mode::kValueGradTriangle : Mode::kValueGrad);
        p.out_grad = grad.data();
      } else {
        // Only the total (and maybe the rows): a self term without row sums visits half the pairs.
        p.mode = static_cast<std::int32_t>(self && w_out == nullptr && !times_r2 ? Mode::kTotal : Mode::kValue);
      }
      const Status s = pair_reduce_cpu(p, isa);
      if (s != kOk) return s;
      if (times_r2) term_total = times_r2_rows<T>(p, rows.data(), grad.data(), g_out != nullptr);
      if (side == 0) total += term.coef * term_total;
      const T* wu = static_cast<const T*>(a.weights[u]);  // [rows[u]] or nullptr
      if (g_out != nullptr) {
        const index_t n = p.n, d = a.d;
        for (index_t i = 0; i < n; ++i) {
          const T c = static_cast<T>(wu != nullptr ? scale * static_cast<double>(wu[i]) : scale);
          const T* gi = grad.data() + i * d;
          T* oi = g_out + i * d;
          for (index_t k = 0; k < d; ++k) oi[k] += c * gi[k];
        }
      }
      if (w_out != nullptr) {
        for (index_t i = 0; i < p.n; ++i) w_out[i] += scale * rows[i];
      }
    }
  }
  *a.out_total = total;
  return kOk;
}

}  // namespace

Status pair_terms_cpu(const PairTermsArgs& a, CpuIsa isa) {
  if (a.out_total == nullptr || a.n_terms < 0 || (a.n_terms > 0 && a.terms == nullptr) || a.d < 1) return kBadArgument;
  if (a.dtype == static_cast<std::int32_t>(DType::kFloat32)) return run_terms<float>(a, isa);
  if (a.dtype == static_cast<std::int32_t>(DType::kFloat64)) return run_terms<double>(a, isa);
  return kBadArgument;
}

}  // namespace latentdiv
