// csrc/cpu/pair_reduce/simd.h: the vector width of this ISA variant, the vector type V<T> (GCC/Clang vector
// extensions or a portable fallback), mul_add and flush-to-zero.
//
// Private to the CPU schedule: included only by csrc/cpu/pair_reduce_cpu.cpp, which is compiled once
// per ISA variant, so everything here lives in latentdiv::LD_ISA_NS's anonymous namespace (no symbol
// of one variant can be merged with another's; tests/test_determinism.py checks there are no weak
// symbols).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstring>
#include <utility>

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
// A vector store, not std::memcpy from the register: GCC lowers that memcpy as a spill of the
// accumulators to the stack (cleared beforehand) and a copy in 16-byte pieces.
template <class T>
inline void vstore(T* p, V<T> v) {  // p aligned to kVecBytes
  *reinterpret_cast<V<T>*>(p) = v;
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
  friend V operator+(const V& a, const V& b) {
    V r;
    for (std::size_t l = 0; l < kVecBytes / sizeof(T); ++l) r.v[l] = a.v[l] + b.v[l];
    return r;
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
inline void vstore(T* p, const V<T>& v) {
  std::memcpy(p, v.v, sizeof v.v);
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

}  // namespace
}  // namespace LD_ISA_NS
}  // namespace latentdiv
