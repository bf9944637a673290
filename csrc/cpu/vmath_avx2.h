// Vector math shared by the AVX2 micro-kernels (lgl_fused_avx2.cpp, mlp_fused_avx2.cpp).
// Included only by files built with the AVX2 flags; elsewhere it is empty. Only intrinsics:
// internal linkage, so no AVX2-compiled copy can be picked for another file's callers.
#pragma once

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

#include <cstdint>

namespace edgevit {
namespace cpu {
namespace {

alignas(64) const int32_t kMaskSrc[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

static inline __m256i tail_mask(int64_t n) {  // first n lanes, 0 <= n <= 8
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskSrc + 8 - (n >= 8 ? 8 : n)));
}

static inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// exp(x) for any float x: exp(-inf) = 0, exp(NaN) = NaN, overflow -> inf, denormal results.
// x = n ln2 + r, |r| <= ln2/2 (ln2 split in two so n*C1 is exact), exp(r) = 1 + r + r^2 P(r)
// (Cephes expf coefficients); 2^n = 2^(n>>1) * 2^(n - (n>>1)), both factors normal for the
// clamped n in [-150, 128], so only the last multiply rounds.
static inline __m256 exp256(__m256 x) {
  // max/min return their second operand when either is NaN: NaN stays NaN.
  x = _mm256_max_ps(_mm256_set1_ps(-104.0f), x);  // exp(-104) rounds to 0
  x = _mm256_min_ps(_mm256_set1_ps(89.0f), x);    // exp(89) overflows
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  const __m256 y = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
  const __m256i ni = _mm256_cvtps_epi32(n);  // exact: n is integral (NaN -> garbage * NaN)
  const __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
  const __m256i bias = _mm256_set1_epi32(127);
  const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
  const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
  return _mm256_mul_ps(_mm256_mul_ps(y, s1), s2);
}

}  // namespace
}  // namespace cpu
}  // namespace edgevit

#endif
