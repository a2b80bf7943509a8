// The CPU schedule of the pair-reduction engine. This file is compiled once per ISA variant
// (CMakeLists.txt sets LD_ISA_NS and the -m flags), so it must not define anything outside that
// namespace.
//
// Shape of the computation (GEMM-like, compute-bound; nothing n x m is ever stored):
//   pack     x, y shifted by a common centre s (distances do not change; the dot-product form below
//            cancels far less when the data are not centred) into aligned, zero-padded buffers:
//            xs [n_pad, dp] row-major, yt = y^T in panels of kNR columns [m_pad / kNR, d, kNR], and for
//            GRAD ys [m_pad, dp] row-major; squared norms in T. Out of the normal range of magnitudes the
//            points are also divided by a power of two 2^e (the frame, make_frame in
//            pair_reduce/packing.h; exact), folded into the kernel's parameters and the outputs
//            (latentdiv/kernel_scaling.h), so that no r2 or norm overflows or underflows T where the
//            true result is representable.
//   per block of kMR rows, per panel of kNR columns:
//     1. dot micro-kernel: kMR x kNR dot products held in vector registers (broadcast x, load y^T);
//     2. r2 = |x|^2 + |y|^2 - 2 x.y, clamped at 0. Where r2 < kDirectBelow (|x|^2 + |y|^2), i.e. where
//        the cancellation of the dot form could matter (near-duplicates, the diagonal of self pairs),
//        r2 is recomputed from direct differences of the unshifted inputs: exact duplicates give
//        r2 = 0 exactly, and sqrt-based kernels (energy, laplacian) stay accurate at small r.
//        For d <= kDirectMaxD every tile is computed from direct differences instead (cheaper there);
//     3. the functor over the tile (generic: a loop over the tile calling K::eval under omp simd;
//        sums over scales: one such loop per scale; the exact Cramer-Wold kernel: its own tile evaluator);
//     4. VALUE: row sums in double (float lanes over 4 panels first, for float).
//        GRAD: c_ij = 2 w_j f'(r2_ij); sum_j c_ij (x_i - y_j) =
//        x_i sum_j c_ij - sum_j c_ij y_j, the second term a (kMR x kNR) x (kNR x dp) GEMM micro-kernel
//        accumulated in T over one panel, then added to double accumulators; the first term's sum in
//        double. Shifted coordinates keep both terms of the difference small.
//
// Interrupts: every row block first compares interrupt_epoch() (engine.h) with its value at the start
// of the call; after a change the remaining blocks are skipped and the call returns kInterrupted.
//
// Determinism: row i is reduced by one thread, panel after panel in increasing j, each panel
// through the same arithmetic whatever block row i sits in (rows never interact; padding rows and
// columns are computed and discarded / weighted by 0), and the final per-row reduction of the
// double lane accumulators is in a fixed order. The bits therefore do not depend on the thread
// count or on the OpenMP schedule. The total is summed over rows serially.
//
// Accuracy (float32; tests/test_isa.py against float64): r2 from the dot form has an absolute error
// ~ eps (|x|^2 + |y|^2); the direct-difference fallback bounds its relative error by
// ~ eps / kDirectBelow. Kernel math: host_math.h (<= 2 ulp). Sums over pairs: double, except the GEMM
// part of GRAD (with sum_j c_ij when d < dp), summed in T over kNR terms before entering double
// (relative error ~ kNR eps of the panel's magnitude, below plain torch's float32 error), and float
// VALUE lanes, summed in float over kValuePanels panels (4 terms per lane) before entering double.
// Built with -fno-trapping-math (CMakeLists.txt): lets GCC if-convert conditional divisions in the
// vectorized tile loops.

#include <algorithm>
#include <cstddef>
#include <cstring>

#include "latentdiv/engine.h"

// The pieces, in dependency order (each includes what it uses). Each is compiled in this translation
// unit only, so GCC sees the whole schedule at once and inlines across the pieces as before.
#include "pair_reduce/simd.h"       // vector width, V<T>, mul_add, flush-to-zero
#include "pair_reduce/packing.h"    // Buffer, Packed, the frame, pack, r2 tiles
#include "pair_reduce/tile_eval.h"  // the functor over a tile
#include "pair_reduce/gemm.h"       // GEMM micro-kernels, lane sums
#include "pair_reduce/schedule.h"   // square and triangle schedules, kernel dispatch
#include "pair_reduce/pdist.h"      // pdist forward and backward

#ifndef LD_ISA_NS
#error "LD_ISA_NS must name the ISA variant namespace (see CMakeLists.txt)"
#endif

namespace latentdiv {
namespace LD_ISA_NS {

Status pair_reduce_cpu(const PairArgs& a) {
  const Status s = validate(a);
  if (s != kOk) return s;
  const bool value = a.mode != static_cast<std::int32_t>(Mode::kGrad);
  const bool grad = a.mode == static_cast<std::int32_t>(Mode::kGrad) || a.mode == static_cast<std::int32_t>(Mode::kValueGrad);
  if (a.n == 0) {
    if (value) *a.out_total = 0.0;
    return kOk;
  }
  if (a.m == 0) {
    // No pairs (validate guarantees d >= 1): zero rows, zero total, zero gradient.
    if (value) {
      if (a.out_rows != nullptr) std::fill(a.out_rows, a.out_rows + a.n, 0.0);
      *a.out_total = 0.0;
    }
    if (grad) {
      const std::size_t bytes = static_cast<std::size_t>(a.n * a.d) *
                                (a.dtype == static_cast<std::int32_t>(DType::kFloat32) ? sizeof(float) : sizeof(double));
      std::memset(a.out_grad, 0, bytes);
    }
    return kOk;
  }
  const std::uint32_t epoch = interrupt_epoch();
  return a.dtype == static_cast<std::int32_t>(DType::kFloat32) ? dispatch_kernel<float>(a, epoch)
                                                                : dispatch_kernel<double>(a, epoch);
}

Status pdist_cpu(const PdistArgs& a) {
  const Status s = validate(a, false);
  if (s != kOk) return s;
  if (a.n < 2) return kOk;
  const std::uint32_t epoch = interrupt_epoch();
  return a.dtype == static_cast<std::int32_t>(DType::kFloat32) ? pdist_forward<float>(a, epoch)
                                                                : pdist_forward<double>(a, epoch);
}

Status pdist_backward_cpu(const PdistArgs& a) {
  const Status s = validate(a, true);
  if (s != kOk) return s;
  if (a.n == 0) return kOk;
  if (a.n == 1) {
    std::memset(a.out, 0, static_cast<std::size_t>(a.d) *
                              (a.dtype == static_cast<std::int32_t>(DType::kFloat32) ? sizeof(float) : sizeof(double)));
    return kOk;
  }
  const std::uint32_t epoch = interrupt_epoch();
  return a.dtype == static_cast<std::int32_t>(DType::kFloat32) ? pdist_backward<float>(a, epoch)
                                                                : pdist_backward<double>(a, epoch);
}

}  // namespace LD_ISA_NS
}  // namespace latentdiv
