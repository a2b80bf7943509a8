// latentdiv/kernels.h: the radial kernels k(x, y) = f(r2), r2 = ||x - y||^2, as small functors.
//
// Each functor gives f(r2) and its slope df/dr2 in one call (eval), and f, f', f'' = d2f/dr2^2 in
// another (eval2, used by the HESS_VEC mode of second-order gradients, docs/second_order.md), for
// T = float or double, on host and device (LD_HD), and carries its own traits (the facts the schedules
// need about it, see KernelTemplate below):
//   kTileForm     how the CPU schedule evaluates it over a tile of r2 values (TileForm);
//   kValuePower   f scales as length^kValuePower; rescale(p, e, clamp) rewrites its parameters for
//                 points divided by 2^e (kernel_scaling.h explains the frame and the clamps).
// The schedules (cpu/, cuda/) are templates over the functor and read nothing else about a kernel, so
// adding a kernel is: one functor here (copy KernelTemplate) + one line in LATENTDIV_FOR_EACH_KERNEL +
// one entry in the Python registry (python/latentdiv/_registry.py), which says how user arguments
// become `params`. No trait has a default: a functor that forgets one does not compile.
//
// Subgradient convention: where f is not differentiable at r2 = 0 (laplacian, energy: functions of
// r = sqrt(r2)), the slope at 0 is 0. The gradient term is 2 f'(r2) (x_i - y_j) and x_i - y_j = 0
// there, so any finite slope gives the same gradient; 0 avoids inf * 0 = NaN. The same convention
// holds one order up: f'' = 0 at r2 = 0 for these kernels, so the pair Hessian
// 2 f' I + 4 f'' (x_i - y_j)(x_i - y_j)^T of an exact duplicate is 0 (the subgradient 0, never NaN).
#pragma once

#include <cmath>
#include <initializer_list>

#include "latentdiv/common.h"
#include "latentdiv/cw_phi.h"
#include "latentdiv/kernel_scaling.h"
#include "latentdiv/ld_math.h"

namespace latentdiv {

// The kernel ids. The Python registry uses the same numbers (checked at import).
enum class KernelId : std::int32_t {
  kGaussian = 0,
  kLaplacian = 1,
  kImq = 2,
  kEnergy = 3,
  kCramerWoldApprox = 4,
  kCramerWoldExact = 5,
  kImqSqrt = 6,
};

// How the CPU schedule (csrc/cpu/pair_reduce/tile_eval.h) evaluates a functor over a tile of r2 values.
// The CUDA schedule always calls eval per element.
enum class TileForm {
  // One omp simd loop calling eval per element: for a functor whose eval GCC vectorizes as written
  // (no run-time loop inside).
  kPerElement,
  // f = sum over params[s] of a one-scale f_s (the functor loops over n_params scales and sums in the
  // order f = 0 + f_0 + f_1 ...): one vectorized pass per scale with a one-scale copy of the params
  // (GCC does not vectorize the tile loop around the run-time loop over scales; a multi-scale kernel
  // declared kPerElement still gives the same results, only several times slower).
  kSumOverScales,
  // The exact Cramer-Wold kernel's own tile evaluator (tile_eval.h, cw_exact_tile): its Clenshaw loop
  // over a run-time number of coefficients turned inside out. A kernel with its own evaluator adds an
  // entry here and a branch in tile_eval.h's eval_tile.
  kCramerWoldExact,
};

// X(Functor, KernelId): the registry the schedules expand into their dispatch switch (and the C++
// test drivers into their kernel lists).
#define LATENTDIV_FOR_EACH_KERNEL(X)                   \
  X(Gaussian, KernelId::kGaussian)                     \
  X(Laplacian, KernelId::kLaplacian)                   \
  X(Imq, KernelId::kImq)                               \
  X(Energy, KernelId::kEnergy)                         \
  X(CramerWoldApprox, KernelId::kCramerWoldApprox)     \
  X(CramerWoldExact, KernelId::kCramerWoldExact)     \
  X(ImqSqrt, KernelId::kImqSqrt)

// A KernelParams of the given values (host only; for example_params below and C++ test drivers).
inline KernelParams make_kernel_params(KernelId id, std::initializer_list<double> values) {
  KernelParams k{};
  k.kernel = static_cast<std::int32_t>(id);
  for (double v : values) {
    if (k.n_params < kMaxKernelParams) k.params[k.n_params++] = v;
  }
  return k;
}

// ---- copy me: a new kernel -----------------------------------------------------------------------
// A commented template (not in LATENTDIV_FOR_EACH_KERNEL, so no schedule instantiates it). To add a
// kernel: copy this struct, rename it, write eval / eval2, choose the traits, add its KernelId and its
// line to LATENTDIV_FOR_EACH_KERNEL, and its KernelSpec in python/latentdiv/_registry.py (same id).
// Every test that loops over the registry then covers it (values, gradients, second order, the ISA
// variants, the CUDA emulation, determinism).
struct KernelTemplate {
  // How the CPU schedule evaluates it over a tile (TileForm above): kSumOverScales if f is a sum over
  // params[s] of one-scale terms computed in that order (like Gaussian), else kPerElement.
  static constexpr TileForm kTileForm = TileForm::kPerElement;
  // f scales as length^kValuePower: 0 for a function of r2 / (parameter in r2 units) or of r * rate,
  // 1 for a length (Energy's -r), -1 for 1 / length (CramerWoldApprox).
  static constexpr int kValuePower = 0;
  // Rewrite params for points divided by 2^e (kernel_scaling.h): a rate in 1 / r2 units is multiplied
  // by 4^e (scale_param(v, 2 * e, ...)), a rate in 1 / r units by 2^e, a quantity in r2 units by 4^-e;
  // pure numbers are left alone. With clamp (a float32 pass) keep each in its ParamRange.
  static void rescale(KernelParams& p, int e, bool clamp) {
    for (int s = 0; s < p.n_params; ++s) scale_param(p.params[s], 2 * e, clamp, kFloatRate);
  }
  // A valid parameter set (values the Python registry could produce), for the C++ test drivers
  // (tests/cpp/repeat_driver.cpp runs every kernel of the X-macro with it). Use the new KernelId.
  static KernelParams example_params() { return make_kernel_params(KernelId::kGaussian, {0.5}); }
  // f(r2) and df/dr2. Host and device, float and double; use ld_exp / ld_sqrt (ld_math.h) so the CPU
  // variants vectorize and the device gets its intrinsics. Finite at r2 = 0 (the subgradient
  // convention above for functions of r = sqrt(r2)).
  template <class T>
  LD_HD static void eval(const KernelParams& p, T r2, T& f, T& df) {
    const T a = static_cast<T>(p.params[0]);
    f = ld_exp(-a * r2);
    df = -a * f;
  }
  // f, df/dr2 and d2f/dr2^2 (second-order gradients); the same f and df as eval to rounding.
  template <class T>
  LD_HD static void eval2(const KernelParams& p, T r2, T& f, T& df, T& d2f) {
    const T a = static_cast<T>(p.params[0]);
    f = ld_exp(-a * r2);
    df = -a * f;
    d2f = a * a * f;
  }
};

// Gaussian (RBF), multi-scale: f = sum_s exp(-a_s r2).
// params[s] = a_s = 1 / (2 h_s^2) for each bandwidth h_s (n_params >= 1).
struct Gaussian {
  static constexpr TileForm kTileForm = TileForm::kSumOverScales;
  // exp(-a r2): a in 1 / r2 units.
  static constexpr int kValuePower = 0;
  static void rescale(KernelParams& p, int e, bool clamp) {
    for (int s = 0; s < p.n_params; ++s) scale_param(p.params[s], 2 * e, clamp, kFloatRate);
  }
  static KernelParams example_params() { return make_kernel_params(KernelId::kGaussian, {0.5}); }
  template <class T>
  LD_HD static void eval(const KernelParams& p, T r2, T& f, T& df) {
    f = T(0);
    df = T(0);
    for (int s = 0; s < p.n_params; ++s) {
      const T a = static_cast<T>(p.params[s]);
      const T e = ld_exp(-a * r2);
      f += e;
      df -= a * e;
    }
  }
  template <class T>
  LD_HD static void eval2(const KernelParams& p, T r2, T& f, T& df, T& d2f) {
    f = T(0);
    df = T(0);
    d2f = T(0);
    for (int s = 0; s < p.n_params; ++s) {
      const T a = static_cast<T>(p.params[s]);
      const T e = ld_exp(-a * r2);
      f += e;
      df -= a * e;
      d2f += a * a * e;
    }
  }
};

// Laplacian, multi-scale: f = sum_s exp(-r / h_s), r = sqrt(r2). params[s] = 1 / h_s.
// df/dr2 = -sum_s exp(-r / h_s) / (2 h_s r); subgradient 0 at r2 = 0.
struct Laplacian {
  static constexpr TileForm kTileForm = TileForm::kSumOverScales;
  // exp(-b r): b in 1 / r units. (Summed per scale it divides its slope by 2r per scale instead of
  // once: the same value to rounding.)
  static constexpr int kValuePower = 0;
  static void rescale(KernelParams& p, int e, bool clamp) {
    for (int s = 0; s < p.n_params; ++s) scale_param(p.params[s], e, clamp, kFloatRate);
  }
  static KernelParams example_params() { return make_kernel_params(KernelId::kLaplacian, {0.5}); }
  template <class T>
  LD_HD static void eval(const KernelParams& p, T r2, T& f, T& df) {
    const T r = ld_sqrt(r2);
    T slope_r = T(0);  // df/dr
    f = T(0);
    for (int s = 0; s < p.n_params; ++s) {
      const T b = static_cast<T>(p.params[s]);
      const T e = ld_exp(-b * r);
      f += e;
      slope_r -= b * e;
    }
    df = r > T(0) ? slope_r / (T(2) * r) : T(0);
  }
  // d2f/dr2^2 = (r f_rr - f_r) / (4 r^3), f_r = -sum b e, f_rr = sum b^2 e; 0 at r2 = 0.
  template <class T>
  LD_HD static void eval2(const KernelParams& p, T r2, T& f, T& df, T& d2f) {
    const T r = ld_sqrt(r2);
    T slope_r = T(0), curv_r = T(0);  // df/dr, d2f/dr2
    f = T(0);
    for (int s = 0; s < p.n_params; ++s) {
      const T b = static_cast<T>(p.params[s]);
      const T e = ld_exp(-b * r);
      f += e;
      slope_r -= b * e;
      curv_r += b * b * e;
    }
    const bool pos = r > T(0);
    const T inv_r = pos ? T(1) / r : T(0);
    df = T(0.5) * slope_r * inv_r;
    d2f = T(0.25) * (r * curv_r - slope_r) * inv_r * inv_r * inv_r;
  }
};

// Inverse multiquadric, multi-scale (WAE): f = sum_s c_s / (c_s + r2). params[s] = c_s > 0.
struct Imq {
  static constexpr TileForm kTileForm = TileForm::kSumOverScales;
  // c / (c + r2): c in r2 units.
  static constexpr int kValuePower = 0;
  static void rescale(KernelParams& p, int e, bool clamp) {
    for (int s = 0; s < p.n_params; ++s) scale_param(p.params[s], -2 * e, clamp, kFloatDenominator);
  }
  static KernelParams example_params() { return make_kernel_params(KernelId::kImq, {0.5}); }
  template <class T>
  LD_HD static void eval(const KernelParams& p, T r2, T& f, T& df) {
    f = T(0);
    df = T(0);
    for (int s = 0; s < p.n_params; ++s) {
      const T c = static_cast<T>(p.params[s]);
      const T inv = T(1) / (c + r2);
      const T v = c * inv;
      f += v;
      df -= v * inv;
    }
  }
  // f'' = sum_s 2 c_s / (c_s + r2)^3.
  template <class T>
  LD_HD static void eval2(const KernelParams& p, T r2, T& f, T& df, T& d2f) {
    f = T(0);
    df = T(0);
    d2f = T(0);
    for (int s = 0; s < p.n_params; ++s) {
      const T c = static_cast<T>(p.params[s]);
      const T inv = T(1) / (c + r2);
      const T v = c * inv;
      f += v;
      df -= v * inv;
      d2f += T(2) * v * inv * inv;
    }
  }
};

// Inverse multiquadric with exponent -1/2, multi-scale: f = sum_s (1 + r2 / c_s)^(-1/2)
// = sum_s sqrt(c_s / (c_s + r2)). params[s] = c_s > 0. Heavier-tailed than Imq (f ~ 1 / r rather than
// 1 / r2 far away): the kernel Gorham & Mackey (2017) recommend for Stein discrepancies (beta = -1/2).
struct ImqSqrt {
  static constexpr TileForm kTileForm = TileForm::kSumOverScales;
  // sqrt(c / (c + r2)): c in r2 units.
  static constexpr int kValuePower = 0;
  static void rescale(KernelParams& p, int e, bool clamp) {
    for (int s = 0; s < p.n_params; ++s) scale_param(p.params[s], -2 * e, clamp, kFloatDenominator);
  }
  static KernelParams example_params() { return make_kernel_params(KernelId::kImqSqrt, {0.5}); }
  // With v = sqrt(c / (c + r2)): df/dr2 = -v / (2 (c + r2)).
  template <class T>
  LD_HD static void eval(const KernelParams& p, T r2, T& f, T& df) {
    f = T(0);
    df = T(0);
    for (int s = 0; s < p.n_params; ++s) {
      const T c = static_cast<T>(p.params[s]);
      const T inv = T(1) / (c + r2);
      const T v = ld_sqrt(c * inv);
      f += v;
      df -= T(0.5) * v * inv;
    }
  }
  // f'' = sum_s 3 v_s / (4 (c_s + r2)^2).
  template <class T>
  LD_HD static void eval2(const KernelParams& p, T r2, T& f, T& df, T& d2f) {
    f = T(0);
    df = T(0);
    d2f = T(0);
    for (int s = 0; s < p.n_params; ++s) {
      const T c = static_cast<T>(p.params[s]);
      const T inv = T(1) / (c + r2);
      const T v = ld_sqrt(c * inv);
      f += v;
      df -= T(0.5) * v * inv;
      d2f += T(0.75) * v * inv * inv;
    }
  }
};

// Energy (negative distance): f = -r; df/dr2 = -1 / (2 r), subgradient 0 at r2 = 0. No params.
struct Energy {
  static constexpr TileForm kTileForm = TileForm::kPerElement;
  // -r: no parameters; the value is a length.
  static constexpr int kValuePower = 1;
  static void rescale(KernelParams&, int, bool) {}
  static KernelParams example_params() { return make_kernel_params(KernelId::kEnergy, {}); }
  template <class T>
  LD_HD static void eval(const KernelParams& /*p*/, T r2, T& f, T& df) {
    const T r = ld_sqrt(r2);
    f = -r;
    df = r > T(0) ? T(-0.5) / r : T(0);
  }
  // f'' = 1 / (4 r^3); 0 at r2 = 0.
  template <class T>
  LD_HD static void eval2(const KernelParams& /*p*/, T r2, T& f, T& df, T& d2f) {
    const T r = ld_sqrt(r2);
    f = -r;
    const T inv_r = r > T(0) ? T(1) / r : T(0);
    df = T(-0.5) * inv_r;
    d2f = T(0.25) * inv_r * inv_r * inv_r;
  }
};

// Cramer-Wold, the CWAE paper's approximation phi_D(s) ~ (1 + 4 s / (2D - 3))^(-1/2), in the form
// its reference code uses: f = (gamma + K r2)^(-1/2). params = {gamma, K}, K = 1 / (2D - 3).
struct CramerWoldApprox {
  static constexpr TileForm kTileForm = TileForm::kPerElement;
  // (gamma + K r2)^(-1/2): gamma in r2 units (K is a pure number), the value in 1 / length:
  // (gamma 4^-e + K r2 4^-e)^(-1/2) = 2^e f. Not clamped: f(0) = gamma^(-1/2) itself depends on gamma.
  static constexpr int kValuePower = -1;
  static void rescale(KernelParams& p, int e, bool /*clamp: never clamped*/) {
    if (p.n_params >= 1) scale_param(p.params[0], -2 * e, false, kNoClamp);
  }
  static KernelParams example_params() { return make_kernel_params(KernelId::kCramerWoldApprox, {0.3, 1.0 / 7.0}); }
  template <class T>
  LD_HD static void eval(const KernelParams& p, T r2, T& f, T& df) {
    const T g = static_cast<T>(p.params[0]);
    const T k = static_cast<T>(p.params[1]);
    const T inv = T(1) / (g + k * r2);
    f = ld_sqrt(inv);
    df = T(-0.5) * k * f * inv;
  }
  // f'' = (3/4) K^2 (gamma + K r2)^(-5/2).
  template <class T>
  LD_HD static void eval2(const KernelParams& p, T r2, T& f, T& df, T& d2f) {
    const T g = static_cast<T>(p.params[0]);
    const T k = static_cast<T>(p.params[1]);
    const T inv = T(1) / (g + k * r2);
    f = ld_sqrt(inv);
    df = T(-0.5) * k * f * inv;
    d2f = T(0.75) * k * k * f * inv * inv;
  }
};

// Cramer-Wold with the exact phi_D(s) = 1F1(1/2; D/2; -s), s = r2 / (4 gamma), by the per-D fitted
// approximation of cw_phi.h (params from latentdiv.special.cw_phi_params).
struct CramerWoldExact {
  static constexpr TileForm kTileForm = TileForm::kCramerWoldExact;
  // phi_D(s_scale r2) (cw_phi.h layout): s_scale in 1 / r2 units, a / s_scale in r2 units; a and the
  // coefficients are pure numbers.
  static constexpr int kValuePower = 0;
  static void rescale(KernelParams& p, int e, bool clamp) {
    if (p.n_params >= 1) scale_param(p.params[0], 2 * e, clamp, kFloatRate);
    if (p.n_params >= 5) scale_param(p.params[4], -2 * e, clamp, kFloatDenominator);
  }
  // latentdiv.special.cw_phi_params(8, 0.5) (D = 8, s_scale = 0.5) truncated to its first 9 of 21
  // coefficients (the layout of cw_phi.h, N32 = N = 9; the dropped ones are below 1e-6).
  static KernelParams example_params() {
    return make_kernel_params(KernelId::kCramerWoldExact,
                              {0.5, 1.0, 9.0, 12.0, 24.0, 9.0, 0.7130929985814878, -0.23149715681941208,
                               0.04672811598140947, -0.007982611696017267, 0.0008068996580390154,
                               6.430720349810898e-05, -4.1617282476652724e-05, 3.872134771903957e-06,
                               1.6787396739879326e-06});
  }
  template <class T>
  LD_HD static void eval(const KernelParams& p, T r2, T& f, T& df) {
    cw_phi_of_r2<T>(p.params, p.n_params, r2, f, df);
  }
  template <class T>
  LD_HD static void eval2(const KernelParams& p, T r2, T& f, T& df, T& d2f) {
    cw_phi_of_r2_2<T>(p.params, p.n_params, r2, f, df, d2f);
  }
};

}  // namespace latentdiv
