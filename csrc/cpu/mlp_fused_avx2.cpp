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

// kLnRows rows at a time, each row's operations those of a one-row loop in the same order (the
// same bits); the rows' chains (horizontal sums, square root, division) overlap. As in
// mlp_fused_avx512.cpp (docs/performance-notes.md).
constexpr int kLnRows = 4;

template <int R>
static inline __attribute__((always_inline)) void layernorm_group(
    int64_t C, const float* x, int64_t ldx, float eps, const float* w, const float* b, float* out,
    int64_t ldo) {
  const int64_t cfull = C / 8 * 8;
  const int64_t rem = C - cfull;
  const __m256i tm = tail_mask(rem);
  const float inv_c = 1.0f / static_cast<float>(C);
  const __m256 tmf = _mm256_castsi256_ps(tm);
  __m256 x0[R], mean[R], rstd[R], s[R], q[R];
  for (int r = 0; r < R; ++r) {
    x0[r] = _mm256_set1_ps(x[r * ldx]);  // shift (see mlp_fused_ukernels.h)
    s[r] = q[r] = _mm256_setzero_ps();
  }
  // u = x - x0 at column c of row r; the tail's masked-off lanes are 0
  auto u = [&](int r, int64_t c) { return _mm256_sub_ps(_mm256_loadu_ps(x + r * ldx + c), x0[r]); };
  auto u_tail = [&](int r) {
    return _mm256_and_ps(_mm256_sub_ps(_mm256_maskload_ps(x + r * ldx + cfull, tm), x0[r]), tmf);
  };
  for (int64_t c = 0; c < cfull; c += 8)
    for (int r = 0; r < R; ++r) s[r] = _mm256_add_ps(s[r], u(r, c));
  if (rem)
    for (int r = 0; r < R; ++r) s[r] = _mm256_add_ps(s[r], u_tail(r));
  for (int r = 0; r < R; ++r) mean[r] = _mm256_set1_ps(hsum(s[r]) * inv_c);
  for (int64_t c = 0; c < cfull; c += 8)
    for (int r = 0; r < R; ++r) {
      const __m256 d = _mm256_sub_ps(u(r, c), mean[r]);
      q[r] = _mm256_fmadd_ps(d, d, q[r]);
    }
  if (rem)
    for (int r = 0; r < R; ++r) {
      const __m256 d = _mm256_and_ps(_mm256_sub_ps(u_tail(r), mean[r]), tmf);
      q[r] = _mm256_fmadd_ps(d, d, q[r]);
    }
  for (int r = 0; r < R; ++r) {
    const __m256 var = _mm256_set1_ps(hsum(q[r]) * inv_c);
    rstd[r] = _mm256_div_ps(_mm256_set1_ps(1.0f),
                            _mm256_sqrt_ps(_mm256_add_ps(var, _mm256_set1_ps(eps))));
  }
  for (int r = 0; r < R; ++r) {
    float* o = out + r * ldo;
    if (w) {
      for (int64_t c = 0; c < cfull; c += 8) {
        const __m256 v = _mm256_mul_ps(_mm256_sub_ps(u(r, c), mean[r]), rstd[r]);
        _mm256_storeu_ps(o + c, _mm256_fmadd_ps(v, _mm256_loadu_ps(w + c), _mm256_loadu_ps(b + c)));
      }
      if (rem) {
        const __m256 v = _mm256_mul_ps(_mm256_sub_ps(u_tail(r), mean[r]), rstd[r]);
        _mm256_maskstore_ps(o + cfull, tm,
                            _mm256_fmadd_ps(v, _mm256_maskload_ps(w + cfull, tm),
                                            _mm256_maskload_ps(b + cfull, tm)));
      }
      continue;
    }
    for (int64_t c = 0; c < cfull; c += 8)
      _mm256_storeu_ps(o + c, _mm256_mul_ps(_mm256_sub_ps(u(r, c), mean[r]), rstd[r]));
    if (rem)
      _mm256_maskstore_ps(o + cfull, tm, _mm256_mul_ps(_mm256_sub_ps(u_tail(r), mean[r]), rstd[r]));
  }
}

void layernorm_rows_avx2(int64_t M, int64_t C, const float* x, int64_t ldx, float eps,
                         const float* w, const float* b, float* out, int64_t ldo) {
  int64_t m = 0;
  for (; m + kLnRows <= M; m += kLnRows)
    layernorm_group<kLnRows>(C, x + m * ldx, ldx, eps, w, b, out + m * ldo, ldo);
  for (; m < M; ++m) layernorm_group<1>(C, x + m * ldx, ldx, eps, w, b, out + m * ldo, ldo);
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
