// pybind11 binding of the multi-term entry (latentdiv/pair_terms.h), registered into _C by
// bindings.cpp. Pointers arrive as the integers of torch's data_ptr(); the term descriptors as flat
// lists (5 ints per term: left, right, kernel id, flags (1: exclude the diagonal, 2: times r2), number
// of params; the params of all terms concatenated; one coefficient per term).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "binding_args.h"
#include "latentdiv/pair_terms.h"

namespace py = pybind11;

namespace latentdiv {

int run_engine_call(const std::function<int()>& call);  // bindings.cpp: GIL released, Ctrl-C watched

namespace {

constexpr std::size_t kTermInts = 5;
// The flags of a term descriptor (its fourth int; python/latentdiv/_fused_ops.py TERM_*).
constexpr std::int64_t kExcludeDiagonal = 1;
constexpr std::int64_t kTimesR2 = 2;

template <class Out, class In>
void copy_sets(Out (&dst)[kMaxPointSets], const std::vector<In>& src, const char* what) {
  if (src.size() != static_cast<std::size_t>(kMaxPointSets)) {
    throw py::value_error(std::string("pair_terms: ") + what + " needs " + std::to_string(kMaxPointSets) + " entries");
  }
  for (int s = 0; s < kMaxPointSets; ++s) dst[s] = reinterpret_cast<Out>(src[s]);
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

bool all_finite(const void* data, std::size_t count, int dtype) {  // data: [count] of dtype (float32/float64)
  if (dtype == static_cast<int>(DType::kFloat32)) return all_finite_impl<std::uint32_t>(data, count, 0x7f800000u);
  return all_finite_impl<std::uint64_t>(data, count, 0x7ff0000000000000ull);
}

// A loss's terms parsed once: the descriptors checked and the kernel parameters built, so that a cached
// plan (python/latentdiv/_fused_ops.py, Terms) leaves only pointers to convert per call (issue 11: at
// n = 128 the per-call work around the engine was most of a loss's time). Optionally the loss's outer
// log: value = log(L + eps) with the gradients scaled by 1 / (L + eps) (cwae_loss), so that no torch op
// follows the engine call.
class TermsPlan {
 public:
  TermsPlan(const std::vector<std::int64_t>& terms,  // [T * 5]
            const std::vector<double>& params,       // concatenated
            const std::vector<double>& coefs,        // [T]
            double constant, bool log_outer, double log_eps)
      : constant_(constant), log_outer_(log_outer), log_eps_(log_eps) {
    if (terms.size() % kTermInts != 0 || coefs.size() != terms.size() / kTermInts) {
      throw py::value_error("pair_terms: 5 ints per term and one coefficient per term");
    }
    terms_.resize(coefs.size());
    std::size_t at = 0;
    for (std::size_t t = 0; t < terms_.size(); ++t) {
      const std::int64_t* e = terms.data() + t * kTermInts;
      const std::size_t count = static_cast<std::size_t>(e[4]);
      if (e[4] < 0 || at + count > params.size()) throw py::value_error("pair_terms: params shorter than the terms say");
      terms_[t].left = static_cast<std::int32_t>(e[0]);
      terms_[t].right = static_cast<std::int32_t>(e[1]);
      if (e[3] < 0 || e[3] > (kExcludeDiagonal | kTimesR2)) throw py::value_error("pair_terms: unknown term flags");
      terms_[t].exclude_diagonal = (e[3] & kExcludeDiagonal) != 0 ? 1 : 0;
      terms_[t].times_r2 = (e[3] & kTimesR2) != 0 ? 1 : 0;
      terms_[t].coef = coefs[t];
      terms_[t].kernel = binding::make_kernel(static_cast<int>(e[2]),
                                              std::vector<double>(params.begin() + static_cast<std::ptrdiff_t>(at),
                                                                  params.begin() + static_cast<std::ptrdiff_t>(at + count)));
      at += count;
      for (const std::int32_t set : {terms_[t].left, terms_[t].right}) uses_origin_ |= set == kOriginSet;
    }
  }

  // (status, value): value = constant + sum_t coef_t S_t (or its log), the gradients written (not added)
  // into the given buffers. A null point set kOriginSet with one row is the origin (zeros), provided
  // here. check_finite: if sets 0 or 1 hold a NaN or inf, the engine is not run and the value and every
  // gradient are NaN (the losses' non-finite policy, _validation.nan_if_nonfinite).
  std::pair<int, double> run(int isa, int dtype, std::int64_t d, int num_threads,
                             const std::vector<std::uintptr_t>& points,        // [3] set pointers ([rows[s], d])
                             const std::vector<std::int64_t>& rows,            // [3]
                             const std::vector<std::uintptr_t>& weights,       // [3] ([rows[s]] or 0)
                             const std::vector<std::uintptr_t>& grads,         // [3] ([rows[s], d] or 0)
                             const std::vector<std::uintptr_t>& weight_grads,  // [3] ([rows[s]] double or 0)
                             bool check_finite) const {
    PairTermsArgs a{};
    copy_sets(a.points, points, "points");
    for (int s = 0; s < kMaxPointSets; ++s) a.rows[s] = rows.at(static_cast<std::size_t>(s));
    copy_sets(a.weights, weights, "weights");
    copy_sets(a.grads, grads, "grads");
    copy_sets(a.weight_grads, weight_grads, "weight_grads");
    a.d = d;
    a.dtype = dtype;
    a.num_threads = num_threads;
    a.terms = terms_.data();
    a.n_terms = static_cast<std::int32_t>(terms_.size());
    double total = 0.0;
    a.out_total = &total;
    const bool f32 = dtype == static_cast<int>(DType::kFloat32);
    if (!f32 && dtype != static_cast<int>(DType::kFloat64)) return {static_cast<int>(kBadArgument), 0.0};
    const std::size_t elem = f32 ? sizeof(float) : sizeof(double);
    std::vector<double> origin;  // all-zero bits: 0 in float32 and float64
    if (uses_origin_ && a.points[kOriginSet] == nullptr && a.rows[kOriginSet] == 1 && d > 0) {
      origin.assign(static_cast<std::size_t>(d), 0.0);
      a.points[kOriginSet] = origin.data();
    }
    auto count = [&](int s) { return static_cast<std::size_t>(a.rows[s] > 0 ? a.rows[s] : 0); };
    if (check_finite) {
      for (int s = 0; s < 2; ++s) {
        if (a.points[s] == nullptr || all_finite(a.points[s], count(s) * static_cast<std::size_t>(d), dtype)) continue;
        const double nan = std::numeric_limits<double>::quiet_NaN();
        for (int g = 0; g < kMaxPointSets; ++g) {
          const std::size_t k = count(g) * static_cast<std::size_t>(d);
          if (a.grads[g] != nullptr && f32) std::fill_n(static_cast<float*>(a.grads[g]), k, std::numeric_limits<float>::quiet_NaN());
          if (a.grads[g] != nullptr && !f32) std::fill_n(static_cast<double*>(a.grads[g]), k, nan);
          if (a.weight_grads[g] != nullptr) std::fill_n(a.weight_grads[g], count(g), nan);
        }
        return {static_cast<int>(kOk), nan};
      }
    }
    // The engine adds into the gradient outputs: clear them before every attempt, since an interrupted
    // call whose signal handler does not raise is made again from the start (bindings.cpp).
    const int status = run_engine_call([&] {
      for (int s = 0; s < kMaxPointSets; ++s) {
        if (a.grads[s] != nullptr) std::memset(a.grads[s], 0, count(s) * static_cast<std::size_t>(d) * elem);
        if (a.weight_grads[s] != nullptr) std::memset(a.weight_grads[s], 0, count(s) * sizeof(double));
      }
      return static_cast<int>(pair_terms_cpu(a, static_cast<CpuIsa>(isa)));
    });
    if (status != kOk) return {status, 0.0};
    double value = constant_ + total;
    if (log_outer_) {
      const double shifted = value + log_eps_;
      value = std::log(shifted);
      scale_outputs(a, 1.0 / shifted, f32);
    }
    return {status, value};
  }

 private:
  static constexpr int kOriginSet = 2;  // python/latentdiv/_fused_ops.py SET_ORIGIN

  static void scale_outputs(const PairTermsArgs& a, double factor, bool f32) {
    for (int s = 0; s < kMaxPointSets; ++s) {
      const std::size_t n = static_cast<std::size_t>(a.rows[s] > 0 ? a.rows[s] : 0);
      const std::size_t k = n * static_cast<std::size_t>(a.d);
      if (a.grads[s] != nullptr && f32) {
        float* g = static_cast<float*>(a.grads[s]);
        for (std::size_t i = 0; i < k; ++i) g[i] = static_cast<float>(static_cast<double>(g[i]) * factor);
      } else if (a.grads[s] != nullptr) {
        double* g = static_cast<double*>(a.grads[s]);
        for (std::size_t i = 0; i < k; ++i) g[i] *= factor;
      }
      if (a.weight_grads[s] != nullptr) {
        for (std::size_t i = 0; i < n; ++i) a.weight_grads[s][i] *= factor;
      }
    }
  }

  std::vector<PairTerm> terms_;
  double constant_;
  bool log_outer_;
  double log_eps_;
  bool uses_origin_ = false;
};

// The plan's one-shot form (tests/test_fused_ops.py and benchmarks/overhead_probe.py call the engine
// through it): L added up from the terms (no constant, no log) into out_total.
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
  const TermsPlan plan(terms, params, coefs, 0.0, false, 0.0);
  const std::pair<int, double> r = plan.run(isa, dtype, d, num_threads, points, rows, weights, grads, weight_grads, false);
  if (r.first == kOk) *reinterpret_cast<double*>(out_total) = r.second;
  return r.first;
}

bool all_finite_buffer(std::uintptr_t data, std::int64_t count, int dtype) {  // data: [count] of dtype
  if (count < 0) throw py::value_error("all_finite: count must be >= 0");
  const std::size_t c = static_cast<std::size_t>(count);
  const void* p = reinterpret_cast<const void*>(data);
  if (dtype == static_cast<int>(DType::kFloat32) || dtype == static_cast<int>(DType::kFloat64)) return all_finite(p, c, dtype);
  throw py::value_error("all_finite: dtype must be float32 or float64");
}

}  // namespace

void register_pair_terms(py::module_& m) {
  m.def("pair_terms", &pair_terms, "several pair reductions of one loss and their gradients in one call (CPU)");
  py::class_<TermsPlan>(m, "TermsPlan", "a loss's terms parsed once; run() per call (CPU)")
      .def(py::init<const std::vector<std::int64_t>&, const std::vector<double>&, const std::vector<double>&, double,
                    bool, double>(),
           py::arg("terms"), py::arg("params"), py::arg("coefs"), py::arg("constant"), py::arg("log_outer"),
           py::arg("log_eps"))
      .def("run", &TermsPlan::run, "(status, value); the gradients written into the given buffers");
  m.def("all_finite", &all_finite_buffer, "whether a contiguous float32/float64 CPU buffer holds only finite values");
}

}  // namespace latentdiv
