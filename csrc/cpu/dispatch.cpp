// Run-time choice of the CPU schedule variant. Wheels are built for baseline x86-64; the AVX2 and
// AVX-512 variants are the same source compiled with wider vectors, used when cpuid says so.
#include "latentdiv/engine.h"
#include "latentdiv/pair_batched.h"

namespace latentdiv {

namespace {
bool cpu_supports(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kBaseline:
      return true;
#if defined(LATENTDIV_HAVE_AVX2)
    case CpuIsa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
#if defined(LATENTDIV_HAVE_AVX512)
    case CpuIsa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
#endif
    default:
      return false;  // not compiled in
  }
}

template <class Args, class Fn0, class Fn1, class Fn2>
Status route(const Args& a, CpuIsa isa, Fn0 baseline, Fn1 avx2, Fn2 avx512) {
  (void)avx2;
  (void)avx512;
  if (isa == CpuIsa::kAuto) isa = cpu_isa_best();
  if (!cpu_supports(isa)) return kUnsupported;
  switch (isa) {
#if defined(LATENTDIV_HAVE_AVX2)
    case CpuIsa::kAvx2:
      return avx2(a);
#endif
#if defined(LATENTDIV_HAVE_AVX512)
    case CpuIsa::kAvx512:
      return avx512(a);
#endif
    default:
      return baseline(a);
  }
}

#if defined(LATENTDIV_HAVE_AVX2)
#define LD_AVX2(fn) cpu_avx2::fn
#else
#define LD_AVX2(fn) cpu_baseline::fn
#endif
#if defined(LATENTDIV_HAVE_AVX512)
#define LD_AVX512(fn) cpu_avx512::fn
#else
#define LD_AVX512(fn) cpu_baseline::fn
#endif
}  // namespace

bool cpu_isa_available(CpuIsa isa) { return cpu_supports(isa); }

CpuIsa cpu_isa_best() {
  if (cpu_supports(CpuIsa::kAvx512)) return CpuIsa::kAvx512;
  if (cpu_supports(CpuIsa::kAvx2)) return CpuIsa::kAvx2;
  return CpuIsa::kBaseline;
}

Status pair_reduce_cpu(const PairArgs& a, CpuIsa isa) {
  if (a.mode == static_cast<std::int32_t>(Mode::kHessVec)) {  // its own translation unit (pair_hess_vec_cpu.cpp)
    return route(a, isa, cpu_baseline::pair_hess_vec_cpu, LD_AVX2(pair_hess_vec_cpu), LD_AVX512(pair_hess_vec_cpu));
  }
  return route(a, isa, cpu_baseline::pair_reduce_cpu, LD_AVX2(pair_reduce_cpu), LD_AVX512(pair_reduce_cpu));
}

Status pdist_cpu(const PdistArgs& a, CpuIsa isa) {
  return route(a, isa, cpu_baseline::pdist_cpu, LD_AVX2(pdist_cpu), LD_AVX512(pdist_cpu));
}

Status pdist_backward_cpu(const PdistArgs& a, CpuIsa isa) {
  return route(a, isa, cpu_baseline::pdist_backward_cpu, LD_AVX2(pdist_backward_cpu),
               LD_AVX512(pdist_backward_cpu));
}

Status pair_batched_cpu(const BatchedPairArgs& a, CpuIsa isa) {  // cpu/pair_batched_cpu.cpp
  return route(a, isa, cpu_baseline::pair_batched_cpu, LD_AVX2(pair_batched_cpu), LD_AVX512(pair_batched_cpu));
}

}  // namespace latentdiv
