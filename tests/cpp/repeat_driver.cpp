// Runs the CPU schedule's pair reductions and pdist forward/backward repeatedly on the same input,
// outside Python and torch, with every allocation placed by a bump allocator alternately back to back
// ("tight") and far apart ("spread"), and prints per case how many repetitions differ in any bit
// from the first. Built and run by tests/test_determinism.py with one ISA variant's flags (LD_ISA_NS
// names its namespace): usage `repeat_driver ITERATIONS D...`.
// Regression: a loop GCC versioned at run time on an aliasing check took its scalar version
// (FMA-contracted) when the centre vector sat right before a packed buffer, and its vector version
// otherwise: the AVX-512 variant's results changed by 1 ulp with heap addresses, before mul_add in
// csrc/cpu/pair_reduce_cpu.cpp.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <new>
#include <vector>

#include "latentdiv/engine.h"
#include "latentdiv/kernels.h"

// ---- bump allocator: every operator new of this process (the schedule's std::vector and aligned
// buffers included) takes the next free bytes of one arena, `g_gap` bytes after the previous block;
// delete is a no-op and the arena restarts before each repetition.
namespace {
alignas(64) unsigned char g_arena[64 << 20];
std::size_t g_top = 0;
std::size_t g_gap = 0;

void* bump(std::size_t size, std::size_t align) {
  std::size_t at = (g_top + g_gap + align - 1) / align * align;
  if (at + size > sizeof g_arena) throw std::bad_alloc();
  g_top = at + size;
  return g_arena + at;
}

// Gives the arena back when a case ends (declared first in a case, so destroyed last).
struct ArenaMark {
  std::size_t top = g_top;
  ~ArenaMark() { g_top = top; }
};
}  // namespace

#if !defined(LD_SYSTEM_ALLOCATOR)  // tools/sanitize.sh keeps the system allocator (its blocks are guarded)
void* operator new(std::size_t size) { return bump(size, 16); }
void* operator new[](std::size_t size) { return bump(size, 16); }
void* operator new(std::size_t size, std::align_val_t al) { return bump(size, static_cast<std::size_t>(al)); }
void* operator new[](std::size_t size, std::align_val_t al) { return bump(size, static_cast<std::size_t>(al)); }
void operator delete(void*) noexcept {}
void operator delete[](void*) noexcept {}
void operator delete(void*, std::size_t) noexcept {}
void operator delete[](void*, std::size_t) noexcept {}
void operator delete(void*, std::align_val_t) noexcept {}
void operator delete[](void*, std::align_val_t) noexcept {}
void operator delete(void*, std::size_t, std::align_val_t) noexcept {}
void operator delete[](void*, std::size_t, std::align_val_t) noexcept {}
#endif

namespace latentdiv {
LATENTDIV_DECLARE_CPU_VARIANT(LD_ISA_NS)  // the variant this driver is built with (a redeclaration is fine)
}
namespace ld = latentdiv;

template <class T>
long mismatches(const ld::KernelParams& kernel, int mode, int d, int iterations, unsigned seed) {
  const ArenaMark mark;
  const int n = 45;
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal;
  std::vector<T> x(n * d);  // [n, d]
  for (auto& v : x) v = static_cast<T>(normal(gen));
  ld::PairArgs a{};
  a.x = x.data();
  a.y = x.data();
  a.n = n;
  a.m = n;
  a.d = d;
  a.dtype = static_cast<std::int32_t>(sizeof(T) == 8 ? ld::DType::kFloat64 : ld::DType::kFloat32);
  a.mode = mode;
  a.self_pairs = 1;
  a.num_threads = 1;
  a.kernel = kernel;
  double total0 = 0, total = 0;
  std::vector<double> rows0(n), rows(n);  // [n]
  std::vector<T> grad0(n * d), grad(n * d);  // [n, d]
  a.out_total = &total0;
  a.out_rows = rows0.data();
  a.out_grad = grad0.data();
  g_gap = 4096;  // the reference call: spread
  if (ld::LD_ISA_NS::pair_reduce_cpu(a) != ld::kOk) {
    std::fprintf(stderr, "pair_reduce_cpu failed\n");
    std::exit(2);
  }
  long bad = 0;
  const std::size_t input_end = g_top;  // x and the outputs stay where they are
  for (int it = 0; it < iterations; ++it) {
    // Tight (blocks back to back, from each 16-byte offset of a cache line) and spread, in turn.
    g_top = input_end + 16 * static_cast<std::size_t>((it / 2) % 4);
    g_gap = it % 2 == 0 ? 0 : 4096;
    a.out_total = &total;
    a.out_rows = rows.data();
    a.out_grad = grad.data();
    ld::LD_ISA_NS::pair_reduce_cpu(a);
    const bool differs = mode == static_cast<int>(ld::Mode::kGrad)
                             ? std::memcmp(grad.data(), grad0.data(), sizeof(T) * grad.size()) != 0
                             : std::memcmp(rows.data(), rows0.data(), sizeof(double) * rows.size()) != 0 ||
                                   std::memcmp(&total, &total0, sizeof total) != 0;
    bad += differs ? 1 : 0;
  }
  return bad;
}

// pdist forward and backward: the same repetition, all outputs compared.
template <class T>
long pdist_mismatches(int d, int iterations, unsigned seed) {
  const ArenaMark mark;
  const int n = 45, pairs = n * (n - 1) / 2;
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal;
  std::vector<T> x(n * d), gout(pairs);  // [n, d], [pairs]
  for (auto& v : x) v = static_cast<T>(normal(gen));
  for (auto& v : gout) v = static_cast<T>(normal(gen));
  std::vector<T> dist0(pairs), dist(pairs), grad0(n * d), grad(n * d);
  ld::PdistArgs a{};
  a.x = x.data();
  a.n = n;
  a.d = d;
  a.dtype = static_cast<std::int32_t>(sizeof(T) == 8 ? ld::DType::kFloat64 : ld::DType::kFloat32);
  a.num_threads = 1;
  auto run = [&](T* dist_out, T* grad_out) {
    a.out = dist_out;
    a.grad_out = nullptr;
    a.dist = nullptr;
    if (ld::LD_ISA_NS::pdist_cpu(a) != ld::kOk) std::exit(2);
    a.out = grad_out;
    a.grad_out = gout.data();
    a.dist = dist_out;
    if (ld::LD_ISA_NS::pdist_backward_cpu(a) != ld::kOk) std::exit(2);
  };
  g_gap = 4096;
  run(dist0.data(), grad0.data());
  long bad = 0;
  const std::size_t input_end = g_top;
  for (int it = 0; it < iterations; ++it) {
    g_top = input_end + 16 * static_cast<std::size_t>((it / 2) % 4);
    g_gap = it % 2 == 0 ? 0 : 4096;
    run(dist.data(), grad.data());
    bad += (std::memcmp(dist.data(), dist0.data(), sizeof(T) * dist.size()) != 0 ||
            std::memcmp(grad.data(), grad0.data(), sizeof(T) * grad.size()) != 0) ? 1 : 0;
  }
  return bad;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: repeat_driver ITERATIONS D...\n");
    return 2;
  }
  const int iterations = std::atoi(argv[1]);
  std::vector<int> dims;
  for (int i = 2; i < argc; ++i) dims.push_back(std::atoi(argv[i]));
  // One line per case: what, mode, D, dtype, repetitions that differed (summed over 16 inputs: a
  // 1-ulp change of one packed norm moves some outputs for some data only).
  // Every kernel of the registry (kernels.h), with the parameters its functor gives as an example.
  const std::vector<ld::KernelParams> kernels = {
#define LD_EXAMPLE(Functor, Id) ld::Functor::example_params(),
      LATENTDIV_FOR_EACH_KERNEL(LD_EXAMPLE)
#undef LD_EXAMPLE
  };
  for (int d : dims) {
    for (const ld::KernelParams& kernel : kernels) {
      for (int mode : {static_cast<int>(ld::Mode::kValue), static_cast<int>(ld::Mode::kGrad)}) {
        for (bool f64 : {false, true}) {
          long bad = 0;
          for (unsigned seed = 1; seed <= 16; ++seed)
            bad += f64 ? mismatches<double>(kernel, mode, d, iterations, seed)
                       : mismatches<float>(kernel, mode, d, iterations, seed);
          std::printf("kernel%d %d %d %s %ld\n", kernel.kernel, mode, d, f64 ? "float64" : "float32", bad);
        }
      }
    }
    for (bool f64 : {false, true}) {
      long bad = 0;
      for (unsigned seed = 1; seed <= 16; ++seed)
        bad += f64 ? pdist_mismatches<double>(d, iterations, seed) : pdist_mismatches<float>(d, iterations, seed);
      std::printf("pdist - %d %s %ld\n", d, f64 ? "float64" : "float32", bad);
    }
  }
  return 0;
}
