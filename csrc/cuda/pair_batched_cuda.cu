// The CUDA schedule of the batched VALUE mode: __global__ wrappers around the block programs of
// batched_schedule.h and the launcher declared in latentdiv/pair_batched.h. Launch decisions (grid,
// block, workspace) are here and in batched_schedule.h's geometry helpers, which the host emulation
// (csrc/cuda_batched_emulation.cpp) uses too. Streams and errors as in pair_reduce_cuda.cu: every
// launch on `stream` (torch's current stream), no synchronisation, errors from cudaGetLastError.
#include <cuda_runtime.h>

#include <cstdio>

#include "batched_schedule.h"
#include "device_exec.h"
#include "latentdiv/kernels.h"
#include "latentdiv/pair_batched.h"

namespace latentdiv {

namespace {

namespace bs = batched_schedule;
using cuda_exec::DeviceExec;

template <class K, class T>
__global__ void __launch_bounds__(bs::kBlock) batched_kernel(const __grid_constant__ BatchedPairArgs a) {
  __shared__ T tile[bs::kTileElems];
  __shared__ double vtile[bs::kVTileElems];
  __shared__ double red[bs::kBlock];
  DeviceExec ex;
  bs::batched_block<K, T>(ex, a, static_cast<index_t>(blockIdx.x), static_cast<index_t>(blockIdx.y), tile, vtile,
                          red, static_cast<double*>(a.workspace));
}

__global__ void __launch_bounds__(bs::kReduceThreads) batched_reduce_kernel(const __grid_constant__ BatchedPairArgs a) {
  DeviceExec ex;
  bs::batched_reduce_block(ex, a, static_cast<index_t>(blockIdx.x), static_cast<const double*>(a.workspace));
}

Status batched_launch_status() {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? kOk : kCudaError;
}

template <class K, class T>
Status run_batched(const BatchedPairArgs& a, cudaStream_t stream) {
  const index_t rbs = bs::row_blocks(a.n), cbs = bs::chunk_blocks(a.batch);
  if (rbs > 0) {
    const dim3 grid(static_cast<unsigned>(rbs), static_cast<unsigned>(cbs));
    batched_kernel<K, T><<<grid, bs::kBlock, 0, stream>>>(a);
    const Status s = batched_launch_status();
    if (s != kOk) return s;
  }
  // Also for n = 0: writes out = 0 on the device, where the host cannot.
  const index_t out_blocks = bs::ceil_div(a.batch, bs::kReduceThreads);
  batched_reduce_kernel<<<static_cast<unsigned>(out_blocks), bs::kReduceThreads, 0, stream>>>(a);
  return batched_launch_status();
}

template <class T>
Status batched_dispatch(const BatchedPairArgs& a, cudaStream_t stream) {
  switch (static_cast<KernelId>(a.kernel.kernel)) {
#define LD_CASE(Functor, Id) \
  case Id:                   \
    return run_batched<Functor, T>(a, stream);
    LATENTDIV_FOR_EACH_KERNEL(LD_CASE)
#undef LD_CASE
  }
  return kUnknownKernel;
}

}  // namespace

Status pair_batched_cuda(const BatchedPairArgs& a, void* stream) {
  const Status s = validate_batched(a);
  if (s != kOk) return s;
  if (a.batch == 0) return kOk;
  if (!bs::grid_ok(a.n, a.batch)) return kUnsupported;
  if (bs::workspace_bytes(a.n, a.batch) > 0 && a.workspace == nullptr) return kBadArgument;
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  return a.dtype == static_cast<std::int32_t>(DType::kFloat32) ? batched_dispatch<float>(a, st)
                                                               : batched_dispatch<double>(a, st);
}

}  // namespace latentdiv
