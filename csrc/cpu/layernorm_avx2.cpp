// AVX2 + FMA LayerNorm micro-kernels (contract: layernorm.h; readable reference:
// layernorm_scalar.cpp): layernorm_rows, and lgl_fused's folded LayerNorm (prop_rstd,
// scale_rows). Built with -mavx2 -mfma for this file only (setup.py, tests/native/Makefile);
// isa.cpp selects it only on CPUs that have AVX2 and FMA.
//
// Invariants: layernorm_rows and scale_rows touch only elements < C of each row, prop_rstd reads
// pwt rows only at offsets < R and y only at rows < M (the tails through masked or partial loads
// and stores). Row statistics are summed in 8 lanes, then reduced.
//
// Only intrinsics and plain C in this file (ODR hazard of per-ISA files, see softmax_avx2.cpp).
#include "layernorm.h"
#include "vmath_avx2.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
#define EDGEVIT_HAVE_AVX2 1
#include <immintrin.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#endif

namespace edgevit {
namespace cpu {

#if defined(EDGEVIT_HAVE_AVX2)
namespace {

// kLnRows rows at a time, each row's operations those of a one-row loop in the same order (the
// same bits); the rows' chains (horizontal sums, square root, division) overlap. As in
// layernorm_avx512.cpp (docs/performance-notes.md).
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

// prop_rstd: offsets in lanes, tokens in groups of kRstdTokens (as in the AVX-512 kernel)

constexpr int kRstdTokens = 4;

// scale_rows

}  // namespace

void layernorm_rows_avx2(int64_t M, int64_t C, const float* x, int64_t ldx, float eps,
                         const float* w, const float* b, float* out, int64_t ldo) {
  int64_t m = 0;
  for (; m + kLnRows <= M; m += kLnRows)
    layernorm_group<kLnRows>(C, x + m * ldx, ldx, eps, w, b, out + m * ldo, ldo);
  for (; m < M; ++m) layernorm_group<1>(C, x + m * ldx, ldx, eps, w, b, out + m * ldo, ldo);
}

void prop_rstd_avx2(int64_t M, int64_t R, int64_t C, const float* y, int64_t ldy,
                    const float* pwt, const float* pb, float eps, float* rstd) {
  if (M <= 0 || R <= 0 || C <= 0) return;
  float pb_sum = 0.0f;
  for (int64_t c = 0; c < C; ++c) pb_sum += pb[c];
  const __m256 vC = _mm256_set1_ps(float(C)), veps = _mm256_set1_ps(eps);
  const __m256 vpb_sum = _mm256_set1_ps(pb_sum), one = _mm256_set1_ps(1.0f);
  for (int64_t m0 = 0; m0 < M; m0 += kRstdTokens) {
    const int nt = M - m0 < kRstdTokens ? int(M - m0) : kRstdTokens;
    const float* ym[kRstdTokens];
    for (int t = 0; t < kRstdTokens; ++t) ym[t] = y + (m0 + (t < nt ? t : 0)) * ldy;
    for (int64_t d0 = 0; d0 < R; d0 += 8) {
      const __m256i mk = tail_mask(R - d0 < 8 ? R - d0 : 8);
      const float* w = pwt + d0;
      __m256 s[kRstdTokens], mean[kRstdTokens];
      for (int t = 0; t < kRstdTokens; ++t) s[t] = _mm256_setzero_ps();
      for (int64_t c = 0; c < C; ++c) {
        const __m256 wc = _mm256_maskload_ps(w + c * R, mk);
        for (int t = 0; t < kRstdTokens; ++t)
          s[t] = _mm256_fmadd_ps(_mm256_broadcast_ss(ym[t] + c), wc, s[t]);
      }
      for (int t = 0; t < kRstdTokens; ++t) {
        mean[t] = _mm256_div_ps(_mm256_add_ps(s[t], vpb_sum), vC);
        s[t] = _mm256_setzero_ps();
      }
      for (int64_t c = 0; c < C; ++c) {
        const __m256 wc = _mm256_maskload_ps(w + c * R, mk), pbc = _mm256_broadcast_ss(pb + c);
        for (int t = 0; t < kRstdTokens; ++t) {
          const __m256 dev =
              _mm256_fmadd_ps(_mm256_broadcast_ss(ym[t] + c), wc, _mm256_sub_ps(pbc, mean[t]));
          s[t] = _mm256_fmadd_ps(dev, dev, s[t]);
        }
      }
      for (int t = 0; t < nt; ++t) {
        const __m256 var = _mm256_add_ps(_mm256_div_ps(s[t], vC), veps);
        _mm256_maskstore_ps(rstd + (m0 + t) * R + d0, mk,
                            _mm256_div_ps(one, _mm256_sqrt_ps(var)));
      }
    }
  }
}

void scale_rows_avx2(int64_t rows, int64_t C, const float* src, const float* scale,
                     const float* e, float* const* dst) {
  const int64_t cfull = C / 8 * 8;
  const __m256i tm = tail_mask(C - cfull);
  for (int64_t t = 0; t < rows; ++t) {
    float* o = dst[t];
    if (!o) continue;
    const float* s = src + t * C;
    const __m256 vs = _mm256_set1_ps(scale[t]);
    for (int64_t c = 0; c < cfull; c += 8)
      _mm256_storeu_ps(o + c,
                       _mm256_fmadd_ps(_mm256_loadu_ps(s + c), vs, _mm256_loadu_ps(e + c)));
    if (cfull < C)
      _mm256_maskstore_ps(o + cfull, tm,
                          _mm256_fmadd_ps(_mm256_maskload_ps(s + cfull, tm), vs,
                                          _mm256_maskload_ps(e + cfull, tm)));
  }
}

#endif

}  // namespace cpu
}  // namespace edgevit
