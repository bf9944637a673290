// NEON (AArch64 Advanced SIMD) element-wise micro-kernels (contract: activation.h; readable
// reference: activation_scalar.cpp): GELU and the residual add. NEON is the aarch64 baseline: no
// extra flags; on other architectures this file compiles to nothing.
//
// Invariants: every kernel touches only elements < n (tails through masked or partial loads and
// stores). GELU's erf is a rational approximation (|error| <= 4.5e-7; vmath_neon.h, shared with
// the gemm_gelu epilogue of gemm_neon.cpp).
//
// Only intrinsics and plain C in this file (ODR hazard of per-ISA files, see softmax_neon.cpp).
#include "activation.h"
#include "vmath_neon.h"

#if defined(__aarch64__) && defined(__ARM_NEON)
#define EDGEVIT_HAVE_NEON 1
#include <arm_neon.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#endif

namespace edgevit {
namespace cpu {

#if defined(EDGEVIT_HAVE_NEON)
void gelu_neon(int64_t n, float* h) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(h + i, gelu_neon4(vld1q_f32(h + i)));
  if (i < n) store_partial(h + i, n - i, gelu_neon4(load_partial(h + i, n - i)));
}

void add_neon(int64_t n, const float* src, float* dst) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, vaddq_f32(vld1q_f32(dst + i), vld1q_f32(src + i)));
  for (; i < n; ++i) dst[i] += src[i];
}

#endif

}  // namespace cpu
}  // namespace edgevit
