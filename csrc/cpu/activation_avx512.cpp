// AVX-512 element-wise micro-kernels (contract: activation.h; readable reference:
// activation_scalar.cpp): GELU and the residual add. Built with the AVX-512 flags for this file
// only (setup.py, tests/native/Makefile); isa.cpp selects it only on CPUs that have them.
//
// Invariants: every kernel touches only elements < n (tails through masked or partial loads and
// stores). GELU's erf is a rational approximation (|error| <= 4.5e-7; vmath_avx512.h, shared with
// the gemm_gelu epilogue of gemm_avx512.cpp).
//
// Only intrinsics and plain C in this file (ODR hazard of per-ISA files, see softmax_avx512.cpp).
#include "activation.h"
#include "vmath_avx512.h"

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__FMA__)
#define EDGEVIT_HAVE_AVX512 1
#include <immintrin.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#endif

namespace edgevit {
namespace cpu {

#if defined(EDGEVIT_HAVE_AVX512)
void gelu_avx512(int64_t n, float* h) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(h + i, gelu512(_mm512_loadu_ps(h + i)));
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(h + i, m, gelu512(_mm512_maskz_loadu_ps(m, h + i)));
  }
}

void add_avx512(int64_t n, const float* src, float* dst) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(dst + i, _mm512_add_ps(_mm512_loadu_ps(dst + i), _mm512_loadu_ps(src + i)));
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(dst + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, dst + i),
                                                    _mm512_maskz_loadu_ps(m, src + i)));
  }
}

#endif

}  // namespace cpu
}  // namespace edgevit
