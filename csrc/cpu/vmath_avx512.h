// Vector math shared by the AVX-512 micro-kernels (gemm_avx512.cpp, softmax_, layernorm_,
// activation_).
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

// GELU(x) = x / 2 (1 + erf(x / sqrt 2)) = x (1/2 + z P(z^2) / (2 Q(z^2))), z = x / sqrt 2, with
// erf(z) = z P(z^2) / Q(z^2) on z clamped to [-4, 4] (the rational approximation of Eigen's
// fast erf: degree 6 / 4 in z^2, |error| <= 4.5e-7 in float, measured against std::erf over
// [-6, 6]). Evaluated on x itself: with x clamped to [-4 sqrt 2, 4 sqrt 2] and t = x^2 = 2 z^2,
// the coefficients of degree i are Eigen's scaled by 2^-i (P's also by 1 / (2 sqrt 2)), so
// GELU = x (1/2 + x P'(t) / Q'(t)): 2 or 3 vector operations fewer than forming z, erf(z), then
// x / 2 (1 + erf) (it runs on every hidden activation of the MLP). Clamping also makes infinite x give erf = +-1, and
// NaN stays NaN through x itself.
// Always inlined: a call from a gemm tile would spill every accumulator around it.
static inline __attribute__((always_inline)) __m512 gelu512(__m512 x) {
  // sign(x) min(|x|, 4 sqrt 2) in one vrangeps (imm 2: smaller magnitude, sign of x); a NaN x
  // gives NaN.
  const __m512 xc = _mm512_range_ps(x, _mm512_set1_ps(5.65685425f), 2);
  const __m512 t = _mm512_mul_ps(xc, xc);
  __m512 p = _mm512_set1_ps(-1.50599506025019e-12f);
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(3.06119941265020e-10f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-4.64265103925388e-08f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-2.51575617099127e-06f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-6.49646073515868e-05f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-5.22304390077821e-04f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-5.69080715759501e-03f));
  __m512 q = _mm512_set1_ps(-9.10379490406225e-07f);
  q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(-2.66717569098631e-05f));
  q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(-4.20706743595508e-04f));
  q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(-3.68666458360234e-03f));
  q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(-1.42647390514189e-02f));
  // 1 / q: rcp14 and one Newton step (~1e-7 relative; q is in [-0.04, -0.014]).
  __m512 rq = _mm512_rcp14_ps(q);
  rq = _mm512_mul_ps(rq, _mm512_fnmadd_ps(q, rq, _mm512_set1_ps(2.0f)));
  // (1 + erf) / 2 >= 0, but the approximation of erf dips just below -1 near z = -4: without the
  // max, GELU(-inf) would be +inf. With it, -inf * 0 = NaN, as in the scalar reference. NaN in
  // the second operand stays NaN.
  return _mm512_mul_ps(
      x, _mm512_max_ps(_mm512_setzero_ps(),
                       _mm512_fmadd_ps(_mm512_mul_ps(xc, p), rq, _mm512_set1_ps(0.5f))));
}

}  // namespace
}  // namespace cpu
}  // namespace edgevit

#endif
