// csrc/cpu/pair_reduce/schedule.h: the pair reduction's schedules: the square one (every mode of common.h
// but HESS_VEC), the triangle one of self pairs with gradient, and the dispatch over the kernels.
//
// Private to the CPU schedule: included only by csrc/cpu/pair_reduce_cpu.cpp, which is compiled once
// per ISA variant, so everything here lives in latentdiv::LD_ISA_NS's anonymous namespace (no symbol
// of one variant can be merged with another's; tests/test_determinism.py checks there are no weak
// symbols).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "latentdiv/engine.h"
#include "latentdiv/kernel_scaling.h"
#include "latentdiv/kernels.h"
#include "gemm.h"
#include "packing.h"
#include "simd.h"
#include "tile_eval.h"

#ifndef LD_ISA_NS
#error "LD_ISA_NS must name the ISA variant namespace (see CMakeLists.txt)"
#endif

namespace latentdiv {
namespace LD_ISA_NS {
namespace {

// ---- one column: float32 points against a single point (the origin terms of the fused losses) ------
// A term against one point (m = 1: mmd_to_normal's and cramer_wold's closed-form terms against
// N(0, I), as sums against the origin) is O(n d) work, but the tile schedule would pack both sides and
// evaluate a full kMR x kNR tile per row block for its one real column: at n = 128 and the exact
// Cramer-Wold kernel that was a third of cwae_loss's engine time. Here each row is one scalar kernel
// evaluation in double (the functor's own formula; r2 of float32 points is exact enough in double and
// cannot leave its range, so no frame is needed). Every mode of the square schedule but HESS_VEC.
template <class K>
Status single_column(const PairArgs& a) {
  const index_t n = a.n, d = a.d;
  const Mode mode = static_cast<Mode>(a.mode);
  const bool grad = mode == Mode::kGrad || mode == Mode::kValueGrad;
  const bool value = !grad || mode == Mode::kValueGrad;
  const float* x = static_cast<const float*>(a.x);   // [n, d]
  const float* y = static_cast<const float*>(a.y);   // [1, d]
  const float* wx = static_cast<const float*>(a.wx);  // [n] or nullptr
  const double w0 = a.wy != nullptr ? static_cast<double>(*static_cast<const float*>(a.wy)) : 1.0;
  float* out = static_cast<float*>(a.out_grad);  // GRAD: [n, d]
  double total = 0.0;
  for (index_t i = 0; i < n; ++i) {
    const float* xi = x + i * d;
    double r2 = 0.0;
    for (index_t k = 0; k < d; ++k) {
      const double diff = static_cast<double>(xi[k]) - static_cast<double>(y[k]);
      r2 = mul_add(diff, diff, r2);
    }
    double f = 0.0, df = 0.0;
    K::eval(a.kernel, r2, f, df);
    if (value) {
      const double row = w0 * f;
      if (a.out_rows != nullptr) a.out_rows[i] = row;
      total = wx != nullptr ? mul_add(static_cast<double>(wx[i]), row, total) : total + row;
    }
    if (grad) {
      const double c = 2.0 * w0 * df;  // sum_j c_ij (x_i - y_j) with the one column j
      for (index_t k = 0; k < d; ++k)
        out[i * d + k] = static_cast<float>(c * (static_cast<double>(xi[k]) - static_cast<double>(y[k])));
    }
  }
  if (value && a.out_total != nullptr) *a.out_total = total;
  return kOk;
}

// ---- pair reduction --------------------------------------------------------------------------------
// Modes (common.h): VALUE accumulates w_j f_ij into row sums; GRAD accumulates c_ij = 2 w_j f'_ij and
// the GEMM part; VALUE_GRAD does both from the same r2 / f / f' tile (each through exactly the
// arithmetic of its own mode, so its outputs are bit-identical to separate VALUE and GRAD calls);
// TOTAL is VALUE without rows, and for self pairs visits only the panels at or right of the diagonal.
template <class K, class T>
Status pair_reduce_impl(const PairArgs& a, std::uint32_t epoch) {
  constexpr int NR = panel_cols<T>();
  const index_t n = a.n, m = a.m, d = a.d;
  const bool self = a.self_pairs != 0;
  const Mode mode = static_cast<Mode>(a.mode);
  const bool grad = mode == Mode::kGrad || mode == Mode::kValueGrad;
  const bool value = !grad || mode == Mode::kValueGrad;
  // Self-pair totals: f is symmetric, so sum_ij = sum_i (f_ii + 2 sum_{j > i}) halves the work. Row
  // i's partial (diagonal halved, left of it zeroed, doubled at the end: exact scalings) is not a row
  // sum, which TOTAL does not report.
  const bool triangle = self && mode == Mode::kTotal;
  const bool skip_diag = self && a.exclude_diagonal != 0;
  const int threads = thread_count(a.num_threads);
  const T* x = static_cast<const T*>(a.x);    // [n, d]
  const T* y = static_cast<const T*>(a.y);    // [m, d]
  const T* wy = static_cast<const T*>(a.wy);  // [m] or nullptr

  const Frame<T> s = make_frame(x, n, self ? nullptr : y, m, d);
  const KernelParams p = frame_params<K, T>(a.kernel, s.e);
  // Outputs back from the frame's units (kernel_scaling.h); 1 at e = 0.
  const double value_scale = std::ldexp(1.0, K::kValuePower * s.e);
  const double grad_scale = std::ldexp(1.0, (K::kValuePower - 1) * s.e);
  // Self pairs: one packed copy serves as rows and columns (padded for both roles).
  const index_t n_pad = self ? pad_rows<T>(n) : round_up(n, kMR);
  const index_t m_pad = round_up(m, NR);
  Packed<T> X(n, n_pad, d, self);
  pack(X, x, self ? wy : nullptr, s, threads);
  std::unique_ptr<Packed<T>> Yown;
  if (!self) {
    Yown.reset(new Packed<T>(m, m_pad, d, true));
    pack(*Yown, y, wy, s, threads);
  }
  Packed<T>& Y = self ? X : *Yown;
  const index_t dp = X.dp;
  const index_t blocks = (n + kMR - 1) / kMR;
  // GRAD needs sum_j c_ij besides sum_j c_ij y_j. When d leaves a padding column in the packed rows
  // (d < dp), a column of ones there makes the GEMM micro-kernel produce it in G[., d] for free (same
  // T-over-one-panel accumulation as the other columns); only the dot micro-kernel (k < d) and the
  // output (k < d) read the packed rows otherwise. Else a separate double lane accumulator.
  const bool ones_column = grad && d < dp;
  if (ones_column) {
    T* cols = Y.rowmajor.get();  // [rows_pad, dp]
    for (index_t j = 0; j < Y.rows_pad; ++j) cols[j * dp + d] = T(1);
  }

  std::vector<double> own_rows(a.out_rows == nullptr && value ? static_cast<std::size_t>(n) : 0);
  double* rows = a.out_rows != nullptr ? a.out_rows : own_rows.data();  // VALUE / TOTAL: [n]
  T* out = static_cast<T*>(a.out_grad);                                 // GRAD: [n, d]

#pragma omp parallel num_threads(threads)
  {
    [[maybe_unused]] const FlushToZero ftz;
    alignas(kAlign) T R[kMR * NR];
    alignas(kAlign) T F[kMR * NR];
    alignas(kAlign) T DF[kMR * NR];
    alignas(kAlign) double acc[kMR * NR];   // VALUE lanes
    alignas(kAlign) double accg[kMR * NR];  // GRAD lanes: sum_j c_ij
    // VALUE in float: w_j f_ij summed per lane in T over kValuePanels panels, then into the double
    // lanes (as the GEMM part of GRAD): one conversion per kValuePanels terms instead of per term.
    alignas(kAlign) T accv[kMR * NR];
    int pending = 0;
    auto flush_value = [&]() {
#pragma omp simd
      for (int e = 0; e < kMR * NR; ++e) {
        acc[e] += static_cast<double>(accv[e]);
        accv[e] = T(0);
      }
      pending = 0;
    };
    std::vector<double> G(grad ? static_cast<std::size_t>(kMR * dp) : 0);
#pragma omp for schedule(dynamic, 1)
    for (index_t b = 0; b < blocks; ++b) {
      if (interrupt_epoch() != epoch) continue;  // interrupted: skip the remaining blocks
      const index_t i0 = b * kMR;
      std::fill(acc, acc + kMR * NR, 0.0);
      std::fill(accv, accv + kMR * NR, T(0));
      std::fill(accg, accg + kMR * NR, 0.0);
      pending = 0;
      std::fill(G.begin(), G.end(), 0.0);
      for (index_t j0 = triangle ? i0 / NR * NR : 0; j0 < m; j0 += NR) {
        if (const unsigned mask = r2_tile(X, i0, Y, j0, R)) r2_fix(X, i0, Y, j0, R, mask);
        if (grad) {
          eval_tile<K, true>(p, R, F, DF);
        } else {
          eval_tile<K, false>(p, R, F, DF);
        }
        const T* w = Y.weights.get() + j0;  // [kNR], 0 on padding columns
        const bool diag_tile = self && i0 < j0 + NR && j0 < i0 + kMR;
        if (value) {
          if (diag_tile && (skip_diag || triangle)) {
            for (int r = 0; r < kMR; ++r) {
              for (int c = 0; c < NR; ++c) {
                const index_t off = j0 + c - (i0 + r);  // j - i
                if (off == 0) {
                  F[r * NR + c] = skip_diag ? T(0) : F[r * NR + c] * T(0.5);
                } else if (off < 0 && triangle) {
                  F[r * NR + c] = T(0);
                }
              }
            }
          }
          if (kValuePanels<T>() > 1) {
            for (int r = 0; r < kMR; ++r) {
              T* ar = accv + r * NR;
              const T* fr = F + r * NR;
#pragma omp simd
              for (int c = 0; c < NR; ++c) ar[c] += fr[c] * w[c];
            }
            if (++pending == kValuePanels<T>()) flush_value();
          } else {
            for (int r = 0; r < kMR; ++r) {
              double* ar = acc + r * NR;
              const T* fr = F + r * NR;
#pragma omp simd
              for (int c = 0; c < NR; ++c) ar[c] += static_cast<double>(fr[c]) * static_cast<double>(w[c]);
            }
          }
        }
        if (grad) {
          // c_ij = 2 w_j f'(r2_ij), reusing DF. The diagonal of self pairs contributes x_i - x_i = 0
          // whatever the slope; zeroing it keeps the split form from adding rounding noise there.
          for (int r = 0; r < kMR; ++r) {
            T* cr = DF + r * NR;
#pragma omp simd
            for (int c = 0; c < NR; ++c) cr[c] = T(2) * w[c] * cr[c];
          }
          if (diag_tile) {
            for (int r = 0; r < kMR; ++r) {
              const index_t c = i0 + r - j0;
              if (c >= 0 && c < NR) DF[r * NR + c] = T(0);
            }
          }
          if (!ones_column) {
            for (int r = 0; r < kMR; ++r) {
              double* ar = accg + r * NR;
              const T* cr = DF + r * NR;
#pragma omp simd
              for (int c = 0; c < NR; ++c) ar[c] += static_cast<double>(cr[c]);
            }
          }
          gemm_tile(DF, Y.rowmajor.get() + j0 * dp, dp, G.data());
        }
      }
      if (pending > 0) flush_value();
      for (int r = 0; r < kMR && i0 + r < n; ++r) {
        if (value) {
          const double srow = lane_sum(acc + r * NR, NR);
          rows[i0 + r] = (triangle ? 2.0 * srow : srow) * value_scale;
        }
        if (grad) {
          const double srow = ones_column ? G[r * dp + d] : lane_sum(accg + r * NR, NR);
          const T* xr = X.rowmajor.get() + (i0 + r) * dp;
          const double* g = G.data() + r * dp;
          T* o = out + (i0 + r) * d;
          for (index_t k = 0; k < d; ++k)
            o[k] = static_cast<T>(mul_add(static_cast<double>(xr[k]), srow, -g[k]) * grad_scale);
        }
      }
    }
  }

  if (interrupt_epoch() != epoch) return kInterrupted;
  if (value) {
    const T* wx = static_cast<const T*>(a.wx);  // [n] or nullptr
    double total = 0.0;
    for (index_t i = 0; i < n; ++i) total = wx != nullptr ? mul_add(static_cast<double>(wx[i]), rows[i], total) : total + rows[i];
    *a.out_total = total;
  }
  return kOk;
}

// ---- self pairs with gradient over the triangle (Mode::kValueGradTriangle) -----------------------------
// VALUE_GRAD of self pairs visiting each unordered pair once: f_ij and f'_ij (symmetric) of j >= i serve
// row i ("row side": weights w_j, the split-form GEMM of the square schedule) and row j ("column side":
// weights w_i, the transposed GEMM of pdist's backward, sum_i c_ij x_i). Half the kernel evaluations and
// r2 tiles of the square VALUE_GRAD, which is the largest pass of every self-sum loss with gradient.
// Deterministic for any thread count with pdist backward's stripe scheme: the row blocks are cut into a
// number of stripes that depends on n and d only; a stripe is one thread's work in a fixed order; its
// column-side sums go to its own buffers (columns right of its start); the stripes' buffers are added
// per row in stripe order. Results agree with kValueGrad to rounding (other summation order), not bits.
constexpr index_t kTriangleMaxStripes = 16;
// Above this dimension the column side's transposed GEMM (kMR terms in T per entry into double, against
// kNR for the row side) costs more than the halved kernel work saves. Measured (one thread, n = 256..2048,
// Zen 4, AVX-512 and AVX2 variants): triangle/square time 0.5-0.75 at D <= 16, 0.9-1.1 at D = 32, 1.1-1.9
// at D = 64.
constexpr index_t kTriangleMaxD = 16;
constexpr double kTriangleBufferBytes = 64.0 * 1024 * 1024;  // column-side buffers of all stripes, at most
// Below this many points the square schedule is faster: the column side's transposed GEMM and its
// buffers (zeroed, then summed per row) cost more than the halved kernel work saves. Measured (one
// thread, D = 8 and 16, Zen 4; pair_reduce VALUE_GRAD against VALUE_GRAD_TRIANGLE on self pairs):
// triangle/square 1.3-1.5 at n = 64-128 and 1.1 at 256 (AVX-512), 1.0-1.6 at 64-256 (AVX2); 0.8-0.9
// from n = 512 on both.
constexpr index_t kTriangleMinRows = 512;

// Stripes for n points in d dimensions (0: d too large, n too small, or the buffers would not fit; the
// caller runs the square schedule instead).
template <class T>
index_t triangle_stripes(index_t n, index_t d) {
  if (d > kTriangleMaxD || n < kTriangleMinRows) return 0;
  const index_t blocks = (n + kMR - 1) / kMR;
  const double per_stripe = static_cast<double>(pad_rows<T>(n)) * static_cast<double>(round_up(d, lanes<T>()) + 2) * 8.0;
  const index_t fit = static_cast<index_t>(kTriangleBufferBytes / per_stripe);
  const index_t stripes = std::min<index_t>({kTriangleMaxStripes, blocks, fit});
  // Fewer than 4 stripes would leave threads idle at large n; the square schedule is as fast there.
  return stripes >= std::min<index_t>(4, blocks) ? stripes : 0;
}

template <class K, class T>
Status self_triangle_impl(const PairArgs& a, index_t stripes, std::uint32_t epoch) {
  constexpr int NR = panel_cols<T>();
  const index_t n = a.n, d = a.d;
  const bool skip_diag = a.exclude_diagonal != 0;
  const int threads = thread_count(a.num_threads);
  const T* x = static_cast<const T*>(a.x);    // [n, d]
  const T* wy = static_cast<const T*>(a.wy);  // [n] or nullptr (the weights of both sides)
  // The same frame (centre and power-of-two scale) as the square schedule, parameters and outputs
  // converted as there (kernel_scaling.h).
  const Frame<T> s = make_frame(x, n, static_cast<const T*>(nullptr), 0, d);
  const KernelParams p = frame_params<K, T>(a.kernel, s.e);
  const double value_scale = std::ldexp(1.0, K::kValuePower * s.e);
  const double grad_scale = std::ldexp(1.0, (K::kValuePower - 1) * s.e);
  Packed<T> X(n, pad_rows<T>(n), d, true);
  pack(X, x, wy, s, threads);
  const index_t dp = X.dp, rows_pad = X.rows_pad;
  const index_t blocks = (n + kMR - 1) / kMR;
  // sum_j c_ij from a column of ones in the padding column d of the packed rows (both GEMMs read it), or
  // separate double sums when d leaves no padding column.
  const bool ones_column = d < dp;
  if (ones_column) {
    T* cols = X.rowmajor.get();  // [rows_pad, dp]
    for (index_t j = 0; j < rows_pad; ++j) cols[j * dp + d] = T(1);
  }
  // Stripes of row blocks with about equal pair counts (row i has n - i pairs j >= i).
  std::vector<index_t> stripe_block(static_cast<std::size_t>(stripes + 1), blocks);
  {
    const double total = 0.5 * static_cast<double>(n) * static_cast<double>(n + 1);
    double seen = 0.0;
    index_t next = 0;
    for (index_t b = 0; b < blocks && next < stripes; ++b) {
      if (seen >= total * static_cast<double>(next) / static_cast<double>(stripes)) stripe_block[next++] = b;
      for (index_t i = b * kMR; i < std::min<index_t>(n, (b + 1) * kMR); ++i) seen += static_cast<double>(n - i);
    }
  }
  // Column-side buffers of stripe p: packed rows [col_first(p), rows_pad) (from the panel of its first row).
  auto col_first = [&](index_t q) { return std::min(rows_pad, stripe_block[q] * kMR / NR * NR); };
  std::vector<std::size_t> col_offset(static_cast<std::size_t>(stripes + 1), 0);
  for (index_t q = 0; q < stripes; ++q) col_offset[q + 1] = col_offset[q] + static_cast<std::size_t>(rows_pad - col_first(q));
  std::vector<double> col_g(col_offset[stripes] * static_cast<std::size_t>(dp), 0.0);  // sum_i c_ij x_i (+ sum_i c_ij at d)
  std::vector<double> col_v(col_offset[stripes], 0.0);                                 // sum_i w_i f_ij
  std::vector<double> col_s(ones_column ? 0 : col_offset[stripes], 0.0);               // sum_i c_ij (no ones column)
  // Row side per row: sum_j w_j f_ij, sum_j c_ij x_j [n, dp] (+ sum_j c_ij at d), sum_j c_ij.
  std::vector<double> row_v(static_cast<std::size_t>(n), 0.0);
  std::vector<double> row_g(static_cast<std::size_t>(n * dp), 0.0);
  std::vector<double> row_s(static_cast<std::size_t>(n), 0.0);
  double* rows = a.out_rows;       // [n]
  T* out = static_cast<T*>(a.out_grad);  // [n, d]

#pragma omp parallel num_threads(threads)
  {
    [[maybe_unused]] const FlushToZero ftz;
    alignas(kAlign) T R[kMR * NR];
    alignas(kAlign) T F[kMR * NR];
    alignas(kAlign) T DF[kMR * NR];
    alignas(kAlign) T CR[kMR * NR];  // row side: 2 w_j f'_ij
    alignas(kAlign) T CC[kMR * NR];  // column side: 2 w_i f'_ij
    alignas(kAlign) double acc[kMR * NR];   // row side VALUE lanes
    alignas(kAlign) double accg[kMR * NR];  // row side sum_j c_ij lanes (no ones column)
    alignas(kAlign) T colsum[NR];
    std::vector<double> G(static_cast<std::size_t>(kMR * dp));
#pragma omp for schedule(dynamic, 1)
    for (index_t q = 0; q < stripes; ++q) {
      const index_t first_row = col_first(q);
      double* cg = col_g.data() + col_offset[q] * static_cast<std::size_t>(dp);  // row j at (j - first_row) * dp
      double* cv = col_v.data() + col_offset[q];
      double* cs = ones_column ? nullptr : col_s.data() + col_offset[q];
      for (index_t b = stripe_block[q]; b < stripe_block[q + 1]; ++b) {
        if (interrupt_epoch() != epoch) break;  // interrupted: skip the rest of this stripe
        const index_t i0 = b * kMR;
        const T* wr = X.weights.get() + i0;  // [kMR] the block's weights, 0 on padding rows
        std::fill(acc, acc + kMR * NR, 0.0);
        std::fill(accg, accg + kMR * NR, 0.0);
        std::fill(G.begin(), G.end(), 0.0);
        for (index_t j0 = i0 / NR * NR; j0 < n; j0 += NR) {
          if (const unsigned mask = r2_tile(X, i0, X, j0, R)) r2_fix(X, i0, X, j0, R, mask);
          eval_tile<K, true>(p, R, F, DF);
          const T* w = X.weights.get() + j0;  // [kNR], 0 on padding columns
          const bool diag_tile = i0 < j0 + NR && j0 < i0 + kMR;
          if (diag_tile) {
            // j < i: the pair is the mirror of (j, i), counted there; j == i: row side only, no slope.
            for (int r = 0; r < kMR; ++r) {
              for (int c = 0; c < NR; ++c) {
                const index_t off = j0 + c - (i0 + r);
                if (off < 0) {
                  F[r * NR + c] = T(0);
                  DF[r * NR + c] = T(0);
                } else if (off == 0) {
                  DF[r * NR + c] = T(0);
                  if (skip_diag) F[r * NR + c] = T(0);
                }
              }
            }
          }
          for (int r = 0; r < kMR; ++r) {
            double* ar = acc + r * NR;
            const T* fr = F + r * NR;
            const T* dr = DF + r * NR;
            T* crr = CR + r * NR;
            T* ccr = CC + r * NR;
            const T wi2 = T(2) * wr[r];
#pragma omp simd
            for (int c = 0; c < NR; ++c) {
              ar[c] += static_cast<double>(fr[c] * w[c]);
              crr[c] = T(2) * w[c] * dr[c];
              ccr[c] = wi2 * dr[c];
            }
          }
          if (!ones_column) {
            for (int r = 0; r < kMR; ++r) {
              double* ar = accg + r * NR;
              const T* cr = CR + r * NR;
#pragma omp simd
              for (int c = 0; c < NR; ++c) ar[c] += static_cast<double>(cr[c]);
            }
          }
          gemm_tile(CR, X.rowmajor.get() + j0 * dp, dp, G.data());  // row side: G[r] += sum_c CR[r][c] x_c
          if (diag_tile) {  // the diagonal's value belongs to the row side only
            for (int r = 0; r < kMR; ++r) {
              const index_t c = i0 + r - j0;
              if (c >= 0 && c < NR) F[r * NR + c] = T(0);
            }
          }
          // Column side: sum_i w_i f_ij, sum_i CC[i][c] x_i (and sum_i CC[i][c]) per column of the panel.
#pragma omp simd
          for (int c = 0; c < NR; ++c) colsum[c] = T(0);
          for (int r = 0; r < kMR; ++r) {
            const T* fr = F + r * NR;
            const T wi = wr[r];
#pragma omp simd
            for (int c = 0; c < NR; ++c) colsum[c] += fr[c] * wi;
          }
          double* cvj = cv + (j0 - first_row);
#pragma omp simd
          for (int c = 0; c < NR; ++c) cvj[c] += static_cast<double>(colsum[c]);
          for (int c0 = 0; c0 < NR; c0 += kColGroup)
            gemm_strided<T, kColGroup, kMR, 1, NR>(CC + c0, X.rowmajor.get() + i0 * dp, dp, cg + (j0 + c0 - first_row) * dp);
          if (!ones_column) {
#pragma omp simd
            for (int c = 0; c < NR; ++c) colsum[c] = T(0);
            for (int r = 0; r < kMR; ++r) {
              const T* cr = CC + r * NR;
#pragma omp simd
              for (int c = 0; c < NR; ++c) colsum[c] += cr[c];
            }
            double* csj = cs + (j0 - first_row);
#pragma omp simd
            for (int c = 0; c < NR; ++c) csj[c] += static_cast<double>(colsum[c]);
          }
        }
        for (int r = 0; r < kMR && i0 + r < n; ++r) {
          row_v[i0 + r] = lane_sum(acc + r * NR, NR);
          row_s[i0 + r] = ones_column ? 0.0 : lane_sum(accg + r * NR, NR);
          std::copy(G.begin() + r * dp, G.begin() + (r + 1) * dp, row_g.begin() + (i0 + r) * dp);
        }
      }
    }
    std::vector<double> gs(static_cast<std::size_t>(dp));
#pragma omp for schedule(static)
    for (index_t i = 0; i < n; ++i) {
      // Fixed order: the row side, then the column sides of stripes 0, 1, ... (those that reach row i).
      double v = row_v[i], srow = row_s[i];
      std::copy(row_g.begin() + i * dp, row_g.begin() + (i + 1) * dp, gs.begin());
      for (index_t q = 0; q < stripes; ++q) {
        const index_t first_row = col_first(q);
        if (first_row > i) break;  // stripes start in increasing rows
        const std::size_t at = col_offset[q] + static_cast<std::size_t>(i - first_row);
        v += col_v[at];
        if (!ones_column) srow += col_s[at];
        const double* c = col_g.data() + at * static_cast<std::size_t>(dp);
        for (index_t k = 0; k < dp; ++k) gs[k] += c[k];
      }
      if (ones_column) srow = gs[d];
      rows[i] = v * value_scale;
      const T* xr = X.rowmajor.get() + i * dp;
      T* o = out + i * d;
      for (index_t k = 0; k < d; ++k) o[k] = static_cast<T>(mul_add(static_cast<double>(xr[k]), srow, -gs[k]) * grad_scale);
    }
  }
  const T* wx = static_cast<const T*>(a.wx);  // [n] or nullptr
  double total = 0.0;
  for (index_t i = 0; i < n; ++i) total = wx != nullptr ? mul_add(static_cast<double>(wx[i]), rows[i], total) : total + rows[i];
  *a.out_total = total;
  return interrupt_epoch() != epoch ? kInterrupted : kOk;
}

// kValueGradTriangle: the triangle schedule where its buffers fit, else the square VALUE_GRAD (same
// outputs to rounding; the choice depends on n and d only, so the bits do not depend on the threads).
// Not for a kernel with its own tile evaluator (kOwnTileEvaluator, tile_eval.h: the exact Cramer-Wold
// one): a second caller of its evaluator made GCC stop inlining it into the square schedule, whose code
// (and instruction counts, tools/callgrind_bench.sh) must stay as they were; that kernel keeps the
// square schedule.
template <class K, class T>
Status self_value_grad(const PairArgs& a, std::uint32_t epoch) {
  const index_t stripes = kOwnTileEvaluator<K> ? 0 : triangle_stripes<T>(a.n, a.d);
  if constexpr (!kOwnTileEvaluator<K>) {
    if (stripes > 0) return self_triangle_impl<K, T>(a, stripes, epoch);
  }
  PairArgs square = a;
  square.mode = static_cast<std::int32_t>(Mode::kValueGrad);
  return pair_reduce_impl<K, T>(square, epoch);
}

template <class T>
Status dispatch_kernel(const PairArgs& a, std::uint32_t epoch) {
  const bool triangle = a.mode == static_cast<std::int32_t>(Mode::kValueGradTriangle);
  // (HESS_VEC has its own entry; self pairs of one point are not a single column against another set.)
  const bool one_column = std::is_same<T, float>::value && a.m == 1 && a.self_pairs == 0 && !triangle &&
                          a.mode != static_cast<std::int32_t>(Mode::kHessVec);
  switch (static_cast<KernelId>(a.kernel.kernel)) {
#define LD_CASE(Functor, Id)                                                   \
  case Id:                                                                     \
    if (one_column) return single_column<Functor>(a);                          \
    return triangle ? self_value_grad<Functor, T>(a, epoch) : pair_reduce_impl<Functor, T>(a, epoch);
    LATENTDIV_FOR_EACH_KERNEL(LD_CASE)
#undef LD_CASE
  }
  return kUnknownKernel;
}

}  // namespace
}  // namespace LD_ISA_NS
}  // namespace latentdiv
