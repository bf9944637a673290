// NEON (AArch64 Advanced SIMD) softmax micro-kernel (contract: softmax.h; readable reference:
// softmax_scalar.cpp). NEON is the aarch64 baseline: no extra flags; on other architectures this
// file compiles to nothing.
//
// Invariants: touches only elements < N of each row (the row's tail through masked or partial
// loads and stores). Numerics: our own exp (vmath_neon.h; about 1 ulp); s * scale is rounded
// before subtracting the max, as in the scalar reference (an empty asm barrier keeps the compiler
// from contracting it into an FMA, which would change results well beyond rounding for large
// inputs).
//
// Only intrinsics and plain C in this file: no std:: templates/inline functions, whose
// ISA-compiled copies the linker could pick for callers on CPUs without the ISA.
#include "softmax.h"
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

// Rounds v here: stops the compiler from fusing the producing multiply into a later add.
static inline float32x4_t opaque(float32x4_t v) {
  __asm__("" : "+w"(v));
  return v;
}

// softmax

}  // namespace

void softmax_rows_neon(int64_t M, int64_t N, float scale, float* S, int64_t ld) {
  if (N <= 0) return;
  const int64_t nfull = N / 4 * 4, rem = N - nfull;
  const uint32x4_t tm = lanes_below(rem);
  const float32x4_t vscale = vdupq_n_f32(scale), ninf = vdupq_n_f32(-INFINITY);
  for (int64_t m = 0; m < M; ++m) {
    float* s = S + m * ld;
    // max of s * scale (fmax propagates NaN: then every output is NaN, as in the reference).
    float32x4_t vmax = ninf;
    for (int64_t j = 0; j < nfull; j += 4)
      vmax = vmaxq_f32(vmax, vmulq_f32(vld1q_f32(s + j), vscale));
    if (rem) {
      const float32x4_t x = vmulq_f32(load_partial(s + nfull, rem), vscale);
      vmax = vmaxq_f32(vmax, vbslq_f32(tm, x, ninf));
    }
    const float32x4_t vmx = vdupq_n_f32(vmaxvq_f32(vmax));
    // s = exp(s * scale - max) (s * scale rounded first, as the scalar stores it), sum.
    float32x4_t vsum = vdupq_n_f32(0.f);
    for (int64_t j = 0; j < nfull; j += 4) {
      const float32x4_t x = opaque(vmulq_f32(vld1q_f32(s + j), vscale));
      const float32x4_t e = exp_neon(vsubq_f32(x, vmx));
      vst1q_f32(s + j, e);
      vsum = vaddq_f32(vsum, e);
    }
    if (rem) {
      const float32x4_t x = opaque(vmulq_f32(load_partial(s + nfull, rem), vscale));
      const float32x4_t e = vbslq_f32(tm, exp_neon(vsubq_f32(x, vmx)), vdupq_n_f32(0.f));
      store_partial(s + nfull, rem, e);
      vsum = vaddq_f32(vsum, e);
    }
    const float32x4_t vinv = vdupq_n_f32(1.0f / vaddvq_f32(vsum));
    for (int64_t j = 0; j < nfull; j += 4) vst1q_f32(s + j, vmulq_f32(vld1q_f32(s + j), vinv));
    if (rem) store_partial(s + nfull, rem, vmulq_f32(load_partial(s + nfull, rem), vinv));
  }
}

#endif

}  // namespace cpu
}  // namespace edgevit
