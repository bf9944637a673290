// AVX2 + FMA micro-kernels of edgevit::lgl_fused (contract: lgl_fused_ukernels.h; readable
// reference: lgl_fused_scalar.cpp). Built with -mavx2 -mfma for this file only (setup.py,
// tests/native/Makefile); isa.cpp calls it only on CPUs that have AVX2 and FMA.
//
// Layout: B is packed in panels of nr = 8 columns (one ymm per packed row), the finest
// granularity the registers allow, since the workload's N are small (36, 48, 196, head dims
// 36/48); a tile still spans up to three adjacent panels.
//
// gemm tiling: C is computed in tiles of MR rows x NV panels (NV*8 columns), MR*NV ymm
// accumulators (named variables: GCC keeps an accumulator array in memory around the k loop),
// k ascending, one FMA per (row, panel, k) with the A element broadcast from memory. Panels go
// in groups of NV = 3 (MR <= 4: 12 accumulators + 3 B vectors + 1 broadcast = the 16 ymm
// registers); a rest of 4 panels goes 2 + 2 (NV = 2, MR <= 6, the classic 6 x 16 tile), a rest
// of 1 or 2 as one group (NV = 1: MR <= 12). The M rows of a group are split into
// ceil(M / MRmax) blocks of nearly equal height (M = 64, NV = 3 -> 16 blocks of 4; NV = 2 -> 11
// blocks of 6 or 5), each run by a template instantiation for that exact MR, so there is no
// partial row tile. 4 x 24 tiles beat pairs-only on the small shapes and reach close to the
// FMA peak on the large ones (docs/performance-notes.md).
//
// pack_weight_t: 8 x 8 blocks of W transposed in registers (unpack/shuffle/permute2f128).
//
// Invariants (no out-of-bounds access): A is read only at rows < M and columns < K; bias only
// at columns < N (vmaskmovps loads, which do not fault on masked-off lanes); packed panels are
// read whole (they are zero-padded to 8 columns); C is written only at rows < M, columns < N
// (vmaskmovps store on the group's last vector); gemm_add reads R where it stores C (the same
// masks); gemm_scatter stores like C into its non-null destination rows, reading e with the
// same masks. softmax_rows / scale_rows touch only
// elements < N / < C of each row: the remainder of a row uses masked loads and stores.
// prop_rstd reads pwt rows with masked loads (R % 8 tail) and y only at rows < M.
// pack_weight_t reads W only at rows < N, columns < K (masked loads) and writes only its panels.
//
// Numerics: softmax uses our own exp (Cephes-style: round(x * log2 e) range reduction, degree-5
// polynomial; 2^n applied as two exact power-of-two factors so results down to the denormal
// range and overflow to inf are right; NaN stays NaN; about 1 ulp). Where the scalar reference
// rounds an intermediate (s * scale before subtracting the max) so do we: an empty asm barrier keeps the compiler from contracting the multiply into an FMA, which
// would change results well beyond rounding for large inputs.
//
// Only intrinsics and plain C in this file: no std:: templates/inline functions, whose
// AVX2-compiled copies the linker could pick for callers on CPUs without AVX2.
#include "gemm_simd.h"
#include "lgl_fused_ukernels.h"
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

constexpr int kNR = 8;
constexpr int kMaxNV = 3;

// Rounds v here: stops the compiler from fusing the producing multiply into a later add.
static inline __m256 opaque(__m256 v) {
  __asm__("" : "+x"(v));
  return v;
}

static inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// ---------------------------------------------------------------------------------------------
// gemm

using namespace gemm_simd;  // the driver (gemm_ep) and Epilogue of these tiles

// What the tiles of one panel group share: the bias rows of its nv vectors and the valid columns
// of the last one (> 8: all).
struct Avx2Group {
  __m256 init[kMaxNV];
  int64_t nlast;
};

// Epilogue EP on the accumulator v of columns [0, 8) at c (r: the same columns of R; s, ev:
// kScatter's row scale and the columns' e); lanes outside `m` are not stored, so R and e are
// read only where they are set.
template <int EP>
static inline __attribute__((always_inline)) __m256 epilogue(__m256 v, const float* r,
                                                             __m256i m, __m256 s,
                                                             const float* ev) {
  if constexpr (EP == kGelu) return gelu256(v);
  if constexpr (EP == kAddR) return _mm256_add_ps(v, _mm256_maskload_ps(r, m));
  if constexpr (EP == kScatter) return _mm256_fmadd_ps(v, s, _mm256_maskload_ps(ev, m));
  return v;
}

// C[0:MR, 0:NV*8) = init + A[0:MR, 0:K) * B, B = NV panels of [K, 8], ps floats apart.
// Only the first nlast columns of the last vector are stored (the mask is made after the k
// loop: all 16 ymm registers are busy in it). The accumulators are named variables
// (c<row>_<vector>), not an array: GCC keeps such an array in memory outside the k loop,
// costing a spill and reload of every accumulator per tile.
#define EDGEVIT_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
template <int MR, int NV, int EP>
void tile(int64_t K, const float* __restrict A, int64_t lda, const float* __restrict B,
          int64_t ps, const Avx2Group& g, float* __restrict C, int64_t ldc, const GemmEpArgs& ep,
          const char* pf, int64_t pf_step) {
  static_assert(MR >= 1 && MR <= 12 && NV >= 1 && NV <= 3, "tile shape");
  const __m256* init = g.init;
  const int64_t nlast = g.nlast;
  const __m256 i0 = init[0], i1 = NV > 1 ? init[1] : i0, i2 = NV > 2 ? init[2] : i0;
#define EDGEVIT_DECL(r) __m256 c##r##_0 = i0, c##r##_1 = i1, c##r##_2 = i2;
  EDGEVIT_ROWS(EDGEVIT_DECL)
#undef EDGEVIT_DECL
  const float* b = B;
  for (int64_t k = 0; k < K; ++k, b += kNR) {
    _mm_prefetch(pf + k * pf_step, _MM_HINT_T1);  // the next panel group (GroupPrefetch)
    const __m256 b0 = _mm256_loadu_ps(b);
    const __m256 b1 = NV > 1 ? _mm256_loadu_ps(b + ps) : b0;
    const __m256 b2 = NV > 2 ? _mm256_loadu_ps(b + 2 * ps) : b0;
#define EDGEVIT_FMA(r)                                                    \
    if constexpr (MR > r) {                                              \
      const __m256 a = _mm256_set1_ps(A[r * lda + k]);                   \
      c##r##_0 = _mm256_fmadd_ps(a, b0, c##r##_0);                       \
      if constexpr (NV > 1) c##r##_1 = _mm256_fmadd_ps(a, b1, c##r##_1); \
      if constexpr (NV > 2) c##r##_2 = _mm256_fmadd_ps(a, b2, c##r##_2); \
    }
    EDGEVIT_ROWS(EDGEVIT_FMA)
#undef EDGEVIT_FMA
  }
  const __m256i last = tail_mask(nlast);
  const __m256i full = tail_mask(kNR);
#define EDGEVIT_STORE(r)                                                              \
  if constexpr (MR > r) {                                                            \
    float* c = EP == kScatter ? ep.dst[r] : C + r * ldc;                             \
    if (EP == kScatter && c) c += ep.n0;                                             \
    const float* rr = EP == kAddR ? ep.R + r * ep.ldr : c;                           \
    const float* ev = EP == kScatter ? ep.e : c;                                     \
    const __m256 s = EP == kScatter ? _mm256_set1_ps(ep.scale[r]) : i0;              \
    if (EP != kScatter || c) {                                                       \
      if constexpr (NV == 1)                                                         \
        _mm256_maskstore_ps(c, last, epilogue<EP>(c##r##_0, rr, last, s, ev));       \
      if constexpr (NV == 2) {                                                       \
        _mm256_storeu_ps(c, epilogue<EP>(c##r##_0, rr, full, s, ev));                \
        _mm256_maskstore_ps(c + kNR, last,                                           \
                            epilogue<EP>(c##r##_1, rr + kNR, last, s, ev + kNR));    \
      }                                                                              \
      if constexpr (NV == 3) {                                                       \
        _mm256_storeu_ps(c, epilogue<EP>(c##r##_0, rr, full, s, ev));                \
        _mm256_storeu_ps(c + kNR, epilogue<EP>(c##r##_1, rr + kNR, full, s, ev + kNR)); \
        _mm256_maskstore_ps(c + 2 * kNR, last,                                       \
                            epilogue<EP>(c##r##_2, rr + 2 * kNR, last, s, ev + 2 * kNR)); \
      }                                                                              \
    }                                                                                \
  }
  EDGEVIT_ROWS(EDGEVIT_STORE)
#undef EDGEVIT_STORE
}
#undef EDGEVIT_ROWS

// Tiles<EP>::all[nv][mr]: the tile of mr rows x nv panels with epilogue EP.
template <int EP>
struct Tiles {
  static constexpr TileFn<Avx2Group> t1[] = {
      nullptr,         tile<1, 1, EP>,  tile<2, 1, EP>,  tile<3, 1, EP>, tile<4, 1, EP>,
      tile<5, 1, EP>,  tile<6, 1, EP>,  tile<7, 1, EP>,  tile<8, 1, EP>, tile<9, 1, EP>,
      tile<10, 1, EP>, tile<11, 1, EP>, tile<12, 1, EP>};
  static constexpr TileFn<Avx2Group> t2[] = {nullptr,        tile<1, 2, EP>, tile<2, 2, EP>,
                                  tile<3, 2, EP>, tile<4, 2, EP>, tile<5, 2, EP>,
                                  tile<6, 2, EP>};
  static constexpr TileFn<Avx2Group> t3[] = {nullptr, tile<1, 3, EP>, tile<2, 3, EP>, tile<3, 3, EP>,
                                  tile<4, 3, EP>};
  static constexpr const TileFn<Avx2Group>* all[kMaxNV + 1] = {nullptr, t1, t2, t3};
};

// The micro-kernel of gemm_simd.h's driver. Panels go in groups of NV = 3 (MR <= 4: 12
// accumulators + 3 B vectors + 1 broadcast = the 16 ymm registers); a rest of 4 panels goes
// 2 + 2 (NV = 2, MR <= 6, the classic 6 x 16 tile), a rest of 1 or 2 as one group (NV = 1:
// MR <= 12).
struct Avx2Gemm {
  static constexpr int kNR = 8, kMaxNV = 3;
  static constexpr int kMRMax[kMaxNV + 1] = {0, 12, 6, 4};
  using Group = Avx2Group;
  static Group group(const float* bias, int64_t n0, int nv, int64_t nlast) {
    Group g;
    g.nlast = nlast;
    const __m256i full = tail_mask(8), last = tail_mask(nlast);
    for (int v = 0; v < nv; ++v)
      g.init[v] = bias ? _mm256_maskload_ps(bias + n0 + v * kNR, v == nv - 1 ? last : full)
                       : _mm256_setzero_ps();
    return g;
  }
  template <int EP>
  static const TileFn<Avx2Group>* tiles(int nv) {
    return Tiles<EP>::all[nv];
  }
};


// ---------------------------------------------------------------------------------------------
// pack_weight_t: panels of W^T, 8 x 8 blocks transposed in registers

// out[j] = column j of the 8 x 8 block r (r[i] = row i).
static inline void transpose8(const __m256 (&r)[8], __m256 (&out)[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // u[4g + c], lane l: column 4l + c of rows 4g..4g+3.
  for (int g = 0; g < 2; ++g) {
    u[4 * g + 0] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
    u[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
    u[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    u[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
  }
  for (int c = 0; c < 4; ++c) {
    out[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
    out[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
  }
}

// Panel p, row k of dst = W[p*8 + j, k] for j < 8 (zero for rows >= N). Reads W only at rows
// < N and columns < K (masked loads for the last K % 8 columns).
void pack_weight_t_avx2(const float* w, int64_t N, int64_t K, int64_t ldw, int64_t p0,
                        int64_t p1, float* dst) {
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t n0 = p * kNR, nn = N - n0 < kNR ? N - n0 : kNR;
    float* d = dst + p * K * kNR;
    int64_t k = 0;
    if (nn == kNR) {  // full panel, full 8 x 8 blocks: everything unrolled, in registers
      for (; k + 8 <= K; k += 8) {
        __m256 r[8], out[8];
        for (int j = 0; j < 8; ++j) r[j] = _mm256_loadu_ps(w + (n0 + j) * ldw + k);
        transpose8(r, out);
        for (int t = 0; t < 8; ++t) _mm256_storeu_ps(d + (k + t) * kNR, out[t]);
      }
    }
    for (; k < K; k += 8) {
      const int64_t kk = K - k < 8 ? K - k : 8;
      const __m256i m = tail_mask(kk);
      __m256 r[8], out[8];
      for (int64_t j = 0; j < 8; ++j)
        r[j] = j < nn ? _mm256_maskload_ps(w + (n0 + j) * ldw + k, m) : _mm256_setzero_ps();
      transpose8(r, out);
      for (int64_t t = 0; t < kk; ++t) _mm256_storeu_ps(d + (k + t) * kNR, out[t]);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// softmax

void softmax_rows_avx2(int64_t M, int64_t N, float scale, float* S, int64_t ld) {
  if (N <= 0) return;
  const int64_t nfull = N / 8 * 8;
  const bool has_tail = nfull < N;
  const __m256i tm = tail_mask(N - nfull);
  const __m256 tmf = _mm256_castsi256_ps(tm);
  const __m256 vscale = _mm256_set1_ps(scale), ninf = _mm256_set1_ps(-INFINITY);
  for (int64_t m = 0; m < M; ++m) {
    float* s = S + m * ld;
    // max of s * scale. A NaN may or may not win here; either way every output is NaN, since
    // exp(NaN - max) enters the sum, as in the scalar reference.
    __m256 vmax = ninf;
    for (int64_t j = 0; j < nfull; j += 8)
      vmax = _mm256_max_ps(vmax, _mm256_mul_ps(_mm256_loadu_ps(s + j), vscale));
    if (has_tail) {
      const __m256 x = _mm256_mul_ps(_mm256_maskload_ps(s + nfull, tm), vscale);
      vmax = _mm256_max_ps(vmax, _mm256_blendv_ps(ninf, x, tmf));
    }
    const __m256 vmx = _mm256_set1_ps(hmax(vmax));
    // s = exp(s * scale - max) (s * scale rounded first, as the scalar stores it), sum.
    __m256 vsum = _mm256_setzero_ps();
    for (int64_t j = 0; j < nfull; j += 8) {
      const __m256 x = opaque(_mm256_mul_ps(_mm256_loadu_ps(s + j), vscale));
      const __m256 e = exp256(_mm256_sub_ps(x, vmx));
      _mm256_storeu_ps(s + j, e);
      vsum = _mm256_add_ps(vsum, e);
    }
    if (has_tail) {
      const __m256 x = opaque(_mm256_mul_ps(_mm256_maskload_ps(s + nfull, tm), vscale));
      const __m256 e = _mm256_and_ps(exp256(_mm256_sub_ps(x, vmx)), tmf);
      _mm256_maskstore_ps(s + nfull, tm, e);
      vsum = _mm256_add_ps(vsum, e);
    }
    const __m256 vinv = _mm256_set1_ps(1.0f / hsum(vsum));
    for (int64_t j = 0; j < nfull; j += 8)
      _mm256_storeu_ps(s + j, _mm256_mul_ps(_mm256_loadu_ps(s + j), vinv));
    if (has_tail)
      _mm256_maskstore_ps(s + nfull, tm, _mm256_mul_ps(_mm256_maskload_ps(s + nfull, tm), vinv));
  }
}

// ---------------------------------------------------------------------------------------------
// prop_rstd: offsets in lanes, tokens in groups of kRstdTokens (as in the AVX-512 kernel)

constexpr int kRstdTokens = 4;

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

// ---------------------------------------------------------------------------------------------
// scale_rows

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

const LglUKernels<float> kTable{"avx2",
                                kNR,
                                gemm<Avx2Gemm>,
                                softmax_rows_avx2,
                                prop_rstd_avx2,
                                scale_rows_avx2,
                                pack_weight_t_avx2,
                                gemm_gelu<Avx2Gemm>,
                                gemm_add<Avx2Gemm>,
                                gemm_scatter<Avx2Gemm>};

}  // namespace

const LglUKernels<float>* avx2_ukernels() { return &kTable; }

#else

const LglUKernels<float>* avx2_ukernels() { return nullptr; }

#endif

}  // namespace cpu
}  // namespace edgevit
