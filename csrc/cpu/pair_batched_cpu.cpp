// The batched VALUE mode of the CPU schedule (latentdiv/pair_batched.h):
//   out[b] = sum_ij W[b, i] f(|x_i - y_j|^2) V[b, j]   for b = 0 .. B-1.
// Compiled once per ISA variant like pair_reduce_cpu.cpp (CMakeLists.txt sets LD_ISA_NS and the -m
// flags); dispatch.cpp routes pair_batched_cpu here.
//
// Shape of the computation, per block of kRows rows and tile of kCols columns:
//   1. r2 of the kRows x kCols pairs from direct differences in double (inputs widened once);
//   2. the kernel over the tile, once per pair (K::eval under omp simd); excluded diagonal pairs 0;
//   3. acc[r, b] += k[r, c] * Vt[c, b] for all B weightings: a small GEMM micro-kernel over chunks of
//      kLanes weightings, the kRows x kLanes accumulators in registers, Vt = V^T in double padded to a
//      multiple of kLanes (built once per call: [m, B_pad]).
// Then each row's B sums are dotted with W[:, i] into its group's partial sums (kGroupRows rows per
// group, rows in order), and out[b] is the serial sum of the group partials in group order.
// Cost O(n m (d + B)); memory O(m B + n / kGroupRows * B + threads * kRows * B) doubles.
//
// Why double everywhere (also for float32 input): the B-wide accumulation dominates the cost at the
// B of a permutation test (hundreds), so widening r2 and the kernel costs little, and the result is
// then as accurate as the float64 engine (each term is rounded once). The VALUE mode of
// pair_reduce_cpu.cpp uses the dot-product form of r2 in the input dtype; the two agree to rounding.
//
// Determinism: row i is reduced by one thread over j = 0 .. m-1 in order, the same arithmetic for
// every weighting b whatever the others (lanes never interact), the group partials are summed in a
// fixed order. Every product feeding a sum goes through mul_add (one rounding with FMA, in every
// code path: see pair_reduce_cpu.cpp's note on contraction after vectorization).
//
// Interrupts: each row group first compares interrupt_epoch() with its value at the start of the call.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <utility>
#include <vector>

#include "latentdiv/engine.h"
#include "latentdiv/kernels.h"
#include "latentdiv/pair_batched.h"

#if defined(_OPENMP)
#include <omp.h>
#endif

#ifndef LD_ISA_NS
#error "LD_ISA_NS must name the ISA variant namespace (see CMakeLists.txt)"
#endif

namespace latentdiv {
namespace LD_ISA_NS {
namespace {

constexpr index_t kRows = 8;        // rows of one register block
constexpr index_t kCols = 32;       // columns of one kernel tile
// Weightings per accumulator chunk: one native vector of doubles of this ISA variant.
#if defined(__AVX512F__)
constexpr index_t kLanes = 8;
#elif defined(__AVX__)
constexpr index_t kLanes = 4;
#else
constexpr index_t kLanes = 2;
#endif
constexpr index_t kGroupRows = 64;  // rows per partial sum (a multiple of kRows): fixes the summation order
static_assert(kGroupRows % kRows == 0, "a group is whole register blocks");

inline double mul_add(double a, double b, double c) {
#if defined(__FMA__)
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}

// kLanes doubles as one vector (GCC/Clang vector extensions: the compiler picks SSE2 / AVX2 / AVX-512
// instructions per ISA variant), or a plain array elsewhere. Every lane runs the same instruction, so
// a weighting's bits do not depend on which lane or chunk it sits in.
#if defined(__GNUC__) || defined(__clang__)
typedef double VecD __attribute__((vector_size(kLanes * sizeof(double))));
inline VecD load_vec(const double* p) {
  VecD r;
  std::memcpy(&r, p, sizeof r);
  return r;
}
inline void store_vec(double* p, VecD v) { std::memcpy(p, &v, sizeof v); }
template <std::size_t... I>
inline VecD splat(double s, std::index_sequence<I...>) {
  return VecD{((void)I, s)...};
}
inline VecD vec_mul_add(double s, VecD b, VecD c) {
  return splat(s, std::make_index_sequence<static_cast<std::size_t>(kLanes)>()) * b + c;
}
#else
struct VecD {
  double v[kLanes];
};
inline VecD load_vec(const double* p) {
  VecD r;
  std::memcpy(r.v, p, sizeof r.v);
  return r;
}
inline void store_vec(double* p, VecD v) { std::memcpy(p, v.v, sizeof v.v); }
inline VecD vec_mul_add(double s, VecD b, VecD c) {
  for (index_t l = 0; l < kLanes; ++l) c.v[l] = s * b.v[l] + c.v[l];
  return c;
}
#endif

template <class K, class T>
Status batched_rows(const BatchedPairArgs& a) {
  const T* x = static_cast<const T*>(a.x);  // [n, d]
  const T* y = static_cast<const T*>(a.y);  // [m, d]
  const T* w = static_cast<const T*>(a.w);  // [B, n]
  const T* v = static_cast<const T*>(a.v);  // [B, m]
  const index_t n = a.n, m = a.m, d = a.d, nb = a.batch;
  const index_t bp = (nb + kLanes - 1) / kLanes * kLanes;  // padded batch
  const bool skip_diag = a.exclude_diagonal != 0;
  // Symmetric form (self pairs, V = W): k is symmetric, so sum_ij w_i k_ij w_j = 2 sum_{i<j} + the
  // diagonal. Each row visits only the tiles from its own column on (half the pairs); the pair j < i
  // of a visited tile gets 0, the diagonal half its value (then everything is doubled, exactly).
  const bool symmetric = a.symmetric != 0;
  const KernelParams kp = a.kernel;
  const int threads = a.num_threads > 0 ? a.num_threads : 1;
  const index_t groups = (n + kGroupRows - 1) / kGroupRows;
  const std::uint32_t epoch = interrupt_epoch();
  (void)threads;

  // Widened inputs: y in column panels [panels, d, kCols] (zero padded: r2 of a tile is then a loop
  // over whole panels, vectorized over the columns with each pair's sum over k in order), Vt [m, bp]
  // (padding lanes 0), and the group partials [groups, bp].
  const index_t panels = (m + kCols - 1) / kCols;
  std::vector<double> ypan(static_cast<std::size_t>(panels * d * kCols), 0.0);
  std::vector<double> vt(static_cast<std::size_t>(m * bp), 0.0);
  std::vector<double> partial(static_cast<std::size_t>(groups * bp), 0.0);
  std::atomic<bool> interrupted{false};

#if defined(_OPENMP)
#pragma omp parallel num_threads(threads)
#endif
  {
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (index_t j = 0; j < m; ++j) {
      double* pj = ypan.data() + (j / kCols) * d * kCols + (j % kCols);
      for (index_t k = 0; k < d; ++k) pj[k * kCols] = static_cast<double>(y[j * d + k]);
      for (index_t b = 0; b < nb; ++b) vt[j * bp + b] = static_cast<double>(v[b * m + j]);
    }
    // (implicit barrier)
    std::vector<double> xb(static_cast<std::size_t>(kRows * d));
    std::vector<double> r2t(static_cast<std::size_t>(kRows * kCols));
    std::vector<double> kt(static_cast<std::size_t>(kRows * kCols));
    std::vector<double> acc(static_cast<std::size_t>(kRows * bp));
#if defined(_OPENMP)
#pragma omp for schedule(dynamic, 1)
#endif
    for (index_t g = 0; g < groups; ++g) {
      if (interrupted.load(std::memory_order_relaxed)) continue;
      if (interrupt_epoch() != epoch) {
        interrupted.store(true, std::memory_order_relaxed);
        continue;
      }
      double* part = partial.data() + g * bp;
      const index_t g_end = std::min(n, (g + 1) * kGroupRows);
      for (index_t i0 = g * kGroupRows; i0 < g_end; i0 += kRows) {
        const index_t rcount = std::min(kRows, g_end - i0);
        // Rows past the end are zeros: computed and discarded (fixed-shape micro-kernel).
        for (index_t r = 0; r < kRows; ++r) {
          for (index_t k = 0; k < d; ++k) xb[r * d + k] = r < rcount ? static_cast<double>(x[(i0 + r) * d + k]) : 0.0;
        }
        std::fill(acc.begin(), acc.end(), 0.0);
        for (index_t j0 = symmetric ? i0 / kCols * kCols : 0; j0 < m; j0 += kCols) {
          const index_t cols = std::min(kCols, m - j0);
          const double* pan = ypan.data() + (j0 / kCols) * d * kCols;  // [d, kCols]
          for (index_t r = 0; r < kRows; ++r) {
            const double* xi = xb.data() + r * d;
            double s[kCols];
            for (index_t c = 0; c < kCols; ++c) s[c] = 0.0;
            for (index_t k = 0; k < d; ++k) {
              const double xik = xi[k];
              const double* pk = pan + k * kCols;
              for (index_t c = 0; c < kCols; ++c) {
                const double diff = xik - pk[c];
                s[c] = mul_add(diff, diff, s[c]);
              }
            }
            for (index_t c = 0; c < kCols; ++c) r2t[r * kCols + c] = s[c];
          }
          const index_t tile = kRows * kCols;
          double* ktp = kt.data();
          const double* r2p = r2t.data();
#pragma omp simd
          for (index_t e = 0; e < tile; ++e) {
            double f, df;
            K::template eval<double>(kp, r2p[e], f, df);
            ktp[e] = f;
          }
          if (symmetric) {
            for (index_t r = 0; r < rcount; ++r) {
              const index_t ci = i0 + r - j0;  // the diagonal's column in this tile
              for (index_t c = 0; c < cols && c <= ci; ++c) {
                kt[r * kCols + c] = c < ci || skip_diag ? 0.0 : 0.5 * kt[r * kCols + c];
              }
            }
          } else if (skip_diag) {
            for (index_t r = 0; r < rcount; ++r) {
              const index_t c = i0 + r - j0;
              if (c >= 0 && c < cols) kt[r * kCols + c] = 0.0;
            }
          }
          // acc[r, b] += k[r, c] Vt[j0 + c, b], c in order: kRows vectors of kLanes accumulators.
          for (index_t b0 = 0; b0 < bp; b0 += kLanes) {
            VecD reg[kRows];
            for (index_t r = 0; r < kRows; ++r) reg[r] = load_vec(acc.data() + r * bp + b0);
            for (index_t c = 0; c < cols; ++c) {
              const VecD vj = load_vec(vt.data() + (j0 + c) * bp + b0);
              for (index_t r = 0; r < kRows; ++r) reg[r] = vec_mul_add(kt[r * kCols + c], vj, reg[r]);
            }
            for (index_t r = 0; r < kRows; ++r) store_vec(acc.data() + r * bp + b0, reg[r]);
          }
        }
        // The group's partial sums, rows in order.
        for (index_t r = 0; r < rcount; ++r) {
          const index_t i = i0 + r;
          for (index_t b = 0; b < nb; ++b) part[b] = mul_add(static_cast<double>(w[b * n + i]), acc[r * bp + b], part[b]);
        }
      }
    }
  }
  if (interrupted.load()) return kInterrupted;
  for (index_t b = 0; b < nb; ++b) {
    double s = 0.0;
    for (index_t g = 0; g < groups; ++g) s += partial[g * bp + b];
    a.out[b] = symmetric ? 2.0 * s : s;
  }
  return kOk;
}

template <class T>
Status batched_dispatch(const BatchedPairArgs& a) {
  switch (static_cast<KernelId>(a.kernel.kernel)) {
#define LD_CASE(Functor, Id) \
  case Id:                   \
    return batched_rows<Functor, T>(a);
    LATENTDIV_FOR_EACH_KERNEL(LD_CASE)
#undef LD_CASE
  }
  return kUnknownKernel;
}

}  // namespace

Status pair_batched_cpu(const BatchedPairArgs& a) {
  const Status s = validate_batched(a);
  if (s != kOk) return s;
  if (a.batch == 0) return kOk;
  if (a.n == 0 || a.m == 0) {
    for (index_t b = 0; b < a.batch; ++b) a.out[b] = 0.0;
    return kOk;
  }
  return a.dtype == static_cast<std::int32_t>(DType::kFloat32) ? batched_dispatch<float>(a)
                                                               : batched_dispatch<double>(a);
}

}  // namespace LD_ISA_NS
}  // namespace latentdiv
