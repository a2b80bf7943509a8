// pybind11 binding of the batched VALUE mode (latentdiv/pair_batched.h), registered into _C by
// bindings.cpp (register_pair_batched). Pointers arrive as the integers of torch's data_ptr().
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "latentdiv/engine.h"
#include "latentdiv/pair_batched.h"

namespace py = pybind11;

namespace latentdiv {

int run_engine_call(const std::function<int()>& call);              // bindings.cpp: GIL released, Ctrl-C watched
void register_cuda_batched_emulation(py::module_& m);               // cuda_batched_emulation.cpp

BatchedPairArgs make_batched_args(int dtype,
                                  std::uintptr_t x,          // [n, d]
                                  std::uintptr_t y,          // [m, d] (x for self pairs)
                                  std::uintptr_t w,          // [batch, n]
                                  std::uintptr_t v,          // [batch, m]
                                  std::uintptr_t out,        // [batch] double
                                  std::uintptr_t workspace,  // CUDA scratch or 0
                                  std::int64_t n, std::int64_t m, std::int64_t d, std::int64_t batch,
                                  bool self_pairs, bool exclude_diagonal, int num_threads, int kernel,
                                  const std::vector<double>& params) {
  if (params.size() > static_cast<std::size_t>(kMaxKernelParams)) {
    throw py::value_error("kernel params: at most " + std::to_string(kMaxKernelParams) + " values, got " +
                          std::to_string(params.size()));
  }
  BatchedPairArgs a{};
  a.x = reinterpret_cast<const void*>(x);
  a.y = reinterpret_cast<const void*>(y);
  a.w = reinterpret_cast<const void*>(w);
  a.v = reinterpret_cast<const void*>(v);
  a.out = reinterpret_cast<double*>(out);
  a.workspace = reinterpret_cast<void*>(workspace);
  a.n = n;
  a.m = m;
  a.d = d;
  a.batch = batch;
  a.dtype = dtype;
  a.self_pairs = self_pairs ? 1 : 0;
  a.exclude_diagonal = exclude_diagonal ? 1 : 0;
  // v is w on self pairs: the symmetric form (half the pairs on the CPU; the CUDA schedule ignores it).
  a.symmetric = self_pairs && v == w ? 1 : 0;
  a.num_threads = num_threads;
  a.kernel.kernel = kernel;
  a.kernel.n_params = static_cast<std::int32_t>(params.size());
  for (std::size_t i = 0; i < params.size(); ++i) a.kernel.params[i] = params[i];
  return a;
}

namespace {

constexpr int kDeviceCpu = 0;
constexpr int kDeviceCuda = 1;

int pair_batched(int device, int isa, int dtype, std::uintptr_t x, std::uintptr_t y, std::uintptr_t w,
                 std::uintptr_t v, std::uintptr_t out, std::uintptr_t workspace, std::int64_t n, std::int64_t m,
                 std::int64_t d, std::int64_t batch, bool self_pairs, bool exclude_diagonal, int num_threads,
                 int kernel, const std::vector<double>& params, std::uintptr_t stream) {
  const BatchedPairArgs a = make_batched_args(dtype, x, y, w, v, out, workspace, n, m, d, batch, self_pairs,
                                              exclude_diagonal, num_threads, kernel, params);
  if (device == kDeviceCpu) {
    return run_engine_call([&] { return static_cast<int>(pair_batched_cpu(a, static_cast<CpuIsa>(isa))); });
  }
  py::gil_scoped_release release;
#if defined(LATENTDIV_WITH_CUDA)
  if (device == kDeviceCuda) return static_cast<int>(pair_batched_cuda(a, reinterpret_cast<void*>(stream)));
#else
  (void)stream;
  (void)kDeviceCuda;
#endif
  return static_cast<int>(kUnsupported);
}

}  // namespace

void register_pair_batched(py::module_& m) {
  m.def("pair_batched", &pair_batched, py::arg("device"), py::arg("isa"), py::arg("dtype"), py::arg("x"),
        py::arg("y"), py::arg("w"), py::arg("v"), py::arg("out"), py::arg("workspace"), py::arg("n"), py::arg("m"),
        py::arg("d"), py::arg("batch"), py::arg("self_pairs"), py::arg("exclude_diagonal"), py::arg("num_threads"),
        py::arg("kernel"), py::arg("params"), py::arg("stream"),
        "out[b] = sum_ij W[b, i] k(x_i, y_j) V[b, j] for every b in one pass over the pairs");
  register_cuda_batched_emulation(m);
}

}  // namespace latentdiv
