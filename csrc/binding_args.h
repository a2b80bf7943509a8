// binding_args.h: the engine's POD arguments built from what pybind11 receives (pointers as the
// integers torch's data_ptr() gives, sizes, flags), and the pair reduction's argument list. Shared by
// bindings.cpp (the real schedules) and cuda_emulation.cpp (the host emulation of the CUDA schedule), so
// both see identical arguments.
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

// The pair reduction's arguments as Python passes them (pointers as the integers torch's data_ptr()
// gives, sizes, flags), described once: X(type, name), in groups that every binding takes in this order.
// bindings.cpp (_C.pair_reduce) and cuda_emulation.cpp (_C.emulate_cuda_pair_reduce) expand them into
// their parameter lists and py::arg lists (with their own arguments in between: device, isa,
// num_threads, stream / workspace_bytes, reverse_threads), make_pair_args below into the PairArgs
// (common.h) that the CPU engine, the CUDA engine and the emulator take.
#define LATENTDIV_PAIR_CALL_BUFFERS(X) \
  X(int, mode)                  /* Mode (common.h) */     \
  X(int, dtype)                 /* DType */                \
  X(std::uintptr_t, x)          /* [n, d] */               \
  X(std::uintptr_t, y)          /* [m, d] */               \
  X(std::uintptr_t, wx)         /* [n] or 0 */             \
  X(std::uintptr_t, wy)         /* [m] or 0 */             \
  X(std::uintptr_t, out_rows)   /* [n] double or 0 */      \
  X(std::uintptr_t, out_total)  /* [1] double or 0 */      \
  X(std::uintptr_t, out_grad)   /* [n, d] or 0 */          \
  X(std::uintptr_t, workspace)  /* CUDA scratch or 0 */
#define LATENTDIV_PAIR_CALL_SHAPE(X) \
  X(std::int64_t, n)             \
  X(std::int64_t, m)             \
  X(std::int64_t, d)             \
  X(bool, self_pairs)            \
  X(bool, exclude_diagonal)
#define LATENTDIV_PAIR_CALL_KERNEL(X) \
  X(int, kernel)  /* KernelId (kernels.h) */ \
  X(const std::vector<double>&, params)
// Last and optional (py::arg default 0): the vectors of HESS_VEC.
#define LATENTDIV_PAIR_CALL_VECTORS(X) \
  X(std::uintptr_t, vx)  /* [n, d] or 0 */ \
  X(std::uintptr_t, vy)  /* [m, d] or 0 */
#define LATENTDIV_PAIR_CALL(X) \
  LATENTDIV_PAIR_CALL_BUFFERS(X)     \
  LATENTDIV_PAIR_CALL_SHAPE(X)       \
  LATENTDIV_PAIR_CALL_KERNEL(X)      \
  LATENTDIV_PAIR_CALL_VECTORS(X)
// Expansions: `, type name` (a parameter list; `type name,` for a group that comes first), `, name` (a
// call), `, py::arg("name")` (optionally = 0; `py::arg("name"),` for a group that comes first).
#define LATENTDIV_PAIR_PARAM(type, name) , type name
#define LATENTDIV_PAIR_PARAM_FIRST(type, name) type name,
#define LATENTDIV_PAIR_PYARG_FIRST(type, name) pybind11::arg(#name),
#define LATENTDIV_PAIR_NAME(type, name) , name
#define LATENTDIV_PAIR_PYARG(type, name) , pybind11::arg(#name)
#define LATENTDIV_PAIR_PYARG_ZERO(type, name) , pybind11::arg(#name) = 0

// The one place the PairArgs of a binding call is built.
inline PairArgs make_pair_args(int num_threads LATENTDIV_PAIR_CALL(LATENTDIV_PAIR_PARAM)) {
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
