// csrc/cuda/schedule_hess_vec.h: the HESS_VEC block program of the CUDA schedule, run by the __global__
// kernels and the host emulation.
// schedule.h describes the executor, the threads and the summation orders.
#pragma once

#include "latentdiv/common.h"
#include "latentdiv/kernels.h"
#include "schedule.h"

namespace latentdiv {
namespace cuda_schedule {

// ---- pair reduction, HESS_VEC (second-order gradients; common.h, docs/second_order.md) -------------
// One thread per row i, the GRAD program's dim passes. Per tile, the first loop over all dims gives
// r2, d . vx_i and d . vy_j in double (direct differences, as the CPU's pair_hess_vec_cpu.cpp), then
// the kernel's f', f'' (in double) make three coefficients per pair:
//   grad_i += cv vx_i - cw vy_j + cd d,  cv = 2 f' wy_j, cw = 2 f' wx_i, cd = 4 f'' (wy_j d.vx_i - wx_i d.vy_j)
//   rows_i += 2 f' d . vy_j                                  (accumulated in the first pass only)
template <class T>
struct HessVecRegs {
  T xr[kDimChunk];           // this thread's row x_i, current dim chunk
  T vr[kDimChunk];           // its vector vx_i (0 when vx is null), current dim chunk
  double r2[kTileCols];      // |d|^2 to the current tile's rows
  double dot_x[kTileCols];   // d . vx_i
  double dot_y[kTileCols];   // d . vy_j
  double cv[kTileCols], cw[kTileCols], cd[kTileCols];
  double acc[kDimChunk];     // grad_i[p0 .. p0 + kDimChunk) of the current pass
  double rows;               // rows_i
};

template <class T>
LD_HD void load_chunk_or_zero(T* r, const T* row /* [dims] or nullptr */, int dims) {
  LD_UNROLL
  for (int k = 0; k < kDimChunk; ++k) r[k] = (row != nullptr && k < dims) ? row[k] : T(0);
}

template <class K, class T, class Exec>
LD_HD void pair_hess_vec_block(Exec& ex, const PairArgs& a, index_t block,
                               T* tile,    // shared [kTileCols * kDimChunk]: y
                               T* vtile)   // shared [kTileCols * kDimChunk]: vy (unused when vy is null)
{
  const T* x = static_cast<const T*>(a.x);    // [n, d]
  const T* y = static_cast<const T*>(a.y);    // [m, d]
  const T* wx = static_cast<const T*>(a.wx);  // [n] or nullptr
  const T* wy = static_cast<const T*>(a.wy);  // [m] or nullptr
  const T* vx = static_cast<const T*>(a.vx);  // [n, d] or nullptr
  const T* vy = static_cast<const T*>(a.vy);  // [m, d] or nullptr
  T* out = static_cast<T*>(a.out_grad);       // [n, d]
  double* out_rows = a.out_rows;              // [n] or nullptr
  const index_t n = a.n, m = a.m, d = a.d;
  const bool self = a.self_pairs != 0;
  const KernelParams* kp = &a.kernel;
  const index_t row0 = block * kBlock;

  typename Exec::template PerThread<HessVecRegs<T>, kBlock> regs;
  for (index_t p0 = 0; p0 < d; p0 += kDimChunk) {
    const int pdims = tail_count(d - p0, kDimChunk);
    const bool first_pass = p0 == 0;
    const bool pass_is_last_chunk = p0 + kDimChunk >= d;
    ex.each(regs, [=](int, HessVecRegs<T>& r) {
      LD_UNROLL
      for (int k = 0; k < kDimChunk; ++k) r.acc[k] = 0.0;
      r.rows = 0.0;
    });
    for (index_t j0 = 0; j0 < m; j0 += kTileCols) {
      const int cols = tail_count(m - j0, kTileCols);
      ex.each(regs, [=](int, HessVecRegs<T>& r) {
        LD_UNROLL
        for (int c = 0; c < kTileCols; ++c) r.r2[c] = r.dot_x[c] = r.dot_y[c] = 0.0;
      });
      for (index_t k0 = 0; k0 < d; k0 += kDimChunk) {
        const int dims = tail_count(d - k0, kDimChunk);
        ex.sync();
        ex.each([=](int t) {
          load_tile(tile, y, j0, cols, k0, dims, d, t);
          if (vy != nullptr) load_tile(vtile, vy, j0, cols, k0, dims, d, t);
        });
        ex.sync();
        ex.each(regs, [=](int t, HessVecRegs<T>& r) {
          const index_t i = row0 + t;
          if (i >= n) return;
          load_chunk(r.xr, x + i * d + k0, dims);
          load_chunk_or_zero(r.vr, vx != nullptr ? vx + i * d + k0 : nullptr, dims);
          LD_UNROLL
          for (int c = 0; c < kTileCols; ++c) {
            if (c < cols) {
              double q2 = r.r2[c], qx = r.dot_x[c], qy = r.dot_y[c];
              LD_UNROLL
              for (int k = 0; k < kDimChunk; ++k) {
                if (k < dims) {
                  const double diff = static_cast<double>(r.xr[k]) - static_cast<double>(tile[c * kDimChunk + k]);
                  q2 += diff * diff;
                  qx += diff * static_cast<double>(r.vr[k]);
                  if (vy != nullptr) qy += diff * static_cast<double>(vtile[c * kDimChunk + k]);
                }
              }
              r.r2[c] = q2;
              r.dot_x[c] = qx;
              r.dot_y[c] = qy;
            }
          }
        });
      }
      ex.each(regs, [=](int t, HessVecRegs<T>& r) {
        const index_t i = row0 + t;
        if (i >= n) return;
        const double wxi = wx != nullptr ? static_cast<double>(wx[i]) : 1.0;
        LD_UNROLL
        for (int c = 0; c < kTileCols; ++c) {
          if (c < cols) {
            double f, df, d2f;
            K::template eval2<double>(*kp, r.r2[c], f, df, d2f);
            // Self pairs skip the diagonal: GRAD's i == j term is identically 0, so is its derivative.
            const bool skip = self && (j0 + c == i);
            const double wyj = wy != nullptr ? static_cast<double>(wy[j0 + c]) : 1.0;
            r.cv[c] = skip ? 0.0 : 2.0 * df * wyj;
            r.cw[c] = skip ? 0.0 : 2.0 * df * wxi;
            r.cd[c] = skip ? 0.0 : 4.0 * d2f * (wyj * r.dot_x[c] - wxi * r.dot_y[c]);
            if (first_pass && !skip) r.rows += 2.0 * df * r.dot_y[c];
          }
        }
      });
      if (!pass_is_last_chunk) {
        ex.sync();
        ex.each([=](int t) {
          load_tile(tile, y, j0, cols, p0, pdims, d, t);
          if (vy != nullptr) load_tile(vtile, vy, j0, cols, p0, pdims, d, t);
        });
        ex.sync();
      }
      ex.each(regs, [=](int t, HessVecRegs<T>& r) {
        const index_t i = row0 + t;
        if (i >= n) return;
        if (!pass_is_last_chunk) {
          load_chunk(r.xr, x + i * d + p0, pdims);
          load_chunk_or_zero(r.vr, vx != nullptr ? vx + i * d + p0 : nullptr, pdims);
        }
        LD_UNROLL
        for (int c = 0; c < kTileCols; ++c) {
          if (c < cols) {
            LD_UNROLL
            for (int k = 0; k < kDimChunk; ++k) {
              if (k < pdims) {
                const double vyk = vy != nullptr ? static_cast<double>(vtile[c * kDimChunk + k]) : 0.0;
                const double diff = static_cast<double>(r.xr[k]) - static_cast<double>(tile[c * kDimChunk + k]);
                r.acc[k] += r.cv[c] * static_cast<double>(r.vr[k]) - r.cw[c] * vyk + r.cd[c] * diff;
              }
            }
          }
        }
      });
    }
    ex.each(regs, [=](int t, HessVecRegs<T>& r) {
      const index_t i = row0 + t;
      if (i >= n) return;
      LD_UNROLL
      for (int k = 0; k < kDimChunk; ++k) {
        if (k < pdims) out[i * d + p0 + k] = static_cast<T>(r.acc[k]);
      }
      if (first_pass && out_rows != nullptr) out_rows[i] = r.rows;
    });
  }
  ex.finish();
}

}  // namespace cuda_schedule
}  // namespace latentdiv
