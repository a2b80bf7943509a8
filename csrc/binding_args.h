// binding_args.h: the engine's POD arguments built from what pybind11 receives (pointers as the
// integers torch's data_ptr() gives, sizes, flags). Shared by bindings.cpp (the real schedules) and
// cuda_emulation.cpp (the host emulation of the CUDA schedule), so both see identical arguments.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "latentdiv/common.h"

namespace latentdiv {
namespace binding {

inline KernelParams make_kernel(int kernel, const std::vector<double>& params) {
  if (params.size() > static_cast<std::size_t>(kMaxKernelParams)) {
    throw pybind11::value_error("kernel params: at most " + std::to_string(kMaxKernelParams) + " values, got " +
                                std::to_string(params.size()));
  }
  KernelParams k{};
  k.kernel = kernel;
  k.n_params = static_cast<std::int32_t>(params.size());
  for (std::size_t i = 0; i < params.size(); ++i) k.params[i] = params[i];
  return k;
}

inline PairArgs make_pair_args(int mode, int dtype,
                               std::uintptr_t x,          // [n, d]
                               std::uintptr_t y,          // [m, d]
                               std::uintptr_t wx,         // [n] or 0
                               std::uintptr_t wy,         // [m] or 0
                               std::uintptr_t out_rows,   // [n] double or 0
                               std::uintptr_t out_total,  // [1] double or 0
                               std::uintptr_t out_grad,   // [n, d] or 0
                               std::uintptr_t workspace,  // CUDA scratch or 0
                               std::int64_t n, std::int64_t m, std::int64_t d, bool self_pairs,
                               bool exclude_diagonal, int num_threads, int kernel,
                               const std::vector<double>& params,
                               std::uintptr_t vx = 0,    // HESS_VEC: [n, d] or 0
                               std::uintptr_t vy = 0) {  // HESS_VEC: [m, d] or 0
  PairArgs a{};
  a.x = reinterpret_cast<const void*>(x);
  a.y = reinterpret_cast<const void*>(y);
  a.wx = reinterpret_cast<const void*>(wx);
  a.wy = reinterpret_cast<const void*>(wy);
  a.out_rows = reinterpret_cast<double*>(out_rows);
  a.out_total = reinterpret_cast<double*>(out_total);
  a.out_grad = reinterpret_cast<void*>(out_grad);
  a.workspace = reinterpret_cast<void*>(workspace);
  a.vx = reinterpret_cast<const void*>(vx);
  a.vy = reinterpret_cast<const void*>(vy);
  a.n = n;
  a.m = m;
  a.d = d;
  a.dtype = dtype;
  a.mode = mode;
  a.self_pairs = self_pairs ? 1 : 0;
  a.exclude_diagonal = exclude_diagonal ? 1 : 0;
  a.num_threads = num_threads;
  a.kernel = make_kernel(kernel, params);
  return a;
}

inline PdistArgs make_pdist_args(int dtype,
                                 std::uintptr_t x,         // [n, d]
                                 std::uintptr_t grad_out,  // [n(n-1)/2] or 0
                                 std::uintptr_t dist,      // [n(n-1)/2] or 0
                                 std::uintptr_t out,       // forward [n(n-1)/2], backward [n, d]
                                 std::int64_t n, std::int64_t d, int num_threads) {
  PdistArgs a{};
  a.x = reinterpret_cast<const void*>(x);
  a.grad_out = reinterpret_cast<const void*>(grad_out);
  a.dist = reinterpret_cast<const void*>(dist);
  a.out = reinterpret_cast<void*>(out);
  a.n = n;
  a.d = d;
  a.dtype = dtype;
  a.num_threads = num_threads;
  return a;
}

}  // namespace binding
}  // namespace latentdiv
