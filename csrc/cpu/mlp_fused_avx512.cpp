// AVX-512 micro-kernels of edgevit::mlp_fused (contract: mlp_fused_ukernels.h; readable reference:
// mlp_fused_scalar.cpp). Built with the AVX-512 flags for this file only (setup.py,
// tests/native/Makefile); isa.cpp pairs it with the AVX-512 gemm only on CPUs that have them.
//
// Invariants: every kernel touches only elements < n (< C of a row); the tails go through
// masked loads and stores, which do not fault on masked-off lanes.
// Numerics: GELU's erf is a rational approximation (|error| <= 4.5e-7; gelu512 in vmath_avx512.h,
// shared with the gemm_gelu epilogue of lgl_fused_avx512.cpp). Row statistics are summed in 16 lanes, then reduced.
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

void gelu_avx512(int64_t n, float* h) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(h + i, gelu512(_mm512_loadu_ps(h + i)));
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(h + i, m, gelu512(_mm512_maskz_loadu_ps(m, h + i)));
  }
}

// kLnRows rows at a time: each row's operations are those of a one-row loop, in the same order
// (the same bits), but the rows' sums, reductions, square roots and divisions form independent
// chains that overlap. One row at a time, a row's chain (two horizontal reductions, sqrt, div)
// is the bottleneck at small C (docs/performance-notes.md).
constexpr int kLnRows = 4;

template <int R>
static inline __attribute__((always_inline)) void layernorm_group(
    int64_t C, const float* x, int64_t ldx, float eps, const float* w, const float* b, float* out,
    int64_t ldo) {
  const int64_t cfull = C / 16 * 16;
  const __mmask16 tm = tail_mask(C - cfull);
  const __m512 inv_c = _mm512_set1_ps(1.0f / static_cast<float>(C));
  __m512 x0[R], mean[R], rstd[R];
  for (int r = 0; r < R; ++r) x0[r] = _mm512_set1_ps(x[r * ldx]);  // shift (mlp_fused_ukernels.h)
  // u = x - x0 at column c of row r; the tail's masked-off lanes are 0
  auto u = [&](int r, int64_t c) { return _mm512_sub_ps(_mm512_loadu_ps(x + r * ldx + c), x0[r]); };
  auto u_tail = [&](int r) {
    return _mm512_maskz_sub_ps(tm, _mm512_maskz_loadu_ps(tm, x + r * ldx + cfull), x0[r]);
  };
  __m512 s[R], q[R];
  for (int r = 0; r < R; ++r) s[r] = q[r] = _mm512_setzero_ps();
  for (int64_t c = 0; c < cfull; c += 16)
    for (int r = 0; r < R; ++r) s[r] = _mm512_add_ps(s[r], u(r, c));
  if (tm)
    for (int r = 0; r < R; ++r) s[r] = _mm512_add_ps(s[r], u_tail(r));
  for (int r = 0; r < R; ++r)
    mean[r] = _mm512_mul_ps(_mm512_set1_ps(_mm512_reduce_add_ps(s[r])), inv_c);
  for (int64_t c = 0; c < cfull; c += 16)
    for (int r = 0; r < R; ++r) {
      const __m512 d = _mm512_sub_ps(u(r, c), mean[r]);
      q[r] = _mm512_fmadd_ps(d, d, q[r]);
    }
  if (tm)
    for (int r = 0; r < R; ++r) {
      const __m512 d = _mm512_maskz_sub_ps(tm, u_tail(r), mean[r]);
      q[r] = _mm512_fmadd_ps(d, d, q[r]);
    }
  // 1 / sqrt(var + eps) on one lane, then broadcast: the zmm square root and division are
  // several times slower (and the row's bottleneck at C <= 48); IEEE results, the same bits.
  for (int r = 0; r < R; ++r) {
    const __m512 var = _mm512_mul_ps(_mm512_set1_ps(_mm512_reduce_add_ps(q[r])), inv_c);
    const __m128 var1 = _mm_add_ss(_mm512_castps512_ps128(var), _mm_set_ss(eps));
    rstd[r] = _mm512_broadcastss_ps(_mm_div_ss(_mm_set_ss(1.0f), _mm_sqrt_ss(var1)));
  }
  for (int r = 0; r < R; ++r) {
    float* o = out + r * ldo;
    if (w) {
      for (int64_t c = 0; c < cfull; c += 16) {
        const __m512 v = _mm512_mul_ps(_mm512_sub_ps(u(r, c), mean[r]), rstd[r]);
        _mm512_storeu_ps(o + c, _mm512_fmadd_ps(v, _mm512_loadu_ps(w + c), _mm512_loadu_ps(b + c)));
      }
      if (tm) {
        const __m512 v = _mm512_mul_ps(_mm512_sub_ps(u_tail(r), mean[r]), rstd[r]);
        _mm512_mask_storeu_ps(o + cfull, tm,
                              _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(tm, w + cfull),
                                              _mm512_maskz_loadu_ps(tm, b + cfull)));
      }
      continue;
    }
    for (int64_t c = 0; c < cfull; c += 16)
      _mm512_storeu_ps(o + c, _mm512_mul_ps(_mm512_sub_ps(u(r, c), mean[r]), rstd[r]));
    if (tm)
      _mm512_mask_storeu_ps(o + cfull, tm,
                            _mm512_mul_ps(_mm512_sub_ps(u_tail(r), mean[r]), rstd[r]));
  }
}

void layernorm_rows_avx512(int64_t M, int64_t C, const float* x, int64_t ldx, float eps,
                           const float* w, const float* b, float* out, int64_t ldo) {
  int64_t m = 0;
  for (; m + kLnRows <= M; m += kLnRows)
    layernorm_group<kLnRows>(C, x + m * ldx, ldx, eps, w, b, out + m * ldo, ldo);
  for (; m < M; ++m) layernorm_group<1>(C, x + m * ldx, ldx, eps, w, b, out + m * ldo, ldo);
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

const MlpUKernels<float> kTable{"avx512", gelu_avx512, layernorm_rows_avx512, add_avx512};

}  // namespace

const MlpUKernels<float>* avx512_mlp_ukernels() { return &kTable; }

#else

const MlpUKernels<float>* avx512_mlp_ukernels() { return nullptr; }

#endif

}  // namespace cpu
}  // namespace edgevit
