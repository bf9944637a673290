// Scalar micro-kernels of edgevit::mlp_fused (contract: mlp_fused_ukernels.h): always compiled,
// the reference the SIMD variants are tested against (tests/native), float and double.
#include <cmath>

#include "mlp_fused_ukernels.h"

namespace edgevit {
namespace cpu {
namespace {

template <typename T>
void gelu_scalar(int64_t n, T* h) {
  const T inv_sqrt2 = T(0.70710678118654752440);
  for (int64_t i = 0; i < n; ++i) h[i] = h[i] * T(0.5) * (T(1) + std::erf(h[i] * inv_sqrt2));
}

template <typename T>
void layernorm_rows_scalar(int64_t M, int64_t C, const T* x, int64_t ldx, T eps, const T* w,
                           const T* b, T* out, int64_t ldo) {
  for (int64_t m = 0; m < M; ++m) {
    const T* xr = x + m * ldx;
    const T x0 = xr[0];  // shift (see mlp_fused_ukernels.h)
    T sum = 0;
    for (int64_t c = 0; c < C; ++c) sum += xr[c] - x0;
    const T mean = sum / T(C);  // mean of the shifted row
    T sq = 0;
    for (int64_t c = 0; c < C; ++c) sq += ((xr[c] - x0) - mean) * ((xr[c] - x0) - mean);
    const T rstd = T(1) / std::sqrt(sq / T(C) + eps);
    T* o = out + m * ldo;
    for (int64_t c = 0; c < C; ++c) {
      const T v = ((xr[c] - x0) - mean) * rstd;
      o[c] = w ? v * w[c] + b[c] : v;
    }
  }
}

template <typename T>
void add_scalar(int64_t n, const T* src, T* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

}  // namespace

template <typename T>
const MlpUKernels<T>& scalar_mlp_ukernels() {
  static const MlpUKernels<T> table{"scalar", gelu_scalar<T>, layernorm_rows_scalar<T>,
                                    add_scalar<T>};
  return table;
}

template const MlpUKernels<float>& scalar_mlp_ukernels<float>();
template const MlpUKernels<double>& scalar_mlp_ukernels<double>();

}  // namespace cpu
}  // namespace edgevit
