// latentdiv/common.h: the few definitions shared by every translation unit of the engine
// (CPU schedule, CUDA schedule, pybind11 bindings). Torch-free and CUDA-runtime-free on purpose:
// the engine takes raw pointers and sizes, so the package builds without torch and works with
// any torch >= the supported minimum.
#pragma once

#include <cstdint>

// LD_HD marks functions that run on the host and, under nvcc, on the device. The kernel functors
// in kernels.h are written once and used unchanged by both schedules.
#if defined(__CUDACC__)
#define LD_HD __host__ __device__ __forceinline__
#else
#define LD_HD inline
#endif

namespace latentdiv {

// Sizes and index products are int64: n * d and n * (n - 1) / 2 overflow int32 at latent sizes.
using index_t = std::int64_t;

// Upper bound on the parameters one kernel evaluation may read (scales of a multi-scale kernel,
// coefficients of a fitted approximation). Fixed so KernelParams is a POD that a CUDA launch can
// take by value (no device allocation for parameters).
constexpr int kMaxKernelParams = 64;

enum class Mode : std::int32_t {
  kValue = 0,  // out_rows[i] = sum_j w_j f(r2_ij); *out_total = sum_i wx_i out_rows[i]
  kGrad = 1,   // out_grad[i, :] = sum_j w_j 2 f'(r2_ij) (x_i - y_j)
  // Single passes of the CPU schedule; the CUDA schedule lowers them to kValue / kGrad launches
  // (csrc/cuda/schedule.h, lower_mode), so every device takes every mode:
  kValueGrad = 2,  // kValue and kGrad in one pass (r2 and f, f' computed once): out_rows, out_total, out_grad
  kTotal = 3,      // *out_total of kValue only (out_rows unused, may be null); CPU: self pairs visit j >= i only
  // Second-order gradients (docs/second_order.md), every schedule. With d = x_i - y_j and the pair
  // Hessian H_ij = 2 f'(r2_ij) I + 4 f''(r2_ij) d d^T (of f(||d||^2) in d), vx / vy null meaning 0 and
  // wx / wy null meaning ones:
  //   out_grad[i, :] = sum_j H_ij (wy_j vx_i - wx_i vy_j)
  //   out_rows[i]    = sum_j 2 f'(r2_ij) d . vy_j           (optional: out_rows may be null)
  // Self pairs always skip j == i: GRAD's diagonal term is identically 0, so is its derivative.
  kHessVec = 4,
  // Self pairs only: kValueGrad's outputs from the pairs j >= i (each f, f' used for both rows; half
  // the work), equal to kValueGrad's to rounding, bit-identical for any thread count.
  kValueGradTriangle = 5,
};

enum class DType : std::int32_t { kFloat32 = 0, kFloat64 = 1 };

enum Status : std::int32_t {
  kOk = 0,
  kBadArgument = 1,   // a size, pointer or flag is inconsistent (Python validates first; this is the backstop)
  kUnknownKernel = 2,
  kUnsupported = 3,   // e.g. a CUDA call in a build without CUDA
  kCudaError = 4,
  kInterrupted = 5,   // CPU: an interrupt (Ctrl-C) arrived during the call; the outputs are incomplete
};

// Parameters of one radial kernel f(r2). Each functor documents how it reads `params`.
struct KernelParams {
  std::int32_t kernel;    // a KernelId (kernels.h)
  std::int32_t n_params;  // number of valid entries in params
  double params[kMaxKernelParams];
};

// Everything one pair reduction needs. Plain old data: built by the bindings, passed by value to
// CUDA launches. Pointers are to contiguous row-major buffers of `dtype` unless said otherwise.
struct PairArgs {
  const void* x;         // [n, d]
  const void* y;         // [m, d]; equals x when self_pairs
  const void* wx;        // [n] or nullptr (all ones); used only for *out_total (VALUE / VALUE_GRAD / TOTAL)
  const void* wy;        // [m] or nullptr (all ones)
  double* out_rows;      // VALUE, VALUE_GRAD: [n] row sums, in double
  double* out_total;     // VALUE, VALUE_GRAD, TOTAL: [1] sum_i wx_i out_rows[i], in double, fixed summation order
  void* out_grad;        // GRAD, VALUE_GRAD: [n, d] in dtype
  void* workspace;       // CUDA only: per-block partial sums, size from pair_reduce_cuda_workspace()
  const void* vx;        // HESS_VEC only: [n, d] in dtype or nullptr (0); the row-side vectors
  const void* vy;        // HESS_VEC only: [m, d] in dtype or nullptr (0); the column-side vectors
  index_t n, m, d;
  std::int32_t dtype;             // DType
  std::int32_t mode;              // Mode
  std::int32_t self_pairs;        // 1: y is x (m == n); enables exclude_diagonal
  std::int32_t exclude_diagonal;  // 1: skip j == i (U-statistic); requires self_pairs
  std::int32_t num_threads;       // CPU: OpenMP threads (torch.get_num_threads())
  KernelParams kernel;
};

// Condensed pairwise distances, the order of torch.pdist / scipy: (0,1), (0,2), ..., (n-2,n-1).
struct PdistArgs {
  const void* x;         // [n, d]
  const void* grad_out;  // backward only: [n (n - 1) / 2], dtype
  const void* dist;      // backward only: [n (n - 1) / 2], dtype, the forward's output
  void* out;             // forward: [n (n - 1) / 2]; backward: [n, d]; dtype
  index_t n, d;
  std::int32_t dtype;
  std::int32_t num_threads;
};

// Condensed index of the pair (i, j), i < j, in a list of n points.
LD_HD index_t condensed_index(index_t n, index_t i, index_t j) {
  return i * (2 * n - i - 1) / 2 + (j - i - 1);
}

}  // namespace latentdiv
