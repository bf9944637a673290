// NEON (AArch64 Advanced SIMD) LayerNorm micro-kernels (contract: layernorm.h; readable
// reference: layernorm_scalar.cpp): layernorm_rows, and lgl_fused's folded LayerNorm (prop_rstd,
// scale_rows). NEON is the aarch64 baseline: no extra flags; on other architectures this file
// compiles to nothing.
//
// Invariants: layernorm_rows and scale_rows touch only elements < C of each row, prop_rstd reads
// pwt rows only at offsets < R and y only at rows < M (the tails through masked or partial loads
// and stores). Row statistics are summed in 4 lanes, then reduced.
//
// Only intrinsics and plain C in this file (ODR hazard of per-ISA files, see softmax_neon.cpp).
#include "layernorm.h"
#include "vmath_neon.h"

#if defined(__aarch64__) && defined(__ARM_NEON)
#define EDGEVIT_HAVE_NEON 1
#include <arm_neon.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#endif

namespace edgevit {
namespace cpu {

#if defined(EDGEVIT_HAVE_NEON)
namespace {

// prop_rstd: offsets in lanes, tokens in groups of kRstdTokens
//
// Lane l of a vector is offset d0 + l (the last R % 4 offsets through load_partial /
// store_partial); tokens go in groups of 4 sharing each loaded pwt row, one accumulator each,
// so four independent chains hide the FMA latency. Pass 1 sums y * pw (pb's sum added once),
// pass 2 sums (y * pw + (pb - mean))^2, the deviation formed by one FMA.
constexpr int kRstdTokens = 4;

// scale_rows

}  // namespace

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

void prop_rstd_neon(int64_t M, int64_t R, int64_t C, const float* y, int64_t ldy,
                    const float* pwt, const float* pb, float eps, float* rstd) {
  if (M <= 0 || R <= 0 || C <= 0) return;
  float pb_sum = 0.0f;
  for (int64_t c = 0; c < C; ++c) pb_sum += pb[c];
  const float32x4_t vC = vdupq_n_f32(float(C)), veps = vdupq_n_f32(eps);
  const float32x4_t vpb_sum = vdupq_n_f32(pb_sum), one = vdupq_n_f32(1.0f);
  for (int64_t m0 = 0; m0 < M; m0 += kRstdTokens) {
    const int nt = M - m0 < kRstdTokens ? int(M - m0) : kRstdTokens;
    const float* ym[kRstdTokens];
    for (int t = 0; t < kRstdTokens; ++t) ym[t] = y + (m0 + (t < nt ? t : 0)) * ldy;
    for (int64_t d0 = 0; d0 < R; d0 += 4) {
      const int64_t nd = R - d0 < 4 ? R - d0 : 4;
      const float* w = pwt + d0;
      float32x4_t s[kRstdTokens], mean[kRstdTokens];
      for (int t = 0; t < kRstdTokens; ++t) s[t] = vdupq_n_f32(0.f);
      for (int64_t c = 0; c < C; ++c) {
        const float32x4_t wc = nd == 4 ? vld1q_f32(w + c * R) : load_partial(w + c * R, nd);
        for (int t = 0; t < kRstdTokens; ++t) s[t] = vfmaq_n_f32(s[t], wc, ym[t][c]);
      }
      for (int t = 0; t < kRstdTokens; ++t) {
        mean[t] = vdivq_f32(vaddq_f32(s[t], vpb_sum), vC);
        s[t] = vdupq_n_f32(0.f);
      }
      for (int64_t c = 0; c < C; ++c) {
        const float32x4_t wc = nd == 4 ? vld1q_f32(w + c * R) : load_partial(w + c * R, nd);
        const float32x4_t pbc = vdupq_n_f32(pb[c]);
        for (int t = 0; t < kRstdTokens; ++t) {
          const float32x4_t dev = vfmaq_n_f32(vsubq_f32(pbc, mean[t]), wc, ym[t][c]);
          s[t] = vfmaq_f32(s[t], dev, dev);
        }
      }
      for (int t = 0; t < nt; ++t) {
        const float32x4_t var = vaddq_f32(vdivq_f32(s[t], vC), veps);
        const float32x4_t v = vdivq_f32(one, vsqrtq_f32(var));
        if (nd == 4) {
          vst1q_f32(rstd + (m0 + t) * R + d0, v);
        } else {
          store_partial(rstd + (m0 + t) * R + d0, nd, v);
        }
      }
    }
  }
}

void scale_rows_neon(int64_t rows, int64_t C, const float* src, const float* scale,
                     const float* e, float* const* dst) {
  const int64_t cfull = C / 4 * 4, rem = C - cfull;
  for (int64_t t = 0; t < rows; ++t) {
    float* o = dst[t];
    if (!o) continue;
    const float* s = src + t * C;
    const float32x4_t vs = vdupq_n_f32(scale[t]);
    for (int64_t c = 0; c < cfull; c += 4)
      vst1q_f32(o + c, vfmaq_f32(vld1q_f32(e + c), vld1q_f32(s + c), vs));
    if (rem)
      store_partial(o + cfull, rem,
                    vfmaq_f32(load_partial(e + cfull, rem), load_partial(s + cfull, rem), vs));
  }
}

#endif

}  // namespace cpu
}  // namespace edgevit
