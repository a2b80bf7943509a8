// latentdiv/cw_phi.h: the Cramer-Wold kernel phi_D(s) = 1F1(1/2; D/2; -s) and its derivative, at
// kernel speed (one division, one sqrt, a short Clenshaw loop), for the O(n^2) pair reductions.
//
// Why a fitted form: 1F1 needs series with data-dependent trip counts, which is the wrong shape for a
// per-pair functor. The paper's closed approximation (1 + 4s/(2D-3))^{-1/2} is off by 2.9% at D = 8
// and biases d_cw^2 several-fold (docs/formulas.md section 5). Instead Python fits, once per D,
//
//   phi_D(s) = sqrt(w) * g(t),   w = a / (s + a) in (0, 1],   t = 1 - 2 w in [-1, 1),
//   g(t) = sum_{k<N} c_k T_k(t)                                  (Chebyshev series)
//
// with a = D/2 + 8. sqrt(w) = (1 + s/a)^{-1/2} carries the s^{-1/2} tail, so g is smooth and bounded
// on the closed interval: g(-1) = 1 (s = 0), g(1) = Gamma(D/2) / (Gamma((D-1)/2) sqrt(a)) (s -> inf).
// The "+8" spreads the e^{-s} transition of small D over the interval (D = 2 needs 30 terms,
// D >= 64 about 11). The derivative is the exact derivative of this approximation (forward-mode
// Clenshaw in the same loop), so value and gradient are consistent (gradcheck) and
//
//   dphi/ds = sqrt(w) / (s + a) * (2 w g'(t) - g(t) / 2).
//
// The CPU schedule does not call cheb_eval per element (a run-time trip count inside its tile loop
// does not vectorize): cw_exact_tile in cpu/pair_reduce_cpu.cpp runs the same formulas in the same
// order with the coefficient loop outside; keep the two in step (tests/test_isa.py compares them).
//
// D = 1 is exactly phi_1(s) = e^{-s}, whose exponential decay no s^{-1/2} form can carry to 1e-6
// relative accuracy: it has its own kind (no coefficients).
//
// Accuracy (double, tests/test_special.py, s in {0} u [1e-8, 1e8] log-dense, D = 1..1024): relative
// error <= 5e-10 for phi and dphi/ds (phi alone <= 4e-12). Float: float rounding (<= 1e-6 relative).
// Finite s >= 0 never gives NaN/inf; s = +inf gives 0, 0; negative s (rounding of r2) is clamped to
// 0; NaN stays NaN.
//
// params layout, produced by latentdiv.special.cw_phi_params(D, s_scale) (n_params = 6 + N <= 64):
//   params[0] = s_scale       s = s_scale * r2 (CWAE: 1 / (4 gamma), or 1 / (2 + 4 gamma) for the cross term)
//   params[1] = kind          0: phi = exp(-s) (D = 1, N = 0);  1: Chebyshev form above
//   params[2] = N32           coefficients a float evaluation uses (1 <= N32 <= N): the tail beyond them
//                             is below float rounding in value and slope (special.cw_phi_params); a double
//                             evaluation uses all N
//   params[3] = a             the scale in s units (used by cw_phi_eval)
//   params[4] = a / s_scale   the same scale in r2 units (used by cw_phi_of_r2: saves the multiply)
//   params[5] = N             number of Chebyshev coefficients (<= 58)
//   params[6 .. 6+N)          c_0 .. c_{N-1}
#pragma once

#include <cmath>

#include "latentdiv/common.h"
#include "latentdiv/ld_math.h"

namespace latentdiv {

constexpr int kCwPhiHeader = 6;                                  // params before the coefficients
constexpr int kCwPhiMaxCoeffs = kMaxKernelParams - kCwPhiHeader;  // 58
constexpr int kCwPhiKindExp = 0;
constexpr int kCwPhiKindCheb = 1;

namespace cw_detail {

// The Chebyshev terms an evaluation in T uses: N (never past the valid entries), or N32 in float. At
// D = 8 that is 18 of 21 steps, at D = 32 10 of 14 (the fit's 5e-10 accuracy is for double).
template <class T>
LD_HD int cheb_terms(const double* params, int n_params) {
  int n = static_cast<int>(params[5]);
  if (n > n_params - kCwPhiHeader) n = n_params - kCwPhiHeader;  // never read past the valid entries
  if (sizeof(T) == sizeof(float)) {
    const int n32 = static_cast<int>(params[2]);
    if (n32 >= 1 && n32 < n) n = n32;
  }
  return n;
}

// x >= 0 in the units of A (A = a for s, A = a / s_scale for r2). Returns phi and dphi/dx.
template <class T>
LD_HD void cheb_eval(const double* params, int n_params, T A, T x, T& phi, T& dphi_dx) {
  const int n = cheb_terms<T>(params, n_params);
  const double* c = params + kCwPhiHeader;
  // x + A > 0 for x >= 0; x = +inf gives inv = 0, w = 0, t = 1 and phi = dphi = 0 (no NaN).
  const T inv = T(1) / (x + A);
  const T w = A * inv;
  const T t = T(1) - T(2) * w;  // absolute accuracy near t = -1 (small s): computed from w, not (x-A)/(x+A)
  const T t2 = t + t;
  T b1 = T(0), b2 = T(0);  // Clenshaw b_{k+1}, b_{k+2}
  T d1 = T(0), d2 = T(0);  // their derivatives in t
  for (int k = n - 1; k >= 1; --k) {
    const T b0 = T(c[k]) + t2 * b1 - b2;
    const T d0 = T(2) * b1 + t2 * d1 - d2;
    b2 = b1;
    b1 = b0;
    d2 = d1;
    d1 = d0;
  }
  const T g = (n > 0 ? T(c[0]) : T(0)) + t * b1 - b2;
  const T gt = b1 + t * d1 - d2;
  const T sw = ld_sqrt(w);
  phi = sw * g;
  dphi_dx = sw * inv * (T(2) * w * gt - T(0.5) * g);
}

// Value, first and second derivative in x (the HESS_VEC mode). With P = sqrt(w) / (x + A),
// Q = 2 w g' - g / 2 (so phi' = P Q), dP/dx = -(3/2) P / (x + A) and dQ/dx = (4 w^2 g'' - 3 w g') / (x + A):
//   phi'' = P / (x + A) * (4 w^2 g''(t) - 6 w g'(t) + (3/4) g(t)),
// g'' from a second forward-mode Clenshaw recurrence e_k = 4 d_{k+1} + 2 t e_{k+1} - e_{k+2}.
// The exact second derivative of the fitted form, so it is consistent with phi' (gradgradcheck).
template <class T>
LD_HD void cheb_eval2(const double* params, int n_params, T A, T x, T& phi, T& dphi_dx, T& d2phi_dx2) {
  const int n = cheb_terms<T>(params, n_params);
  const double* c = params + kCwPhiHeader;
  const T inv = T(1) / (x + A);
  const T w = A * inv;
  const T t = T(1) - T(2) * w;
  const T t2 = t + t;
  T b1 = T(0), b2 = T(0);
  T d1 = T(0), d2 = T(0);
  T e1 = T(0), e2 = T(0);  // second derivatives in t
  for (int k = n - 1; k >= 1; --k) {
    const T b0 = T(c[k]) + t2 * b1 - b2;
    const T d0 = T(2) * b1 + t2 * d1 - d2;
    const T e0 = T(4) * d1 + t2 * e1 - e2;
    b2 = b1;
    b1 = b0;
    d2 = d1;
    d1 = d0;
    e2 = e1;
    e1 = e0;
  }
  const T g = (n > 0 ? T(c[0]) : T(0)) + t * b1 - b2;
  const T gt = b1 + t * d1 - d2;
  const T gtt = T(2) * d1 + t * e1 - e2;
  const T sw = ld_sqrt(w);
  const T P = sw * inv;
  phi = sw * g;
  dphi_dx = P * (T(2) * w * gt - T(0.5) * g);
  d2phi_dx2 = P * inv * (T(4) * w * w * gtt - T(6) * w * gt + T(0.75) * g);
}

// Value only: the Clenshaw loop without the derivative recurrence (VALUE mode of the engine).
template <class T>
LD_HD T cheb_value(const double* params, int n_params, T A, T x) {
  const int n = cheb_terms<T>(params, n_params);
  const double* c = params + kCwPhiHeader;
  const T inv = T(1) / (x + A);
  const T w = A * inv;
  const T t = T(1) - T(2) * w;
  const T t2 = t + t;
  T b1 = T(0), b2 = T(0);
  for (int k = n - 1; k >= 1; --k) {
    const T b0 = T(c[k]) + t2 * b1 - b2;
    b2 = b1;
    b1 = b0;
  }
  const T g = (n > 0 ? T(c[0]) : T(0)) + t * b1 - b2;
  return ld_sqrt(w) * g;
}

// Clamp rounding negatives (r2 from the dot-product form) to 0; NaN compares false and propagates.
template <class T>
LD_HD T clamp_nonneg(T x) {
  return x < T(0) ? T(0) : x;
}

}  // namespace cw_detail

// phi_D(s) and dphi_D/ds (s_scale is NOT applied: s is the argument of phi itself).
template <class T>
LD_HD void cw_phi_eval(const double* params, int n_params, T s, T& phi, T& dphi_ds) {
  s = cw_detail::clamp_nonneg(s);
  if (static_cast<int>(params[1]) == kCwPhiKindExp) {
    phi = ld_exp(-s);
    dphi_ds = -phi;
    return;
  }
  cw_detail::cheb_eval<T>(params, n_params, T(params[3]), s, phi, dphi_ds);
}

// f(r2) = phi_D(s_scale * r2) and df/dr2 = s_scale * phi_D'(s_scale * r2): the functor the engine
// calls per pair (GRAD mode uses 2 * df_dr2 * (x_i - y_j)).
template <class T>
LD_HD void cw_phi_of_r2(const double* params, int n_params, T r2, T& f, T& df_dr2) {
  r2 = cw_detail::clamp_nonneg(r2);
  if (static_cast<int>(params[1]) == kCwPhiKindExp) {
    const T sc = T(params[0]);
    f = ld_exp(-sc * r2);
    df_dr2 = -sc * f;
    return;
  }
  // Working in r2 units (A = a / s_scale) gives the r2-derivative directly.
  cw_detail::cheb_eval<T>(params, n_params, T(params[4]), r2, f, df_dr2);
}

// f, df/dr2 and d2f/dr2^2 (the HESS_VEC mode of second-order gradients).
template <class T>
LD_HD void cw_phi_of_r2_2(const double* params, int n_params, T r2, T& f, T& df_dr2, T& d2f_dr2) {
  r2 = cw_detail::clamp_nonneg(r2);
  if (static_cast<int>(params[1]) == kCwPhiKindExp) {
    const T sc = T(params[0]);
    f = ld_exp(-sc * r2);
    df_dr2 = -sc * f;
    d2f_dr2 = sc * sc * f;
    return;
  }
  cw_detail::cheb_eval2<T>(params, n_params, T(params[4]), r2, f, df_dr2, d2f_dr2);
}

// f(r2) only (VALUE mode): about half the flops of cw_phi_of_r2.
template <class T>
LD_HD T cw_phi_of_r2_value(const double* params, int n_params, T r2) {
  r2 = cw_detail::clamp_nonneg(r2);
  if (static_cast<int>(params[1]) == kCwPhiKindExp) {
    return ld_exp(-T(params[0]) * r2);
  }
  return cw_detail::cheb_value<T>(params, n_params, T(params[4]), r2);
}

}  // namespace latentdiv
