// Host executor of the CUDA block programs (csrc/cuda/*schedule*.h), shared by the two emulators
// (cuda_emulation.cpp: the pair reduction, HESS_VEC and pdist; cuda_batched_emulation.cpp: the batched
// VALUE mode). Private to the module; compiled into every build, with or without nvcc.
//
// Barrier checking: each() defers its lambda until the next sync() and then runs the phase thread by
// thread (forward or reverse thread order), a legal interleaving of a real block. Shared memory is
// allocated by poisoned() (NaN), so a missing __syncthreads() makes a thread read an unwritten entry
// (or the previous tile's) and the comparison with the reference fails.
#pragma once

#include <cstddef>
#include <functional>
#include <limits>
#include <vector>

namespace latentdiv {
namespace emulation {

template <int kThreads>
class HostExec {
 public:
  template <class R, int N>
  struct PerThread {
    static_assert(N == kThreads, "a block program's per-thread state must match the block size");
    std::vector<R> r = std::vector<R>(N);
    R& operator[](int t) { return r[static_cast<std::size_t>(t)]; }
  };

  explicit HostExec(bool reverse) : reverse_(reverse) {}

  template <class F>
  void each(F f) {
    phase_.emplace_back([f](int t) { f(t); });
  }
  template <class R, int N, class F>
  void each(PerThread<R, N>& regs, F f) {
    phase_.emplace_back([&regs, f](int t) { f(t, regs[t]); });
  }
  void sync() { run_phase(); }
  void finish() { run_phase(); }

 private:
  void run_phase() {
    for (int q = 0; q < kThreads; ++q) {
      const int t = reverse_ ? kThreads - 1 - q : q;
      for (auto& fn : phase_) fn(t);
    }
    phase_.clear();
  }
  bool reverse_;
  std::vector<std::function<void(int)>> phase_;
};

// Scratch ("shared memory") that starts as NaN.
template <class T>
std::vector<T> poisoned(std::size_t count) {
  return std::vector<T>(count, std::numeric_limits<T>::quiet_NaN());
}

}  // namespace emulation
}  // namespace latentdiv
