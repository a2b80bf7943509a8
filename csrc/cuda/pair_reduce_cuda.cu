// The CUDA schedule of the pair-reduction engine: __global__ wrappers around the block programs of
// schedule.h, and the launchers declared in engine.h. All launch decisions (grid, block, workspace)
// are here and in schedule.h's geometry helpers, which the host emulation uses too.
//
// Streams: every launch goes to `stream`, torch's current stream on the tensors' device (passed from
// Python as an integer). Handle 0 is torch's default stream, i.e. the legacy default stream; this file
// is therefore compiled WITHOUT --default-stream per-thread (cmake/cuda.cmake), so 0 means the same
// stream to us and to torch. No cudaDeviceSynchronize / cudaStreamSynchronize anywhere: results are
// ordered by the stream, as for any torch op. Launch errors are read with cudaGetLastError.
#include <cuda_runtime.h>

#include <cstdio>

#include "latentdiv/engine.h"
#include "latentdiv/kernels.h"
#include "schedule.h"
#include "schedule_hess_vec.h"
#include "schedule_pdist.h"
#include "device_exec.h"

namespace latentdiv {

namespace {

namespace cs = cuda_schedule;
using cuda_exec::DeviceExec;

// __grid_constant__: the block programs take the address of the (large, ~600 byte) argument struct;
// without it the compiler would copy it from parameter space into local memory per thread.
template <class K, class T>
__global__ void __launch_bounds__(cs::kBlock) pair_value_kernel(const __grid_constant__ PairArgs a) {
  __shared__ T tile[cs::kTileElems];
  __shared__ double red[cs::kBlock];
  DeviceExec ex;
  cs::pair_value_block<K, T>(ex, a, static_cast<index_t>(blockIdx.x), tile, red, static_cast<double*>(a.workspace));
}

template <class K, class T>
__global__ void __launch_bounds__(cs::kBlock) pair_grad_kernel(const __grid_constant__ PairArgs a) {
  __shared__ T tile[cs::kTileElems];
  DeviceExec ex;
  cs::pair_grad_block<K, T>(ex, a, static_cast<index_t>(blockIdx.x), tile);
}

template <class K, class T>
__global__ void __launch_bounds__(cs::kBlock) pair_hess_vec_kernel(const __grid_constant__ PairArgs a) {
  __shared__ T tile[cs::kTileElems];
  __shared__ T vtile[cs::kTileElems];
  DeviceExec ex;
  cs::pair_hess_vec_block<K, T>(ex, a, static_cast<index_t>(blockIdx.x), tile, vtile);
}

__global__ void __launch_bounds__(cs::kReduceThreads)
    reduce_partials_kernel(const double* partials,  // [count]
                           index_t count,
                           double* out_total)       // [1]
{
  __shared__ double red[cs::kReduceThreads];
  DeviceExec ex;
  cs::reduce_partials_block(ex, partials, count, red, out_total);
}

template <class T>
__global__ void __launch_bounds__(cs::kBlock) pdist_kernel(const __grid_constant__ PdistArgs a) {
  __shared__ T tile[cs::kTileElems];
  DeviceExec ex;
  cs::pdist_block<T>(ex, a, static_cast<index_t>(blockIdx.y), static_cast<index_t>(blockIdx.x), tile);
}

template <class T>
__global__ void __launch_bounds__(cs::kBlock) pdist_backward_kernel(const __grid_constant__ PdistArgs a) {
  __shared__ T tile[cs::kTileElems];
  DeviceExec ex;
  cs::pdist_backward_block<T>(ex, a, static_cast<index_t>(blockIdx.x), tile);
}

// The message of the last CUDA error seen by this thread's launches (engine.h cuda_last_error_message).
thread_local char g_last_error[256] = "";

Status launch_status() {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return kOk;
  std::snprintf(g_last_error, sizeof(g_last_error), "%s: %s", cudaGetErrorName(err), cudaGetErrorString(err));
  return kCudaError;
}

// gridDim.x may go to 2^31 - 1; larger inputs than that many blocks are not representable.
bool grid_x_ok(index_t blocks) { return blocks <= 2147483647LL; }

template <class K, class T>
Status run_pair(const PairArgs& a, cudaStream_t stream) {
  const index_t blocks = cs::pair_grid_blocks(a.n);
  if (!grid_x_ok(blocks)) return kUnsupported;
  if (a.mode == static_cast<std::int32_t>(Mode::kValue)) {
    if (blocks > 0) {
      pair_value_kernel<K, T><<<static_cast<unsigned>(blocks), cs::kBlock, 0, stream>>>(a);
      const Status s = launch_status();
      if (s != kOk) return s;
    }
    // Also for n = 0 (count 0): writes the total 0 on the device, where the host cannot.
    reduce_partials_kernel<<<1, cs::kReduceThreads, 0, stream>>>(static_cast<const double*>(a.workspace), blocks,
                                                                 a.out_total);
    return launch_status();
  }
  if (blocks == 0) return kOk;
  if (a.mode == static_cast<std::int32_t>(Mode::kHessVec)) {
    pair_hess_vec_kernel<K, T><<<static_cast<unsigned>(blocks), cs::kBlock, 0, stream>>>(a);
    return launch_status();
  }
  pair_grad_kernel<K, T><<<static_cast<unsigned>(blocks), cs::kBlock, 0, stream>>>(a);
  return launch_status();
}

template <class T>
Status dispatch_kernel(const PairArgs& a, cudaStream_t stream) {
  switch (static_cast<KernelId>(a.kernel.kernel)) {
#define LD_CASE(Functor, Id) \
  case Id:                   \
    return run_pair<Functor, T>(a, stream);
    LATENTDIV_FOR_EACH_KERNEL(LD_CASE)
#undef LD_CASE
  }
  return kUnknownKernel;
}

template <class T>
Status run_pdist(const PdistArgs& a, cudaStream_t stream) {
  if (a.n < 2) return kOk;  // no pairs: nothing to write
  const index_t gx = cs::pdist_grid_cols(a.n), gy = cs::pdist_grid_rows(a.n);
  if (!grid_x_ok(gx) || gy > cs::kMaxGridY) return kUnsupported;
  const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
  pdist_kernel<T><<<grid, cs::kBlock, 0, stream>>>(a);
  return launch_status();
}

template <class T>
Status run_pdist_backward(const PdistArgs& a, cudaStream_t stream) {
  const index_t blocks = cs::pair_grid_blocks(a.n);
  if (blocks == 0) return kOk;
  if (!grid_x_ok(blocks)) return kUnsupported;
  pdist_backward_kernel<T><<<static_cast<unsigned>(blocks), cs::kBlock, 0, stream>>>(a);
  return launch_status();
}

}  // namespace

std::size_t pair_reduce_cuda_workspace_bytes(const PairArgs& args) {
  return cs::pair_workspace_bytes(args.n, args.mode);
}

Status pair_reduce_cuda(const PairArgs& a, void* stream) {
  const Status s = validate(a);
  if (s != kOk) return s;
  // Every mode becomes launches of the VALUE / GRAD / HESS_VEC programs (schedule.h, lower_mode).
  const cs::LoweredModes plan = cs::lower_mode(a.mode);
  if (plan.count == 0) return kUnsupported;
  if (cs::lowers_to_value(a.mode) && a.n > 0 && a.workspace == nullptr) return kBadArgument;
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  for (int l = 0; l < plan.count; ++l) {
    PairArgs launch = a;
    launch.mode = static_cast<std::int32_t>(plan.launches[l]);
    const Status ls = a.dtype == static_cast<std::int32_t>(DType::kFloat32) ? dispatch_kernel<float>(launch, st)
                                                                            : dispatch_kernel<double>(launch, st);
    if (ls != kOk) return ls;
  }
  return kOk;
}

Status pdist_cuda(const PdistArgs& a, void* stream) {
  const Status s = validate(a, false);
  if (s != kOk) return s;
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  return a.dtype == static_cast<std::int32_t>(DType::kFloat32) ? run_pdist<float>(a, st) : run_pdist<double>(a, st);
}

Status pdist_backward_cuda(const PdistArgs& a, void* stream) {
  const Status s = validate(a, true);
  if (s != kOk) return s;
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  return a.dtype == static_cast<std::int32_t>(DType::kFloat32) ? run_pdist_backward<float>(a, st)
                                                               : run_pdist_backward<double>(a, st);
}

const char* cuda_last_error_message() { return g_last_error; }

}  // namespace latentdiv
