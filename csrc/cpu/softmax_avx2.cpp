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

// Softmax of G rows at once, each row's arithmetic exactly that of a row alone (the same bits):
// one row's max, sum and 1 / sum are dependency chains and horizontal reductions that leave the
// FMA ports idle; G independent rows fill them (docs/performance-notes.md).
template <int G>
static inline void softmax_group(int64_t nfull, bool has_tail, __m256i tm, __m256 vscale,
                                 float* S, int64_t ld) {
  const __m256 tmf = _mm256_castsi256_ps(tm), ninf = _mm256_set1_ps(-INFINITY);
  float* s[G];
  __m256 acc[G], vmx[G];
  for (int g = 0; g < G; ++g) s[g] = S + g * ld, acc[g] = ninf;
  // max of s * scale. A NaN may or may not win here; either way every output is NaN, since
  // exp(NaN - max) enters the sum, as in the scalar reference.
  for (int64_t j = 0; j < nfull; j += 8)
    for (int g = 0; g < G; ++g)
      acc[g] = _mm256_max_ps(acc[g], _mm256_mul_ps(_mm256_loadu_ps(s[g] + j), vscale));
  if (has_tail)
    for (int g = 0; g < G; ++g) {
      const __m256 x = _mm256_mul_ps(_mm256_maskload_ps(s[g] + nfull, tm), vscale);
      acc[g] = _mm256_max_ps(acc[g], _mm256_blendv_ps(ninf, x, tmf));
    }
  for (int g = 0; g < G; ++g) vmx[g] = _mm256_set1_ps(hmax(acc[g])), acc[g] = _mm256_setzero_ps();
  // s = exp(s * scale - max) (s * scale rounded first, as the scalar stores it), sum.
  for (int64_t j = 0; j < nfull; j += 8)
    for (int g = 0; g < G; ++g) {
      const __m256 x = opaque(_mm256_mul_ps(_mm256_loadu_ps(s[g] + j), vscale));
      const __m256 e = exp256(_mm256_sub_ps(x, vmx[g]));
      _mm256_storeu_ps(s[g] + j, e);
      acc[g] = _mm256_add_ps(acc[g], e);
    }
  if (has_tail)
    for (int g = 0; g < G; ++g) {
      const __m256 x = opaque(_mm256_mul_ps(_mm256_maskload_ps(s[g] + nfull, tm), vscale));
      const __m256 e = _mm256_and_ps(exp256(_mm256_sub_ps(x, vmx[g])), tmf);
      _mm256_maskstore_ps(s[g] + nfull, tm, e);
      acc[g] = _mm256_add_ps(acc[g], e);
    }
  for (int g = 0; g < G; ++g) acc[g] = _mm256_set1_ps(1.0f / hsum(acc[g]));
  for (int64_t j = 0; j < nfull; j += 8)
    for (int g = 0; g < G; ++g)
      _mm256_storeu_ps(s[g] + j, _mm256_mul_ps(_mm256_loadu_ps(s[g] + j), acc[g]));
  if (has_tail)
    for (int g = 0; g < G; ++g)
      _mm256_maskstore_ps(s[g] + nfull, tm,
                          _mm256_mul_ps(_mm256_maskload_ps(s[g] + nfull, tm), acc[g]));
}

}  // namespace

void softmax_rows_avx2(int64_t M, int64_t N, float scale, float* S, int64_t ld) {
  if (N <= 0) return;
  const int64_t nfull = N / 8 * 8;
  const bool has_tail = nfull < N;
  const __m256i tm = tail_mask(N - nfull);
  const __m256 vscale = _mm256_set1_ps(scale);
  int64_t m = 0;
  for (; m + 4 <= M; m += 4) softmax_group<4>(nfull, has_tail, tm, vscale, S + m * ld, ld);
  if (m + 2 <= M) softmax_group<2>(nfull, has_tail, tm, vscale, S + m * ld, ld), m += 2;
  if (m < M) softmax_group<1>(nfull, has_tail, tm, vscale, S + m * ld, ld);
}

#endif

}  // namespace cpu
}  // namespace edgevit
