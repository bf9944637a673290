// Scalar element-wise micro-kernels (contract: activation.h): always compiled, the reference the
// SIMD variants are tested against (tests/native), float and double.
#include <cmath>

#include "activation.h"

namespace edgevit {
namespace cpu {

template <typename T>
void gelu_scalar(int64_t n, T* h) {
  const T inv_sqrt2 = T(0.70710678118654752440);
  for (int64_t i = 0; i < n; ++i) h[i] = h[i] * T(0.5) * (T(1) + std::erf(h[i] * inv_sqrt2));
}

template <typename T>
void add_scalar(int64_t n, const T* src, T* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

template void gelu_scalar<float>(int64_t, float*);
template void gelu_scalar<double>(int64_t, double*);
template void add_scalar<float>(int64_t, const float*, float*);
template void add_scalar<double>(int64_t, const double*, double*);

}  // namespace cpu
}  // namespace edgevit
