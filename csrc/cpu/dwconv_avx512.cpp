// AVX-512 micro-kernel of edgevit::dwconv (contract: dwconv_ukernels.h; loop skeleton and
// tiling: dwconv_simd.h; readable reference: dwconv_scalar.cpp). Built with -mavx512f
// -mavx512bw -mavx512vl -mavx512dq -mfma for this file only (setup.py, tests/native/Makefile);
// isa.cpp calls it only on CPUs that have those features.
//
// 16 channels per zmm, then (C % 16 >= 8) one ymm block of 8, then the C % 8 tail in a ymm with
// AVX-512VL masked loads (which do not fault on masked-off lanes) and masked stores, so nothing
// past channel C is touched. in_register (dwconv_simd.h: pixels) is an empty asm statement: the
// only way to stop GCC from turning one load into k memory operands.
#include "dwconv_ukernels.h"
#include "vmath_avx512.h"  // (first: its GCC warning pragmas)

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512DQ__) && \
    defined(__AVX512VL__) && defined(__FMA__)
#define EDGEVIT_HAVE_AVX512 1
#include <immintrin.h>

#include "dwconv_simd.h"
#endif

namespace edgevit {
namespace cpu {

#if defined(EDGEVIT_HAVE_AVX512)
namespace {

struct Full {
  using Vec = __m512;
  static constexpr int64_t kLanes = 16;
  Vec load(const float* p) const { return _mm512_loadu_ps(p); }
  void store(float* p, Vec v) const { _mm512_storeu_ps(p, v); }
  static Vec zero() { return _mm512_setzero_ps(); }
  static Vec fma(Vec a, Vec b, Vec acc) { return _mm512_fmadd_ps(a, b, acc); }
  static Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
  static Vec in_register(Vec v) {
    __asm__("" : "+v"(v));
    return v;
  }
};

struct Half {
  using Vec = __m256;
  static constexpr int64_t kLanes = 8;
  Vec load(const float* p) const { return _mm256_loadu_ps(p); }
  void store(float* p, Vec v) const { _mm256_storeu_ps(p, v); }
  static Vec zero() { return _mm256_setzero_ps(); }
  static Vec fma(Vec a, Vec b, Vec acc) { return _mm256_fmadd_ps(a, b, acc); }
  static Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
  static Vec in_register(Vec v) {
    __asm__("" : "+v"(v));
    return v;
  }
};

struct Tail : Half {
  __mmask8 m;
  explicit Tail(int64_t n) : m(__mmask8((1u << n) - 1u)) {}
  Vec load(const float* p) const { return _mm256_maskz_loadu_ps(m, p); }
  void store(float* p, Vec v) const { _mm256_mask_storeu_ps(p, m, v); }
};

const DwconvUKernels<float> kTable{"avx512", dwconv_simd::row<Full, Half, Tail>};

}  // namespace

const DwconvUKernels<float>* avx512_dwconv_ukernels() { return &kTable; }

#else

const DwconvUKernels<float>* avx512_dwconv_ukernels() { return nullptr; }

#endif

}  // namespace cpu
}  // namespace edgevit
