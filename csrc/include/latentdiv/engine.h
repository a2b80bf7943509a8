// latentdiv/engine.h: the entry points of the pair-reduction engine, one per schedule.
// Torch-free: raw pointers and sizes in (PairArgs / PdistArgs), a Status out.
#pragma once

#include <cstddef>
#include <cstdint>

#include "latentdiv/common.h"

namespace latentdiv {

// Where a call runs (the `device` argument of the bindings).
enum class Device : std::int32_t { kCpu = 0, kCuda = 1 };

// CPU instruction-set variants of the schedule, compiled from the same source with different
// flags (CMakeLists.txt) and chosen at run time, since a wheel cannot assume -march=native.
enum class CpuIsa : std::int32_t { kAuto = -1, kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

// One variant of the CPU schedule: the symbols every ISA translation unit defines.
#define LATENTDIV_DECLARE_CPU_VARIANT(ns)            \
  namespace ns {                                     \
  Status pair_reduce_cpu(const PairArgs& args);      \
  Status pdist_cpu(const PdistArgs& args);           \
  Status pdist_backward_cpu(const PdistArgs& args);  \
  Status pair_hess_vec_cpu(const PairArgs& args);    \
  }

LATENTDIV_DECLARE_CPU_VARIANT(cpu_baseline)
#if defined(LATENTDIV_HAVE_AVX2)
LATENTDIV_DECLARE_CPU_VARIANT(cpu_avx2)
#endif
#if defined(LATENTDIV_HAVE_AVX512)
LATENTDIV_DECLARE_CPU_VARIANT(cpu_avx512)
#endif

// Dispatch (cpu/dispatch.cpp): kAuto picks the best variant this processor supports; a forced
// variant that is not compiled in or not supported returns kUnsupported.
Status pair_reduce_cpu(const PairArgs& args, CpuIsa isa);
Status pdist_cpu(const PdistArgs& args, CpuIsa isa);
Status pdist_backward_cpu(const PdistArgs& args, CpuIsa isa);
bool cpu_isa_available(CpuIsa isa);  // compiled in and supported by this processor
CpuIsa cpu_isa_best();

// Argument checks shared by every schedule (cpu/validate.cpp): the backstop behind the Python checks.
Status validate(const PairArgs& args);
Status validate(const PdistArgs& args, bool backward);

// Interrupts (Ctrl-C). The CPU schedules take interrupt_epoch() when they start, compare it between
// row blocks and return kInterrupted (outputs incomplete) once it has changed. note_interrupt() is
// async-signal-safe (a lock-free atomic increment): the bindings call it from the SIGINT handler they
// chain in front of Python's for the duration of an engine call. Defined in cpu/validate.cpp.
std::uint32_t interrupt_epoch();
void note_interrupt();

#if defined(LATENTDIV_WITH_CUDA)
// CUDA schedule (cuda/): launched on `stream` (a cudaStream_t, torch's current stream), never the
// NULL stream; no device synchronisation. The workspace holds per-block partial sums.
Status pair_reduce_cuda(const PairArgs& args, void* stream);
std::size_t pair_reduce_cuda_workspace_bytes(const PairArgs& args);
Status pdist_cuda(const PdistArgs& args, void* stream);
Status pdist_backward_cuda(const PdistArgs& args, void* stream);
// "cudaErrorName: message" of the last failed launch on this thread (after a kCudaError), or "".
const char* cuda_last_error_message();
#endif

}  // namespace latentdiv
