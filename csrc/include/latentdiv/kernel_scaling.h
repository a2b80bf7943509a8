// latentdiv/kernel_scaling.h: the units helpers behind each kernel's scaling rule (the functor's
// kValuePower and rescale in kernels.h): how a kernel reads its parameters when the CPU schedule measures
// distances in other units, so that float32 data of any finite magnitude give float32 results.
//
// Why: r2 = ||x - y||^2 leaves float32's range long before the points do. At |x| ~ 1.8e19 (D >= 9) it
// overflows (NaN results), at |x| ~ 1e-19 its terms fall below the smallest normal number and are
// flushed to zero (pdist and energy were 0 at 1e-20, 11-23% low at 1e-19), while the true results are
// ordinary numbers. The CPU schedule therefore divides the centred points by a power of two 2^e chosen
// from their largest magnitude (exact in binary floating point: every product, sum, division and sqrt
// is then the same arithmetic, only the exponents change) and folds the factor into the parameters
// (rescale below) and into the outputs:
//
//   f(r2; p) = 2^(kValuePower e) f(r2 4^-e; rescale(p, e)),
//
// so VALUE rows are multiplied by 2^(kValuePower e) and GRAD rows by 2^((kValuePower - 1) e) (the slope
// df/dr2 gains 4^-e, the difference x_i - y_j loses 2^e). At ordinary scales e = 0 and nothing changes.
//
// Kernel parameters can also leave float32's range on their own (a bandwidth of 1e-20 for data of
// size 1 makes 1 / (2 h^2) = 5e39 an inf in float32, and exp(-inf * 0) a NaN on the diagonal): in a
// float32 pass each length-like parameter is clamped into a range where the functor's arithmetic stays
// normal (ParamRange below). The clamp changes no kernel value beyond float rounding: such a kernel is a
// delta at r2 = 0 or a constant for every r2 the frame holds. (Not the Cramer-Wold approximation, whose
// value at 0 is gamma^(-1/2) itself: it is not clamped.)
//
// Adding a kernel: its functor declares kValuePower and rescale (kernels.h; there is no default, so a
// missing one does not compile).
#pragma once

#include <algorithm>
#include <cmath>

#include "latentdiv/common.h"

namespace latentdiv {

// What a float pass may hold for a parameter. Rates (1 / r2 or 1 / r units: gaussian, laplacian, the
// exponential Cramer-Wold kind) stay within [FLT_MIN, 2^100], denominators (r2 units: imq's c, the exact
// Cramer-Wold kernel's a / s_scale) within [2^-100, 2^100]: then exp(-a r2) and c / (c + r2) are
// normal or 0 where they should be, and the slopes (at most ~2^100 at r2 = 0), summed over a panel and
// multiplied by coordinates, stay finite in float. Double passes clamp nothing.
struct ParamRange {
  double lo, hi;
};
constexpr ParamRange kNoClamp{0.0, HUGE_VAL};
constexpr ParamRange kFloatRate{1.17549435082228750797e-38, 0x1p100};  // FLT_MIN .. 2^100
constexpr ParamRange kFloatDenominator{0x1p-100, 0x1p100};

// v * 2^pow2, then clamped into `r` when `clamp`.
inline void scale_param(double& v, int pow2, bool clamp, const ParamRange& r) {
  v = std::ldexp(v, pow2);
  if (clamp) v = std::min(std::max(v, r.lo), r.hi);
}

}  // namespace latentdiv
