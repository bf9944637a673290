// AVX-512 micro-kernels of edgevit::lgl_fused (contract: lgl_fused_ukernels.h; readable reference:
// lgl_fused_scalar.cpp). Built with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma for this file
// only (setup.py, tests/native/Makefile); isa.cpp calls it only on CPUs that have those features.
//
// Layout: B is packed in panels of nr = 16 columns (one zmm per packed row). nr = 16 rather than
// 32 because the workload's N are small (36, 48, 196, head dims 36/48): 16-column granularity
// wastes at most 15 lanes per gemm, and a tile may still span several adjacent panels.
//
// gemm tiling: C is computed in tiles of MR rows x NV panels (NV*16 columns), MR*NV zmm
// accumulators (named variables: GCC keeps an accumulator array this large in memory around
// the k loop), k ascending, one FMA per (row, panel, k) with the A element broadcast from memory.
// Panels go in groups of NV = 3 (MR <= 9: 27 accumulators + 3 B vectors + 1 broadcast of the 32
// zmm registers); a rest of 4 panels goes 2 + 2 (NV = 2, MR <= 12), a rest of 1 or 2 as one
// group (NV = 1: MR <= 14). The M rows of a group are split into ceil(M / MRmax) blocks of
// nearly equal height (M = 64, NV = 3 -> 8 blocks of 8; M = 49 -> 9 + 5 x 8), each run by a
// template instantiation for that exact MR, so there is no partial row tile. NV = 3 beats
// pairs-only (14 x 32) clearly and comes near the FMA peak on the large shapes
// (docs/performance-notes.md).
//
// pack_weight_t: 16 x 16 blocks of W transposed in registers (unpack/shuffle/shuffle_f32x4).
//
// Invariants (no out-of-bounds access): A is read only at rows < M and columns < K; bias only at
// columns < N (masked loads, which do not fault on masked-off lanes); packed panels are read
// whole (they are zero-padded to 16 columns); C is written only at rows < M, columns < N
// (masked store on the group's last vector); gemm_add reads R where it stores C (the same
// masks); gemm_scatter stores like C into its non-null destination rows, reading e with the
// same masks. softmax_rows touches only elements < N of each row:
// the remainder of a row is handled with masked loads and stores. prop_rstd reads pwt rows
// with masked loads (R % 16 tail) and y only at rows < M (a short token group repeats its
// first row); scale_rows masks its channel tail. pack_weight_t reads W only at rows < N,
// columns < K (masked loads) and writes only its panels.
//
// Numerics: softmax uses our own exp (Cephes-style: round(x * log2 e) range reduction, degree-5
// polynomial, exact 2^n via vscalefps, so underflow to denormals/0 and NaN are right; about 1 ulp).
// Where the scalar reference rounds an intermediate (s * scale before subtracting the max) so do
// we: an empty asm barrier keeps the compiler from contracting the multiply into an FMA, which
// would change results well beyond rounding for large inputs.
//
// Only intrinsics and plain C in this file: no std:: templates/inline functions, whose
// AVX-512-compiled copies the linker could pick for callers on CPUs without AVX-512.
#include "gemm_simd.h"
#include "lgl_fused_ukernels.h"
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

constexpr int kNR = 16;
constexpr int kMaxNV = 3;

// Rounds v here: stops the compiler from fusing the producing multiply into a later add.
static inline __m512 opaque(__m512 v) {
  __asm__("" : "+v"(v));
  return v;
}

// ---------------------------------------------------------------------------------------------
// gemm

using namespace gemm_simd;  // the driver (gemm_ep) and Epilogue of these tiles

// What the tiles of one panel group share: the bias rows of its nv vectors and the lanes of the
// last one.
struct Avx512Group {
  __m512 init[kMaxNV];
  __mmask16 last;
};

// Epilogue EP on the accumulator v of columns [0, 16) at c (r: the same columns of R; s, ev:
// kScatter's row scale and the columns' e); lanes outside `m` are not stored, so R and e are
// read only where they are set.
template <int EP>
static inline __attribute__((always_inline)) __m512 epilogue(__m512 v, const float* r,
                                                             __mmask16 m, __m512 s,
                                                             const float* ev) {
  if constexpr (EP == kGelu) return gelu512(v);
  if constexpr (EP == kAddR) return _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, r));
  if constexpr (EP == kScatter) return _mm512_fmadd_ps(v, s, _mm512_maskz_loadu_ps(m, ev));
  return v;
}

// C[0:MR, 0:NV*16) = init + A[0:MR, 0:K) * B, B = NV panels of [K, 16], ps floats apart.
// Only the lanes of `last` are stored of the last vector. The accumulators are named variables
// (c<row>_<vector>), not an array: GCC keeps an array this large (up to 1.8 KB) in memory
// outside the k loop, costing a spill and reload of every accumulator per tile.
#define EDGEVIT_ROWS(X) \
  X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13)
template <int MR, int NV, int EP>
void tile(int64_t K, const float* __restrict A, int64_t lda, const float* __restrict B,
          int64_t ps, const Avx512Group& g, float* __restrict C, int64_t ldc,
          const GemmEpArgs& ep, const char* pf, int64_t pf_step) {
  static_assert(MR >= 1 && MR <= 14 && NV >= 1 && NV <= 3, "tile shape");
  const __m512* init = g.init;
  const __mmask16 last = g.last;
  const __m512 i0 = init[0], i1 = NV > 1 ? init[1] : i0, i2 = NV > 2 ? init[2] : i0;
#define EDGEVIT_DECL(r) __m512 c##r##_0 = i0, c##r##_1 = i1, c##r##_2 = i2;
  EDGEVIT_ROWS(EDGEVIT_DECL)
#undef EDGEVIT_DECL
  const float* b = B;
  for (int64_t k = 0; k < K; ++k, b += kNR) {
    _mm_prefetch(pf + k * pf_step, _MM_HINT_T1);  // the next panel group (GroupPrefetch)
    const __m512 b0 = _mm512_loadu_ps(b);
    const __m512 b1 = NV > 1 ? _mm512_loadu_ps(b + ps) : b0;
    const __m512 b2 = NV > 2 ? _mm512_loadu_ps(b + 2 * ps) : b0;
#define EDGEVIT_FMA(r)                                                 \
    if constexpr (MR > r) {                                           \
      const __m512 a = _mm512_set1_ps(A[r * lda + k]);                \
      c##r##_0 = _mm512_fmadd_ps(a, b0, c##r##_0);                    \
      if constexpr (NV > 1) c##r##_1 = _mm512_fmadd_ps(a, b1, c##r##_1); \
      if constexpr (NV > 2) c##r##_2 = _mm512_fmadd_ps(a, b2, c##r##_2); \
    }
    EDGEVIT_ROWS(EDGEVIT_FMA)
#undef EDGEVIT_FMA
  }
#define EDGEVIT_STORE(r)                                                              \
  if constexpr (MR > r) {                                                            \
    float* c = EP == kScatter ? ep.dst[r] : C + r * ldc;                             \
    if (EP == kScatter && c) c += ep.n0;                                             \
    const float* rr = EP == kAddR ? ep.R + r * ep.ldr : c;                           \
    const float* ev = EP == kScatter ? ep.e : c;                                     \
    const __m512 s = EP == kScatter ? _mm512_set1_ps(ep.scale[r]) : i0;              \
    const __mmask16 full = 0xFFFF;                                                   \
    if (EP != kScatter || c) {                                                       \
      if constexpr (NV == 1)                                                         \
        _mm512_mask_storeu_ps(c, last, epilogue<EP>(c##r##_0, rr, last, s, ev));     \
      if constexpr (NV == 2) {                                                       \
        _mm512_storeu_ps(c, epilogue<EP>(c##r##_0, rr, full, s, ev));                \
        _mm512_mask_storeu_ps(c + kNR, last,                                         \
                              epilogue<EP>(c##r##_1, rr + kNR, last, s, ev + kNR));  \
      }                                                                              \
      if constexpr (NV == 3) {                                                       \
        _mm512_storeu_ps(c, epilogue<EP>(c##r##_0, rr, full, s, ev));                \
        _mm512_storeu_ps(c + kNR, epilogue<EP>(c##r##_1, rr + kNR, full, s, ev + kNR)); \
        _mm512_mask_storeu_ps(c + 2 * kNR, last,                                     \
                              epilogue<EP>(c##r##_2, rr + 2 * kNR, last, s,          \
                                           ev + 2 * kNR));                           \
      }                                                                              \
    }                                                                                \
  }
  EDGEVIT_ROWS(EDGEVIT_STORE)
#undef EDGEVIT_STORE
}
#undef EDGEVIT_ROWS

// Tiles<EP>::all[nv][mr]: the tile of mr rows x nv panels with epilogue EP.
#define EDGEVIT_T(NV) tile<1, NV, EP>, tile<2, NV, EP>, tile<3, NV, EP>, tile<4, NV, EP>, \
                      tile<5, NV, EP>, tile<6, NV, EP>, tile<7, NV, EP>, tile<8, NV, EP>, \
                      tile<9, NV, EP>
template <int EP>
struct Tiles {
  static constexpr TileFn<Avx512Group> t1[] = {nullptr, EDGEVIT_T(1), tile<10, 1, EP>, tile<11, 1, EP>,
                                  tile<12, 1, EP>, tile<13, 1, EP>, tile<14, 1, EP>};
  static constexpr TileFn<Avx512Group> t2[] = {nullptr, EDGEVIT_T(2), tile<10, 2, EP>, tile<11, 2, EP>,
                                  tile<12, 2, EP>, tile<13, 2, EP>, tile<14, 2, EP>};
  static constexpr TileFn<Avx512Group> t3[] = {nullptr, EDGEVIT_T(3)};
  static constexpr const TileFn<Avx512Group>* all[kMaxNV + 1] = {nullptr, t1, t2, t3};
};
#undef EDGEVIT_T

// The micro-kernel of gemm_simd.h's driver. Panels go in groups of NV = 3 (MR <= 9: 27
// accumulators + 3 B vectors + 1 broadcast of the 32 zmm registers); a rest of 4 panels goes
// 2 + 2 (NV = 2, MR <= 12), a rest of 1 or 2 as one group (NV = 1: MR <= 14).
struct Avx512Gemm {
  static constexpr int kNR = 16, kMaxNV = 3;
  static constexpr int kMRMax[kMaxNV + 1] = {0, 14, 12, 9};
  using Group = Avx512Group;
  static Group group(const float* bias, int64_t n0, int nv, int64_t nlast) {
    Group g;
    g.last = tail_mask(nlast);
    for (int v = 0; v < nv; ++v) {
      const __mmask16 m = v == nv - 1 ? g.last : __mmask16(0xFFFF);
      g.init[v] = bias ? _mm512_maskz_loadu_ps(m, bias + n0 + v * kNR) : _mm512_setzero_ps();
    }
    return g;
  }
  template <int EP>
  static const TileFn<Group>* tiles(int nv) {
    return Tiles<EP>::all[nv];
  }
};

// ---------------------------------------------------------------------------------------------
// pack_weight_t: panels of W^T, 16 x 16 blocks transposed in registers

// out[j] = column j of the 16 x 16 block r (r[i] = row i): unpack / shuffle within 128-bit lanes
// gives 4 x 4 blocks, two rounds of 128-bit lane shuffles place them.
static inline void transpose16(const __m512 (&r)[16], __m512 (&out)[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // u[4g + c], lane l: column 4l + c of rows 4g..4g+3.
  for (int g = 0; g < 4; ++g) {
    u[4 * g + 0] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
    u[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
    u[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    u[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
  }
  // out[4l + c], lane g = u[4g + c], lane l.
  for (int c = 0; c < 4; ++c) {
    const __m512 x0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44);
    const __m512 x1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE);
    const __m512 y0 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44);
    const __m512 y1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xEE);
    out[c] = _mm512_shuffle_f32x4(x0, y0, 0x88);
    out[4 + c] = _mm512_shuffle_f32x4(x0, y0, 0xDD);
    out[8 + c] = _mm512_shuffle_f32x4(x1, y1, 0x88);
    out[12 + c] = _mm512_shuffle_f32x4(x1, y1, 0xDD);
  }
}

// Panel p, row k of dst = W[p*16 + j, k] for j < 16 (zero for rows >= N). Reads W only at rows
// < N and columns < K (masked loads for the last K % 16 columns).
void pack_weight_t_avx512(const float* w, int64_t N, int64_t K, int64_t ldw, int64_t p0,
                          int64_t p1, float* dst) {
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t n0 = p * kNR, nn = N - n0 < kNR ? N - n0 : kNR;
    float* d = dst + p * K * kNR;
    int64_t k = 0;
    if (nn == kNR) {  // full panel, full 16 x 16 blocks: everything unrolled, in registers
      for (; k + 16 <= K; k += 16) {
        __m512 r[16], out[16];
        for (int j = 0; j < 16; ++j) r[j] = _mm512_loadu_ps(w + (n0 + j) * ldw + k);
        transpose16(r, out);
        for (int t = 0; t < 16; ++t) _mm512_storeu_ps(d + (k + t) * kNR, out[t]);
      }
    }
    for (; k < K; k += 16) {
      const int64_t kk = K - k < 16 ? K - k : 16;
      const __mmask16 m = tail_mask(kk);
      __m512 r[16], out[16];
      for (int64_t j = 0; j < 16; ++j)
        r[j] = j < nn ? _mm512_maskz_loadu_ps(m, w + (n0 + j) * ldw + k) : _mm512_setzero_ps();
      transpose16(r, out);
      for (int64_t t = 0; t < kk; ++t) _mm512_storeu_ps(d + (k + t) * kNR, out[t]);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// softmax

void softmax_rows_avx512(int64_t M, int64_t N, float scale, float* S, int64_t ld) {
  if (N <= 0) return;
  const int64_t nfull = N / 16 * 16;
  const __mmask16 tm = tail_mask(N - nfull);
  const __m512 vscale = _mm512_set1_ps(scale);
  for (int64_t m = 0; m < M; ++m) {
    float* s = S + m * ld;
    // max of s * scale. A NaN may or may not win here; either way every output is NaN, since
    // exp(NaN - max) enters the sum, as in the scalar reference.
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int64_t j = 0; j < nfull; j += 16)
      vmax = _mm512_max_ps(vmax, _mm512_mul_ps(_mm512_loadu_ps(s + j), vscale));
    if (tm) {
      const __m512 x = _mm512_mul_ps(_mm512_maskz_loadu_ps(tm, s + nfull), vscale);
      vmax = _mm512_mask_max_ps(vmax, tm, vmax, x);
    }
    const __m512 vmx = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
    // s = exp(s * scale - max) (s * scale rounded first, as the scalar stores it), sum.
    __m512 vsum = _mm512_setzero_ps();
    for (int64_t j = 0; j < nfull; j += 16) {
      const __m512 x = opaque(_mm512_mul_ps(_mm512_loadu_ps(s + j), vscale));
      const __m512 e = exp512(_mm512_sub_ps(x, vmx));
      _mm512_storeu_ps(s + j, e);
      vsum = _mm512_add_ps(vsum, e);
    }
    if (tm) {
      const __m512 x = opaque(_mm512_mul_ps(_mm512_maskz_loadu_ps(tm, s + nfull), vscale));
      const __m512 e = exp512(_mm512_sub_ps(x, vmx));
      _mm512_mask_storeu_ps(s + nfull, tm, e);
      vsum = _mm512_mask_add_ps(vsum, tm, vsum, e);
    }
    const __m512 vinv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(vsum));
    for (int64_t j = 0; j < nfull; j += 16)
      _mm512_storeu_ps(s + j, _mm512_mul_ps(_mm512_loadu_ps(s + j), vinv));
    if (tm)
      _mm512_mask_storeu_ps(s + nfull, tm,
                            _mm512_mul_ps(_mm512_maskz_loadu_ps(tm, s + nfull), vinv));
  }
}

// ---------------------------------------------------------------------------------------------
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

// ---------------------------------------------------------------------------------------------
// scale_rows

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

const LglUKernels<float> kTable{"avx512",
                                kNR,
                                gemm<Avx512Gemm>,
                                softmax_rows_avx512,
                                prop_rstd_avx512,
                                scale_rows_avx512,
                                pack_weight_t_avx512,
                                gemm_gelu<Avx512Gemm>,
                                gemm_add<Avx512Gemm>,
                                gemm_scatter<Avx512Gemm>};

}  // namespace

const LglUKernels<float>* avx512_ukernels() { return &kTable; }

#else

const LglUKernels<float>* avx512_ukernels() { return nullptr; }

#endif

}  // namespace cpu
}  // namespace edgevit
