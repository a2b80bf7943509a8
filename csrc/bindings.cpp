// pybind11 bindings of the engine: pointers (as integers from torch's data_ptr()), sizes, flags and
// a stream handle in; a Status code out. No torch headers: torch is a runtime dependency of the
// Python layer only, so the build never needs it. The GIL is released around every kernel.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cctype>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "binding_args.h"
#include "latentdiv/cw_phi.h"
#include "latentdiv/engine.h"
#include "latentdiv/kernels.h"

namespace py = pybind11;
using namespace latentdiv;

namespace latentdiv {
// cuda_emulation.cpp: the host emulation of the CUDA schedule (emulate_cuda_*), built in every build.
void register_cuda_emulation(py::module_& m);
// pair_terms_binding.cpp: the multi-term entry (latentdiv/pair_terms.h).
void register_pair_terms(py::module_& m);
// pair_batched_binding.cpp: the batched VALUE mode (latentdiv/pair_batched.h) and its CUDA emulator.
void register_pair_batched(py::module_& m);
// run_interruptible below, for engine entries bound in other files (pair_terms_binding.cpp).
int run_engine_call(const std::function<int()>& call);
}  // namespace latentdiv

namespace {

constexpr int kDeviceCpu = static_cast<int>(Device::kCpu);
constexpr int kDeviceCuda = static_cast<int>(Device::kCuda);

// ---- the engine's interface, described once ----------------------------------------------------------
// Every code and limit Python passes to or reads from the engine, by name. python/latentdiv/_ext.py reads
// them from engine_interface() below; no Python file restates one (tests/test_engine_interface.py).
struct Named {
  const char* name;
  int code;
};
constexpr Named kModes[] = {
    {"value", static_cast<int>(Mode::kValue)},
    {"grad", static_cast<int>(Mode::kGrad)},
    {"value_grad", static_cast<int>(Mode::kValueGrad)},
    {"total", static_cast<int>(Mode::kTotal)},
    {"hess_vec", static_cast<int>(Mode::kHessVec)},
    {"value_grad_triangle", static_cast<int>(Mode::kValueGradTriangle)},
};
constexpr Named kDTypes[] = {{"float32", static_cast<int>(DType::kFloat32)},
                             {"float64", static_cast<int>(DType::kFloat64)}};
constexpr Named kDevices[] = {{"cpu", kDeviceCpu}, {"cuda", kDeviceCuda}};
// The ISA variants in CpuIsa order (the values of the LATENTDIV_ISA environment variable).
constexpr Named kIsas[] = {{"auto", static_cast<int>(CpuIsa::kAuto)},
                           {"baseline", static_cast<int>(CpuIsa::kBaseline)},
                           {"avx2", static_cast<int>(CpuIsa::kAvx2)},
                           {"avx512", static_cast<int>(CpuIsa::kAvx512)}};
constexpr Named kCwPhiKinds[] = {{"exp", kCwPhiKindExp}, {"cheb", kCwPhiKindCheb}};
struct StatusName {
  Status code;
  const char* name;     // the module attribute STATUS_<NAME> and the key in engine_interface()["status"]
  const char* message;  // what a failed call says (_ext.check_status)
};
constexpr StatusName kStatuses[] = {
    {kOk, "ok", "ok"},
    {kBadArgument, "bad_argument", "bad argument (inconsistent sizes, pointers or flags)"},
    {kUnknownKernel, "unknown_kernel", "unknown kernel id"},
    {kUnsupported, "unsupported", "unsupported (ISA variant not available on this CPU, or CUDA not built)"},
    {kCudaError, "cuda_error", "CUDA error"},
    {kInterrupted, "interrupted", "interrupted"},
};

template <std::size_t N>
py::dict named_codes(const Named (&table)[N]) {
  py::dict d;
  for (const Named& e : table) d[e.name] = e.code;
  return d;
}

const char* isa_name(CpuIsa isa) {
  for (const Named& e : kIsas) {
    if (e.code == static_cast<int>(isa)) return e.name;
  }
  return "unknown";
}

// Functor name -> KernelId of every kernel of the registry (kernels.h).
py::dict kernel_ids() {
  py::dict kernels;
#define LD_NAME(Functor, Id) kernels[#Functor] = static_cast<int>(Id);
  LATENTDIV_FOR_EACH_KERNEL(LD_NAME)
#undef LD_NAME
  return kernels;
}

py::dict engine_interface() {
  py::dict out;
  out["modes"] = named_codes(kModes);
  out["dtypes"] = named_codes(kDTypes);
  out["devices"] = named_codes(kDevices);
  out["isas"] = named_codes(kIsas);
  py::dict status, messages;
  for (const StatusName& e : kStatuses) {
    status[e.name] = static_cast<int>(e.code);
    messages[py::int_(static_cast<int>(e.code))] = e.message;
  }
  out["status"] = status;
  out["status_messages"] = messages;
  out["kernels"] = kernel_ids();
  py::dict limits;
  limits["max_kernel_params"] = kMaxKernelParams;  // common.h: KernelParams::params
  limits["cw_phi_header"] = kCwPhiHeader;          // cw_phi.h: params before the coefficients
  limits["cw_phi_max_coeffs"] = kCwPhiMaxCoeffs;
  out["limits"] = limits;
  out["cw_phi_kinds"] = named_codes(kCwPhiKinds);
  return out;
}

// ---- Ctrl-C during an engine call ----------------------------------------------------------------
// Python's SIGINT handler only sets a flag that the interpreter reads between bytecodes, which an
// engine call (GIL released, minutes at large n) does not reach. While at least one call runs, a
// handler of ours sits in front of the one installed (Python's): it bumps the engine's interrupt epoch
// (engine.h; the CPU schedules check it between row blocks) and calls the previous handler, so Python
// sees the signal as usual. The call then returns kInterrupted; with the GIL back, PyErr_CheckSignals
// runs Python's handler, whose default raises KeyboardInterrupt. The outputs were never handed to
// Python, so no partial result is visible. SIG_DFL / SIG_IGN are left alone (the process asked for them).
#if defined(__unix__) || defined(__APPLE__)
std::mutex g_sigint_mutex;
int g_sigint_calls = 0;         // engine calls running (under g_sigint_mutex)
bool g_sigint_ours = false;     // our handler is installed
struct sigaction g_sigint_previous;  // what it chains to (written only while not installed)

extern "C" void latentdiv_on_sigint(int sig, siginfo_t* info, void* context) {
  note_interrupt();
  const struct sigaction& prev = g_sigint_previous;
  if ((prev.sa_flags & SA_SIGINFO) != 0) {
    if (prev.sa_sigaction != nullptr) prev.sa_sigaction(sig, info, context);
  } else if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN && prev.sa_handler != nullptr) {
    prev.sa_handler(sig);
  }
}

class SigintWatch {
 public:
  SigintWatch() {
    std::lock_guard<std::mutex> lock(g_sigint_mutex);
    if (g_sigint_calls++ > 0) return;
    struct sigaction current {};
    if (sigaction(SIGINT, nullptr, &current) != 0) return;
    const bool plain = (current.sa_flags & SA_SIGINFO) == 0;
    if (plain && (current.sa_handler == SIG_DFL || current.sa_handler == SIG_IGN)) return;
    g_sigint_previous = current;
    struct sigaction ours {};
    ours.sa_sigaction = latentdiv_on_sigint;
    ours.sa_flags = SA_SIGINFO | (current.sa_flags & (SA_ONSTACK | SA_RESTART));
    ours.sa_mask = current.sa_mask;
    g_sigint_ours = sigaction(SIGINT, &ours, nullptr) == 0;
  }
  ~SigintWatch() {
    std::lock_guard<std::mutex> lock(g_sigint_mutex);
    if (--g_sigint_calls > 0 || !g_sigint_ours) return;
    g_sigint_ours = false;
    struct sigaction current {};
    // Restore unless someone replaced ours meanwhile (then theirs stays).
    if (sigaction(SIGINT, nullptr, &current) == 0 && (current.sa_flags & SA_SIGINFO) != 0 &&
        current.sa_sigaction == latentdiv_on_sigint) {
      sigaction(SIGINT, &g_sigint_previous, nullptr);
    }
  }
  SigintWatch(const SigintWatch&) = delete;
  SigintWatch& operator=(const SigintWatch&) = delete;
};
#else
class SigintWatch {};  // elsewhere an interrupt takes effect when the call returns
#endif

// Runs `call` (an engine entry point) with the GIL released and SIGINT watched. An interrupted call is
// raised as Python's handler decides (KeyboardInterrupt by default); if the handler does not raise
// (a custom handler, or a call from a thread other than the main one, where Python runs no handlers),
// the call is made again from the start: the results do not depend on it having been interrupted.
template <class Call>
int run_interruptible(Call call) {
  for (;;) {
    int status;
    {
      const SigintWatch watch;
      py::gil_scoped_release release;
      status = call();
    }
    if (status != kInterrupted) return status;
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
  }
}

// _C.pair_reduce(device, isa, <pair call arguments (binding_args.h)>, num_threads between the shape and
// the kernel, stream before the HESS_VEC vectors).
int pair_reduce(int device, int isa LATENTDIV_PAIR_CALL_BUFFERS(LATENTDIV_PAIR_PARAM)
                    LATENTDIV_PAIR_CALL_SHAPE(LATENTDIV_PAIR_PARAM),
                int num_threads LATENTDIV_PAIR_CALL_KERNEL(LATENTDIV_PAIR_PARAM),
                std::uintptr_t stream LATENTDIV_PAIR_CALL_VECTORS(LATENTDIV_PAIR_PARAM)) {
  const PairArgs a = binding::make_pair_args(num_threads LATENTDIV_PAIR_CALL(LATENTDIV_PAIR_NAME));
  if (device == kDeviceCpu) return run_interruptible([&] { return pair_reduce_cpu(a, static_cast<CpuIsa>(isa)); });
  py::gil_scoped_release release;
#if defined(LATENTDIV_WITH_CUDA)
  if (device == kDeviceCuda) return pair_reduce_cuda(a, reinterpret_cast<void*>(stream));
#else
  (void)stream;
#endif
  return kUnsupported;
}

int pdist_call(bool backward, int device, int isa, int dtype, std::uintptr_t x,  // [n, d]
               std::uintptr_t grad_out,                                          // [n(n-1)/2] or 0
               std::uintptr_t dist,                                              // [n(n-1)/2] or 0
               std::uintptr_t out,  // forward [n(n-1)/2], backward [n, d]
               std::int64_t n, std::int64_t d, int num_threads, std::uintptr_t stream) {
  const PdistArgs a = binding::make_pdist_args(dtype, x, grad_out, dist, out, n, d, num_threads);
  if (device == kDeviceCpu) {
    return run_interruptible([&] {
      return backward ? pdist_backward_cpu(a, static_cast<CpuIsa>(isa)) : pdist_cpu(a, static_cast<CpuIsa>(isa));
    });
  }
  py::gil_scoped_release release;
#if defined(LATENTDIV_WITH_CUDA)
  if (device == kDeviceCuda) {
    return backward ? pdist_backward_cuda(a, reinterpret_cast<void*>(stream))
                    : pdist_cuda(a, reinterpret_cast<void*>(stream));
  }
#else
  (void)stream;
#endif
  return kUnsupported;
}

py::dict build_info() {
  py::dict info;
#if defined(_OPENMP)
  info["openmp"] = true;
#else
  info["openmp"] = false;
#endif
  py::list isas;
  isas.append("baseline");
#if defined(LATENTDIV_HAVE_AVX2)
  isas.append("avx2");
#endif
#if defined(LATENTDIV_HAVE_AVX512)
  isas.append("avx512");
#endif
  info["cpu_isa_compiled"] = isas;
  py::list usable;
  for (const CpuIsa isa : {CpuIsa::kBaseline, CpuIsa::kAvx2, CpuIsa::kAvx512}) {
    if (cpu_isa_available(isa)) usable.append(isa_name(isa));
  }
  info["cpu_isa_usable"] = usable;
  info["cpu_isa_best"] = isa_name(cpu_isa_best());
#if defined(LATENTDIV_WITH_CUDA)
  info["cuda"] = true;
  info["cuda_archs"] = std::string(LATENTDIV_CUDA_ARCHS);
#else
  info["cuda"] = false;
  info["cuda_archs"] = std::string();
#endif
  info["compiler"] = std::string(__VERSION__);
  info["kernels"] = kernel_ids();
  info["max_kernel_params"] = kMaxKernelParams;
  return info;
}

}  // namespace

int latentdiv::run_engine_call(const std::function<int()>& call) { return run_interruptible(call); }

PYBIND11_MODULE(_C, m) {
  m.doc() = "latentdiv compiled engine: fused O(n^2) pair reductions without n x n buffers";
  m.def("pair_reduce", &pair_reduce, py::arg("device"), py::arg("isa")
        LATENTDIV_PAIR_CALL_BUFFERS(LATENTDIV_PAIR_PYARG) LATENTDIV_PAIR_CALL_SHAPE(LATENTDIV_PAIR_PYARG),
        py::arg("num_threads") LATENTDIV_PAIR_CALL_KERNEL(LATENTDIV_PAIR_PYARG),
        py::arg("stream") LATENTDIV_PAIR_CALL_VECTORS(LATENTDIV_PAIR_PYARG_ZERO));
  m.def(
      "pdist",
      [](int device, int isa, int dtype, std::uintptr_t x, std::uintptr_t out, std::int64_t n, std::int64_t d,
         int num_threads, std::uintptr_t stream) {
        return pdist_call(false, device, isa, dtype, x, 0, 0, out, n, d, num_threads, stream);
      },
      py::arg("device"), py::arg("isa"), py::arg("dtype"), py::arg("x"), py::arg("out"), py::arg("n"),
      py::arg("d"), py::arg("num_threads"), py::arg("stream"));
  m.def(
      "pdist_backward",
      [](int device, int isa, int dtype, std::uintptr_t x, std::uintptr_t grad_out, std::uintptr_t dist,
         std::uintptr_t out, std::int64_t n, std::int64_t d, int num_threads, std::uintptr_t stream) {
        return pdist_call(true, device, isa, dtype, x, grad_out, dist, out, n, d, num_threads, stream);
      },
      py::arg("device"), py::arg("isa"), py::arg("dtype"), py::arg("x"), py::arg("grad_out"), py::arg("dist"),
      py::arg("out"), py::arg("n"), py::arg("d"), py::arg("num_threads"), py::arg("stream"));
  m.def(
      "pair_reduce_workspace_bytes",
      [](int device, std::int64_t n, std::int64_t m, std::int64_t d, int mode) -> std::size_t {
        // The bytes of `workspace` a pair_reduce call of this device and mode needs (0: pass none).
#if defined(LATENTDIV_WITH_CUDA)
        if (device == kDeviceCuda) {
          PairArgs a{};
          a.n = n;
          a.m = m;
          a.d = d;
          a.mode = mode;
          return pair_reduce_cuda_workspace_bytes(a);
        }
#else
        (void)device;
        (void)n;
        (void)m;
        (void)d;
        (void)mode;
#endif
        return 0;
      },
      py::arg("device"), py::arg("n"), py::arg("m"), py::arg("d"), py::arg("mode"));
#if defined(LATENTDIV_WITH_CUDA)
  m.def(
      "pair_reduce_cuda_workspace_bytes",
      [](std::int64_t n, std::int64_t m, std::int64_t d, int mode) {
        PairArgs a{};
        a.n = n;
        a.m = m;
        a.d = d;
        a.mode = mode;
        return pair_reduce_cuda_workspace_bytes(a);
      },
      py::arg("n"), py::arg("m"), py::arg("d"), py::arg("mode"));
#endif
  register_cuda_emulation(m);
  register_pair_terms(m);
  register_pair_batched(m);
  m.def("build_info", &build_info);
  m.def("engine_interface", &engine_interface,
        "The engine's codes and limits by name: modes, dtypes, devices, isas, status (+ status_messages), "
        "kernels, limits, cw_phi_kinds (python/latentdiv/_ext.py reads them).");
  for (const StatusName& e : kStatuses) {
    std::string attr = std::string("STATUS_") + e.name;
    for (char& c : attr) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    m.attr(attr.c_str()) = static_cast<int>(e.code);
  }
}
