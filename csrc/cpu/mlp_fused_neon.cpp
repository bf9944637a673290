// NEON micro-kernels of edgevit::mlp_fused (contract: mlp_fused_ukernels.h; readable reference:
// mlp_fused_scalar.cpp). NEON is the aarch64 baseline: no extra flags; on other architectures
// this file compiles to a null table.
//
// Invariants: every kernel touches only elements < n (< C of a row); a tail of n % 4 elements
// goes through a register-sized temporary (load_partial / store_partial, vmath_neon.h).
// Numerics: GELU's erf is a rational approximation (|error| <= 4.5e-7; gelu_neon4 in vmath_neon.h). Row
// statistics are summed in 4 lanes, then reduced.
//
// Only intrinsics and plain C in this file (ODR hazard of per-ISA files, see lgl_fused_avx512.cpp).
#include "mlp_fused_ukernels.h"
#include "vmath_neon.h"

#if defined(__aarch64__) && defined(__ARM_NEON)
#define EDGEVIT_HAVE_NEON 1
#include <arm_neon.h>
#endif

namespace edgevit {
namespace cpu {

#if defined(EDGEVIT_HAVE_NEON)
namespace {

void gelu_neon(int64_t n, float* h) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(h + i, gelu_neon4(vld1q_f32(h + i)));
  if (i < n) store_partial(h + i, n - i, gelu_neon4(load_partial(h + i, n - i)));
}

void layernorm_rows_neon(int64_t M, int64_t C, const float* x, int64_t ldx, float eps,
                         const float* w, const float* b, float* out, int64_t ldo) {
  const int64_t cfull = C / 4 * 4, rem = C - cfull;
  const float inv_c = 1.0f / static_cast<float>(C);
  const uint32x4_t tm = lanes_below(rem);
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * ldx;
    float* o = out + m * ldo;
    const float32x4_t x0 = vdupq_n_f32(xr[0]);  // shift (see mlp_fused_ukernels.h)
    // u = x - x0 at column c; the tail's lanes past rem are 0
    auto u = [&](int64_t c) { return vsubq_f32(vld1q_f32(xr + c), x0); };
    auto masked = [&](float32x4_t v) {
      return vreinterpretq_f32_u32(vandq_u32(tm, vreinterpretq_u32_f32(v)));
    };
    auto u_tail = [&] { return masked(vsubq_f32(load_partial(xr + cfull, rem), x0)); };
    float32x4_t s = vdupq_n_f32(0.0f);
    for (int64_t c = 0; c < cfull; c += 4) s = vaddq_f32(s, u(c));
    if (rem) s = vaddq_f32(s, u_tail());
    const float32x4_t mean = vdupq_n_f32(vaddvq_f32(s) * inv_c);
    float32x4_t q = vdupq_n_f32(0.0f);
    for (int64_t c = 0; c < cfull; c += 4) {
      const float32x4_t d = vsubq_f32(u(c), mean);
      q = vfmaq_f32(q, d, d);
    }
    if (rem) {
      const float32x4_t d = masked(vsubq_f32(u_tail(), mean));
      q = vfmaq_f32(q, d, d);
    }
    const float32x4_t vv = vdupq_n_f32(vaddvq_f32(q) * inv_c + eps);
    const float32x4_t rstd = vdivq_f32(vdupq_n_f32(1.0f), vsqrtq_f32(vv));
    if (w) {
      for (int64_t c = 0; c < cfull; c += 4) {
        const float32x4_t v = vmulq_f32(vsubq_f32(u(c), mean), rstd);
        vst1q_f32(o + c, vfmaq_f32(vld1q_f32(b + c), v, vld1q_f32(w + c)));
      }
      if (rem) {
        const float32x4_t v = vmulq_f32(vsubq_f32(u_tail(), mean), rstd);
        store_partial(o + cfull, rem,
                      vfmaq_f32(load_partial(b + cfull, rem), v, load_partial(w + cfull, rem)));
      }
      continue;
    }
    for (int64_t c = 0; c < cfull; c += 4) vst1q_f32(o + c, vmulq_f32(vsubq_f32(u(c), mean), rstd));
    if (rem) store_partial(o + cfull, rem, vmulq_f32(vsubq_f32(u_tail(), mean), rstd));
  }
}

void add_neon(int64_t n, const float* src, float* dst) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, vaddq_f32(vld1q_f32(dst + i), vld1q_f32(src + i)));
  for (; i < n; ++i) dst[i] += src[i];
}

const MlpUKernels<float> kTable{"neon", gelu_neon, layernorm_rows_neon, add_neon};

}  // namespace

const MlpUKernels<float>* neon_mlp_ukernels() { return &kTable; }

#else

const MlpUKernels<float>* neon_mlp_ukernels() { return nullptr; }

#endif

}  // namespace cpu
}  // namespace edgevit
