// csrc/cpu/pair_reduce/packing.h: packed, aligned copies of the inputs (Buffer, Packed), the frame they are
// packed in (centre and power-of-two scale, kernel_scaling.h) and the r2 tiles (dot-product form with the
// direct-difference fix-up, or direct differences at small d).
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
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

#include "latentdiv/common.h"
#include "latentdiv/kernel_scaling.h"
#include "latentdiv/kernels.h"
#include "simd.h"

#ifndef LD_ISA_NS
#error "LD_ISA_NS must name the ISA variant namespace (see CMakeLists.txt)"
#endif

namespace latentdiv {
namespace LD_ISA_NS {
namespace {

// Below this fraction of |x|^2 + |y|^2, r2 is recomputed from direct differences (see the header).
constexpr double kDirectBelow = 1.0 / 8.0;
// Up to this dimension the r2 tiles come from direct differences of the unshifted points (one
// subtract and one FMA per coordinate instead of one FMA, but no norms, threshold test or fix-up):
// in low dimension a large share of pairs falls below kDirectBelow (about 12% at D = 2) and the
// element-by-element fix-up made D = 2 three times slower than D = 8. Measured (gaussian MMD^2
// fwd+bwd, n = 4096, AVX-512): direct is faster up to D = 8 (36 vs 42 ms there), even at D = 12,
// slower at D = 16.
constexpr index_t kDirectMaxD = 8;

int thread_count(std::int32_t requested) { return requested > 0 ? requested : 1; }

index_t round_up(index_t v, index_t to) { return (v + to - 1) / to * to; }

// Rows of a packed copy read both as a row block (multiples of kMR) and as column panels (kNR).
template <class T>
index_t pad_rows(index_t n) {
  return std::max(round_up(n, kMR), round_up(n, panel_cols<T>()));
}

// Aligned, zero-initialised scratch buffer (O(n d): packed copies of the inputs).
template <class T>
struct Buffer {
  struct Free {
    void operator()(T* p) const { ::operator delete[](p, std::align_val_t(kAlign)); }
  };
  std::unique_ptr<T[], Free> p;
  explicit Buffer(index_t count) {
    const std::size_t c = static_cast<std::size_t>(std::max<index_t>(count, 1));
    p.reset(static_cast<T*>(::operator new[](c * sizeof(T), std::align_val_t(kAlign))));
    std::memset(static_cast<void*>(p.get()), 0, c * sizeof(T));
  }
  T* get() const { return p.get(); }
};

template <class T>
T squared_distance(const T* xi,  // [d]
                   const T* yj,  // [d]
                   index_t d) {
  // Direct differences: exact zeros for duplicates, relative accuracy for near-duplicates.
  T acc = T(0);
  for (index_t k = 0; k < d; ++k) {
    const T diff = xi[k] - yj[k];
    acc = mul_add(diff, diff, acc);
  }
  return acc;
}

// ---- packing --------------------------------------------------------------------------------------
template <class T>
struct Packed {
  index_t rows = 0, rows_pad = 0, d = 0, dp = 0;
  bool has_panels = false;
  bool direct = false;     // d <= kDirectMaxD: r2 tiles from direct differences (raw_* below)
  const T* src = nullptr;  // [rows, d] the caller's (unshifted) points, or scaled_src
  std::vector<T> scaled_src;  // [rows, d] the unshifted points / 2^e when the frame rescales and !direct (else empty)
  Buffer<T> rowmajor;      // [rows_pad, dp] shifted, zero padding
  Buffer<T> panels;        // [rows_pad / kNR, d, kNR] shifted, transposed by panel (empty if unused)
  Buffer<T> raw_rows;      // direct: [rows_pad, d] unshifted, zero padding (else empty)
  Buffer<T> raw_panels;    // direct and has_panels: [rows_pad / kNR, d, kNR] unshifted (else empty)
  Buffer<T> norms;         // [rows_pad] |shifted row|^2
  Buffer<T> weights;       // [rows_pad] w_j (1 without weights), 0 on padding
  Packed(index_t r, index_t rp, index_t dd, bool with_panels)
      : rows(r), rows_pad(rp), d(dd), dp(round_up(dd, lanes<T>())), has_panels(with_panels),
        direct(dd <= kDirectMaxD), rowmajor(rp * round_up(dd, lanes<T>())),
        panels(with_panels ? rp * dd : 1), raw_rows(direct ? rp * dd : 1), raw_panels(direct && with_panels ? rp * dd : 1),
        norms(rp), weights(rp) {}
};

// The frame the points are packed in: shifted by a common centre s (the mean of the rows of a and b,
// in double, rounded to T) and divided by 2^e (kernel_scaling.h). e = 0 while the largest centred
// magnitude M lies within [2^-kRangeWindow, 2^kRangeWindow]: there every squared distance of points
// that differ in float precision, every norm and every product of the schedule is a normal number
// (float: r2 >= (2^-25 2^-24)^2 = 2^-98, norms <= 2^48 D). Outside, e makes M ~ 1, except that the
// unshifted points (read by the direct-difference paths) must stay finite (at most 2^kRawLimit) and
// 2^-e a normal T (|e| <= kMaxExponent). Data that are not finite keep e = 0 (NaN results as before).
// One O(n d) pass, fused with the mean: per-coordinate minima and maxima give M without a second pass.
template <class T>
struct Frame {
  std::vector<T> s;  // [d] centre
  int e = 0;         // the points are divided by 2^e
  double scale() const { return std::ldexp(1.0, -e); }
};

template <class T>
constexpr int kRangeWindow = std::is_same<T, float>::value ? 24 : 200;
template <class T>
constexpr int kRawLimit = std::is_same<T, float>::value ? 60 : 500;
template <class T>
constexpr int kMaxExponent = std::is_same<T, float>::value ? 120 : 1000;

template <class T>
int range_exponent(double centred_max, double raw_max) {
  if (!std::isfinite(centred_max) || !std::isfinite(raw_max)) return 0;
  int e = 0, e_raw = 0;
  if (centred_max > 0.0) {
    std::frexp(centred_max, &e);  // M in [2^(e-1), 2^e)
    if (e >= -kRangeWindow<T> && e <= kRangeWindow<T>) e = 0;
  }
  // The unshifted points must stay below 2^kRawLimit even when M is in the window or 0: a coordinate
  // that is constant at a huge value (M = 0 there) would otherwise square to inf against the zero
  // padding columns of the direct-difference tiles, and -inf x 0 is NaN for the energy kernel.
  std::frexp(raw_max, &e_raw);
  e = std::max(e, e_raw - kRawLimit<T>);
  return std::min(std::max(e, -kMaxExponent<T>), kMaxExponent<T>);
}

template <class T>
Frame<T> make_frame(const T* a, index_t na,  // [na, d]
                    const T* b, index_t nb,  // [nb, d] or nullptr
                    index_t d) {
  std::vector<double> acc(static_cast<std::size_t>(d), 0.0);
  std::vector<T> lo(static_cast<std::size_t>(d), std::numeric_limits<T>::infinity());
  std::vector<T> hi(static_cast<std::size_t>(d), -std::numeric_limits<T>::infinity());
  auto scan = [&](const T* p, index_t rows) {
    for (index_t i = 0; i < rows; ++i)
      for (index_t k = 0; k < d; ++k) {
        const T v = p[i * d + k];
        acc[k] += static_cast<double>(v);
        lo[k] = std::min(lo[k], v);
        hi[k] = std::max(hi[k], v);
      }
  };
  scan(a, na);
  if (b != nullptr) scan(b, nb);
  const double count = static_cast<double>(na + (b != nullptr ? nb : 0));
  Frame<T> f;
  f.s = std::vector<T>(static_cast<std::size_t>(d));
  double centred_max = 0.0, raw_max = 0.0;
  for (index_t k = 0; k < d; ++k) {
    f.s[k] = count > 0 ? static_cast<T>(acc[k] / count) : T(0);
    if (count > 0) {
      const double sk = static_cast<double>(f.s[k]);
      centred_max = std::max(centred_max, std::max(static_cast<double>(hi[k]) - sk, sk - static_cast<double>(lo[k])));
      raw_max = std::max(raw_max, std::max(std::fabs(static_cast<double>(lo[k])), std::fabs(static_cast<double>(hi[k]))));
    }
  }
  f.e = range_exponent<T>(centred_max, raw_max);
  return f;
}

// Packed values are (src - s) rounded to T, then times 2^-e (exact): at e = 0 the same bits as without
// the frame's scaling; the unshifted copies are src times 2^-e.
template <class T>
void pack(Packed<T>& P, const T* src,         // [rows, d]
          const T* w,                          // [rows] or nullptr
          const Frame<T>& frame,
          int threads) {
  constexpr int NR = panel_cols<T>();
  const std::vector<T>& s = frame.s;
  const double scale = frame.scale();
  const bool scaled = frame.e != 0;
  P.src = src;
  const index_t d = P.d, dp = P.dp, rows = P.rows;
  if (scaled && !P.direct) {
    P.scaled_src = std::vector<T>(static_cast<std::size_t>(rows * d));  // (not resize: no weak std:: code, tests/test_determinism.py)
    P.src = P.scaled_src.data();
  }
  T* scaled_src = scaled && !P.direct ? P.scaled_src.data() : nullptr;
  T* rm = P.rowmajor.get();
  T* pn = P.panels.get();
  T* nrm = P.norms.get();
  T* wt = P.weights.get();
  const bool with_panels = P.has_panels;
  T* raw_rows = P.direct ? P.raw_rows.get() : nullptr;
  T* raw_panels = P.direct && with_panels ? P.raw_panels.get() : nullptr;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (index_t i = 0; i < rows; ++i) {
    double n2 = 0.0;
    for (index_t k = 0; k < d; ++k) {
      const T v = static_cast<T>(static_cast<double>(src[i * d + k] - s[k]) * scale);
      const T raw = static_cast<T>(static_cast<double>(src[i * d + k]) * scale);
      rm[i * dp + k] = v;
      n2 = mul_add(static_cast<double>(v), static_cast<double>(v), n2);
      if (with_panels) pn[(i / NR) * d * NR + k * NR + (i % NR)] = v;
      if (raw_rows != nullptr) raw_rows[i * d + k] = raw;
      if (raw_panels != nullptr) raw_panels[(i / NR) * d * NR + k * NR + (i % NR)] = raw;
      if (scaled_src != nullptr) scaled_src[i * d + k] = raw;
    }
    nrm[i] = static_cast<T>(n2);
    wt[i] = w != nullptr ? w[i] : T(1);
  }
}

// The kernel's parameters in the frame's units (kernel_scaling.h), clamped into float's range for a
// float pass.
template <class K, class T>
KernelParams frame_params(const KernelParams& p, int e) {
  KernelParams q = p;
  K::rescale(q, e, std::is_same<T, float>::value);
  return q;
}

// ---- micro-kernels ----------------------------------------------------------------------------------
// kMR x kNR sums over k < d held in vector registers (broadcast x, load y): the dot products x.y
// (Direct = false) or the squared differences sum_k (x_k - y_k)^2 in k order (Direct = true).
template <bool Direct, class T>
void tile_sums(const T* xr, index_t xs,  // [kMR, xs] rows of x
               const T* yp,              // [d, kNR] a panel of y
               index_t d, V<T>* acc0, V<T>* acc1) {  // [kMR] each: columns 0 .. L-1, L .. 2L-1
  constexpr int L = lanes<T>();
  constexpr int NR = panel_cols<T>();
  for (int r = 0; r < kMR; ++r) {
    acc0[r] = vbroadcast(T(0));
    acc1[r] = vbroadcast(T(0));
  }
  for (index_t k = 0; k < d; ++k) {
    const V<T> y0 = vload(yp + k * NR);
    const V<T> y1 = vload(yp + k * NR + L);
    for (int r = 0; r < kMR; ++r) {
      const V<T> xb = vbroadcast(xr[r * xs + k]);
      if constexpr (Direct) {
        const V<T> e0 = xb - y0, e1 = xb - y1;
        acc0[r] += e0 * e0;
        acc1[r] += e1 * e1;
      } else {
        acc0[r] += xb * y0;
        acc1[r] += xb * y1;
      }
    }
  }
}

// r2 of kMR rows with one panel of kNR columns into R [kMR][kNR]. For d <= kDirectMaxD from direct
// differences of the unshifted points (exact zeros for duplicates, relative accuracy for
// near-duplicates, nothing to fix up: returns 0). Otherwise from dot products of the shifted points
// and their norms; returns a bit mask of the rows with an entry below the direct-difference threshold.
template <class T>
unsigned r2_tile(const Packed<T>& X, index_t i0, const Packed<T>& Y, index_t j0,
                 T* R) {  // R: [kMR, kNR], aligned to kVecBytes
  constexpr int L = lanes<T>();
  constexpr int NR = panel_cols<T>();
  const index_t d = X.d, dp = X.dp;
  V<T> acc0[kMR], acc1[kMR];
  if (X.direct) {
    tile_sums<true>(X.raw_rows.get() + i0 * d, d, Y.raw_panels.get() + (j0 / NR) * d * NR, d, acc0, acc1);
    for (int r = 0; r < kMR; ++r) {
      vstore(R + r * NR, acc0[r]);
      vstore(R + r * NR + L, acc1[r]);
    }
    return 0u;
  }
  tile_sums<false>(X.rowmajor.get() + i0 * dp, dp, Y.panels.get() + (j0 / NR) * d * NR, d, acc0, acc1);
  const T* nx = X.norms.get() + i0;
  const T* ny = Y.norms.get() + j0;
  unsigned small_rows = 0;
  for (int r = 0; r < kMR; ++r) {
    alignas(kAlign) T dots[NR];
    vstore(dots, acc0[r]);
    vstore(dots + L, acc1[r]);
    const T nxr = nx[r];
    int small = 0;
#pragma omp simd reduction(| : small)
    for (int c = 0; c < NR; ++c) {
      const T nn = nxr + ny[c];
      T v = nn - T(2) * dots[c];
      small |= (v < T(kDirectBelow) * nn) ? 1 : 0;
      v = v < T(0) ? T(0) : v;  // NaN compares false and propagates
      R[r * NR + c] = v;
    }
    small_rows |= (small != 0 ? 1u : 0u) << r;
  }
  return small_rows;
}

// Entries of R below the threshold: recompute r2 from direct differences of the unshifted inputs.
template <class T>
void r2_fix(const Packed<T>& X, index_t i0, const Packed<T>& Y, index_t j0, T* R, unsigned rows_mask) {
  constexpr int NR = panel_cols<T>();
  const T* nx = X.norms.get() + i0;
  const T* ny = Y.norms.get() + j0;
  for (int r = 0; r < kMR && i0 + r < X.rows; ++r) {
    if (((rows_mask >> r) & 1u) == 0) continue;
    for (int c = 0; c < NR && j0 + c < Y.rows; ++c) {
      const T nn = nx[r] + ny[c];
      if (R[r * NR + c] < T(kDirectBelow) * nn || R[r * NR + c] == T(0)) {
        R[r * NR + c] = squared_distance(X.src + (i0 + r) * X.d, Y.src + (j0 + c) * Y.d, X.d);
      }
    }
  }
}

}  // namespace
}  // namespace LD_ISA_NS
}  // namespace latentdiv
