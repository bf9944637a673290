// AVX-512 micro-kernels of edgevit::mlp_fused (contract: mlp_fused_ukernels.h; readable reference:
// mlp_fused_scalar.cpp). Built with the AVX-512 flags for this file only (setup.py,
// tests/native/Makefile); isa.cpp pairs it with the AVX-512 gemm only on CPUs that have them.
//
// Invariants: every kernel touches only elements < n (< C of a row); the tails go through
// masked loads and stores, which do not fault on masked-off lanes.
// Numerics: GELU's erf is Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7, as ATen's vectorised
// erf) with exp512 (vmath_avx512.h). Row statistics are summed in 16 lanes, then reduced.
//
// Only intrinsics and plain C in this file (ODR hazard of per-ISA files, see lgl_fused_avx512.cpp).
#include "mlp_fused_ukernels.h"
#include "vmath_avx512.h"

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__FMA__)
#define EDGEVIT_HAVE_AVX512 1
#include <immintrin.h>
#endif

namespace edgevit {
namespace cpu {

#if defined(EDGEVIT_HAVE_AVX512)
namespace {

// x / 2 * (1 + erf(x / sqrt 2)).
static inline __m512 gelu512(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 z = _mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f));
  // |z| capped at 10, where erf is 1 in float: keeps 1 / d finite for infinite x (NaN x gives
  // 10 here and NaN from the final product with x).
  const __m512 az = _mm512_min_ps(_mm512_abs_ps(z), _mm512_set1_ps(10.0f));
  // t = 1 / d: rcp14 and one Newton step (~1e-7 relative, far inside the formula's error;
  // vdivps would cost more than the rest of the function).
  const __m512 d = _mm512_fmadd_ps(_mm512_set1_ps(0.3275911f), az, one);
  __m512 t = _mm512_rcp14_ps(d);
  t = _mm512_mul_ps(t, _mm512_fnmadd_ps(d, t, _mm512_set1_ps(2.0f)));
  __m512 p = _mm512_set1_ps(1.061405429f);
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453152027f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592f));
  p = _mm512_mul_ps(p, t);
  const __m512 e = exp512(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), az), az));
  const __m512 erf_abs = _mm512_fnmadd_ps(p, e, one);  // in [0, 1]
  const __m512 erf = _mm512_or_ps(erf_abs, _mm512_and_ps(z, _mm512_set1_ps(-0.0f)));
  return _mm512_mul_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.5f)), _mm512_add_ps(one, erf));
}

void gelu_avx512(int64_t n, float* h) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(h + i, gelu512(_mm512_loadu_ps(h + i)));
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(h + i, m, gelu512(_mm512_maskz_loadu_ps(m, h + i)));
  }
}

void standardize_rows_avx512(int64_t M, int64_t C, const float* x, int64_t ldx, float eps,
                             float* out, int64_t ldo) {
  const int64_t cfull = C / 16 * 16;
  const __mmask16 tm = tail_mask(C - cfull);
  const __m512 inv_c = _mm512_set1_ps(1.0f / static_cast<float>(C));
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * ldx;
    float* o = out + m * ldo;
    const __m512 x0 = _mm512_set1_ps(xr[0]);  // shift (see mlp_fused_ukernels.h)
    // u = x - x0 (the tail's masked-off lanes are 0)
    __m512 s = _mm512_setzero_ps();
    for (int64_t c = 0; c < cfull; c += 16)
      s = _mm512_add_ps(s, _mm512_sub_ps(_mm512_loadu_ps(xr + c), x0));
    if (tm) s = _mm512_add_ps(s, _mm512_maskz_sub_ps(tm, _mm512_maskz_loadu_ps(tm, xr + cfull), x0));
    const __m512 mean = _mm512_mul_ps(_mm512_set1_ps(_mm512_reduce_add_ps(s)), inv_c);
    __m512 q = _mm512_setzero_ps();
    for (int64_t c = 0; c < cfull; c += 16) {
      const __m512 d = _mm512_sub_ps(_mm512_sub_ps(_mm512_loadu_ps(xr + c), x0), mean);
      q = _mm512_fmadd_ps(d, d, q);
    }
    if (tm) {
      const __m512 d = _mm512_maskz_sub_ps(
          tm, _mm512_sub_ps(_mm512_maskz_loadu_ps(tm, xr + cfull), x0), mean);
      q = _mm512_fmadd_ps(d, d, q);
    }
    const __m512 var = _mm512_mul_ps(_mm512_set1_ps(_mm512_reduce_add_ps(q)), inv_c);
    const __m512 rstd = _mm512_div_ps(_mm512_set1_ps(1.0f),
                                      _mm512_sqrt_ps(_mm512_add_ps(var, _mm512_set1_ps(eps))));
    for (int64_t c = 0; c < cfull; c += 16)
      _mm512_storeu_ps(
          o + c, _mm512_mul_ps(_mm512_sub_ps(_mm512_sub_ps(_mm512_loadu_ps(xr + c), x0), mean), rstd));
    if (tm)
      _mm512_mask_storeu_ps(
          o + cfull, tm,
          _mm512_mul_ps(
              _mm512_sub_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(tm, xr + cfull), x0), mean), rstd));
  }
}

void add_avx512(int64_t n, const float* src, float* dst) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(dst + i, _mm512_add_ps(_mm512_loadu_ps(dst + i), _mm512_loadu_ps(src + i)));
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(dst + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, dst + i),
                                                    _mm512_maskz_loadu_ps(m, src + i)));
  }
}

const MlpUKernels<float> kTable{"avx512", gelu_avx512, standardize_rows_avx512, add_avx512};

}  // namespace

const MlpUKernels<float>* avx512_mlp_ukernels() { return &kTable; }

#else

const MlpUKernels<float>* avx512_mlp_ukernels() { return nullptr; }

#endif

}  // namespace cpu
}  // namespace edgevit
