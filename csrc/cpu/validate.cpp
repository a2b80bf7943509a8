// Argument checks shared by the CPU and CUDA entry points. Python validates user input first and
// raises errors that name the argument; these checks keep a bad call from reaching the schedules.
// Also the interrupt epoch the CPU schedules poll (engine.h): it lives here, in the one translation
// unit every build of the schedule links (the module, and the C++ drivers of tests/cpp).
#include <atomic>

#include "latentdiv/engine.h"
#include "latentdiv/kernels.h"

namespace latentdiv {

namespace {
bool known_kernel(std::int32_t id) {
  switch (static_cast<KernelId>(id)) {
#define LD_CASE(Functor, Id) \
  case Id:                   \
    return true;
    LATENTDIV_FOR_EACH_KERNEL(LD_CASE)
#undef LD_CASE
  }
  return false;
}
bool known_dtype(std::int32_t t) {
  return t == static_cast<std::int32_t>(DType::kFloat32) || t == static_cast<std::int32_t>(DType::kFloat64);
}
}  // namespace

namespace {
// Incremented by each interrupt. Lock-free, hence usable from a signal handler.
std::atomic<std::uint32_t> g_interrupt_epoch{0};
static_assert(std::atomic<std::uint32_t>::is_always_lock_free, "note_interrupt() must be async-signal-safe");
}  // namespace

std::uint32_t interrupt_epoch() { return g_interrupt_epoch.load(std::memory_order_relaxed); }

void note_interrupt() { g_interrupt_epoch.fetch_add(1, std::memory_order_relaxed); }

Status validate(const PairArgs& a) {
  if (!known_dtype(a.dtype)) return kBadArgument;
  if (a.n < 0 || a.m < 0 || a.d < 1) return kBadArgument;
  if (a.x == nullptr || a.y == nullptr) return kBadArgument;
  if (a.self_pairs && (a.x != a.y || a.n != a.m)) return kBadArgument;
  if (a.exclude_diagonal && !a.self_pairs) return kBadArgument;
  if (a.kernel.n_params < 0 || a.kernel.n_params > kMaxKernelParams) return kBadArgument;
  if (!known_kernel(a.kernel.kernel)) return kUnknownKernel;
  switch (static_cast<Mode>(a.mode)) {
    case Mode::kValue:
      if (a.out_rows == nullptr || a.out_total == nullptr) return kBadArgument;
      break;
    case Mode::kGrad:
      if (a.out_grad == nullptr) return kBadArgument;
      break;
    case Mode::kValueGrad:
      if (a.out_rows == nullptr || a.out_total == nullptr || a.out_grad == nullptr) return kBadArgument;
      break;
    case Mode::kValueGradTriangle:
      if (!a.self_pairs || a.out_rows == nullptr || a.out_total == nullptr || a.out_grad == nullptr) return kBadArgument;
      break;
    case Mode::kTotal:
      if (a.out_total == nullptr) return kBadArgument;
      break;
    case Mode::kHessVec:
      if (a.out_grad == nullptr) return kBadArgument;
      break;
    default:
      return kBadArgument;
  }
  return kOk;
}

Status validate(const PdistArgs& a, bool backward) {
  if (!known_dtype(a.dtype)) return kBadArgument;
  if (a.n < 0 || a.d < 1 || a.x == nullptr || a.out == nullptr) return kBadArgument;
  if (backward && (a.grad_out == nullptr || a.dist == nullptr) && a.n > 1) return kBadArgument;
  return kOk;
}

}  // namespace latentdiv
