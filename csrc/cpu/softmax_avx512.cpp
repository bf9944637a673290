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

// Softmax of G rows at once, each row's arithmetic exactly that of a row alone (the same bits):
// one row's max, sum and 1 / sum are dependency chains and horizontal reductions that leave the
// FMA ports idle; G independent rows fill them (docs/performance-notes.md).
template <int G>
static inline void softmax_group(int64_t nfull, __mmask16 tm, __m512 vscale, float* S,
                                 int64_t ld) {
  float* s[G];
  __m512 acc[G], vmx[G];
  for (int g = 0; g < G; ++g) s[g] = S + g * ld, acc[g] = _mm512_set1_ps(-INFINITY);
  // max of s * scale. A NaN may or may not win here; either way every output is NaN, since
  // exp(NaN - max) enters the sum, as in the scalar reference.
  for (int64_t j = 0; j < nfull; j += 16)
    for (int g = 0; g < G; ++g)
      acc[g] = _mm512_max_ps(acc[g], _mm512_mul_ps(_mm512_loadu_ps(s[g] + j), vscale));
  if (tm)
    for (int g = 0; g < G; ++g) {
      const __m512 x = _mm512_mul_ps(_mm512_maskz_loadu_ps(tm, s[g] + nfull), vscale);
      acc[g] = _mm512_mask_max_ps(acc[g], tm, acc[g], x);
    }
  for (int g = 0; g < G; ++g)
    vmx[g] = _mm512_set1_ps(_mm512_reduce_max_ps(acc[g])), acc[g] = _mm512_setzero_ps();
  // s = exp(s * scale - max) (s * scale rounded first, as the scalar stores it), sum.
  for (int64_t j = 0; j < nfull; j += 16)
    for (int g = 0; g < G; ++g) {
      const __m512 x = opaque(_mm512_mul_ps(_mm512_loadu_ps(s[g] + j), vscale));
      const __m512 e = exp512(_mm512_sub_ps(x, vmx[g]));
      _mm512_storeu_ps(s[g] + j, e);
      acc[g] = _mm512_add_ps(acc[g], e);
    }
  if (tm)
    for (int g = 0; g < G; ++g) {
      const __m512 x = opaque(_mm512_mul_ps(_mm512_maskz_loadu_ps(tm, s[g] + nfull), vscale));
      const __m512 e = exp512(_mm512_sub_ps(x, vmx[g]));
      _mm512_mask_storeu_ps(s[g] + nfull, tm, e);
      acc[g] = _mm512_mask_add_ps(acc[g], tm, acc[g], e);
    }
  for (int g = 0; g < G; ++g) acc[g] = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(acc[g]));
  for (int64_t j = 0; j < nfull; j += 16)
    for (int g = 0; g < G; ++g)
      _mm512_storeu_ps(s[g] + j, _mm512_mul_ps(_mm512_loadu_ps(s[g] + j), acc[g]));
  if (tm)
    for (int g = 0; g < G; ++g)
      _mm512_mask_storeu_ps(s[g] + nfull, tm,
                            _mm512_mul_ps(_mm512_maskz_loadu_ps(tm, s[g] + nfull), acc[g]));
}

}  // namespace

void softmax_rows_avx512(int64_t M, int64_t N, float scale, float* S, int64_t ld) {
  if (N <= 0) return;
  const int64_t nfull = N / 16 * 16;
  const __mmask16 tm = tail_mask(N - nfull);
  const __m512 vscale = _mm512_set1_ps(scale);
  int64_t m = 0;
  for (; m + 8 <= M; m += 8) softmax_group<8>(nfull, tm, vscale, S + m * ld, ld);
  if (m + 4 <= M) softmax_group<4>(nfull, tm, vscale, S + m * ld, ld), m += 4;
  if (m + 2 <= M) softmax_group<2>(nfull, tm, vscale, S + m * ld, ld), m += 2;
  if (m < M) softmax_group<1>(nfull, tm, vscale, S + m * ld, ld);
}

#endif

}  // namespace cpu
}  // namespace edgevit
