// pybind11 binding of the multi-term entry (latentdiv/pair_terms.h), registered into _C by
// bindings.cpp. Pointers arrive as the integers of torch's data_ptr(); the term descriptors as flat
// lists (5 ints per term: left, right, kernel id, exclude_diagonal, number of params; the params of
// all terms concatenated; one coefficient per term).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "binding_args.h"
#include "latentdiv/pair_terms.h"

namespace py = pybind11;

namespace latentdiv {

int run_engine_call(const std::function<int()>& call);  // bindings.cpp: GIL released, Ctrl-C watched

namespace {

constexpr std::size_t kTermInts = 5;

template <class Out, class In>
void copy_sets(Out (&dst)[kMaxPointSets], const std::vector<In>& src, const char* what) {
  if (src.size() != static_cast<std::size_t>(kMaxPointSets)) {
    throw py::value_error(std::string("pair_terms: ") + what + " needs " + std::to_string(kMaxPointSets) + " entries");
  }
  for (int s = 0; s < kMaxPointSets; ++s) dst[s] = reinterpret_cast<Out>(src[s]);
}

int pair_terms(int isa, int dtype, std::int64_t d, int num_threads,
               const std::vector<std::uintptr_t>& points,        // [3] set pointers ([rows[s], d])
               const std::vector<std::int64_t>& rows,            // [3]
               const std::vector<std::uintptr_t>& weights,       // [3] ([rows[s]] or 0)
               const std::vector<std::uintptr_t>& grads,         // [3] ([rows[s], d] or 0)
               const std::vector<std::uintptr_t>& weight_grads,  // [3] ([rows[s]] double or 0)
               const std::vector<std::int64_t>& terms,           // [T * 5]
               const std::vector<double>& params,                // concatenated
               const std::vector<double>& coefs,                 // [T]
               std::uintptr_t out_total) {                       // [1] double
  if (terms.size() % kTermInts != 0 || coefs.size() != terms.size() / kTermInts) {
    throw py::value_error("pair_terms: 5 ints per term and one coefficient per term");
  }
  PairTermsArgs a{};
  copy_sets(a.points, points, "points");
  for (int s = 0; s < kMaxPointSets; ++s) a.rows[s] = rows.at(static_cast<std::size_t>(s));
  copy_sets(a.weights, weights, "weights");
  copy_sets(a.grads, grads, "grads");
  copy_sets(a.weight_grads, weight_grads, "weight_grads");
  a.d = d;
  a.dtype = dtype;
  a.num_threads = num_threads;
  std::vector<PairTerm> list(coefs.size());
  std::size_t at = 0;
  for (std::size_t t = 0; t < list.size(); ++t) {
    const std::int64_t* e = terms.data() + t * kTermInts;
    const std::size_t count = static_cast<std::size_t>(e[4]);
    if (e[4] < 0 || at + count > params.size()) throw py::value_error("pair_terms: params shorter than the terms say");
    list[t].left = static_cast<std::int32_t>(e[0]);
    list[t].right = static_cast<std::int32_t>(e[1]);
    list[t].exclude_diagonal = e[3] != 0 ? 1 : 0;
    list[t].coef = coefs[t];
    list[t].kernel = binding::make_kernel(static_cast<int>(e[2]),
                                          std::vector<double>(params.begin() + static_cast<std::ptrdiff_t>(at),
                                                              params.begin() + static_cast<std::ptrdiff_t>(at + count)));
    at += count;
  }
  a.terms = list.data();
  a.n_terms = static_cast<std::int32_t>(list.size());
  a.out_total = reinterpret_cast<double*>(out_total);
  // The engine adds into the gradient outputs: clear them before every attempt, since an interrupted
  // call whose signal handler does not raise is made again from the start (bindings.cpp).
  const std::size_t elem = dtype == static_cast<int>(DType::kFloat32) ? sizeof(float) : sizeof(double);
  return run_engine_call([&] {
    for (int s = 0; s < kMaxPointSets; ++s) {
      const std::size_t n = static_cast<std::size_t>(a.rows[s] > 0 ? a.rows[s] : 0);
      if (a.grads[s] != nullptr) std::memset(a.grads[s], 0, n * static_cast<std::size_t>(d) * elem);
      if (a.weight_grads[s] != nullptr) std::memset(a.weight_grads[s], 0, n * sizeof(double));
    }
    return static_cast<int>(pair_terms_cpu(a, static_cast<CpuIsa>(isa)));
  });
}

// Whether every element of a contiguous float32/float64 CPU buffer is finite: the losses' non-finite
// policy (python/latentdiv/_validation.py, nan_if_nonfinite) asks this of each input in eager CPU
// calls, where a host answer is free and four small torch ops (isfinite, all, where, mul) were a
// sixth of a loss's time at n = 128. A value is NaN or +-inf exactly when its exponent bits are all
// ones; the integer OR-reduction vectorizes (a float reduction would not, without reassociation).
template <class Bits>
bool all_finite_impl(const void* data, std::size_t count, Bits exponent) {  // data: [count] IEEE values
  const unsigned char* bytes = static_cast<const unsigned char*>(data);
  Bits bad = 0;
  for (std::size_t i = 0; i < count; ++i) {
    Bits b;
    std::memcpy(&b, bytes + i * sizeof(Bits), sizeof(Bits));
    bad |= static_cast<Bits>((b & exponent) == exponent);
  }
  return bad == 0;
}

bool all_finite(std::uintptr_t data, std::int64_t count, int dtype) {  // data: [count] of dtype
  if (count < 0) throw py::value_error("all_finite: count must be >= 0");
  const std::size_t c = static_cast<std::size_t>(count);
  const void* p = reinterpret_cast<const void*>(data);
  if (dtype == static_cast<int>(DType::kFloat32)) return all_finite_impl<std::uint32_t>(p, c, 0x7f800000u);
  if (dtype == static_cast<int>(DType::kFloat64)) return all_finite_impl<std::uint64_t>(p, c, 0x7ff0000000000000ull);
  throw py::value_error("all_finite: dtype must be float32 or float64");
}

}  // namespace

void register_pair_terms(py::module_& m) {
  m.def("pair_terms", &pair_terms, "several pair reductions of one loss and their gradients in one call (CPU)");
  m.def("all_finite", &all_finite, "whether a contiguous float32/float64 CPU buffer holds only finite values");
}

}  // namespace latentdiv
