// csrc/cpu/pair_reduce/pdist.h: condensed pairwise distances (torch.pdist) and their backward, on the r2
// tiles and GEMM micro-kernels of the pair reduction.
//
// Private to the CPU schedule: included only by csrc/cpu/pair_reduce_cpu.cpp, which is compiled once
// per ISA variant, so everything here lives in latentdiv::LD_ISA_NS's anonymous namespace (no symbol
// of one variant can be merged with another's; tests/test_determinism.py checks there are no weak
// symbols).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "latentdiv/engine.h"
#include "gemm.h"
#include "packing.h"
#include "simd.h"

#ifndef LD_ISA_NS
#error "LD_ISA_NS must name the ISA variant namespace (see CMakeLists.txt)"
#endif

namespace latentdiv {
namespace LD_ISA_NS {
namespace {

// ---- pdist ------------------------------------------------------------------------------------------
// The same r2 tiles as the pair reduction; the upper triangle j > i is written as sqrt(r2).
template <class T>
Status pdist_forward(const PdistArgs& a, std::uint32_t epoch) {
  constexpr int NR = panel_cols<T>();
  const T* x = static_cast<const T*>(a.x);  // [n, d]
  T* out = static_cast<T*>(a.out);          // [n (n - 1) / 2]
  const index_t n = a.n, d = a.d;
  const int threads = thread_count(a.num_threads);
  const Frame<T> s = make_frame(x, n, static_cast<const T*>(nullptr), 0, d);
  const double dist_scale = std::ldexp(1.0, s.e);  // distances back from the frame's units
  Packed<T> X(n, pad_rows<T>(n), d, true);
  pack(X, x, static_cast<const T*>(nullptr), s, threads);
  const index_t blocks = (n + kMR - 1) / kMR;
  // Block b owns the outputs of its rows: each output is written once from the same arithmetic, so
  // results do not depend on the schedule. Dynamic scheduling balances the triangle.
#pragma omp parallel num_threads(threads)
  {
    [[maybe_unused]] const FlushToZero ftz;
    alignas(kAlign) T R[kMR * NR];
    alignas(kAlign) T D[kMR * NR];
#pragma omp for schedule(dynamic, 1)
    for (index_t b = 0; b < blocks; ++b) {
      if (interrupt_epoch() != epoch) continue;  // interrupted: skip the remaining blocks
      const index_t i0 = b * kMR;
      for (index_t j0 = (i0 + 1) / NR * NR; j0 < n; j0 += NR) {
        if (const unsigned mask = r2_tile(X, i0, X, j0, R)) r2_fix(X, i0, X, j0, R, mask);
        if (s.e == 0) {
#pragma omp simd
          for (int e = 0; e < kMR * NR; ++e) D[e] = ld_sqrt(R[e]);
        } else {
#pragma omp simd
          for (int e = 0; e < kMR * NR; ++e) D[e] = static_cast<T>(static_cast<double>(ld_sqrt(R[e])) * dist_scale);
        }
        for (int r = 0; r < kMR && i0 + r < n; ++r) {
          const index_t i = i0 + r;
          const index_t c_begin = std::max<index_t>(i + 1 - j0, 0);
          const index_t c_end = std::min<index_t>(NR, n - j0);
          if (c_begin >= c_end) continue;
          T* dst = out + condensed_index(n, i, j0 + c_begin);
          std::memcpy(dst, D + r * NR + c_begin, sizeof(T) * static_cast<std::size_t>(c_end - c_begin));
        }
      }
    }
  }
  return interrupt_epoch() != epoch ? kInterrupted : kOk;
}

// grad_i = sum_{j != i} c_ij (x_i - x_j), c_ij = g_ij / d_ij (0 where d_ij = 0: subgradient of the
// norm) = x_i sum_j c_ij - sum_j c_ij x_j. The condensed arrays hold each pair once, in rows i of
// contiguous runs j > i; reading them once (the pass is memory-bound) means using each c_ij for both
// rows: i ("row side", j > i, the GRAD split form of the pair reduction) and j ("column side").
// Deterministic for any thread count: the row blocks are cut into a fixed number of stripes (a
// function of n only); a stripe is one thread's work, in a fixed order; its column-side sums go to
// its own buffer over the rows right of its start; the stripes' buffers are added in stripe order.
// Within a stripe, groups of kSuper row blocks are visited kPanelsPerRead panels at a time: c_ij of
// the group's rows over kWide columns first (longer contiguous runs per row than one panel: fewer,
// longer memory streams), then per panel the row-side GEMM per block and the column-side GEMM over
// the whole group (kSuper * kMR terms in T before entering double). Measured at n = 4096, 1 thread:
// 2x faster than the per-element gathers of the column side this replaced; at D = 8 still about 1.5x
// torch's _pdist_backward (its per-pair vector code reads the arrays in one stream), at D = 64 2.3x
// faster than it.
template <class T>
Status pdist_backward(const PdistArgs& a, std::uint32_t epoch) {
  constexpr int NR = panel_cols<T>();
  const T* x = static_cast<const T*>(a.x);         // [n, d]
  const T* g = static_cast<const T*>(a.grad_out);  // [n (n - 1) / 2]
  const T* dist = static_cast<const T*>(a.dist);   // [n (n - 1) / 2]
  T* out = static_cast<T*>(a.out);                 // [n, d]
  const index_t n = a.n, d = a.d;
  const int threads = thread_count(a.num_threads);
  const Frame<T> s = make_frame(x, n, static_cast<const T*>(nullptr), 0, d);
  // c_ij x_j with the frame's points x_j / 2^e needs c_ij 2^e = g_ij / (d_ij 2^-e): the distances
  // are brought into the frame's units (exact; 2^-e is a normal T, kMaxExponent), nothing else changes.
  const T dist_to_frame = static_cast<T>(s.scale());
  // Rows are read as row blocks (kMR), as column panels (kNR) and as groups of kSuper blocks (the
  // column side's GEMM reads a whole group, zero-weighted past the end) of the same packed copy.
  constexpr index_t kSuper = 2;
  constexpr int kPanelsPerRead = 4;
  constexpr int kWide = kPanelsPerRead * NR;
  Packed<T> X(n, std::max(pad_rows<T>(n), round_up(n, kMR) + kSuper * kMR), d, false);  // a group may start at any block
  pack(X, x, static_cast<const T*>(nullptr), s, threads);
  const index_t dp = X.dp, rows_pad = X.rows_pad;
  const index_t blocks = (n + kMR - 1) / kMR;

  // Stripes of row blocks with about equal pair counts (row i has n - 1 - i pairs j > i). At most
  // kMaxStripes (the parallelism of this pass, which is memory-bound well before 16 threads); each
  // costs a buffer over the rows right of its start (about 16 * 2/3 n dp doubles in all).
  constexpr index_t kMaxStripes = 16;
  const index_t stripes = std::min<index_t>(kMaxStripes, blocks);
  std::vector<index_t> stripe_block(static_cast<std::size_t>(stripes + 1), blocks);  // first block of each
  {
    const double total = 0.5 * static_cast<double>(n) * static_cast<double>(n - 1);
    double seen = 0.0;
    index_t next = 0;
    for (index_t b = 0; b < blocks && next < stripes; ++b) {
      if (seen >= total * static_cast<double>(next) / static_cast<double>(stripes)) stripe_block[next++] = b;
      for (index_t i = b * kMR; i < std::min<index_t>(n, (b + 1) * kMR); ++i) seen += static_cast<double>(n - 1 - i);
    }
    for (; next < stripes; ++next) stripe_block[next] = blocks;  // (empty stripes: tiny n only)
  }
  // Column-side buffers: stripe p covers packed rows [col_first(p), rows_pad), from the panel of its
  // first row: sum_i c_ij x_i [., dp] and sum_i c_ij [.].
  auto col_first = [&](index_t p) { return std::min(rows_pad, stripe_block[p] * kMR / NR * NR); };
  std::vector<std::size_t> col_offset(static_cast<std::size_t>(stripes + 1), 0);
  for (index_t p = 0; p < stripes; ++p)
    col_offset[p + 1] = col_offset[p] + static_cast<std::size_t>(rows_pad - col_first(p));
  std::vector<double> col_g(col_offset[stripes] * static_cast<std::size_t>(dp), 0.0);
  std::vector<double> col_s(col_offset[stripes], 0.0);
  // Row side of each row: sum_{j > i} c_ij x_j [n, dp] and sum_{j > i} c_ij [n].
  std::vector<double> row_g(static_cast<std::size_t>(n * dp), 0.0);
  std::vector<double> row_s(static_cast<std::size_t>(n), 0.0);

#pragma omp parallel num_threads(threads)
  {
    [[maybe_unused]] const FlushToZero ftz;
    // Per group of kSuper blocks: c_ij of kPanelsPerRead panels [kSuper * kMR, kWide] row-major (0
    // outside j > i, j < n), the row side's lanes of sum_j c_ij [kSuper * kMR, kNR] and GEMM part [kSuper * kMR, dp].
    std::vector<T> C(static_cast<std::size_t>(kSuper * kMR * kWide));
    std::vector<double> acc(static_cast<std::size_t>(kSuper * kMR * NR));
    std::vector<double> G(static_cast<std::size_t>(kSuper * kMR * dp));
    alignas(kAlign) T colsum[NR];  // column side: sum_i c_ij over the group
#pragma omp for schedule(dynamic, 1)
    for (index_t p = 0; p < stripes; ++p) {
      const index_t first_row = col_first(p);
      double* cg = col_g.data() + col_offset[p] * static_cast<std::size_t>(dp);  // row j at (j - first_row) * dp
      double* cs = col_s.data() + col_offset[p];
      for (index_t sb = stripe_block[p]; sb < stripe_block[p + 1]; sb += kSuper) {
        if (interrupt_epoch() != epoch) break;  // interrupted: skip the rest of this stripe
        const index_t nb = std::min<index_t>(kSuper, stripe_block[p + 1] - sb);  // blocks of this group
        const index_t i_first = sb * kMR;
        std::fill(acc.begin(), acc.end(), 0.0);
        std::fill(G.begin(), G.end(), 0.0);
        std::fill(C.begin(), C.end(), T(0));  // blocks past nb stay zero
        // kWide columns (kPanelsPerRead panels) of c_ij per row at a time: longer contiguous runs of the
        // condensed arrays per visit of a row, which the hardware prefetcher streams.
        for (index_t jw = i_first / NR * NR; jw < n; jw += kWide) {
          const int c_end = static_cast<int>(std::min<index_t>(kWide, n - jw));
          for (index_t bl = 0; bl < nb; ++bl) {
            for (int r = 0; r < kMR; ++r) {
              const index_t i = i_first + bl * kMR + r;
              T* cr = C.data() + (bl * kMR + r) * kWide;
              const int c_hi = static_cast<int>(std::min<index_t>(std::max<index_t>(i + 1 - jw, 0), c_end));  // j > i from here
#pragma omp simd
              for (int c = 0; c < kWide; ++c) cr[c] = T(0);
              if (i < n && c_hi < c_end) {
                const index_t base = condensed_index(n, i, jw + c_hi) - c_hi;  // + c for column c
                const T* gd = g + base;
                const T* dd = dist + base;
#pragma omp simd
                for (int c = c_hi; c < c_end; ++c) cr[c] = dd[c] > T(0) ? gd[c] / (dd[c] * dist_to_frame) : T(0);
              }
            }
          }
          for (int pw = 0; pw < kPanelsPerRead && jw + pw * NR < n; ++pw) {
            const index_t j0 = jw + pw * NR;
            for (index_t bl = 0; bl < nb; ++bl) {
              const index_t i0 = i_first + bl * kMR;
              if (j0 + NR <= i0 + 1) continue;  // no j > i in this tile: its C is zero
              const T* Cb = C.data() + bl * kMR * kWide + pw * NR;  // [kMR][kNR] at stride kWide
              for (int r = 0; r < kMR; ++r) {
                double* ar = acc.data() + (bl * kMR + r) * NR;
                const T* cr = Cb + r * kWide;
#pragma omp simd
                for (int c = 0; c < NR; ++c) ar[c] += static_cast<double>(cr[c]);
              }
              // Row side: G[r] += sum_c C[r][c] x_{j0 + c}.
              gemm_strided<T, kMR, NR, kWide, 1>(Cb, X.rowmajor.get() + j0 * dp, dp, G.data() + bl * kMR * dp);
            }
            // Column side, over the group's kSuper * kMR rows at once: kColGroup columns at a time,
            // += sum_i C[i][c] x_i, and sum_i C[i][c].
            static_assert(NR % kColGroup == 0, "column groups must tile the panel");
            for (int q = 0; q < NR; q += kColGroup)
              gemm_strided<T, kColGroup, kSuper * kMR, 1, kWide>(C.data() + pw * NR + q, X.rowmajor.get() + i_first * dp,
                                                                 dp, cg + (j0 + q - first_row) * dp);
#pragma omp simd
            for (int c = 0; c < NR; ++c) colsum[c] = T(0);
            for (int r = 0; r < kSuper * kMR; ++r) {
              const T* cr = C.data() + r * kWide + pw * NR;
#pragma omp simd
              for (int c = 0; c < NR; ++c) colsum[c] += cr[c];
            }
            double* csj = cs + (j0 - first_row);
#pragma omp simd
            for (int c = 0; c < NR; ++c) csj[c] += static_cast<double>(colsum[c]);
          }
        }
        for (index_t r = 0; r < nb * kMR && i_first + r < n; ++r) {
          row_s[i_first + r] = lane_sum(acc.data() + r * NR, NR);
          std::copy(G.begin() + r * dp, G.begin() + (r + 1) * dp, row_g.begin() + (i_first + r) * dp);
        }
      }
    }
    std::vector<double> gs(static_cast<std::size_t>(dp));
#pragma omp for schedule(static)
    for (index_t i = 0; i < n; ++i) {
      // Fixed order: the row side, then the column sides of stripes 0, 1, ... (those that reach row i).
      double srow = row_s[i];
      std::copy(row_g.begin() + i * dp, row_g.begin() + (i + 1) * dp, gs.begin());
      for (index_t p = 0; p < stripes; ++p) {
        const index_t first_row = col_first(p);
        if (first_row > i) break;  // stripes start in increasing rows
        const std::size_t at = col_offset[p] + static_cast<std::size_t>(i - first_row);
        srow += col_s[at];
        const double* c = col_g.data() + at * static_cast<std::size_t>(dp);
        for (index_t k = 0; k < dp; ++k) gs[k] += c[k];
      }
      const T* xr = X.rowmajor.get() + i * dp;
      T* o = out + i * d;
      for (index_t k = 0; k < d; ++k) o[k] = static_cast<T>(mul_add(static_cast<double>(xr[k]), srow, -gs[k]));
    }
  }
  return interrupt_epoch() != epoch ? kInterrupted : kOk;
}

}  // namespace
}  // namespace LD_ISA_NS
}  // namespace latentdiv
