// Repeats one pair reduction of the CPU schedule many times on the same input, outside Python and
// torch, and prints how many repetitions differ in any bit from the first. Built and run by
// tests/test_determinism_stress.py with one ISA variant's flags (LD_ISA_NS names its namespace).
// Heap addresses of the schedule's scratch buffers change from call to call; the results must not (they did, by 1 ulp, before mul_add in csrc/cpu/pair_reduce_cpu.cpp).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <new>
#include <vector>

#include "latentdiv/engine.h"

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
}  // namespace

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

namespace latentdiv {
LATENTDIV_DECLARE_CPU_VARIANT(LD_ISA_NS)  // the variant this driver is built with (a redeclaration is fine)
}
namespace ld = latentdiv;

template <class T>
long mismatches(int kernel, int mode, int iterations, unsigned seed) {
  const int n = 45, d = 5;
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
  a.kernel.kernel = kernel;
  a.kernel.params[0] = kernel == 4 ? 0.3 : 0.5;  // cramer_wold_approx: {gamma, K}
  a.kernel.params[1] = 1.0 / 7.0;
  a.kernel.n_params = kernel == 4 ? 2 : 1;
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

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: repeat_driver ITERATIONS\n");
    return 2;
  }
  const int iterations = std::atoi(argv[1]);
  // One line per case: kernel id, mode, dtype, repetitions that differed (summed over 16 inputs: a
  // 1-ulp change of one packed norm moves some outputs for some data only).
  for (int kernel : {0, 1, 2, 3, 4}) {  // gaussian, laplacian, imq, energy, cramer_wold_approx
    for (int mode : {static_cast<int>(ld::Mode::kValue), static_cast<int>(ld::Mode::kGrad)}) {
      for (bool f64 : {false, true}) {
        long bad = 0;
        for (unsigned seed = 1; seed <= 16; ++seed)
          bad += f64 ? mismatches<double>(kernel, mode, iterations, seed) : mismatches<float>(kernel, mode, iterations, seed);
        std::printf("%d %d %s %ld\n", kernel, mode, f64 ? "float64" : "float32", bad);
      }
    }
  }
  return 0;
}
