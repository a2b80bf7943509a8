// csrc/cuda/schedule_pdist.h: the pdist forward and backward block programs of the CUDA schedule, run
// by the __global__ kernels and the host emulation.
// schedule.h describes the executor, the threads and the summation orders.
#pragma once

#include "latentdiv/common.h"
#include "latentdiv/kernels.h"
#include "schedule.h"

namespace latentdiv {
namespace cuda_schedule {

// ---- pdist forward --------------------------------------------------------------------------------
template <class T>
struct PdistRegs {
  T xr[kDimChunk];  // this thread's point x_j, current dim chunk
  T r2[kTileCols];  // squared distances to the tile's rows x_i
};

// Block (row tile bi, column block bj): outputs (i, j) with i in [bi * kTileCols, +kTileCols),
// j in [bj * kBlock, +kBlock) and i < j.
template <class T, class Exec>
LD_HD void pdist_block(Exec& ex, const PdistArgs& a, index_t bi, index_t bj,
                       T* tile)  // shared [kTileCols * kDimChunk]
{
  const T* x = static_cast<const T*>(a.x);  // [n, d]
  T* out = static_cast<T*>(a.out);          // [n (n - 1) / 2]
  const index_t n = a.n, d = a.d;
  const index_t i0 = bi * kTileCols;
  const index_t col0 = bj * kBlock;
  // Uniform across the block (no thread is left at a barrier): no pair i < j in this block.
  if (col0 + kBlock - 1 <= i0 || i0 >= n) {
    ex.finish();
    return;
  }
  const int rows = tail_count(n - i0, kTileCols);

  typename Exec::template PerThread<PdistRegs<T>, kBlock> regs;
  ex.each(regs, [=](int, PdistRegs<T>& r) {
    LD_UNROLL
    for (int c = 0; c < kTileCols; ++c) r.r2[c] = T(0);
  });
  for (index_t k0 = 0; k0 < d; k0 += kDimChunk) {
    const int dims = tail_count(d - k0, kDimChunk);
    ex.sync();
    ex.each([=](int t) { load_tile(tile, x, i0, rows, k0, dims, d, t); });
    ex.sync();
    ex.each(regs, [=](int t, PdistRegs<T>& r) {
      const index_t j = col0 + t;
      if (j >= n) return;
      load_chunk(r.xr, x + j * d + k0, dims);
      accumulate_r2<T, false>(r.r2, r.xr, tile, rows, dims);  // x_i - x_j, as the CPU
    });
  }
  ex.each(regs, [=](int t, PdistRegs<T>& r) {
    const index_t j = col0 + t;
    if (j >= n) return;
    LD_UNROLL
    for (int c = 0; c < kTileCols; ++c) {
      const index_t i = i0 + c;
      if (c < rows && i < j) out[condensed_index(n, i, j)] = ld_sqrt(r.r2[c]);
    }
  });
  ex.finish();
}

// ---- pdist backward -------------------------------------------------------------------------------
template <class T>
struct PdistGradRegs {
  T xr[kDimChunk];         // this thread's row x_i, chunk of the current pass
  double acc[kDimChunk];   // grad_i[p0 .. p0 + kDimChunk)
};

// grad_i = sum_{j != i} g_ij (x_i - x_j) / d_ij, 0 where d_ij = 0 (subgradient of the norm), j in
// increasing order, as the CPU. Passes over dim chunks: the coefficient needs no r2 (dist is given),
// so a pass costs only re-reading g and dist.
template <class T, class Exec>
LD_HD void pdist_backward_block(Exec& ex, const PdistArgs& a, index_t block,
                                T* tile)  // shared [kTileCols * kDimChunk]
{
  const T* x = static_cast<const T*>(a.x);          // [n, d]
  const T* g = static_cast<const T*>(a.grad_out);   // [n (n - 1) / 2]
  const T* dist = static_cast<const T*>(a.dist);    // [n (n - 1) / 2]
  T* out = static_cast<T*>(a.out);                  // [n, d]
  const index_t n = a.n, d = a.d;
  const index_t row0 = block * kBlock;

  typename Exec::template PerThread<PdistGradRegs<T>, kBlock> regs;
  for (index_t p0 = 0; p0 < d; p0 += kDimChunk) {
    const int pdims = tail_count(d - p0, kDimChunk);
    ex.each(regs, [=](int t, PdistGradRegs<T>& r) {
      LD_UNROLL
      for (int k = 0; k < kDimChunk; ++k) r.acc[k] = 0.0;
      const index_t i = row0 + t;
      if (i < n) load_chunk(r.xr, x + i * d + p0, pdims);
    });
    for (index_t j0 = 0; j0 < n; j0 += kTileCols) {
      const int cols = tail_count(n - j0, kTileCols);
      ex.sync();
      ex.each([=](int t) { load_tile(tile, x, j0, cols, p0, pdims, d, t); });
      ex.sync();
      ex.each(regs, [=](int t, PdistGradRegs<T>& r) {
        const index_t i = row0 + t;
        if (i >= n) return;
        for (int c = 0; c < cols; ++c) {
          const index_t j = j0 + c;
          if (j == i) continue;
          const index_t ci = j > i ? condensed_index(n, i, j) : condensed_index(n, j, i);
          const double dij = static_cast<double>(dist[ci]);
          if (!(dij > 0.0)) continue;
          const double coef = static_cast<double>(g[ci]) / dij;
          LD_UNROLL
          for (int k = 0; k < kDimChunk; ++k) {
            if (k < pdims) r.acc[k] += coef * static_cast<double>(r.xr[k] - tile[c * kDimChunk + k]);
          }
        }
      });
    }
    ex.each(regs, [=](int t, PdistGradRegs<T>& r) {
      const index_t i = row0 + t;
      if (i >= n) return;
      LD_UNROLL
      for (int k = 0; k < kDimChunk; ++k) {
        if (k < pdims) out[i * d + p0 + k] = static_cast<T>(r.acc[k]);
      }
    });
  }
  ex.finish();
}

}  // namespace cuda_schedule
}  // namespace latentdiv
