// AVX2 + FMA element-wise micro-kernels (contract: activation.h; readable reference:
// activation_scalar.cpp): GELU and the residual add. Built with -mavx2 -mfma for this file only
// (setup.py, tests/native/Makefile); isa.cpp selects it only on CPUs that have AVX2 and FMA.
//
// Invariants: every kernel touches only elements < n (tails through masked or partial loads and
// stores). GELU's erf is a rational approximation (|error| <= 4.5e-7; vmath_avx2.h, shared with
// the gemm_gelu epilogue of gemm_avx2.cpp).
//
// Only intrinsics and plain C in this file (ODR hazard of per-ISA files, see softmax_avx2.cpp).
#include "activation.h"
#include "vmath_avx2.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
#define EDGEVIT_HAVE_AVX2 1
#include <immintrin.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#endif

namespace edgevit {
namespace cpu {

#if defined(EDGEVIT_HAVE_AVX2)
void gelu_avx2(int64_t n, float* h) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(h + i, gelu256(_mm256_loadu_ps(h + i)));
  if (i < n) {
    const __m256i m = tail_mask(n - i);
    _mm256_maskstore_ps(h + i, m, gelu256(_mm256_maskload_ps(h + i, m)));
  }
}

void add_avx2(int64_t n, const float* src, float* dst) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_add_ps(_mm256_loadu_ps(dst + i), _mm256_loadu_ps(src + i)));
  if (i < n) {
    const __m256i m = tail_mask(n - i);
    _mm256_maskstore_ps(dst + i, m, _mm256_add_ps(_mm256_maskload_ps(dst + i, m),
                                                  _mm256_maskload_ps(src + i, m)));
  }
}

#endif

}  // namespace cpu
}  // namespace edgevit
