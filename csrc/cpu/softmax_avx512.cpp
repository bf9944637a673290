// AVX-512 softmax micro-kernel (contract: softmax.h; readable reference: softmax_scalar.cpp).
// Built with the AVX-512 flags for this file only (setup.py, tests/native/Makefile); isa.cpp
// selects it only on CPUs that have them.
//
// Invariants: touches only elements < N of each row (the row's tail through masked or partial
// loads and stores). Numerics: our own exp (vmath_avx512.h; about 1 ulp); s * scale is rounded
// before subtracting the max, as in the scalar reference (an empty asm barrier keeps the compiler
// from contracting it into an FMA, which would change results well beyond rounding for large
// inputs).
//
// Only intrinsics and plain C in this file: no std:: templates/inline functions, whose
// ISA-compiled copies the linker could pick for callers on CPUs without the ISA.
#include "softmax.h"
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
namespace {

// Rounds v here: stops the compiler from fusing the producing multiply into a later add.
static inline __m512 opaque(__m512 v) {
  __asm__("" : "+v"(v));
  return v;
}

// softmax

}  // namespace

void softmax_rows_avx512(int64_t M, int64_t N, float scale, float* S, int64_t ld) {
  if (N <= 0) return;
  const int64_t nfull = N / 16 * 16;
  const __mmask16 tm = tail_mask(N - nfull);
  const __m512 vscale = _mm512_set1_ps(scale);
  for (int64_t m = 0; m < M; ++m) {
    float* s = S + m * ld;
    // max of s * scale. A NaN may or may not win here; either way every output is NaN, since
    // exp(NaN - max) enters the sum, as in the scalar reference.
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int64_t j = 0; j < nfull; j += 16)
      vmax = _mm512_max_ps(vmax, _mm512_mul_ps(_mm512_loadu_ps(s + j), vscale));
    if (tm) {
      const __m512 x = _mm512_mul_ps(_mm512_maskz_loadu_ps(tm, s + nfull), vscale);
      vmax = _mm512_mask_max_ps(vmax, tm, vmax, x);
    }
    const __m512 vmx = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
    // s = exp(s * scale - max) (s * scale rounded first, as the scalar stores it), sum.
    __m512 vsum = _mm512_setzero_ps();
    for (int64_t j = 0; j < nfull; j += 16) {
      const __m512 x = opaque(_mm512_mul_ps(_mm512_loadu_ps(s + j), vscale));
      const __m512 e = exp512(_mm512_sub_ps(x, vmx));
      _mm512_storeu_ps(s + j, e);
      vsum = _mm512_add_ps(vsum, e);
    }
    if (tm) {
      const __m512 x = opaque(_mm512_mul_ps(_mm512_maskz_loadu_ps(tm, s + nfull), vscale));
      const __m512 e = exp512(_mm512_sub_ps(x, vmx));
      _mm512_mask_storeu_ps(s + nfull, tm, e);
      vsum = _mm512_mask_add_ps(vsum, tm, vsum, e);
    }
    const __m512 vinv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(vsum));
    for (int64_t j = 0; j < nfull; j += 16)
      _mm512_storeu_ps(s + j, _mm512_mul_ps(_mm512_loadu_ps(s + j), vinv));
    if (tm)
      _mm512_mask_storeu_ps(s + nfull, tm,
                            _mm512_mul_ps(_mm512_maskz_loadu_ps(tm, s + nfull), vinv));
  }
}

#endif

}  // namespace cpu
}  // namespace edgevit
