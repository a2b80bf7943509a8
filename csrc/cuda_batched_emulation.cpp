// Host emulation of the CUDA schedule of the batched VALUE mode (csrc/cuda/batched_schedule.h): the
// same block programs as the __global__ kernels, run block after block on the CPU, with shared memory
// as host arrays poisoned with NaN and each phase run thread after thread in forward or reverse order
// (a legal interleaving of a real block; a missing barrier shows up as a NaN or a wrong value), by
// the executor of host_exec.h, shared with csrc/cuda_emulation.cpp. Not a performance path: tests/test_batched.py compares it with the CPU schedule.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "cuda/batched_schedule.h"
#include "host_exec.h"
#include "latentdiv/kernels.h"
#include "latentdiv/pair_batched.h"

namespace py = pybind11;

namespace latentdiv {

BatchedPairArgs make_batched_args(int dtype, std::uintptr_t x, std::uintptr_t y, std::uintptr_t w, std::uintptr_t v,
                                  std::uintptr_t out, std::uintptr_t workspace, std::int64_t n, std::int64_t m,
                                  std::int64_t d, std::int64_t batch, bool self_pairs, bool exclude_diagonal,
                                  int num_threads, int kernel, const std::vector<double>& params);  // pair_batched_binding.cpp

namespace {

namespace bs = batched_schedule;

using emulation::HostExec;
using emulation::poisoned;

template <class K, class T>
Status emulate(const BatchedPairArgs& a, bool reverse) {
  double* partials = static_cast<double*>(a.workspace);  // [batch, row_blocks(n)]
  const index_t rbs = bs::row_blocks(a.n), cbs = bs::chunk_blocks(a.batch);
  for (index_t bc = 0; bc < cbs; ++bc) {
    for (index_t rb = 0; rb < rbs; ++rb) {
      auto tile = poisoned<T>(bs::kTileElems);
      auto vtile = poisoned<double>(bs::kVTileElems);
      auto red = poisoned<double>(bs::kBlock);
      HostExec<bs::kBlock> ex(reverse);
      bs::batched_block<K, T>(ex, a, rb, bc, tile.data(), vtile.data(), red.data(), partials);
    }
  }
  const index_t out_blocks = bs::ceil_div(a.batch, bs::kReduceThreads);
  for (index_t blk = 0; blk < out_blocks; ++blk) {
    HostExec<bs::kReduceThreads> ex(reverse);
    bs::batched_reduce_block(ex, a, blk, partials);
  }
  return kOk;
}

template <class T>
Status emulate_dispatch(const BatchedPairArgs& a, bool reverse) {
  switch (static_cast<KernelId>(a.kernel.kernel)) {
#define LD_CASE(Functor, Id) \
  case Id:                   \
    return emulate<Functor, T>(a, reverse);
    LATENTDIV_FOR_EACH_KERNEL(LD_CASE)
#undef LD_CASE
  }
  return kUnknownKernel;
}

// The checks of pair_batched_cuda (pair_batched_cuda.cu), plus the workspace size the caller claims.
Status emulate_batched(const BatchedPairArgs& a, std::size_t workspace_bytes, bool reverse) {
  const Status s = validate_batched(a);
  if (s != kOk) return s;
  if (!bs::grid_ok(a.n, a.batch)) return kUnsupported;
  const std::size_t need = bs::workspace_bytes(a.n, a.batch);
  if (workspace_bytes < need || (need > 0 && a.workspace == nullptr)) return kBadArgument;
  return a.dtype == static_cast<std::int32_t>(DType::kFloat32) ? emulate_dispatch<float>(a, reverse)
                                                               : emulate_dispatch<double>(a, reverse);
}

}  // namespace

// Called from register_pair_batched (pair_batched_binding.cpp).
void register_cuda_batched_emulation(py::module_& m) {
  m.def(
      "emulate_cuda_pair_batched",
      [](int dtype, std::uintptr_t x, std::uintptr_t y, std::uintptr_t w, std::uintptr_t v, std::uintptr_t out,
         std::uintptr_t workspace, std::size_t workspace_bytes, std::int64_t n, std::int64_t m, std::int64_t d,
         std::int64_t batch, bool self_pairs, bool exclude_diagonal, int kernel, const std::vector<double>& params,
         bool reverse_threads) {
        // x [n, d], y [m, d], w [batch, n], v [batch, m], out [batch] double, workspace [workspace_bytes].
        const BatchedPairArgs a = make_batched_args(dtype, x, y, w, v, out, workspace, n, m, d, batch, self_pairs,
                                                    exclude_diagonal, 1, kernel, params);
        py::gil_scoped_release release;
        return static_cast<int>(emulate_batched(a, workspace_bytes, reverse_threads));
      },
      py::arg("dtype"), py::arg("x"), py::arg("y"), py::arg("w"), py::arg("v"), py::arg("out"), py::arg("workspace"),
      py::arg("workspace_bytes"), py::arg("n"), py::arg("m"), py::arg("d"), py::arg("batch"), py::arg("self_pairs"),
      py::arg("exclude_diagonal"), py::arg("kernel"), py::arg("params"), py::arg("reverse_threads") = false,
      "Run the batched CUDA schedule's block programs on the host (testing only; host pointers).");
  m.def(
      "batched_cuda_workspace_bytes", [](std::int64_t n, std::int64_t batch) { return bs::workspace_bytes(n, batch); },
      py::arg("n"), py::arg("batch"), "Workspace bytes of the batched CUDA schedule (the emulator's and the GPU's).");
}

}  // namespace latentdiv
