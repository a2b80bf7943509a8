// Device executor of the CUDA block programs (schedule.h, schedule_hess_vec.h, schedule_pdist.h,
// batched_schedule.h), shared by the two CUDA translation units (pair_reduce_cuda.cu and
// pair_batched_cuda.cu); its host twin for the emulators is csrc/host_exec.h. nvcc only.
#pragma once

#include <cuda_runtime.h>

#include "latentdiv/common.h"

namespace latentdiv {
namespace cuda_exec {

// The device executor of the block programs: each() is a direct call with threadIdx.x, sync() is the
// barrier, per-thread "registers" are one local struct. Members are __host__ __device__ (with a
// device-only body) so the LD_HD block programs call them without cross-execution-space calls.
struct DeviceExec {
  template <class R, int N>
  struct PerThread {
    R r;
    LD_HD R& operator[](int) { return r; }
  };
  template <class F>
  LD_HD void each(F&& f) {
#if defined(__CUDA_ARCH__)
    f(static_cast<int>(threadIdx.x));
#else
    (void)f;
#endif
  }
  template <class R, int N, class F>
  LD_HD void each(PerThread<R, N>& regs, F&& f) {
#if defined(__CUDA_ARCH__)
    f(static_cast<int>(threadIdx.x), regs.r);
#else
    (void)regs;
    (void)f;
#endif
  }
  LD_HD void sync() {
#if defined(__CUDA_ARCH__)
    __syncthreads();
#endif
  }
  LD_HD void finish() {}
};

}  // namespace cuda_exec
}  // namespace latentdiv
