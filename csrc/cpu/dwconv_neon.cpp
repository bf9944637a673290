// NEON (AArch64 Advanced SIMD) micro-kernel of edgevit::dwconv (contract: dwconv_ukernels.h;
// loop skeleton and tiling: dwconv_simd.h; readable reference: dwconv_scalar.cpp). NEON is the
// aarch64 baseline, so this file needs no extra flags; on other architectures it compiles to a
// null table.
//
// 4 channels per q register (32 of them: k = 3 and k = 5 keep their weights in registers); the
// C % 4 tail block goes through a register-sized temporary, so nothing past channel C is
// touched (the EdgeViT widths are multiples of 4: it never runs there). No narrower Half block
// (dwconv_simd.h): row<Full, Full, Tail>.
#include "dwconv_ukernels.h"

#if defined(__aarch64__) && defined(__ARM_NEON)
#define EDGEVIT_HAVE_NEON 1
#include <arm_neon.h>

#include "dwconv_simd.h"
#endif

namespace edgevit {
namespace cpu {

#if defined(EDGEVIT_HAVE_NEON)
namespace {

struct Full {
  using Vec = float32x4_t;
  static constexpr int64_t kLanes = 4;
  Vec load(const float* p) const { return vld1q_f32(p); }
  void store(float* p, Vec v) const { vst1q_f32(p, v); }
  static Vec zero() { return vdupq_n_f32(0.f); }
  static Vec fma(Vec a, Vec b, Vec acc) { return vfmaq_f32(acc, a, b); }
  static Vec add(Vec a, Vec b) { return vaddq_f32(a, b); }
  static Vec in_register(Vec v) { return v; }  // AArch64 FMAs take no memory operand
};

struct Tail : Full {
  int64_t n;
  explicit Tail(int64_t n_) : n(n_) {}
  Vec load(const float* p) const {
    float t[4] = {0.f, 0.f, 0.f, 0.f};
    for (int64_t j = 0; j < n; ++j) t[j] = p[j];
    return vld1q_f32(t);
  }
  void store(float* p, Vec v) const {
    float t[4];
    vst1q_f32(t, v);
    for (int64_t j = 0; j < n; ++j) p[j] = t[j];
  }
};

const DwconvUKernels<float> kTable{"neon", dwconv_simd::row<Full, Full, Tail>};

}  // namespace

const DwconvUKernels<float>* neon_dwconv_ukernels() { return &kTable; }

#else

const DwconvUKernels<float>* neon_dwconv_ukernels() { return nullptr; }

#endif

}  // namespace cpu
}  // namespace edgevit
