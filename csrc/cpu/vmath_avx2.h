// Vector math shared by the AVX2 micro-kernels (gemm_avx2.cpp, softmax_, layernorm_,
// activation_).
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

// GELU(x) = x / 2 (1 + erf(x / sqrt 2)) = x (1/2 + z P(z^2) / (2 Q(z^2))), z = x / sqrt 2, with
// erf(z) = z P(z^2) / Q(z^2) on z clamped to [-4, 4] (the rational approximation of Eigen's
// fast erf: degree 6 / 4 in z^2, |error| <= 4.5e-7 in float, measured against std::erf over
// [-6, 6]). Evaluated on x itself: with x clamped to [-4 sqrt 2, 4 sqrt 2] and t = x^2 = 2 z^2,
// the coefficients of degree i are Eigen's scaled by 2^-i (P's also by 1 / (2 sqrt 2)), so
// GELU = x (1/2 + x P'(t) / Q'(t)): 2 or 3 vector operations fewer than forming z, erf(z), then
// x / 2 (1 + erf) (it runs on every hidden activation of the MLP). Clamping also makes infinite x give erf = +-1, and
// NaN stays NaN through x itself.
// Always inlined: a call from a gemm tile would spill every accumulator around it.
static inline __attribute__((always_inline)) __m256 gelu256(__m256 x) {
  // min / max return their second operand when one is NaN: NaN stays NaN.
  const __m256 xc = _mm256_max_ps(_mm256_set1_ps(-5.65685425f),
                                  _mm256_min_ps(_mm256_set1_ps(5.65685425f), x));
  const __m256 t = _mm256_mul_ps(xc, xc);
  __m256 p = _mm256_set1_ps(-1.50599506025019e-12f);
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(3.06119941265020e-10f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-4.64265103925388e-08f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-2.51575617099127e-06f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-6.49646073515868e-05f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-5.22304390077821e-04f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-5.69080715759501e-03f));
  __m256 q = _mm256_set1_ps(-9.10379490406225e-07f);
  q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(-2.66717569098631e-05f));
  q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(-4.20706743595508e-04f));
  q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(-3.68666458360234e-03f));
  q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(-1.42647390514189e-02f));
  // 1 / q: rcpps (12 bits) and one Newton step (~23 bits; q is in [-0.04, -0.014]).
  __m256 rq = _mm256_rcp_ps(q);
  rq = _mm256_mul_ps(rq, _mm256_fnmadd_ps(q, rq, _mm256_set1_ps(2.0f)));
  // (1 + erf) / 2 >= 0, but the approximation of erf dips just below -1 near z = -4: without the
  // max, GELU(-inf) would be +inf. With it, -inf * 0 = NaN, as in the scalar reference. NaN in
  // the second operand stays NaN.
  return _mm256_mul_ps(
      x, _mm256_max_ps(_mm256_setzero_ps(),
                       _mm256_fmadd_ps(_mm256_mul_ps(xc, p), rq, _mm256_set1_ps(0.5f))));
}

}  // namespace
}  // namespace cpu
}  // namespace edgevit

#endif
