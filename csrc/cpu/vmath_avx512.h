// Vector math shared by the AVX-512 micro-kernels (lgl_fused_avx512.cpp, mlp_fused_avx512.cpp).
// Included only by files built with the AVX-512 flags; elsewhere it is empty. Only intrinsics:
// internal linkage, so no AVX-512-compiled copy can be picked for another file's callers.
#pragma once

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__FMA__)
// GCC 12 warns inside its own headers about the self-initialised _mm512_undefined_ps() of the
// unmasked intrinsics (GCC PR 105593), a false positive (-Wuninitialized at -O1, as in the ASan
// build; -Wmaybe-uninitialized at -O2 and up). Every AVX-512 file includes this header first.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <cstdint>

namespace edgevit {
namespace cpu {
namespace {

static inline __mmask16 tail_mask(int64_t n) {  // first n lanes, 0 <= n <= 16
  return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u);
}

// exp(x) for any float x: exp(-inf) = 0, exp(NaN) = NaN, overflow -> inf, denormal results
// rounded by vscalefps. x = n ln2 + r, |r| <= ln2/2 (ln2 split in two so n*C1 is exact),
// exp(r) = 1 + r + r^2 P(r) (Cephes expf coefficients).
static inline __m512 exp512(__m512 x) {
  // max/min return their second operand when either is NaN: NaN stays NaN.
  x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);  // exp(-104) rounds to 0
  x = _mm512_min_ps(_mm512_set1_ps(89.0f), x);    // exp(89) overflows
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 y = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(y, n);
}

}  // namespace
}  // namespace cpu
}  // namespace edgevit

#endif
