// AVX2 + FMA micro-kernel of edgevit::dwconv (contract: dwconv_ukernels.h; loop skeleton and
// tiling: dwconv_simd.h; readable reference: dwconv_scalar.cpp). Built with -mavx2 -mfma for
// this file only (setup.py, tests/native/Makefile); isa.cpp calls it only on CPUs that have AVX2
// and FMA.
//
// 8 channels per ymm, then (C % 8 >= 4) one xmm block of 4, then the C % 4 tail in an xmm with
// vmaskmovps loads (which do not fault on masked-off lanes) and stores, so nothing past channel C
// is touched. in_register (dwconv_simd.h: pixels) is an empty asm statement: the only way to
// stop GCC from turning one load into k memory operands. With 16 ymm registers the
// 9 weight vectors of k = 3 stay in registers; k = 5's 25 are partly reloaded from the stack.
#include "dwconv_ukernels.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
#define EDGEVIT_HAVE_AVX2 1
#include <immintrin.h>

#include "dwconv_simd.h"
#endif

namespace edgevit {
namespace cpu {

#if defined(EDGEVIT_HAVE_AVX2)
namespace {

struct Full {
  using Vec = __m256;
  static constexpr int64_t kLanes = 8;
  Vec load(const float* p) const { return _mm256_loadu_ps(p); }
  void store(float* p, Vec v) const { _mm256_storeu_ps(p, v); }
  static Vec zero() { return _mm256_setzero_ps(); }
  static Vec fma(Vec a, Vec b, Vec acc) { return _mm256_fmadd_ps(a, b, acc); }
  static Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
  static Vec in_register(Vec v) {
    __asm__("" : "+x"(v));
    return v;
  }
};

struct Half {
  using Vec = __m128;
  static constexpr int64_t kLanes = 4;
  Vec load(const float* p) const { return _mm_loadu_ps(p); }
  void store(float* p, Vec v) const { _mm_storeu_ps(p, v); }
  static Vec zero() { return _mm_setzero_ps(); }
  static Vec fma(Vec a, Vec b, Vec acc) { return _mm_fmadd_ps(a, b, acc); }
  static Vec add(Vec a, Vec b) { return _mm_add_ps(a, b); }
  static Vec in_register(Vec v) {
    __asm__("" : "+x"(v));
    return v;
  }
};

struct Tail : Half {
  __m128i m;  // lane j set iff j < n
  explicit Tail(int64_t n)
      : m(_mm_cmpgt_epi32(_mm_set1_epi32(int(n)), _mm_setr_epi32(0, 1, 2, 3))) {}
  Vec load(const float* p) const { return _mm_maskload_ps(p, m); }
  void store(float* p, Vec v) const { _mm_maskstore_ps(p, m, v); }
};

const DwconvUKernels<float> kTable{"avx2", dwconv_simd::row<Full, Half, Tail>};

}  // namespace

const DwconvUKernels<float>* avx2_dwconv_ukernels() { return &kTable; }

#else

const DwconvUKernels<float>* avx2_dwconv_ukernels() { return nullptr; }

#endif

}  // namespace cpu
}  // namespace edgevit
