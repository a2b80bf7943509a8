// latentdiv/host_math.h: exp and sqrt for the CPU schedule, written so the compiler can vectorize
// them when the functors (kernels.h) are evaluated over a tile of pairs under `#pragma omp simd`.
//
// Why not ::expf / ::sqrtf on the host: without -ffast-math (which we refuse: it breaks NaN/inf
// semantics) GCC keeps a call to the libm function for errno (sqrt of a negative number, exp
// overflow), and a call in the loop body stops vectorization. These versions are branch-free
// (selects only), never touch errno, and keep IEEE special cases:
//   exp: NaN -> NaN, +inf -> +inf, large positive -> +inf, large negative (incl. -inf) -> 0.
//   sqrt: NaN -> NaN, negative -> NaN, +-0 -> 0 (sign kept), +inf -> +inf.
// Accuracy (tests/test_isa.py checks the kernels against float64): float exp <= 2 ulp, double exp
// <= 2 ulp on the normal range (Cody-Waite reduction + Taylor polynomial on |r| <= ln2/2). sqrt: the
// hardware instruction when built with -fno-math-errno (the CPU variants are), else a Newton
// iteration on rsqrt finished with a residual correction: float <= 1 ulp (computed in double),
// double <= 2 ulp.
//
// Device code never includes this path (ld_math.h selects it under !__CUDA_ARCH__ only).
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>

namespace latentdiv {
namespace host_math {

inline float bits_to_float(std::uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}
inline double bits_to_double(std::uint64_t b) {
  double f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}
inline std::uint64_t double_to_bits(double f) {
  std::uint64_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

inline float exp(float x) {
  // Clamp into the range where the reduction below is valid (two min/max instructions; NaN takes the
  // lower bound and is patched at the end, as is overflow). At the lower bound the result rounds to +0
  // (exp(-104) < 2^-150, half the smallest subnormal), so x < -104 needs no patch of its own.
  float xc = x > -104.0f ? x : -104.0f;
  xc = xc < 89.0f ? xc : 89.0f;
  // k = round(x / ln2) by the 1.5 * 2^23 trick (round-to-nearest; no floor/round instruction needed,
  // so the baseline SSE2 variant vectorizes too).
  const float magic = 12582912.0f;
  const float kf = (xc * 1.44269504088896341f + magic) - magic;
  // Cody-Waite: ln2_hi has few significant bits, so kf * ln2_hi is exact for |k| < 2^9.
  float r = xc - kf * 0.693359375f;
  r = r - kf * -2.12194440e-4f;
  // Taylor to degree 7 on |r| <= 0.347: truncation 5e-9 relative, below float rounding.
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // 2^k as two factors so that k in [-150, 129] never leaves the normal exponent range (gradual
  // underflow towards exp(-103.97), the smallest subnormal). k1 = floor(k / 2) by an arithmetic shift
  // (one instruction; k / 2 needs a sign fix-up): p * 2^k1 is exact either way, so (p * 2^k1) * 2^k2
  // rounds the same exact product p * 2^k once.
  const std::int32_t k = static_cast<std::int32_t>(kf);
  const std::int32_t k1 = k >> 1;
  const std::int32_t k2 = k - k1;
  const float s1 = bits_to_float(static_cast<std::uint32_t>(k1 + 127) << 23);
  const float s2 = bits_to_float(static_cast<std::uint32_t>(k2 + 127) << 23);
  float v = (p * s1) * s2;
  v = x > 88.72283935546875f ? std::numeric_limits<float>::infinity() : v;
  return x != x ? x : v;
}

inline double exp(double x) {
  // As the float version: exp(-746) < 2^-1075 rounds to +0 at the lower bound.
  double xc = x > -746.0 ? x : -746.0;
  xc = xc < 710.0 ? xc : 710.0;
  const double magic = 6755399441055744.0;  // 1.5 * 2^52
  const double kf = (xc * 1.4426950408889634074 + magic) - magic;
  // fdlibm's split of ln2: kf * ln2_hi exact for |k| < 2^11.
  double r = xc - kf * 6.93147180369123816490e-01;
  r = r - kf * 1.90821492927058770002e-10;
  // Taylor to degree 13 on |r| <= 0.347: truncation 4e-18 relative.
  double p = 1.0 / 6227020800.0;
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  const std::int64_t k = static_cast<std::int64_t>(kf);
  const std::int64_t k1 = k >> 1;  // floor(k / 2), as in the float version
  const std::int64_t k2 = k - k1;
  const double s1 = bits_to_double(static_cast<std::uint64_t>(k1 + 1023) << 52);
  const double s2 = bits_to_double(static_cast<std::uint64_t>(k2 + 1023) << 52);
  double v = (p * s1) * s2;
  v = x > 709.782712893383973 ? std::numeric_limits<double>::infinity() : v;
  return x != x ? x : v;
}

// 1/sqrt(d) for d > 0 normal, to about 1e-16 relative: bit-level first guess (3.4% error), four
// Newton steps (quadratic: 1.7e-3, 4.4e-6, 3e-11, < 1e-16 plus rounding).
inline double rsqrt_newton(double d) {
  double y = bits_to_double(0x5FE6EB50C7B537A9ULL - (double_to_bits(d) >> 1));
  const double h = 0.5 * d;
  y = y * (1.5 - h * y * y);
  y = y * (1.5 - h * y * y);
  y = y * (1.5 - h * y * y);
  y = y * (1.5 - h * y * y);
  return y;
}

#if defined(__NO_MATH_ERRNO__) && (defined(__GNUC__) || defined(__clang__))
// Built with -fno-math-errno (the CPU schedule's variants, CMakeLists.txt): the compiler emits the
// IEEE square-root instruction, correctly rounded and vectorized, with sqrt's IEEE special cases.
inline float sqrt(float x) { return __builtin_sqrtf(x); }
inline double sqrt(double x) { return __builtin_sqrt(x); }
#else
inline float sqrt(float x) {
  // In double: d * rsqrt(d) is within ~2^-50 of sqrt(d), so rounding it to float is the correctly
  // rounded float sqrt except in (unobserved) near-halfway cases, where it is off by 1 ulp.
  const double d = static_cast<double>(x);
  const bool normal = d > 0.0 && d < 1.0e300;  // excludes 0, negative, NaN, inf
  const double dd = normal ? d : 1.0;
  const float s = static_cast<float>(dd * rsqrt_newton(dd));
  float v = normal ? s : x;                    // +-0, +inf and NaN map to themselves
  v = x < 0.0f ? std::numeric_limits<float>::quiet_NaN() : v;      // negative: NaN (IEEE sqrt)
  return v;
}

inline double sqrt(double x) {
  // Subnormal and huge arguments are scaled by an even power of two into the safe range.
  const bool normal = x > 0.0 && x < std::numeric_limits<double>::infinity();
  const bool tiny = x < 1.0e-290;
  const bool huge = x > 1.0e290;
  double d = normal ? x : 1.0;
  d = tiny ? d * 0x1p+200 : d;
  d = huge ? d * 0x1p-200 : d;
  const double y = rsqrt_newton(d);
  double s = d * y;
  // One residual correction (Heron step in residual form) brings s to <= 2 ulp without an FMA.
  s = s + 0.5 * y * (d - s * s);
  s = tiny ? s * 0x1p-100 : s;
  s = huge ? s * 0x1p+100 : s;
  double v = normal ? s : x;
  v = x < 0.0 ? std::numeric_limits<double>::quiet_NaN() : v;
  return v;
}
#endif  // __NO_MATH_ERRNO__

}  // namespace host_math
}  // namespace latentdiv
