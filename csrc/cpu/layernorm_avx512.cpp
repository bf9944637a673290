// AVX-512 LayerNorm micro-kernels (contract: layernorm.h; readable reference:
// layernorm_scalar.cpp): layernorm_rows, and lgl_fused's folded LayerNorm (prop_rstd,
// scale_rows). Built with the AVX-512 flags for this file only (setup.py, tests/native/Makefile);
// isa.cpp selects it only on CPUs that have them.
//
// Invariants: layernorm_rows and scale_rows touch only elements < C of each row, prop_rstd reads
// pwt rows only at offsets < R and y only at rows < M (the tails through masked or partial loads
// and stores). Row statistics are summed in 16 lanes, then reduced.
//
// Only intrinsics and plain C in this file (ODR hazard of per-ISA files, see softmax_avx512.cpp).
#include "gemm.h"  // pack_weight_t_avx512: prop_rstd transposes token blocks with it
#include "layernorm.h"
#include "vmath_avx512.h"

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__FMA__)
#define EDGEVIT_HAVE_AVX512 1
#include <immintrin.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#endif

namespace edgevit {
namespace cpu {

#if defined(EDGEVIT_HAVE_AVX512)
namespace {

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

// prop_rstd: offsets in lanes, tokens in groups of kRstdTokens
//
// Lane l of a vector is offset d0 + l (R % 16 lanes masked in the last chunk); tokens go in
// groups of 4 sharing each loaded pwt row, with one accumulator each, so four independent
// add chains hide the FMA latency. Pass 1 sums y * pw (pb's sum is added once, outside the
// loop), pass 2 sums (y * pw + (pb - mean))^2, the deviation formed by one FMA.
constexpr int kRstdTokens = 4;

// R = 4 (r = 2), where offsets in lanes would fill 4 of 16: lanes 4t + d hold 4 tokens t x 4
// offsets d. A block of 16 tokens is transposed first (pack_weight_t: yT[c][t]), so token t's
// y[c] reaches its 4 lanes with one permute of the row yT[c]; pwt row c is broadcast to the 4
// lane groups. Four vectors (16 tokens) in flight, as in the general kernel. C <= kRstd4MaxC
// (the transposed block lives on the stack).
constexpr int64_t kRstd4MaxC = 512;

void prop_rstd4_avx512(int64_t M, int64_t C, const float* y, int64_t ldy, const float* pwt,
                       float pb_sum, const float* pb, float eps, float* rstd) {
  alignas(64) float yT[kRstd4MaxC * 16];
  const __m512 vC = _mm512_set1_ps(float(C)), veps = _mm512_set1_ps(eps);
  const __m512 vpb_sum = _mm512_set1_ps(pb_sum), one = _mm512_set1_ps(1.0f);
  __m512i idx[4];
  for (int g = 0; g < 4; ++g)
    idx[g] = _mm512_set_epi32(4 * g + 3, 4 * g + 3, 4 * g + 3, 4 * g + 3, 4 * g + 2, 4 * g + 2,
                              4 * g + 2, 4 * g + 2, 4 * g + 1, 4 * g + 1, 4 * g + 1, 4 * g + 1,
                              4 * g, 4 * g, 4 * g, 4 * g);
  for (int64_t m0 = 0; m0 < M; m0 += 16) {
    const int64_t nt = M - m0 < 16 ? M - m0 : 16;
    pack_weight_t_avx512(y + m0 * ldy, nt, C, ldy, 0, 1, yT);  // yT[c*16 + t], zero for t >= nt
    __m512 s[4], mean[4];
    for (int g = 0; g < 4; ++g) s[g] = _mm512_setzero_ps();
    for (int64_t c = 0; c < C; ++c) {
      const __m512 yc = _mm512_load_ps(yT + c * 16);
      const __m512 wc = _mm512_broadcast_f32x4(_mm_loadu_ps(pwt + c * 4));
      for (int g = 0; g < 4; ++g)
        s[g] = _mm512_fmadd_ps(_mm512_permutexvar_ps(idx[g], yc), wc, s[g]);
    }
    for (int g = 0; g < 4; ++g) {
      mean[g] = _mm512_div_ps(_mm512_add_ps(s[g], vpb_sum), vC);
      s[g] = _mm512_setzero_ps();
    }
    for (int64_t c = 0; c < C; ++c) {
      const __m512 yc = _mm512_load_ps(yT + c * 16);
      const __m512 wc = _mm512_broadcast_f32x4(_mm_loadu_ps(pwt + c * 4));
      const __m512 pbc = _mm512_set1_ps(pb[c]);
      for (int g = 0; g < 4; ++g) {
        const __m512 dev = _mm512_fmadd_ps(_mm512_permutexvar_ps(idx[g], yc), wc,
                                           _mm512_sub_ps(pbc, mean[g]));
        s[g] = _mm512_fmadd_ps(dev, dev, s[g]);
      }
    }
    for (int g = 0; g < 4 && 4 * g < nt; ++g) {
      const int64_t left = nt - 4 * g < 4 ? nt - 4 * g : 4;  // tokens of this vector
      const __m512 var = _mm512_add_ps(_mm512_div_ps(s[g], vC), veps);
      _mm512_mask_storeu_ps(rstd + (m0 + 4 * g) * 4, tail_mask(4 * left),
                            _mm512_div_ps(one, _mm512_sqrt_ps(var)));
    }
  }
}

// scale_rows

}  // namespace

void layernorm_rows_avx512(int64_t M, int64_t C, const float* x, int64_t ldx, float eps,
                           const float* w, const float* b, float* out, int64_t ldo) {
  int64_t m = 0;
  for (; m + kLnRows <= M; m += kLnRows)
    layernorm_group<kLnRows>(C, x + m * ldx, ldx, eps, w, b, out + m * ldo, ldo);
  for (; m < M; ++m) layernorm_group<1>(C, x + m * ldx, ldx, eps, w, b, out + m * ldo, ldo);
}

void prop_rstd_avx512(int64_t M, int64_t R, int64_t C, const float* y, int64_t ldy,
                      const float* pwt, const float* pb, float eps, float* rstd) {
  if (M <= 0 || R <= 0 || C <= 0) return;
  float pb_sum = 0.0f;
  for (int64_t c = 0; c < C; ++c) pb_sum += pb[c];
  if (R == 4 && C <= kRstd4MaxC) {
    prop_rstd4_avx512(M, C, y, ldy, pwt, pb_sum, pb, eps, rstd);
    return;
  }
  const __m512 vC = _mm512_set1_ps(float(C)), veps = _mm512_set1_ps(eps);
  const __m512 vpb_sum = _mm512_set1_ps(pb_sum), one = _mm512_set1_ps(1.0f);
  for (int64_t m0 = 0; m0 < M; m0 += kRstdTokens) {
    const int nt = M - m0 < kRstdTokens ? int(M - m0) : kRstdTokens;
    const float* ym[kRstdTokens];
    for (int t = 0; t < kRstdTokens; ++t) ym[t] = y + (m0 + (t < nt ? t : 0)) * ldy;
    for (int64_t d0 = 0; d0 < R; d0 += 16) {
      const __mmask16 mk = tail_mask(R - d0);
      const float* w = pwt + d0;
      __m512 s[kRstdTokens], mean[kRstdTokens];
      for (int t = 0; t < kRstdTokens; ++t) s[t] = _mm512_setzero_ps();
      for (int64_t c = 0; c < C; ++c) {
        const __m512 wc = _mm512_maskz_loadu_ps(mk, w + c * R);
        for (int t = 0; t < kRstdTokens; ++t)
          s[t] = _mm512_fmadd_ps(_mm512_set1_ps(ym[t][c]), wc, s[t]);
      }
      for (int t = 0; t < kRstdTokens; ++t) {
        mean[t] = _mm512_div_ps(_mm512_add_ps(s[t], vpb_sum), vC);
        s[t] = _mm512_setzero_ps();
      }
      for (int64_t c = 0; c < C; ++c) {
        const __m512 wc = _mm512_maskz_loadu_ps(mk, w + c * R), pbc = _mm512_set1_ps(pb[c]);
        for (int t = 0; t < kRstdTokens; ++t) {
          const __m512 dev =
              _mm512_fmadd_ps(_mm512_set1_ps(ym[t][c]), wc, _mm512_sub_ps(pbc, mean[t]));
          s[t] = _mm512_fmadd_ps(dev, dev, s[t]);
        }
      }
      for (int t = 0; t < nt; ++t) {
        const __m512 var = _mm512_add_ps(_mm512_div_ps(s[t], vC), veps);
        _mm512_mask_storeu_ps(rstd + (m0 + t) * R + d0, mk,
                              _mm512_div_ps(one, _mm512_sqrt_ps(var)));
      }
    }
  }
}

void scale_rows_avx512(int64_t rows, int64_t C, const float* src, const float* scale,
                       const float* e, float* const* dst) {
  const int64_t cfull = C / 16 * 16;
  const __mmask16 tm = tail_mask(C - cfull);
  for (int64_t t = 0; t < rows; ++t) {
    float* o = dst[t];
    if (!o) continue;
    const float* s = src + t * C;
    const __m512 vs = _mm512_set1_ps(scale[t]);
    for (int64_t c = 0; c < cfull; c += 16)
      _mm512_storeu_ps(o + c,
                       _mm512_fmadd_ps(_mm512_loadu_ps(s + c), vs, _mm512_loadu_ps(e + c)));
    if (tm)
      _mm512_mask_storeu_ps(o + cfull, tm,
                            _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tm, s + cfull), vs,
                                            _mm512_maskz_loadu_ps(tm, e + cfull)));
  }
}

#endif

}  // namespace cpu
}  // namespace edgevit
