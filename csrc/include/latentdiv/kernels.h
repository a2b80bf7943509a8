// latentdiv/kernels.h: the radial kernels k(x, y) = f(r2), r2 = ||x - y||^2, as small functors.
//
// Each functor gives f(r2) and its slope df/dr2 in one call (eval), and f, f', f'' = d2f/dr2^2 in
// another (eval2, used by the HESS_VEC mode of second-order gradients, docs/second_order.md), for
// T = float or double, on host and device (LD_HD). The schedules (cpu/, cuda/) are templates over the functor, so adding a kernel is:
// one functor here + one line in LATENTDIV_FOR_EACH_KERNEL + one entry in the Python registry
// (python/latentdiv/_registry.py), which says how user arguments become `params`.
//
// Subgradient convention: where f is not differentiable at r2 = 0 (laplacian, energy: functions of
// r = sqrt(r2)), the slope at 0 is 0. The gradient term is 2 f'(r2) (x_i - y_j) and x_i - y_j = 0
// there, so any finite slope gives the same gradient; 0 avoids inf * 0 = NaN. The same convention
// holds one order up: f'' = 0 at r2 = 0 for these kernels, so the pair Hessian
// 2 f' I + 4 f'' (x_i - y_j)(x_i - y_j)^T of an exact duplicate is 0 (the subgradient 0, never NaN).
#pragma once

#include <cmath>

#include "latentdiv/common.h"
#include "latentdiv/cw_phi.h"
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
};

// X(Functor, KernelId): the registry the schedules expand into their dispatch switch.
#define LATENTDIV_FOR_EACH_KERNEL(X)                   \
  X(Gaussian, KernelId::kGaussian)                     \
  X(Laplacian, KernelId::kLaplacian)                   \
  X(Imq, KernelId::kImq)                               \
  X(Energy, KernelId::kEnergy)                         \
  X(CramerWoldApprox, KernelId::kCramerWoldApprox)     \
  X(CramerWoldExact, KernelId::kCramerWoldExact)

// Gaussian (RBF), multi-scale: f = sum_s exp(-a_s r2).
// params[s] = a_s = 1 / (2 h_s^2) for each bandwidth h_s (n_params >= 1).
struct Gaussian {
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

// Energy (negative distance): f = -r; df/dr2 = -1 / (2 r), subgradient 0 at r2 = 0. No params.
struct Energy {
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
