// AVX2+FMA micro-kernels of edgevit::mlp_fused (contract: mlp_fused_ukernels.h; readable
// reference: mlp_fused_scalar.cpp). Built with -mavx2 -mfma for this file only (setup.py,
// tests/native/Makefile); isa.cpp pairs it with the AVX2 gemm only on CPUs that have them.
//
// Invariants: every kernel touches only elements < n (< C of a row); the tails go through
// maskload / maskstore, which do not fault on masked-off lanes.
// Numerics: GELU's erf is a rational approximation (|error| <= 4.5e-7; see gelu below). Row
// statistics are summed in 8 lanes, then reduced.
//
// Only intrinsics and plain C in this file (ODR hazard of per-ISA files, see lgl_fused_avx512.cpp).
#include "mlp_fused_ukernels.h"
#include "vmath_avx2.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
#define EDGEVIT_HAVE_AVX2 1
#include <immintrin.h>
#endif

namespace edgevit {
namespace cpu {

#if defined(EDGEVIT_HAVE_AVX2)
namespace {

void gelu_avx2(int64_t n, float* h) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(h + i, gelu256(_mm256_loadu_ps(h + i)));
  if (i < n) {
    const __m256i m = tail_mask(n - i);
    _mm256_maskstore_ps(h + i, m, gelu256(_mm256_maskload_ps(h + i, m)));
  }
}

void layernorm_rows_avx2(int64_t M, int64_t C, const float* x, int64_t ldx, float eps,
                         const float* w, const float* b, float* out, int64_t ldo) {
  const int64_t cfull = C / 8 * 8;
  const int64_t rem = C - cfull;
  const __m256i tm = tail_mask(rem);
  const float inv_c = 1.0f / static_cast<float>(C);
  const __m256 tmf = _mm256_castsi256_ps(tm);
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * ldx;
    float* o = out + m * ldo;
    const __m256 x0 = _mm256_set1_ps(xr[0]);  // shift (see mlp_fused_ukernels.h)
    // u = x - x0 at column c; the tail's masked-off lanes are 0
    auto u = [&](int64_t c) { return _mm256_sub_ps(_mm256_loadu_ps(xr + c), x0); };
    auto u_tail = [&] {
      return _mm256_and_ps(_mm256_sub_ps(_mm256_maskload_ps(xr + cfull, tm), x0), tmf);
    };
    __m256 s = _mm256_setzero_ps();
    for (int64_t c = 0; c < cfull; c += 8) s = _mm256_add_ps(s, u(c));
    if (rem) s = _mm256_add_ps(s, u_tail());
    const __m256 mean = _mm256_set1_ps(hsum(s) * inv_c);
    __m256 q = _mm256_setzero_ps();
    for (int64_t c = 0; c < cfull; c += 8) {
      const __m256 d = _mm256_sub_ps(u(c), mean);
      q = _mm256_fmadd_ps(d, d, q);
    }
    if (rem) {
      const __m256 d = _mm256_and_ps(_mm256_sub_ps(u_tail(), mean), tmf);
      q = _mm256_fmadd_ps(d, d, q);
    }
    const __m256 var = _mm256_set1_ps(hsum(q) * inv_c);
    const __m256 rstd = _mm256_div_ps(_mm256_set1_ps(1.0f),
                                      _mm256_sqrt_ps(_mm256_add_ps(var, _mm256_set1_ps(eps))));
    if (w) {
      for (int64_t c = 0; c < cfull; c += 8) {
        const __m256 v = _mm256_mul_ps(_mm256_sub_ps(u(c), mean), rstd);
        _mm256_storeu_ps(o + c, _mm256_fmadd_ps(v, _mm256_loadu_ps(w + c), _mm256_loadu_ps(b + c)));
      }
      if (rem) {
        const __m256 v = _mm256_mul_ps(_mm256_sub_ps(u_tail(), mean), rstd);
        _mm256_maskstore_ps(o + cfull, tm,
                            _mm256_fmadd_ps(v, _mm256_maskload_ps(w + cfull, tm),
                                            _mm256_maskload_ps(b + cfull, tm)));
      }
      continue;
    }
    for (int64_t c = 0; c < cfull; c += 8)
      _mm256_storeu_ps(o + c, _mm256_mul_ps(_mm256_sub_ps(u(c), mean), rstd));
    if (rem) _mm256_maskstore_ps(o + cfull, tm, _mm256_mul_ps(_mm256_sub_ps(u_tail(), mean), rstd));
  }
}

void add_avx2(int64_t n, const float* src, float* dst) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_add_ps(_mm256_loadu_ps(dst + i), _mm256_loadu_ps(src + i)));
  if (i < n) {
    const __m256i m = tail_mask(n - i);
    _mm256_maskstore_ps(dst + i, m, _mm256_add_ps(_mm256_maskload_ps(dst + i, m),
                                                  _mm256_maskload_ps(src + i, m)));
  }
}

const MlpUKernels<float> kTable{"avx2", gelu_avx2, layernorm_rows_avx2, add_avx2};

}  // namespace

const MlpUKernels<float>* avx2_mlp_ukernels() { return &kTable; }

#else

const MlpUKernels<float>* avx2_mlp_ukernels() { return nullptr; }

#endif

}  // namespace cpu
}  // namespace edgevit
