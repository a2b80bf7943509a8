// latentdiv/kernel_scaling.h: how each kernel of kernels.h reads its parameters when the CPU schedule
// measures distances in other units, so that float32 data of any finite magnitude give float32 results.
//
// Why: r2 = ||x - y||^2 leaves float32's range long before the points do. At |x| ~ 1.8e19 (D >= 9) it
// overflows (NaN results), at |x| ~ 1e-19 its terms fall below the smallest normal number and are
// flushed to zero (pdist and energy were 0 at 1e-20, 11-23% low at 1e-19), while the true results are
// ordinary numbers. The CPU schedule therefore divides the centred points by a power of two 2^e chosen
// from their largest magnitude (exact in binary floating point: every product, sum, division and sqrt
// is then the same arithmetic, only the exponents change) and folds the factor into the parameters
// (rescale below) and into the outputs:
//
//   f(r2; p) = 2^(value_power e) f(r2 4^-e; rescale(p, e)),
//
// so VALUE rows are multiplied by 2^(value_power e) and GRAD rows by 2^((value_power - 1) e) (the slope
// df/dr2 gains 4^-e, the difference x_i - y_j loses 2^e). At ordinary scales e = 0 and nothing changes.
//
// Kernel parameters can also leave float32's range on their own (a bandwidth of 1e-20 for data of
// size 1 makes 1 / (2 h^2) = 5e39 an inf in float32, and exp(-inf * 0) a NaN on the diagonal): in a
// float32 pass each length-like parameter is clamped into the normal float32 range [lo, hi]. With
// the points rescaled to magnitude ~1 the clamp changes no kernel value beyond float rounding (the
// kernel is then a delta at r2 = 0, or constant, either way).
//
// Adding a kernel: one specialization here (there is no default, so a missing one does not compile).
#pragma once

#include <algorithm>
#include <cmath>

#include "latentdiv/cw_phi.h"
#include "latentdiv/kernels.h"

namespace latentdiv {

// Parameters a float pass may hold: for double lo = 0 and hi = inf (no clamp).
struct ParamRange {
  double lo, hi;
};

// v * 2^pow2, then clamped into [r.lo, r.hi].
inline void scale_param(double& v, int pow2, const ParamRange& r) { v = std::min(std::max(std::ldexp(v, pow2), r.lo), r.hi); }

template <class K>
struct Scaling;

// exp(-a r2): a in 1 / r2 units.
template <>
struct Scaling<Gaussian> {
  static constexpr int value_power = 0;
  static void rescale(KernelParams& p, int e, const ParamRange& r) {
    for (int s = 0; s < p.n_params; ++s) scale_param(p.params[s], 2 * e, r);
  }
};

// exp(-b r): b in 1 / r units.
template <>
struct Scaling<Laplacian> {
  static constexpr int value_power = 0;
  static void rescale(KernelParams& p, int e, const ParamRange& r) {
    for (int s = 0; s < p.n_params; ++s) scale_param(p.params[s], e, r);
  }
};

// c / (c + r2): c in r2 units.
template <>
struct Scaling<Imq> {
  static constexpr int value_power = 0;
  static void rescale(KernelParams& p, int e, const ParamRange& r) {
    for (int s = 0; s < p.n_params; ++s) scale_param(p.params[s], -2 * e, r);
  }
};

// -r: no parameters; the value is a length.
template <>
struct Scaling<Energy> {
  static constexpr int value_power = 1;
  static void rescale(KernelParams&, int, const ParamRange&) {}
};

// (gamma + K r2)^(-1/2): gamma in r2 units (K is a pure number), the value in 1 / length:
// (gamma 4^-e + K r2 4^-e)^(-1/2) = 2^e f.
template <>
struct Scaling<CramerWoldApprox> {
  static constexpr int value_power = -1;
  static void rescale(KernelParams& p, int e, const ParamRange& r) {
    if (p.n_params >= 1) scale_param(p.params[0], -2 * e, r);
  }
};

// phi_D(s_scale r2) (cw_phi.h layout): s_scale in 1 / r2 units, a / s_scale in r2 units; a and the
// coefficients are pure numbers.
template <>
struct Scaling<CramerWoldExact> {
  static constexpr int value_power = 0;
  static void rescale(KernelParams& p, int e, const ParamRange& r) {
    if (p.n_params >= 1) scale_param(p.params[0], 2 * e, r);
    if (p.n_params >= 5) scale_param(p.params[4], -2 * e, r);
  }
};

}  // namespace latentdiv
