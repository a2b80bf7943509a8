// The CPU schedule of the pair-reduction engine. This file is compiled once per ISA variant
// (CMakeLists.txt sets LD_ISA_NS and the -m flags), so it must not define anything outside that
// namespace.
//
// Shape of the computation (GEMM-like, compute-bound; nothing n x m is ever stored):
//   pack     x, y shifted by a common centre s (distances do not change; the dot-product form below
//            cancels far less when the data are not centred) into aligned, zero-padded buffers:
//            xs [n_pad, dp] row-major, yt = y^T in panels of kNR columns [m_pad / kNR, d, kNR], and for
//            GRAD ys [m_pad, dp] row-major; squared norms in T. Out of the normal range of magnitudes the
//            points are also divided by a power of two 2^e (the frame, make_frame below; exact), folded
//            into the kernel's parameters and the outputs (latentdiv/kernel_scaling.h), so that no
//            r2 or norm overflows or underflows T where the true result is representable.
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
#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#include "latentdiv/engine.h"
#include "latentdiv/kernel_scaling.h"
#include "latentdiv/kernels.h"

#if defined(_OPENMP)
#include <omp.h>
#endif
#if defined(__SSE__) || defined(_M_X64)
#include <xmmintrin.h>
#define LD_HAVE_MXCSR 1
#endif

#ifndef LD_ISA_NS
#error "LD_ISA_NS must name the ISA variant namespace (see CMakeLists.txt)"
#endif

namespace latentdiv {
namespace LD_ISA_NS {
namespace {

// ---- vector width of this variant --------------------------------------------------------------
#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
constexpr int kMR = 8;  // 32 vector registers: 8 x 2 dot accumulators, 8 x 2 GEMM accumulators
#elif defined(__AVX__)
constexpr int kVecBytes = 32;
constexpr int kMR = 6;  // 16 vector registers
#else
constexpr int kVecBytes = 16;
constexpr int kMR = 6;
#endif
constexpr std::size_t kAlign = 64;

#if defined(__GNUC__) || defined(__clang__)
// GCC/Clang vector extensions: one source for SSE2 / AVX2 / AVX-512 / NEON; the compiler picks the
// instructions (and contracts a * b + c into FMA where the variant has it).
template <class T>
struct Vec;
template <>
struct Vec<float> {
  typedef float type __attribute__((vector_size(kVecBytes)));
};
template <>
struct Vec<double> {
  typedef double type __attribute__((vector_size(kVecBytes)));
};
template <class T>
using V = typename Vec<T>::type;
template <class T>
inline V<T> vload(const T* p) {  // p aligned to kVecBytes
  return *reinterpret_cast<const V<T>*>(p);
}
template <class T, std::size_t... I>
inline V<T> splat(T s, std::index_sequence<I...>) {
  return V<T>{((void)I, s)...};
}
// One value in every lane: a single (memory-operand) broadcast instruction. Not `V<T>{} + s`: without
// -ffast-math 0 + s is not s (for s = -0), so that form costs a scalar add and a register broadcast
// per use, which was a third of the instructions of the GEMM and dot micro-kernels.
template <class T>
inline V<T> vbroadcast(T s) {
  return splat<T>(s, std::make_index_sequence<kVecBytes / sizeof(T)>());
}
#else
// Portable fallback (e.g. MSVC): a plain array with the few operators used; the compiler may or may
// not vectorize it, the results are the same arithmetic.
template <class T>
struct V {
  T v[kVecBytes / sizeof(T)];
  V& operator+=(const V& o) {
    for (std::size_t l = 0; l < kVecBytes / sizeof(T); ++l) v[l] += o.v[l];
    return *this;
  }
  friend V operator*(const V& a, const V& b) {
    V r;
    for (std::size_t l = 0; l < kVecBytes / sizeof(T); ++l) r.v[l] = a.v[l] * b.v[l];
    return r;
  }
  friend V operator-(const V& a, const V& b) {
    V r;
    for (std::size_t l = 0; l < kVecBytes / sizeof(T); ++l) r.v[l] = a.v[l] - b.v[l];
    return r;
  }
  T operator[](std::size_t l) const { return v[l]; }
};
template <class T>
inline V<T> vload(const T* p) {
  V<T> r;
  std::memcpy(r.v, p, sizeof r.v);
  return r;
}
template <class T>
inline V<T> vbroadcast(T s) {
  V<T> r;
  for (auto& e : r.v) e = s;
  return r;
}
#endif

template <class T>
constexpr int lanes() {
  return kVecBytes / static_cast<int>(sizeof(T));
}
template <class T>
constexpr int panel_cols() {  // kNR: two vectors of columns per panel
  return 2 * lanes<T>();
}

// a * b + c, spelled out: one rounding (FMA) in the variants that have FMA, two in the baseline.
// Why not write a * b + c: GCC contracts that into an FMA after vectorization, so in a loop that it
// vectorizes with a scalar fallback chosen at run time (after an aliasing check, or peeling for the
// alignment of a caller's pointer) the scalar iterations use an FMA and the vectorized in-order
// reduction does not: the bits then depended on heap addresses (1-ulp nondeterminism of the AVX-512
// variant, found under core contention; tests/test_determinism.py). Every product that feeds a
// sum in a loop over data of run-time length goes through mul_add.
template <class T>
inline T mul_add(T a, T b, T c) {
#if defined(__FMA__)
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}

// Flush-to-zero for the life of one thread's work (RAII; the caller's MXCSR is restored). A kernel value
// below the smallest normal number (exp(-87.3) in float32: a bandwidth small for the distances) made
// every later multiply-add on it a microcode assist: the whole gaussian pass ran 2.5x slower at n =
// 4096, D = 64, bandwidth 1. Such terms are below 1e-38 of a sum whose terms are at most 1 (kernel
// values) or O(1) (slopes times coordinates), so flushing them changes no meaningful digit; inputs
// are not flushed (no DAZ). Scalar code paths and other architectures keep gradual underflow.
class FlushToZero {
 public:
#if defined(LD_HAVE_MXCSR)
  FlushToZero() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | _MM_FLUSH_ZERO_ON); }
  ~FlushToZero() { _mm_setcsr(saved_); }

 private:
  unsigned saved_;
#endif
};

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
  Scaling<K>::rescale(q, e, std::is_same<T, float>::value);
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
unsigned r2_tile(const Packed<T>& X, index_t i0, const Packed<T>& Y, index_t j0, T* R) {
  constexpr int L = lanes<T>();
  constexpr int NR = panel_cols<T>();
  const index_t d = X.d, dp = X.dp;
  V<T> acc0[kMR], acc1[kMR];
  if (X.direct) {
    tile_sums<true>(X.raw_rows.get() + i0 * d, d, Y.raw_panels.get() + (j0 / NR) * d * NR, d, acc0, acc1);
    for (int r = 0; r < kMR; ++r) {
      std::memcpy(R + r * NR, &acc0[r], sizeof(T) * L);
      std::memcpy(R + r * NR + L, &acc1[r], sizeof(T) * L);
    }
    return 0u;
  }
  tile_sums<false>(X.rowmajor.get() + i0 * dp, dp, Y.panels.get() + (j0 / NR) * d * NR, d, acc0, acc1);
  const T* nx = X.norms.get() + i0;
  const T* ny = Y.norms.get() + j0;
  unsigned small_rows = 0;
  for (int r = 0; r < kMR; ++r) {
    T dots[NR];
    std::memcpy(dots, &acc0[r], sizeof(T) * L);
    std::memcpy(dots + L, &acc1[r], sizeof(T) * L);
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

// The functor over a tile: the generic batched helper (the functor interface stays scalar, so the
// CUDA schedule shares it); omp simd vectorizes it with host_math's exp/sqrt.
template <class K, class T>
void eval_tile_generic(const KernelParams& p, const T* __restrict R, T* __restrict F, T* __restrict DF, int count) {
  // A local copy: stores to F / DF provably cannot change the params, so no run-time alias check
  // sends the loop to its scalar version.
  const KernelParams q = p;
#pragma omp simd
  for (int e = 0; e < count; ++e) K::eval(q, R[e], F[e], DF[e]);
}

// Kernels documented in kernels.h as f = sum over params[s] of a one-scale f_s. GCC does not
// vectorize the tile loop around the functor's runtime loop over scales, so for these the schedule
// calls the functor once per scale with a one-scale copy of the params (one vectorized pass each)
// and sums in the functor's own order (f = 0 + f_0 + f_1 ...): bit-identical to one call for
// Gaussian and Imq; Laplacian divides its slope by 2r per scale instead of once (same value to rounding).
template <class K>
struct SumOverScales {
  static constexpr bool value = false;
};
template <>
struct SumOverScales<Gaussian> {
  static constexpr bool value = true;
};
template <>
struct SumOverScales<Laplacian> {
  static constexpr bool value = true;
};
template <>
struct SumOverScales<Imq> {
  static constexpr bool value = true;
};

// The exact Cramer-Wold functor (cw_phi.h) runs a Clenshaw loop over its N coefficients: a run-time
// trip count inside the per-element loop, which GCC does not vectorize (the generic tile ran at ~7%
// of the SGEMM rate). Its CPU tile evaluator turns the loops inside out: coefficients outside, the
// tile's elements inside, each inner loop a fixed-length loop over aligned per-element state that
// omp simd vectorizes. Two Clenshaw steps per pass over the state halve its loads and stores.
// Per element the arithmetic is cw_phi_of_r2's (same formulas, same order of operations, so the same
// bits where the contraction into FMA is the same; tests/test_isa.py compares with the scalar functor
// of the CUDA schedule's emulation), including clamp, kind = exp (D = 1) and the NaN / inf rules.
// Without Slope (VALUE / TOTAL passes) the derivative recurrence is skipped and DF is not written; F
// is the same arithmetic either way.
template <class T, int Count, bool Slope>
void cw_exact_tile(const KernelParams& p, const T* __restrict R, T* __restrict F, T* __restrict DF) {
  const double* params = p.params;
  if (static_cast<int>(params[1]) == kCwPhiKindExp) {
    const T sc = T(params[0]);
#pragma omp simd
    for (int e = 0; e < Count; ++e) {
      const T r2 = cw_detail::clamp_nonneg(R[e]);
      const T f = ld_exp(-sc * r2);
      F[e] = f;
      if constexpr (Slope) DF[e] = -sc * f;
    }
    return;
  }
  int n = static_cast<int>(params[5]);
  if (n > p.n_params - kCwPhiHeader) n = p.n_params - kCwPhiHeader;
  const double* c = params + kCwPhiHeader;
  const T A = T(params[4]);  // a / s_scale: r2 units
  // Per element: 1 / (x + A), w, t and the Clenshaw state b_{k+1}, b_{k+2} and their t-derivatives.
  alignas(kAlign) T inv[Count], w[Count], t[Count], b1[Count], b2[Count], d1[Count], d2[Count];
#pragma omp simd
  for (int e = 0; e < Count; ++e) {
    const T x = cw_detail::clamp_nonneg(R[e]);
    inv[e] = T(1) / (x + A);
    w[e] = A * inv[e];
    t[e] = T(1) - T(2) * w[e];
    b1[e] = b2[e] = d1[e] = d2[e] = T(0);
  }
  int k = n - 1;
  for (; k >= 2; k -= 2) {  // steps k and k - 1
    const T ck = T(c[k]), ck1 = T(c[k - 1]);
#pragma omp simd
    for (int e = 0; e < Count; ++e) {
      const T t2 = t[e] + t[e];
      const T b0 = ck + t2 * b1[e] - b2[e];
      const T bm = ck1 + t2 * b0 - b1[e];
      if constexpr (Slope) {
        const T d0 = T(2) * b1[e] + t2 * d1[e] - d2[e];
        const T dm = T(2) * b0 + t2 * d0 - d1[e];
        d2[e] = d0;
        d1[e] = dm;
      }
      b2[e] = b0;
      b1[e] = bm;
    }
  }
  if (k == 1) {  // an odd number of steps: the last one
    const T ck = T(c[1]);
#pragma omp simd
    for (int e = 0; e < Count; ++e) {
      const T t2 = t[e] + t[e];
      const T b0 = ck + t2 * b1[e] - b2[e];
      if constexpr (Slope) {
        const T d0 = T(2) * b1[e] + t2 * d1[e] - d2[e];
        d2[e] = d1[e];
        d1[e] = d0;
      }
      b2[e] = b1[e];
      b1[e] = b0;
    }
  }
  const T c0 = n > 0 ? T(c[0]) : T(0);
#pragma omp simd
  for (int e = 0; e < Count; ++e) {
    const T g = c0 + t[e] * b1[e] - b2[e];
    const T sw = ld_sqrt(w[e]);
    F[e] = sw * g;
    if constexpr (Slope) {
      const T gt = b1[e] + t[e] * d1[e] - d2[e];
      DF[e] = sw * inv[e] * (T(2) * w[e] * gt - T(0.5) * g);
    }
  }
}

// The functor over one tile of kMR x kNR r2 values. Kernels get the generic loop or, if they are sums
// over scales, one pass per scale; a kernel may add its own tile evaluator (optional: only a kernel
// whose functor does not vectorize as a per-element call needs one; the CUDA schedule always uses
// the scalar functor). Slope = false: only F is needed (a tile evaluator may skip DF; the others
// compute it anyway, it is a multiply or two).
template <class K, bool Slope, class T>
void eval_tile(const KernelParams& p, const T* __restrict R, T* __restrict F, T* __restrict DF) {
  constexpr int count = kMR * panel_cols<T>();
  if constexpr (std::is_same<K, CramerWoldExact>::value) {
    cw_exact_tile<T, count, Slope>(p, R, F, DF);
  } else if constexpr (!SumOverScales<K>::value) {
    eval_tile_generic<K>(p, R, F, DF, count);
  } else if (p.n_params == 1) {
    // One scale (the common case): the functor writes F and DF itself. Bit-identical to the loop
    // below, whose F = 0 + f adds to the functor's own 0 + ... (never -0), without clearing the tile
    // and reading it back.
    const KernelParams q = p;
#pragma omp simd
    for (int e = 0; e < count; ++e) K::eval(q, R[e], F[e], DF[e]);
  } else {
    for (int e = 0; e < count; ++e) F[e] = DF[e] = T(0);
    for (int s = 0; s < p.n_params; ++s) {
      KernelParams q = p;  // a fully initialised copy, reduced to one scale
      q.n_params = 1;
      q.params[0] = p.params[s];
#pragma omp simd
      for (int e = 0; e < count; ++e) {
        T f, df;
        K::eval(q, R[e], f, df);
        F[e] += f;
        DF[e] += df;
      }
    }
  }
}

// G[Out][dp] (double) += A x Ys[Terms][dp], where A (Out x Terms) is read from a tile C with strides:
// A[o][t] = C[o * kOut + t * kTerm]. The pair reduction's GRAD uses A = the row-major tile
// (Terms = kNR, rows of Ys = the panel's points); pdist's backward also uses A = the tile transposed
// (Terms = kMR, rows of Ys = the block's points, Out = kColGroup columns at a time) for the column
// side of each pair. KV vectors of columns of d at a time, accumulated in T over the Terms before
// entering double.
template <class T, int KV, int Out, int Terms, int kOut, int kTerm>
void gemm_chunk(const T* C,   // tile read as A[o][t] = C[o * kOut + t * kTerm], o < Out, t < Terms
                const T* ys,  // [Terms, dp]
                index_t dp, index_t k0, double* G) {  // G: [Out, dp]
  constexpr int L = lanes<T>();
  V<T> acc[Out][KV];
  for (int r = 0; r < Out; ++r)
    for (int v = 0; v < KV; ++v) acc[r][v] = vbroadcast(T(0));
  for (int t = 0; t < Terms; ++t) {
    V<T> yv[KV];
    for (int v = 0; v < KV; ++v) yv[v] = vload(ys + t * dp + k0 + v * L);
    for (int r = 0; r < Out; ++r) {
      const V<T> cb = vbroadcast(C[r * kOut + t * kTerm]);
      for (int v = 0; v < KV; ++v) acc[r][v] += cb * yv[v];
    }
  }
  for (int r = 0; r < Out; ++r) {
    T tmp[KV * L];
    std::memcpy(tmp, acc[r], sizeof tmp);
    double* g = G + r * dp + k0;
#pragma omp simd
    for (int e = 0; e < KV * L; ++e) g[e] += static_cast<double>(tmp[e]);
  }
}

template <class T, int Out, int Terms, int kOut, int kTerm>
void gemm_strided(const T* C, const T* ys, index_t dp, double* G) {
  constexpr int L = lanes<T>();
  index_t k0 = 0;
  for (; k0 + 2 * L <= dp; k0 += 2 * L) gemm_chunk<T, 2, Out, Terms, kOut, kTerm>(C, ys, dp, k0, G);
  if (k0 < dp) gemm_chunk<T, 1, Out, Terms, kOut, kTerm>(C, ys, dp, k0, G);
}

// G[kMR][dp] += C[kMR][kNR] x Ys[kNR][dp] (C row-major).
template <class T>
void gemm_tile(const T* C, const T* ys, index_t dp, double* G) {
  gemm_strided<T, kMR, panel_cols<T>(), panel_cols<T>(), 1>(C, ys, dp, G);
}

// Output rows per call of the transposed (column-side) GEMM: divides kNR (4, 8, 16 or 32) and keeps
// Out x 2 accumulators plus the loads within the vector registers (32 on AVX-512, 16 otherwise).
constexpr int kColGroup = kVecBytes == 64 ? 8 : 4;

// Panels whose VALUE terms are summed in T before entering the double lanes: 4 for float (error
// ~ 4 eps of one lane's partial, far below plain float32 torch's), 1 for double (straight to double).
template <class T>
constexpr int kValuePanels() {
  return sizeof(T) == sizeof(float) ? 4 : 1;
}

// Fixed-order sum of a row's lane accumulators.
inline double lane_sum(const double* a, int count) {
  double s = 0.0;
  for (int c = 0; c < count; ++c) s += a[c];
  return s;
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
  const double value_scale = std::ldexp(1.0, Scaling<K>::value_power * s.e);
  const double grad_scale = std::ldexp(1.0, (Scaling<K>::value_power - 1) * s.e);
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

// Stripes for n points in d dimensions (0: d too large, or the buffers would not fit; the caller runs the
// square schedule instead).
template <class T>
index_t triangle_stripes(index_t n, index_t d) {
  if (d > kTriangleMaxD) return 0;
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
  const double value_scale = std::ldexp(1.0, Scaling<K>::value_power * s.e);
  const double grad_scale = std::ldexp(1.0, (Scaling<K>::value_power - 1) * s.e);
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
// Not for the exact Cramer-Wold kernel: a second caller of its tile evaluator made GCC stop inlining it
// into the square schedule, whose code (and instruction counts, tools/callgrind_bench.sh) must stay as
// they were; that kernel keeps the square schedule.
template <class K, class T>
Status self_value_grad(const PairArgs& a, std::uint32_t epoch) {
  const index_t stripes = std::is_same<K, CramerWoldExact>::value ? 0 : triangle_stripes<T>(a.n, a.d);
  if constexpr (!std::is_same<K, CramerWoldExact>::value) {
    if (stripes > 0) return self_triangle_impl<K, T>(a, stripes, epoch);
  }
  PairArgs square = a;
  square.mode = static_cast<std::int32_t>(Mode::kValueGrad);
  return pair_reduce_impl<K, T>(square, epoch);
}

template <class T>
Status dispatch_kernel(const PairArgs& a, std::uint32_t epoch) {
  const bool triangle = a.mode == static_cast<std::int32_t>(Mode::kValueGradTriangle);
  switch (static_cast<KernelId>(a.kernel.kernel)) {
#define LD_CASE(Functor, Id) \
  case Id:                   \
    return triangle ? self_value_grad<Functor, T>(a, epoch) : pair_reduce_impl<Functor, T>(a, epoch);
    LATENTDIV_FOR_EACH_KERNEL(LD_CASE)
#undef LD_CASE
  }
  return kUnknownKernel;
}

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
