// Vector math shared by the NEON micro-kernels (gemm_neon.cpp, softmax_, layernorm_,
// activation_).
// Included only by files built with the NEON flags; elsewhere it is empty. Only intrinsics:
// internal linkage, so no NEON-compiled copy can be picked for another file's callers.
#pragma once

#if defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>

#include <cstdint>

namespace edgevit {
namespace cpu {
namespace {

// The first n (0..4) elements of p, zeros after them.
static inline float32x4_t load_partial(const float* p, int64_t n) {
  float t[4] = {0.f, 0.f, 0.f, 0.f};
  for (int64_t j = 0; j < n; ++j) t[j] = p[j];
  return vld1q_f32(t);
}

static inline void store_partial(float* p, int64_t n, float32x4_t v) {
  float t[4];
  vst1q_f32(t, v);
  for (int64_t j = 0; j < n; ++j) p[j] = t[j];
}

static inline uint32x4_t lanes_below(int64_t n) {  // lane j set iff j < n
  const uint32_t idx[4] = {0, 1, 2, 3};
  return vcltq_u32(vld1q_u32(idx), vdupq_n_u32(uint32_t(n)));
}

// exp(x) for any float x: exp(-inf) = 0, exp(NaN) = NaN, overflow -> inf, denormal results.
// x = n ln2 + r, |r| <= ln2/2 (ln2 split in two so n*C1 is exact), exp(r) = 1 + r + r^2 P(r)
// (Cephes expf coefficients); 2^n = 2^(n>>1) * 2^(n - (n>>1)), both factors normal for the
// clamped n in [-150, 128], so only the last multiply rounds.
static inline float32x4_t exp_neon(float32x4_t x) {
  // fmax/fmin propagate NaN.
  x = vmaxq_f32(x, vdupq_n_f32(-104.0f));  // exp(-104) rounds to 0
  x = vminq_f32(x, vdupq_n_f32(89.0f));    // exp(89) overflows
  const float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(1.44269504088896341f)));
  float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693359375f));
  r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
  float32x4_t p = vdupq_n_f32(1.9875691500e-4f);
  p = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), p, r);
  p = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), p, r);
  p = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), p, r);
  p = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), p, r);
  const float32x4_t y = vaddq_f32(vfmaq_f32(r, p, vmulq_f32(r, r)), vdupq_n_f32(1.0f));
  const int32x4_t ni = vcvtq_s32_f32(n);  // exact: n is integral (NaN -> 0, y is NaN anyway)
  const int32x4_t n1 = vshrq_n_s32(ni, 1), n2 = vsubq_s32(ni, n1);
  const int32x4_t bias = vdupq_n_s32(127);
  const float32x4_t s1 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n1, bias), 23));
  const float32x4_t s2 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n2, bias), 23));
  return vmulq_f32(vmulq_f32(y, s1), s2);
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
static inline __attribute__((always_inline)) float32x4_t gelu_neon4(float32x4_t x) {
  // vminq / vmaxq propagate NaN.
  const float32x4_t xc = vmaxq_f32(vdupq_n_f32(-5.65685425f),
                                   vminq_f32(vdupq_n_f32(5.65685425f), x));
  const float32x4_t t = vmulq_f32(xc, xc);
  float32x4_t p = vdupq_n_f32(-1.50599506025019e-12f);
  p = vfmaq_f32(vdupq_n_f32(3.06119941265020e-10f), p, t);
  p = vfmaq_f32(vdupq_n_f32(-4.64265103925388e-08f), p, t);
  p = vfmaq_f32(vdupq_n_f32(-2.51575617099127e-06f), p, t);
  p = vfmaq_f32(vdupq_n_f32(-6.49646073515868e-05f), p, t);
  p = vfmaq_f32(vdupq_n_f32(-5.22304390077821e-04f), p, t);
  p = vfmaq_f32(vdupq_n_f32(-5.69080715759501e-03f), p, t);
  float32x4_t q = vdupq_n_f32(-9.10379490406225e-07f);
  q = vfmaq_f32(vdupq_n_f32(-2.66717569098631e-05f), q, t);
  q = vfmaq_f32(vdupq_n_f32(-4.20706743595508e-04f), q, t);
  q = vfmaq_f32(vdupq_n_f32(-3.68666458360234e-03f), q, t);
  q = vfmaq_f32(vdupq_n_f32(-1.42647390514189e-02f), q, t);
  // (1 + erf) / 2 >= 0, but the approximation of erf dips just below -1 near z = -4: without the
  // max, GELU(-inf) would be +inf. With it, -inf * 0 = NaN, as in the scalar reference. vmaxq
  // propagates NaN.
  return vmulq_f32(
      x, vmaxq_f32(vdupq_n_f32(0.0f),
                   vaddq_f32(vdupq_n_f32(0.5f), vdivq_f32(vmulq_f32(xc, p), q))));
}

}  // namespace
}  // namespace cpu
}  // namespace edgevit

#endif
