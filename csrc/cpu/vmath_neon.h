// Vector math shared by the NEON micro-kernels (lgl_fused_neon.cpp, mlp_fused_neon.cpp).
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

}  // namespace
}  // namespace cpu
}  // namespace edgevit

#endif
