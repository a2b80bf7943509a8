// Host emulation of the CUDA schedule: runs the block programs of csrc/cuda/schedule.h (the same
// header, the same index arithmetic, tiling, tail handling and reduction order as the __global__
// kernels) on the CPU, block after block, with shared memory as host arrays and __syncthreads() as
// phase boundaries. Compiled into every build (with or without nvcc), so the CUDA schedule is tested
// on machines without a GPU (tests/test_cuda.py). Not a performance path.
//
// Barrier checking: the executor (host_exec.h) runs each phase thread by thread, shared memory
// starts as NaN.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "binding_args.h"
#include "host_exec.h"
#include "cuda/schedule.h"
#include "cuda/schedule_hess_vec.h"
#include "cuda/schedule_pdist.h"
#include "latentdiv/engine.h"
#include "latentdiv/kernels.h"

namespace py = pybind11;

namespace latentdiv {
namespace {

namespace cs = cuda_schedule;

using emulation::HostExec;
using emulation::poisoned;

template <class K, class T>
Status emulate_pair(const PairArgs& a, bool reverse) {
  const index_t blocks = cs::pair_grid_blocks(a.n);
  if (a.mode == static_cast<std::int32_t>(Mode::kValue)) {
    double* partials = static_cast<double*>(a.workspace);  // [blocks]
    for (index_t b = 0; b < blocks; ++b) {
      auto tile = poisoned<T>(cs::kTileElems);
      auto red = poisoned<double>(cs::kBlock);
      HostExec<cs::kBlock> ex(reverse);
      cs::pair_value_block<K, T>(ex, a, b, tile.data(), red.data(), partials);
    }
    auto red = poisoned<double>(cs::kReduceThreads);
    HostExec<cs::kReduceThreads> ex(reverse);
    cs::reduce_partials_block(ex, partials, blocks, red.data(), a.out_total);
    return kOk;
  }
  if (a.mode == static_cast<std::int32_t>(Mode::kHessVec)) {
    for (index_t b = 0; b < blocks; ++b) {
      auto tile = poisoned<T>(cs::kTileElems);
      auto vtile = poisoned<T>(cs::kTileElems);
      HostExec<cs::kBlock> ex(reverse);
      cs::pair_hess_vec_block<K, T>(ex, a, b, tile.data(), vtile.data());
    }
    return kOk;
  }
  for (index_t b = 0; b < blocks; ++b) {
    auto tile = poisoned<T>(cs::kTileElems);
    HostExec<cs::kBlock> ex(reverse);
    cs::pair_grad_block<K, T>(ex, a, b, tile.data());
  }
  return kOk;
}

template <class T>
Status emulate_pair_dispatch(const PairArgs& a, bool reverse) {
  switch (static_cast<KernelId>(a.kernel.kernel)) {
#define LD_CASE(Functor, Id) \
  case Id:                   \
    return emulate_pair<Functor, T>(a, reverse);
    LATENTDIV_FOR_EACH_KERNEL(LD_CASE)
#undef LD_CASE
  }
  return kUnknownKernel;
}

// The same checks and special cases as pair_reduce_cuda (pair_reduce_cuda.cu), plus the workspace
// size the caller claims to have allocated.
Status emulate_pair_reduce(const PairArgs& a, std::size_t workspace_bytes, bool reverse) {
  const Status s = validate(a);
  if (s != kOk) return s;
  // The same lowering of the modes to launches as pair_reduce_cuda (schedule.h, lower_mode).
  const cs::LoweredModes plan = cs::lower_mode(a.mode);
  if (plan.count == 0) return kUnsupported;
  if (cs::lowers_to_value(a.mode) && a.n > 0 && a.workspace == nullptr) return kBadArgument;
  if (workspace_bytes < cs::pair_workspace_bytes(a.n, a.mode)) return kBadArgument;
  for (int l = 0; l < plan.count; ++l) {
    PairArgs launch = a;
    launch.mode = static_cast<std::int32_t>(plan.launches[l]);
    const Status ls = a.dtype == static_cast<std::int32_t>(DType::kFloat32)
                          ? emulate_pair_dispatch<float>(launch, reverse)
                          : emulate_pair_dispatch<double>(launch, reverse);
    if (ls != kOk) return ls;
  }
  return kOk;
}

template <class T>
void emulate_pdist_typed(const PdistArgs& a, bool reverse) {
  if (a.n < 2) return;
  const index_t gx = cs::pdist_grid_cols(a.n), gy = cs::pdist_grid_rows(a.n);
  for (index_t by = 0; by < gy; ++by) {
    for (index_t bx = 0; bx < gx; ++bx) {
      auto tile = poisoned<T>(cs::kTileElems);
      HostExec<cs::kBlock> ex(reverse);
      cs::pdist_block<T>(ex, a, by, bx, tile.data());
    }
  }
}

template <class T>
void emulate_pdist_backward_typed(const PdistArgs& a, bool reverse) {
  const index_t blocks = cs::pair_grid_blocks(a.n);
  for (index_t b = 0; b < blocks; ++b) {
    auto tile = poisoned<T>(cs::kTileElems);
    HostExec<cs::kBlock> ex(reverse);
    cs::pdist_backward_block<T>(ex, a, b, tile.data());
  }
}

// _C.emulate_cuda_pair_reduce(<pair call arguments (binding_args.h)>, workspace_bytes between the buffers and
// the shape, reverse_threads before the HESS_VEC vectors); no device, isa, num_threads or stream.
int py_emulate_pair_reduce(LATENTDIV_PAIR_CALL_BUFFERS(LATENTDIV_PAIR_PARAM_FIRST) std::size_t workspace_bytes
                               LATENTDIV_PAIR_CALL_SHAPE(LATENTDIV_PAIR_PARAM)
                                   LATENTDIV_PAIR_CALL_KERNEL(LATENTDIV_PAIR_PARAM),
                           bool reverse_threads LATENTDIV_PAIR_CALL_VECTORS(LATENTDIV_PAIR_PARAM)) {
  // One thread: the emulator runs every CUDA thread of a block itself.
  const PairArgs a = binding::make_pair_args(1 LATENTDIV_PAIR_CALL(LATENTDIV_PAIR_NAME));
  py::gil_scoped_release release;
  return emulate_pair_reduce(a, workspace_bytes, reverse_threads);
}

int py_emulate_pdist(bool backward, int dtype, std::uintptr_t x,  // [n, d]
                     std::uintptr_t grad_out,                     // [n(n-1)/2] or 0
                     std::uintptr_t dist,                         // [n(n-1)/2] or 0
                     std::uintptr_t out,                          // forward [n(n-1)/2], backward [n, d]
                     std::int64_t n, std::int64_t d, bool reverse_threads) {
  const PdistArgs a = binding::make_pdist_args(dtype, x, grad_out, dist, out, n, d, 1);
  py::gil_scoped_release release;
  const Status s = validate(a, backward);
  if (s != kOk) return s;
  const bool f32 = dtype == static_cast<std::int32_t>(DType::kFloat32);
  if (backward) {
    if (f32) emulate_pdist_backward_typed<float>(a, reverse_threads);
    else emulate_pdist_backward_typed<double>(a, reverse_threads);
  } else {
    if (f32) emulate_pdist_typed<float>(a, reverse_threads);
    else emulate_pdist_typed<double>(a, reverse_threads);
  }
  return kOk;
}

}  // namespace

// Called from PYBIND11_MODULE in bindings.cpp.
void register_cuda_emulation(py::module_& m) {
  m.def("emulate_cuda_pair_reduce", &py_emulate_pair_reduce,
        LATENTDIV_PAIR_CALL_BUFFERS(LATENTDIV_PAIR_PYARG_FIRST) py::arg("workspace_bytes")
            LATENTDIV_PAIR_CALL_SHAPE(LATENTDIV_PAIR_PYARG) LATENTDIV_PAIR_CALL_KERNEL(LATENTDIV_PAIR_PYARG),
        py::arg("reverse_threads") = false LATENTDIV_PAIR_CALL_VECTORS(LATENTDIV_PAIR_PYARG_ZERO),
        "Run the CUDA schedule's block programs on the host (testing only; host pointers).");
  m.def(
      "emulate_cuda_pdist",
      [](int dtype, std::uintptr_t x, std::uintptr_t out, std::int64_t n, std::int64_t d, bool reverse_threads) {
        return py_emulate_pdist(false, dtype, x, 0, 0, out, n, d, reverse_threads);
      },
      py::arg("dtype"), py::arg("x"), py::arg("out"), py::arg("n"), py::arg("d"), py::arg("reverse_threads") = false);
  m.def(
      "emulate_cuda_pdist_backward",
      [](int dtype, std::uintptr_t x, std::uintptr_t grad_out, std::uintptr_t dist, std::uintptr_t out, std::int64_t n,
         std::int64_t d, bool reverse_threads) {
        return py_emulate_pdist(true, dtype, x, grad_out, dist, out, n, d, reverse_threads);
      },
      py::arg("dtype"), py::arg("x"), py::arg("grad_out"), py::arg("dist"), py::arg("out"), py::arg("n"),
      py::arg("d"), py::arg("reverse_threads") = false);
  m.def(
      "emulate_cuda_workspace_bytes",
      [](std::int64_t n, int mode) { return cs::pair_workspace_bytes(n, mode); }, py::arg("n"), py::arg("mode"),
      "Workspace bytes of the CUDA schedule (the function pair_reduce_cuda_workspace_bytes uses).");
  py::dict info;
  info["block"] = cs::kBlock;
  info["tile_cols"] = cs::kTileCols;
  info["dim_chunk"] = cs::kDimChunk;
  info["reduce_threads"] = cs::kReduceThreads;
  m.attr("CUDA_SCHEDULE") = info;
#if defined(LATENTDIV_WITH_CUDA)
  m.def("cuda_last_error", []() { return std::string(cuda_last_error_message()); },
        "Name and message of the last failed CUDA launch on this thread ('' if none).");
#endif
}

}  // namespace latentdiv
