// AVX2 + FMA softmax micro-kernel (contract: softmax.h; readable reference: softmax_scalar.cpp).
// Built with -mavx2 -mfma for this file only (setup.py, tests/native/Makefile); isa.cpp selects
// it only on CPUs that have AVX2 and FMA.
//
// Invariants: touches only elements < N of each row (the row's tail through masked or partial
// loads and stores). Numerics: our own exp (vmath_avx2.h; about 1 ulp); s * scale is rounded
// before subtracting the max, as in the scalar reference (an empty asm barrier keeps the compiler
// from contracting it into an FMA, which would change results well beyond rounding for large
// inputs).
//
// Only intrinsics and plain C in this file: no std:: templates/inline functions, whose
// ISA-compiled copies the linker could pick for callers on CPUs without the ISA.
#include "softmax.h"
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
namespace {

// Rounds v here: stops the compiler from fusing the producing multiply into a later add.
static inline __m256 opaque(__m256 v) {
  __asm__("" : "+x"(v));
  return v;
}

static inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// softmax

}  // namespace

void softmax_rows_avx2(int64_t M, int64_t N, float scale, float* S, int64_t ld) {
  if (N <= 0) return;
  const int64_t nfull = N / 8 * 8;
  const bool has_tail = nfull < N;
  const __m256i tm = tail_mask(N - nfull);
  const __m256 tmf = _mm256_castsi256_ps(tm);
  const __m256 vscale = _mm256_set1_ps(scale), ninf = _mm256_set1_ps(-INFINITY);
  for (int64_t m = 0; m < M; ++m) {
    float* s = S + m * ld;
    // max of s * scale. A NaN may or may not win here; either way every output is NaN, since
    // exp(NaN - max) enters the sum, as in the scalar reference.
    __m256 vmax = ninf;
    for (int64_t j = 0; j < nfull; j += 8)
      vmax = _mm256_max_ps(vmax, _mm256_mul_ps(_mm256_loadu_ps(s + j), vscale));
    if (has_tail) {
      const __m256 x = _mm256_mul_ps(_mm256_maskload_ps(s + nfull, tm), vscale);
      vmax = _mm256_max_ps(vmax, _mm256_blendv_ps(ninf, x, tmf));
    }
    const __m256 vmx = _mm256_set1_ps(hmax(vmax));
    // s = exp(s * scale - max) (s * scale rounded first, as the scalar stores it), sum.
    __m256 vsum = _mm256_setzero_ps();
    for (int64_t j = 0; j < nfull; j += 8) {
      const __m256 x = opaque(_mm256_mul_ps(_mm256_loadu_ps(s + j), vscale));
      const __m256 e = exp256(_mm256_sub_ps(x, vmx));
      _mm256_storeu_ps(s + j, e);
      vsum = _mm256_add_ps(vsum, e);
    }
    if (has_tail) {
      const __m256 x = opaque(_mm256_mul_ps(_mm256_maskload_ps(s + nfull, tm), vscale));
      const __m256 e = _mm256_and_ps(exp256(_mm256_sub_ps(x, vmx)), tmf);
      _mm256_maskstore_ps(s + nfull, tm, e);
      vsum = _mm256_add_ps(vsum, e);
    }
    const __m256 vinv = _mm256_set1_ps(1.0f / hsum(vsum));
    for (int64_t j = 0; j < nfull; j += 8)
      _mm256_storeu_ps(s + j, _mm256_mul_ps(_mm256_loadu_ps(s + j), vinv));
    if (has_tail)
      _mm256_maskstore_ps(s + nfull, tm, _mm256_mul_ps(_mm256_maskload_ps(s + nfull, tm), vinv));
  }
}

#endif

}  // namespace cpu
}  // namespace edgevit
