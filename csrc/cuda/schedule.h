// csrc/cuda/schedule.h: the CUDA schedule of the pair-reduction engine, written once as "block
// programs" that the __global__ kernels (pair_reduce_cuda.cu, nvcc) and the host emulation
// (csrc/cuda_emulation.cpp, the ordinary C++ compiler) both run. No CUDA runtime header here, no
// torch: only common.h / kernels.h. The programs of the other modes sit next to this file and build on
// its constants and building blocks: schedule_hess_vec.h (HESS_VEC), schedule_pdist.h (pdist).
//
// Why this shape: the index arithmetic, tiling, tail handling, diagonal handling and reduction order
// must be testable on a machine without a GPU (docs/cuda.md says what has run on a device so far). A
// block program is a template over an executor `Exec` with three operations:
//   ex.each(f)          every thread t of the block runs f(t)                (one phase)
//   ex.each(regs, f)    every thread runs f(t, its registers regs[t])
//   ex.sync()           __syncthreads(): the phase boundary
//   ex.finish()         end of the block program (the host emulation runs its last phase)
// On the device each() is a direct call with threadIdx.x and sync() is __syncthreads(); the
// per-thread "registers" are one local struct, kept in registers once inlined and unrolled. On the
// host (cuda_emulation.cpp) each() defers its lambda until the next sync(), then runs the whole phase
// thread after thread (forward or reverse order), which is a legal interleaving of a real block: a
// missing __syncthreads() makes one thread read shared memory another thread has not written yet
// (the emulator poisons shared memory with NaN), so the emulation tests catch it. Lambdas therefore
// capture BY VALUE ([=]): a deferred lambda must see the loop variables of its own iteration.
//
// Threads and data (kernels launched with exactly the thread counts below):
//   pair VALUE / GRAD   one thread per row i (kBlock rows per block); y in tiles of kTileCols rows
//                       x kDimChunk dims in shared memory; per-thread r2 / accumulators in registers.
//   VALUE total         each block writes sum_t wx_i rows_i (fixed tree over its threads) to the
//                       workspace; one block of kReduceThreads then sums the partials (fixed strided
//                       sums + fixed tree). Deterministic, no float atomics.
//   pdist forward       one thread per COLUMN j (kBlock columns per block), tiles of kTileCols rows i:
//                       for a fixed i consecutive j are consecutive in the condensed output, so the
//                       writes are coalesced (one thread per row would write with stride ~n).
//   pdist backward      one thread per row i, tiles of x_j, the condensed g and dist read per pair.
//
// Large d (GRAD, pdist backward): a thread needs d double accumulators, which cannot all live in
// registers for arbitrary d. The accumulators are kept kDimChunk at a time ("passes" over dims
// [p0, p0 + kDimChunk)); for GRAD each pass recomputes r2 and the kernel slope over all d. Cost:
// ceil(d / kDimChunk) passes; for d <= kDimChunk one pass and no recomputation. Chosen over a global
// double accumulator (d x n doubles of extra memory, read-modified-written per tile) and over shared
// memory accumulators (kBlock * d doubles exceeds shared memory beyond d ~ 48): no workspace, same
// summation order as the CPU schedule, and on GPUs with slow float64 the recomputed r2 in the input
// dtype costs less than the double accumulation itself.
//
// Summation orders (the CPU schedule, csrc/cpu/pair_reduce_cpu.cpp, uses the same per-row orders):
//   r2_ij        over k = 0 .. d-1 in T (chunks of kDimChunk visited in order)
//   rows_i       over j = 0 .. m-1 in double
//   grad_i[k]    over j = 0 .. m-1 in double
//   total        fixed tree over the threads of each block, then the fixed two-level sum over blocks.
#pragma once

#include <cstddef>

#include "latentdiv/common.h"
#include "latentdiv/kernels.h"

// Unrolling matters on the device only (constant indices keep the per-thread arrays in registers);
// the host compiler would warn about an unknown pragma.
#if defined(__CUDA_ARCH__)
#define LD_UNROLL _Pragma("unroll")
#else
#define LD_UNROLL
#endif

namespace latentdiv {
namespace cuda_schedule {

constexpr int kBlock = 128;         // threads (rows) per block of the pair and pdist programs
constexpr int kTileCols = 16;       // rows of y per shared-memory tile
constexpr int kDimChunk = 16;       // dims per tile chunk, and double accumulators per GRAD pass
constexpr int kReduceThreads = 256;  // threads of the single block that sums the VALUE partials
constexpr int kTileElems = kTileCols * kDimChunk;
constexpr int kMaxGridY = 65535;    // CUDA's limit on gridDim.y (pdist forward row tiles)

static_assert(kTileElems % kBlock == 0, "each thread loads the same number of tile elements");
static_assert((kBlock & (kBlock - 1)) == 0, "the block tree sum needs a power of two");
static_assert((kReduceThreads & (kReduceThreads - 1)) == 0, "the reduce tree needs a power of two");

// ---- launch geometry, shared by the launcher (.cu) and the emulator ------------------------------
LD_HD index_t ceil_div(index_t a, index_t b) { return (a + b - 1) / b; }

// min(remaining, cap) as an int: the valid rows/cols/dims of a (possibly tail) tile.
LD_HD int tail_count(index_t remaining, int cap) { return remaining < cap ? static_cast<int>(remaining) : cap; }

LD_HD index_t pair_grid_blocks(index_t n) { return ceil_div(n, kBlock); }

// ---- launch decisions: the modes of common.h as launches of the block programs ---------------------
// The block programs are VALUE, GRAD and HESS_VEC. The other modes are lowered here, for the launcher
// (.cu) and the emulator alike, so a caller makes no device-dependent choice of mode:
//   TOTAL                            -> VALUE (over all pairs; out_rows may be null: the VALUE program
//                                       then writes no rows)
//   VALUE_GRAD, VALUE_GRAD_TRIANGLE  -> VALUE, then GRAD: the outputs of two separate calls, which is
//                                       what the fused CPU pass gives too (to rounding for the triangle)
// (The CPU schedule runs these modes as single passes: TOTAL over j >= i for self pairs, VALUE_GRAD
// from one r2 / f / f' tile.)
struct LoweredModes {
  int count;          // launches, in order; 0: a mode this schedule does not know
  Mode launches[2];
};

LD_HD LoweredModes lower_mode(std::int32_t mode) {
  switch (static_cast<Mode>(mode)) {
    case Mode::kValue:
    case Mode::kTotal:
      return {1, {Mode::kValue, Mode::kValue}};
    case Mode::kGrad:
      return {1, {Mode::kGrad, Mode::kGrad}};
    case Mode::kHessVec:
      return {1, {Mode::kHessVec, Mode::kHessVec}};
    case Mode::kValueGrad:
    case Mode::kValueGradTriangle:
      return {2, {Mode::kValue, Mode::kGrad}};
  }
  return {0, {Mode::kValue, Mode::kValue}};
}

// Whether a mode's launches include VALUE (which needs the workspace of partial totals).
LD_HD bool lowers_to_value(std::int32_t mode) {
  const LoweredModes plan = lower_mode(mode);
  return plan.count > 0 && plan.launches[0] == Mode::kValue;
}

// Workspace of one pair reduction: VALUE needs one double per block for the partial totals; GRAD
// needs none (large d is handled by passes, see above). Independent of the dtype.
LD_HD std::size_t pair_workspace_bytes(index_t n, std::int32_t mode) {
  if (!lowers_to_value(mode)) return 0;
  return static_cast<std::size_t>(pair_grid_blocks(n)) * sizeof(double);
}

LD_HD index_t pdist_grid_cols(index_t n) { return ceil_div(n, kBlock); }      // gridDim.x
LD_HD index_t pdist_grid_rows(index_t n) { return ceil_div(n, kTileCols); }   // gridDim.y

// ---- per-thread building blocks --------------------------------------------------------------------

// Cooperative load of src[r0 .. r0+rows, k0 .. k0+dims) into tile[c * kDimChunk + k] by thread t of
// kBlock. Consecutive threads read consecutive dims of a row. Entries past rows/dims are not written
// and never read.
template <class T>
LD_HD void load_tile(T* tile,        // shared [kTileCols * kDimChunk]
                     const T* src,   // [*, d]
                     index_t r0, int rows, index_t k0, int dims, index_t d, int t) {
  LD_UNROLL
  for (int q = 0; q < kTileElems / kBlock; ++q) {
    const int e = t + q * kBlock;
    const int c = e / kDimChunk;
    const int k = e % kDimChunk;
    if (c < rows && k < dims) tile[e] = src[(r0 + c) * d + k0 + k];
  }
}

template <class T>
LD_HD void load_chunk(T* xr,        // registers [kDimChunk]
                      const T* row,  // [dims], the chunk of this thread's own row
                      int dims) {
  LD_UNROLL
  for (int k = 0; k < kDimChunk; ++k) {
    if (k < dims) xr[k] = row[k];
  }
}

// r2[c] += sum_k (a_k - b_ck)^2 over one chunk, k in increasing order (as the CPU's squared_distance).
// own_first: the difference is (own row - tile row), else (tile row - own row); both orders exist so
// each program computes exactly the CPU's x_i - y_j.
template <class T, bool own_first>
LD_HD void accumulate_r2(T* r2,          // registers [kTileCols]
                         const T* xr,    // registers [kDimChunk]
                         const T* tile,  // shared [kTileCols * kDimChunk]
                         int cols, int dims) {
  LD_UNROLL
  for (int c = 0; c < kTileCols; ++c) {
    if (c < cols) {
      T acc = r2[c];
      LD_UNROLL
      for (int k = 0; k < kDimChunk; ++k) {
        if (k < dims) {
          const T diff = own_first ? xr[k] - tile[c * kDimChunk + k] : tile[c * kDimChunk + k] - xr[k];
          acc += diff * diff;
        }
      }
      r2[c] = acc;
    }
  }
}

// Fixed-shape tree over red[0 .. N): red[0] ends with the sum. red must be complete (synced) first.
template <int N, class Exec>
LD_HD void block_tree_sum(Exec& ex, double* red /* shared [N] */) {
  for (int s = N / 2; s > 0; s >>= 1) {
    ex.each([=](int t) {
      if (t < s) red[t] += red[t + s];
    });
    ex.sync();
  }
}

// ---- pair reduction, VALUE ------------------------------------------------------------------------
template <class T>
struct ValueRegs {
  T xr[kDimChunk];   // this thread's row, current dim chunk
  T r2[kTileCols];   // squared distances to the current tile's rows
  double acc;        // rows_i
};

// Block `block` of the VALUE program: rows [block * kBlock, +kBlock) of out_rows, and the block's
// partial total in partials[block].
template <class K, class T, class Exec>
LD_HD void pair_value_block(Exec& ex, const PairArgs& a, index_t block,
                            T* tile,           // shared [kTileCols * kDimChunk]
                            double* red,       // shared [kBlock]
                            double* partials)  // global [pair_grid_blocks(n)]
{
  const T* x = static_cast<const T*>(a.x);    // [n, d]
  const T* y = static_cast<const T*>(a.y);    // [m, d]
  const T* wx = static_cast<const T*>(a.wx);  // [n] or nullptr
  const T* wy = static_cast<const T*>(a.wy);  // [m] or nullptr
  double* rows = a.out_rows;                  // [n] or nullptr (TOTAL)
  const index_t n = a.n, m = a.m, d = a.d;
  const bool skip_diag = a.exclude_diagonal != 0;
  const KernelParams* kp = &a.kernel;
  const index_t row0 = block * kBlock;

  typename Exec::template PerThread<ValueRegs<T>, kBlock> regs;
  ex.each(regs, [=](int, ValueRegs<T>& r) { r.acc = 0.0; });
  for (index_t j0 = 0; j0 < m; j0 += kTileCols) {
    const int cols = tail_count(m - j0, kTileCols);
    ex.each(regs, [=](int, ValueRegs<T>& r) {
      LD_UNROLL
      for (int c = 0; c < kTileCols; ++c) r.r2[c] = T(0);
    });
    for (index_t k0 = 0; k0 < d; k0 += kDimChunk) {
      const int dims = tail_count(d - k0, kDimChunk);
      ex.sync();  // every thread is done with the previous tile
      ex.each([=](int t) { load_tile(tile, y, j0, cols, k0, dims, d, t); });
      ex.sync();
      ex.each(regs, [=](int t, ValueRegs<T>& r) {
        const index_t i = row0 + t;
        if (i >= n) return;
        load_chunk(r.xr, x + i * d + k0, dims);
        accumulate_r2<T, true>(r.r2, r.xr, tile, cols, dims);
      });
    }
    ex.each(regs, [=](int t, ValueRegs<T>& r) {
      const index_t i = row0 + t;
      if (i >= n) return;
      double acc = r.acc;
      LD_UNROLL
      for (int c = 0; c < kTileCols; ++c) {
        if (c < cols) {
          T f, df;
          K::eval(*kp, r.r2[c], f, df);
          if (skip_diag && i == j0 + c) f = T(0);
          acc += wy != nullptr ? static_cast<double>(wy[j0 + c]) * static_cast<double>(f) : static_cast<double>(f);
        }
      }
      r.acc = acc;
    });
  }
  ex.each(regs, [=](int t, ValueRegs<T>& r) {
    const index_t i = row0 + t;
    double contrib = 0.0;
    if (i < n) {
      if (rows != nullptr) rows[i] = r.acc;  // null for a lowered TOTAL
      contrib = wx != nullptr ? static_cast<double>(wx[i]) * r.acc : r.acc;
    }
    red[t] = contrib;
  });
  ex.sync();
  block_tree_sum<kBlock>(ex, red);
  ex.each([=](int t) {
    if (t == 0) partials[block] = red[0];
  });
  ex.finish();
}

// The second VALUE kernel: one block of kReduceThreads sums count partials into *out_total. Thread t
// sums partials t, t + kReduceThreads, ... in order, then a fixed tree: the order depends only on
// count, never on timing. count = 0 writes 0 (n = 0).
template <class Exec>
LD_HD void reduce_partials_block(Exec& ex,
                                 const double* partials,  // global [count]
                                 index_t count,
                                 double* red,             // shared [kReduceThreads]
                                 double* out_total)       // global [1]
{
  ex.each([=](int t) {
    double s = 0.0;
    for (index_t q = t; q < count; q += kReduceThreads) s += partials[q];
    red[t] = s;
  });
  ex.sync();
  block_tree_sum<kReduceThreads>(ex, red);
  ex.each([=](int t) {
    if (t == 0) *out_total = red[0];
  });
  ex.finish();
}

// ---- pair reduction, GRAD -------------------------------------------------------------------------
template <class T>
struct GradRegs {
  T xr[kDimChunk];           // this thread's row, current dim chunk
  T r2[kTileCols];           // squared distances to the current tile's rows
  double coef[kTileCols];    // 2 f'(r2) w_j for the current tile
  double acc[kDimChunk];     // grad_i[p0 .. p0 + kDimChunk) of the current pass
};

// Block `block` of the GRAD program: out_grad rows [block * kBlock, +kBlock), all d columns.
template <class K, class T, class Exec>
LD_HD void pair_grad_block(Exec& ex, const PairArgs& a, index_t block,
                           T* tile)  // shared [kTileCols * kDimChunk]
{
  const T* x = static_cast<const T*>(a.x);    // [n, d]
  const T* y = static_cast<const T*>(a.y);    // [m, d]
  const T* wy = static_cast<const T*>(a.wy);  // [m] or nullptr
  T* out = static_cast<T*>(a.out_grad);       // [n, d]
  const index_t n = a.n, m = a.m, d = a.d;
  const KernelParams* kp = &a.kernel;
  const index_t row0 = block * kBlock;

  typename Exec::template PerThread<GradRegs<T>, kBlock> regs;
  for (index_t p0 = 0; p0 < d; p0 += kDimChunk) {
    const int pdims = tail_count(d - p0, kDimChunk);
    // The r2 loop below ends with the last dim chunk in the tile and in xr: when that chunk is this
    // pass's chunk (always when d <= kDimChunk) the accumulation reuses it without reloading.
    const bool pass_is_last_chunk = p0 + kDimChunk >= d;
    ex.each(regs, [=](int, GradRegs<T>& r) {
      LD_UNROLL
      for (int k = 0; k < kDimChunk; ++k) r.acc[k] = 0.0;
    });
    for (index_t j0 = 0; j0 < m; j0 += kTileCols) {
      const int cols = tail_count(m - j0, kTileCols);
      ex.each(regs, [=](int, GradRegs<T>& r) {
        LD_UNROLL
        for (int c = 0; c < kTileCols; ++c) r.r2[c] = T(0);
      });
      for (index_t k0 = 0; k0 < d; k0 += kDimChunk) {
        const int dims = tail_count(d - k0, kDimChunk);
        ex.sync();
        ex.each([=](int t) { load_tile(tile, y, j0, cols, k0, dims, d, t); });
        ex.sync();
        ex.each(regs, [=](int t, GradRegs<T>& r) {
          const index_t i = row0 + t;
          if (i >= n) return;
          load_chunk(r.xr, x + i * d + k0, dims);
          accumulate_r2<T, true>(r.r2, r.xr, tile, cols, dims);
        });
      }
      ex.each(regs, [=](int t, GradRegs<T>& r) {
        const index_t i = row0 + t;
        if (i >= n) return;
        LD_UNROLL
        for (int c = 0; c < kTileCols; ++c) {
          if (c < cols) {
            T f, df;
            K::eval(*kp, r.r2[c], f, df);
            // The diagonal (self pairs) contributes x_i - x_i = 0 whatever the slope: nothing to skip.
            r.coef[c] = 2.0 * static_cast<double>(df) * (wy != nullptr ? static_cast<double>(wy[j0 + c]) : 1.0);
          }
        }
      });
      if (!pass_is_last_chunk) {
        ex.sync();
        ex.each([=](int t) { load_tile(tile, y, j0, cols, p0, pdims, d, t); });
        ex.sync();
      }
      ex.each(regs, [=](int t, GradRegs<T>& r) {
        const index_t i = row0 + t;
        if (i >= n) return;
        if (!pass_is_last_chunk) load_chunk(r.xr, x + i * d + p0, pdims);
        LD_UNROLL
        for (int c = 0; c < kTileCols; ++c) {
          if (c < cols) {
            const double coef = r.coef[c];
            LD_UNROLL
            for (int k = 0; k < kDimChunk; ++k) {
              if (k < pdims) r.acc[k] += coef * static_cast<double>(r.xr[k] - tile[c * kDimChunk + k]);
            }
          }
        }
      });
    }
    ex.each(regs, [=](int t, GradRegs<T>& r) {
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
