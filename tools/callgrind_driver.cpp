// Fixed engine calls for instruction counting (tools/callgrind_bench.sh): one ISA variant of the
// CPU schedule (LD_ISA_NS, the variant's -m flags) linked without Python or torch, one case per run,
// collected by callgrind only around the engine calls (callgrind.h client requests), so the count
// is the schedule's own instructions, repeatable to the instruction on a shared machine where
// wall-clock time moves by 30-50%.
//
// usage: callgrind_driver KERNEL MODE N D [REPEATS]
//   KERNEL gaussian | imq7 | energy | cw_approx   MODE value | grad | value_grad | value_grad_triangle | total
//   pdist / pdist_backward: KERNEL pdist, MODE fwd | bwd
// Self pairs (y is x), float32, one thread, inputs from a fixed-seed generator.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#else
#define CALLGRIND_TOGGLE_COLLECT
#endif

#include "latentdiv/engine.h"
#include "latentdiv/kernels.h"

#ifndef LD_ISA_NS
#error "LD_ISA_NS must name the ISA variant namespace"
#endif

namespace latentdiv {
LATENTDIV_DECLARE_CPU_VARIANT(LD_ISA_NS)
}
using namespace latentdiv;

namespace {

KernelParams kernel_for(const std::string& name, int d) {
  KernelParams k{};
  if (name == "gaussian") {
    k.kernel = 0;
    k.n_params = 1;
    k.params[0] = 0.5 / d;
  } else if (name == "imq7") {
    const double scales[7] = {0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0};
    k.kernel = 2;
    k.n_params = 7;
    for (int s = 0; s < 7; ++s) k.params[s] = 2.0 * d * scales[s];
  } else if (name == "energy") {
    k.kernel = 3;
    k.n_params = 0;
  } else if (name == "cw_approx") {
    k.kernel = 4;
    k.n_params = 2;
    k.params[0] = 0.16;
    k.params[1] = 1.0 / (2.0 * (d < 2 ? 2 : d) - 3.0);
  } else {
    std::fprintf(stderr, "unknown kernel %s (the exact Cramer-Wold kernel needs its fitted coefficients: not here)\n",
                 name.c_str());
    std::exit(2);
  }
  return k;
}

int mode_for(const std::string& m) {
  if (m == "value") return static_cast<int>(Mode::kValue);
  if (m == "grad") return static_cast<int>(Mode::kGrad);
  if (m == "value_grad") return static_cast<int>(Mode::kValueGrad);
  if (m == "total") return static_cast<int>(Mode::kTotal);
  if (m == "value_grad_triangle") return static_cast<int>(Mode::kValueGradTriangle);
  std::fprintf(stderr, "unknown mode %s\n", m.c_str());
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s KERNEL MODE N D [REPEATS]\n", argv[0]);
    return 2;
  }
  const std::string kernel = argv[1], mode = argv[2];
  const index_t n = std::atoll(argv[3]), d = std::atoll(argv[4]);
  const int repeats = argc > 5 ? std::atoi(argv[5]) : 1;
  std::mt19937 gen(1234);
  std::normal_distribution<float> normal;
  std::vector<float> x(static_cast<std::size_t>(n * d));
  for (auto& v : x) v = normal(gen);
  std::vector<double> rows(static_cast<std::size_t>(n));
  std::vector<float> grad(static_cast<std::size_t>(n * d));
  double total = 0.0;
  Status status = kOk;
  std::vector<float> dist;  // pdist: [n (n - 1) / 2]
  if (kernel == "pdist") {
    dist.assign(static_cast<std::size_t>(n * (n - 1) / 2), 0.0f);
    std::vector<float> upstream(dist.size(), 1.0f);
    PdistArgs a{};
    a.x = x.data();
    a.n = n;
    a.d = d;
    a.dtype = 0;
    a.num_threads = 1;
    a.out = dist.data();
    LD_ISA_NS::pdist_cpu(a);  // the forward's output feeds the backward
    const bool backward = mode == "bwd";
    if (backward) {
      a.grad_out = upstream.data();
      a.dist = dist.data();
      a.out = grad.data();
    }
    CALLGRIND_TOGGLE_COLLECT;
    for (int r = 0; r < repeats; ++r) status = backward ? LD_ISA_NS::pdist_backward_cpu(a) : LD_ISA_NS::pdist_cpu(a);
    CALLGRIND_TOGGLE_COLLECT;
  } else {
    PairArgs a{};
    a.x = a.y = x.data();
    a.n = a.m = n;
    a.d = d;
    a.dtype = 0;
    a.mode = mode_for(mode);
    a.self_pairs = 1;
    a.num_threads = 1;
    a.kernel = kernel_for(kernel, static_cast<int>(d));
    a.out_rows = rows.data();
    a.out_total = &total;
    a.out_grad = grad.data();
    CALLGRIND_TOGGLE_COLLECT;
    for (int r = 0; r < repeats; ++r) status = LD_ISA_NS::pair_reduce_cpu(a);
    CALLGRIND_TOGGLE_COLLECT;
  }
  // A checksum, so the calls cannot be optimised away and a changed result is visible (absolute
  // values: a gradient's entries sum to about 0).
  double check = total;
  for (double v : rows) check += v;
  for (float v : grad) check += std::fabs(static_cast<double>(v));
  for (float v : dist) check += v;
  std::printf("status %d checksum %.17g\n", static_cast<int>(status), check);
  return status == kOk ? 0 : 1;
}
