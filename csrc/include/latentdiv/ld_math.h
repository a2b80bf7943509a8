// latentdiv/ld_math.h: exp and sqrt for the functors (kernels.h, cw_phi.h), one overload set that
// compiles for host and device, float and double. Device code uses the CUDA math library; host code
// uses host_math.h, whose branch-free versions vectorize when the CPU schedule evaluates a functor over
// a tile of pairs (libm calls keep errno and do not).
#pragma once

#include <cmath>

#include "latentdiv/common.h"
#if !defined(__CUDA_ARCH__)
#include "latentdiv/host_math.h"
#endif

namespace latentdiv {

#if defined(__CUDA_ARCH__)
LD_HD float ld_exp(float v) { return ::expf(v); }
LD_HD double ld_exp(double v) { return ::exp(v); }
LD_HD float ld_sqrt(float v) { return ::sqrtf(v); }
LD_HD double ld_sqrt(double v) { return ::sqrt(v); }
#else
LD_HD float ld_exp(float v) { return host_math::exp(v); }
LD_HD double ld_exp(double v) { return host_math::exp(v); }
LD_HD float ld_sqrt(float v) { return host_math::sqrt(v); }
LD_HD double ld_sqrt(double v) { return host_math::sqrt(v); }
#endif

}  // namespace latentdiv
