// csrc/cuda/batched_schedule.h: the CUDA schedule of the batched VALUE mode (latentdiv/pair_batched.h),
//   out[b] = sum_ij W[b, i] f(|x_i - y_j|^2) V[b, j],
// written as block programs over an executor, as csrc/cuda/schedule.h is (read its header for the
// executor contract: each / each(regs) / sync / finish, lambdas capture by value): the __global__
// kernels (pair_batched_cuda.cu) and the host emulator (csrc/cuda_batched_emulation.cpp) run the same
// code, so the index arithmetic, tails, diagonal handling and reduction order are tested on the CPU.
// Self-contained (own constants and helpers) so it does not depend on schedule.h's internals.
//
// Threads and data. Grid (row blocks, weighting chunks): block (rb, bc) has kBlock threads, one per row
// i = rb * kBlock + t, and handles the weightings b in [bc * kChunk, +kChunk). Per tile of kTileCols
// rows of y: the tile (kDimChunk dims at a time) and the tile's V[b, j] of the chunk go to shared
// memory; each thread computes r2 in T over k = 0 .. d-1 in order and f once per pair and chunk, then
// kChunk double accumulators acc[b] += f * V[b, j], j in order. Each pair's kernel value is computed once
// per chunk of kChunk weightings (ceil(B / kChunk) times), not once per weighting: per pair
// O(d ceil(B / kChunk) + B) work, a register budget of kChunk doubles, no global accumulators.
// (The CPU schedule computes it once for all B: it keeps the row accumulators in cache, which a GPU
// thread cannot for hundreds of weightings.)
//
// Reduction (deterministic, no atomics): per weighting, a fixed tree over the block's threads of
// W[b, i] acc_i[b] into workspace partials[b, rb]; then one thread per weighting sums its row-block
// partials serially in rb order into out[b].
#pragma once

#include <cstddef>

#include "latentdiv/common.h"
#include "latentdiv/kernels.h"
#include "latentdiv/pair_batched.h"

#if defined(__CUDA_ARCH__)
#define LD_BATCHED_UNROLL _Pragma("unroll")
#else
#define LD_BATCHED_UNROLL
#endif

namespace latentdiv {
namespace batched_schedule {

constexpr int kBlock = 128;          // threads (rows) per block
constexpr int kTileCols = 16;        // rows of y per shared-memory tile
constexpr int kDimChunk = 16;        // dims per tile chunk
constexpr int kChunk = 16;           // weightings per block (double accumulators per thread)
constexpr int kReduceThreads = 128;  // threads per block of the final per-weighting sums
constexpr int kTileElems = kTileCols * kDimChunk;
constexpr int kVTileElems = kTileCols * kChunk;
constexpr index_t kMaxGridY = 65535;  // CUDA's limit on gridDim.y (weighting chunks)

static_assert(kTileElems % kBlock == 0, "each thread loads the same number of tile elements");
static_assert((kBlock & (kBlock - 1)) == 0, "the block tree sum needs a power of two");

// ---- launch geometry, shared by the launcher (.cu) and the emulator -------------------------------
LD_HD index_t ceil_div(index_t a, index_t b) { return (a + b - 1) / b; }
LD_HD int tail_count(index_t remaining, int cap) { return remaining < cap ? static_cast<int>(remaining) : cap; }
LD_HD index_t row_blocks(index_t n) { return ceil_div(n, kBlock); }
LD_HD index_t chunk_blocks(index_t batch) { return ceil_div(batch, kChunk); }
// Workspace: the partials [batch, row_blocks(n)] in double.
LD_HD std::size_t workspace_bytes(index_t n, index_t batch) {
  return static_cast<std::size_t>(batch) * static_cast<std::size_t>(row_blocks(n)) * sizeof(double);
}
// Whether the grid is launchable (gridDim.x <= 2^31 - 1, gridDim.y <= 65535).
LD_HD bool grid_ok(index_t n, index_t batch) {
  return row_blocks(n) <= 2147483647LL && chunk_blocks(batch) <= kMaxGridY;
}

template <class T>
struct BatchedRegs {
  T xr[kDimChunk];      // this thread's row, current dim chunk
  T r2[kTileCols];      // squared distances to the current tile's rows
  double acc[kChunk];   // sum_j f_ij V[b, j] for the block's weightings
};

// Block (rb, bc) of the main program: partials[b, rb] for b in the chunk.
template <class K, class T, class Exec>
LD_HD void batched_block(Exec& ex, const BatchedPairArgs& a, index_t rb, index_t bc,
                         T* tile,           // shared [kTileElems]
                         double* vtile,     // shared [kVTileElems]: vtile[c * kChunk + q] = V[b0 + q, j0 + c]
                         double* red,       // shared [kBlock]
                         double* partials)  // global [batch, row_blocks(n)]
{
  const T* x = static_cast<const T*>(a.x);  // [n, d]
  const T* y = static_cast<const T*>(a.y);  // [m, d]
  const T* w = static_cast<const T*>(a.w);  // [batch, n]
  const T* v = static_cast<const T*>(a.v);  // [batch, m]
  const index_t n = a.n, m = a.m, d = a.d, nb = a.batch;
  const bool skip_diag = a.exclude_diagonal != 0;
  const KernelParams* kp = &a.kernel;
  const index_t row0 = rb * kBlock;
  const index_t b0 = bc * kChunk;
  const int bcount = tail_count(nb - b0, kChunk);
  const index_t nrb = row_blocks(n);

  typename Exec::template PerThread<BatchedRegs<T>, kBlock> regs;
  ex.each(regs, [=](int, BatchedRegs<T>& r) {
    LD_BATCHED_UNROLL
    for (int q = 0; q < kChunk; ++q) r.acc[q] = 0.0;
  });
  for (index_t j0 = 0; j0 < m; j0 += kTileCols) {
    const int cols = tail_count(m - j0, kTileCols);
    ex.each(regs, [=](int, BatchedRegs<T>& r) {
      LD_BATCHED_UNROLL
      for (int c = 0; c < kTileCols; ++c) r.r2[c] = T(0);
    });
    for (index_t k0 = 0; k0 < d; k0 += kDimChunk) {
      const int dims = tail_count(d - k0, kDimChunk);
      ex.sync();  // every thread is done with the previous tile
      ex.each([=](int t) {
        LD_BATCHED_UNROLL
        for (int q = 0; q < kTileElems / kBlock; ++q) {
          const int e = t + q * kBlock;
          const int c = e / kDimChunk, k = e % kDimChunk;
          if (c < cols && k < dims) tile[e] = y[(j0 + c) * d + k0 + k];
        }
      });
      ex.sync();
      ex.each(regs, [=](int t, BatchedRegs<T>& r) {
        const index_t i = row0 + t;
        if (i >= n) return;
        LD_BATCHED_UNROLL
        for (int k = 0; k < kDimChunk; ++k) {
          if (k < dims) r.xr[k] = x[i * d + k0 + k];
        }
        LD_BATCHED_UNROLL
        for (int c = 0; c < kTileCols; ++c) {
          if (c < cols) {
            T s = r.r2[c];
            LD_BATCHED_UNROLL
            for (int k = 0; k < kDimChunk; ++k) {
              if (k < dims) {
                const T diff = r.xr[k] - tile[c * kDimChunk + k];
                s += diff * diff;
              }
            }
            r.r2[c] = s;
          }
        }
      });
    }
    // The chunk's weights of the tile's columns (the previous tile's readers are past the syncs above).
    ex.each([=](int t) {
      for (int e = t; e < kVTileElems; e += kBlock) {
        const int c = e / kChunk, q = e % kChunk;
        if (c < cols && q < bcount) vtile[e] = static_cast<double>(v[(b0 + q) * m + j0 + c]);
      }
    });
    ex.sync();
    ex.each(regs, [=](int t, BatchedRegs<T>& r) {
      const index_t i = row0 + t;
      if (i >= n) return;
      LD_BATCHED_UNROLL
      for (int c = 0; c < kTileCols; ++c) {
        if (c < cols && !(skip_diag && i == j0 + c)) {
          T f, df;
          K::eval(*kp, r.r2[c], f, df);
          const double fd = static_cast<double>(f);
          LD_BATCHED_UNROLL
          for (int q = 0; q < kChunk; ++q) {
            if (q < bcount) r.acc[q] += fd * vtile[c * kChunk + q];
          }
        }
      }
    });
    ex.sync();  // the next tile overwrites vtile
  }
  // Per weighting of the chunk: the block's fixed tree of W[b, i] acc_i[b].
  for (int q = 0; q < bcount; ++q) {
    ex.each(regs, [=](int t, BatchedRegs<T>& r) {
      const index_t i = row0 + t;
      red[t] = i < n ? static_cast<double>(w[(b0 + q) * n + i]) * r.acc[q] : 0.0;
    });
    ex.sync();
    for (int s = kBlock / 2; s > 0; s >>= 1) {
      ex.each([=](int t) {
        if (t < s) red[t] += red[t + s];
      });
      ex.sync();
    }
    ex.each([=](int t) {
      if (t == 0) partials[(b0 + q) * nrb + rb] = red[0];
    });
    ex.sync();  // red is reused by the next weighting
  }
  ex.finish();
}

// Block `blk` of the final program: out[b] = sum_rb partials[b, rb] (serial, rb in order) for
// b = blk * kReduceThreads + t. Also for n = 0 (no row blocks): writes 0.
template <class Exec>
LD_HD void batched_reduce_block(Exec& ex, const BatchedPairArgs& a, index_t blk,
                                const double* partials)  // global [batch, row_blocks(n)]
{
  const index_t nrb = row_blocks(a.n), nb = a.batch;
  double* out = a.out;  // [batch]
  ex.each([=](int t) {
    const index_t b = blk * kReduceThreads + t;
    if (b >= nb) return;
    double s = 0.0;
    for (index_t q = 0; q < nrb; ++q) s += partials[b * nrb + q];
    out[b] = s;
  });
  ex.finish();
}

}  // namespace batched_schedule
}  // namespace latentdiv
