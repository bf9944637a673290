// NEON (AArch64 Advanced SIMD) micro-kernels of edgevit::lgl_fused (contract:
// lgl_fused_ukernels.h; readable reference: lgl_fused_scalar.cpp). NEON is the aarch64 baseline,
// so this file needs no extra flags; on other architectures it compiles to a null table.
//
// Layout: B is packed in panels of nr = 8 columns (two q registers per packed row).
//
// gemm tiling: C is computed in tiles of MR <= 8 rows x 8 columns: 16 q accumulators, plus the
// A values of 4 consecutive k of each row in one q register (8) and the two B vectors (2): 26 of
// the 32 registers. The k loop goes by 4: one 16-byte load of A per row, then for each of the 4
// k one FMA by lane (fmla v.4s, v.4s, v.s[l]) per accumulator, k ascending; K % 4 leftover k
// use FMAs by a scalar. The M rows of a panel are split into ceil(M / 8) blocks of nearly equal
// height (M = 49 -> 7 x 7), each run by a template instantiation for that exact MR, so there is
// no partial row tile. Accumulators and A registers are named variables (GCC keeps such arrays
// in memory). MR = 8 x 8 columns keeps 2 B loads + 2 A loads per 16 FMAs.
//
// pack_weight_t: two 4 x 4 blocks of W (rows 0-3 and 4-7 of a panel) per 4 k, transposed in
// registers (trn1/trn2), stored as the two halves of 4 packed rows.
//
// Invariants (no out-of-bounds access): A is read only at rows < M and columns < K (the 4-wide
// loads only for k + 3 < K); bias only at columns < N; packed panels are read whole (they are
// zero-padded to 8 columns); C is written only at rows < M, columns < N (a partial last panel
// goes through a register-sized temporary; gemm_add reads R there with load_partial; gemm_scatter
// stores like C into its non-null destination rows and reads e like R).
// softmax_rows / scale_rows touch only elements < N /
// < C of each row: a row's last N % 4 elements go through a temporary; so do prop_rstd's last
// R % 4 offsets. pack_weight_t reads W only at rows < N, columns < K and writes only its panels.
//
// Numerics: softmax uses our own exp (Cephes-style: round(x * log2 e) range reduction, degree-5
// polynomial; 2^n applied as two exact power-of-two factors so results down to the denormal
// range and overflow to inf are right; NaN stays NaN; about 1 ulp). s * scale is rounded before
// subtracting the max, as in the scalar reference (an empty asm barrier keeps the compiler from
// contracting it into an FMA).
//
// Only intrinsics and plain C in this file: no std:: templates/inline functions (ODR hazard of
// per-ISA files, see lgl_fused_avx512.cpp).
#include "gemm_simd.h"
#include "lgl_fused_ukernels.h"
#include "vmath_neon.h"

#if defined(__aarch64__) && defined(__ARM_NEON)
#define EDGEVIT_HAVE_NEON 1
#include <arm_neon.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#endif

namespace edgevit {
namespace cpu {

#if defined(EDGEVIT_HAVE_NEON)
namespace {

constexpr int kNR = 8;
constexpr int kMRMax = 8;

// Rounds v here: stops the compiler from fusing the producing multiply into a later add.
static inline float32x4_t opaque(float32x4_t v) {
  __asm__("" : "+w"(v));
  return v;
}

// ---------------------------------------------------------------------------------------------
// gemm

using namespace gemm_simd;  // the driver (gemm_ep) and Epilogue of these tiles

// What the tiles of one panel (a group of one) share: its bias row and valid columns.
struct NeonGroup {
  float init[kNR];
  int64_t nlast;  // <= kNR
};

// Epilogue EP on the accumulator v of 4 columns whose first n (<= 4; none if n <= 0) are stored;
// r: the same columns of R; s, ev: kScatter's row scale and the columns' e. R and e are read
// only at stored columns.
template <int EP>
static inline __attribute__((always_inline)) float32x4_t epilogue(float32x4_t v, const float* r,
                                                                  int64_t n, float32x4_t s,
                                                                  const float* ev) {
  if constexpr (EP == kGelu) return gelu_neon4(v);
  if constexpr (EP == kAddR) return vaddq_f32(v, n >= 4 ? vld1q_f32(r) : load_partial(r, n));
  if constexpr (EP == kScatter)
    return vfmaq_f32(n >= 4 ? vld1q_f32(ev) : load_partial(ev, n), v, s);
  return v;
}

// C[0:MR, 0:nlast) = init + A[0:MR, 0:K) * B, B one panel [K, 8]. The accumulators c<row>_<half>
// and A registers a<row> are named variables, not arrays: GCC (-O2) keeps such arrays in memory.
#define EDGEVIT_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
// No software prefetch (ps, pf, pf_step unused): one panel per tile.
template <int MR, int EP>
void tile(int64_t K, const float* __restrict A, int64_t lda, const float* __restrict B,
          int64_t /*ps*/, const NeonGroup& g, float* __restrict C, int64_t ldc,
          const GemmEpArgs& ep, const char* /*pf*/, int64_t /*pf_step*/) {
  static_assert(MR >= 1 && MR <= kMRMax, "tile shape");
  const float* init = g.init;
  const int64_t nlast = g.nlast;
  const float32x4_t i0 = vld1q_f32(init), i1 = vld1q_f32(init + 4);
#define EDGEVIT_DECL(r) float32x4_t c##r##_0 = i0, c##r##_1 = i1;
  EDGEVIT_ROWS(EDGEVIT_DECL)
#undef EDGEVIT_DECL
  int64_t k = 0;
  for (; k + 4 <= K; k += 4) {
    // A[r, k:k+4) (only rows < MR are loaded).
#define EDGEVIT_LOADA(r) const float32x4_t a##r = MR > r ? vld1q_f32(A + r * lda + k) : i0;
    EDGEVIT_ROWS(EDGEVIT_LOADA)
#undef EDGEVIT_LOADA
    const float* b = B + k * kNR;
    // k + L: c<r> += B[k + L, 0:8] * A[r, k + L].
#define EDGEVIT_FMA_LANE(r, L)                                  \
    if constexpr (MR > r) {                                    \
      c##r##_0 = vfmaq_laneq_f32(c##r##_0, b0, a##r, L);       \
      c##r##_1 = vfmaq_laneq_f32(c##r##_1, b1, a##r, L);       \
    }
#define EDGEVIT_STEP(L)                                                                       \
    {                                                                                        \
      const float32x4_t b0 = vld1q_f32(b + L * kNR), b1 = vld1q_f32(b + L * kNR + 4);       \
      EDGEVIT_FMA_LANE(0, L) EDGEVIT_FMA_LANE(1, L) EDGEVIT_FMA_LANE(2, L)                   \
      EDGEVIT_FMA_LANE(3, L) EDGEVIT_FMA_LANE(4, L) EDGEVIT_FMA_LANE(5, L)                   \
      EDGEVIT_FMA_LANE(6, L) EDGEVIT_FMA_LANE(7, L)                                          \
    }
    EDGEVIT_STEP(0) EDGEVIT_STEP(1) EDGEVIT_STEP(2) EDGEVIT_STEP(3)
#undef EDGEVIT_STEP
#undef EDGEVIT_FMA_LANE
  }
  for (; k < K; ++k) {
    const float32x4_t b0 = vld1q_f32(B + k * kNR), b1 = vld1q_f32(B + k * kNR + 4);
#define EDGEVIT_FMA_N(r)                                       \
    if constexpr (MR > r) {                                   \
      const float a = A[r * lda + k];                         \
      c##r##_0 = vfmaq_n_f32(c##r##_0, b0, a);                \
      c##r##_1 = vfmaq_n_f32(c##r##_1, b1, a);                \
    }
    EDGEVIT_ROWS(EDGEVIT_FMA_N)
#undef EDGEVIT_FMA_N
  }
  // Row r's destination (kScatter: dst[r] + n0, or null: skipped), addend row and scale.
#define EDGEVIT_ROW_ARGS(r)                                                        \
  float* c = EP == kScatter ? ep.dst[r] : C + r * ldc;                            \
  if (EP == kScatter && c) c += ep.n0;                                            \
  const float* rr = EP == kAddR ? ep.R + r * ep.ldr : c;                          \
  const float* ev = EP == kScatter ? ep.e : c;                                    \
  const float32x4_t s = EP == kScatter ? vdupq_n_f32(ep.scale[r]) : i0;
  if (nlast == kNR) {
#define EDGEVIT_STORE(r)                                                          \
    if constexpr (MR > r) {                                                      \
      EDGEVIT_ROW_ARGS(r)                                                        \
      if (EP != kScatter || c) {                                                 \
        vst1q_f32(c, epilogue<EP>(c##r##_0, rr, 4, s, ev));                      \
        vst1q_f32(c + 4, epilogue<EP>(c##r##_1, rr + 4, 4, s, ev + 4));          \
      }                                                                          \
    }
    EDGEVIT_ROWS(EDGEVIT_STORE)
#undef EDGEVIT_STORE
  } else {
#define EDGEVIT_STORE_PART(r)                                                     \
    if constexpr (MR > r) {                                                      \
      EDGEVIT_ROW_ARGS(r)                                                        \
      if (EP != kScatter || c) {                                                 \
        float t[kNR];                                                            \
        vst1q_f32(t, epilogue<EP>(c##r##_0, rr, nlast, s, ev));                  \
        vst1q_f32(t + 4, epilogue<EP>(c##r##_1, rr + 4, nlast - 4, s, ev + 4));  \
        for (int64_t j = 0; j < nlast; ++j) c[j] = t[j];                         \
      }                                                                          \
    }
    EDGEVIT_ROWS(EDGEVIT_STORE_PART)
#undef EDGEVIT_STORE_PART
  }
#undef EDGEVIT_ROW_ARGS
}
#undef EDGEVIT_ROWS

// Tiles<EP>::all[mr]: the tile of mr rows with epilogue EP.
template <int EP>
struct Tiles {
  static constexpr TileFn<NeonGroup> all[kMRMax + 1] = {nullptr,       tile<1, EP>, tile<2, EP>,
                                             tile<3, EP>, tile<4, EP>, tile<5, EP>,
                                             tile<6, EP>, tile<7, EP>, tile<8, EP>};
};

// The micro-kernel of gemm_simd.h's driver: one panel (two q registers) by up to 8 rows per
// tile.
struct NeonGemm {
  static constexpr int kNR = 8, kMaxNV = 1;
  static constexpr int kMRMax[kMaxNV + 1] = {0, ::edgevit::cpu::kMRMax};
  using Group = NeonGroup;
  static Group group(const float* bias, int64_t n0, int /*nv*/, int64_t nlast) {
    Group g;
    g.nlast = nlast < kNR ? nlast : kNR;
    for (int64_t j = 0; j < kNR; ++j) g.init[j] = (bias && j < g.nlast) ? bias[n0 + j] : 0.f;
    return g;
  }
  template <int EP>
  static const TileFn<Group>* tiles(int /*nv*/) {
    return Tiles<EP>::all;
  }
};

// ---------------------------------------------------------------------------------------------
// pack_weight_t: panels of W^T, two 4 x 4 blocks per 4 k transposed in registers

// Columns of the 4 x 4 block (a, b, c, d = rows 0..3) into o0..o3.
static inline void transpose4(float32x4_t a, float32x4_t b, float32x4_t c, float32x4_t d,
                              float32x4_t (&o)[4]) {
  const float64x2_t t0 = vreinterpretq_f64_f32(vtrn1q_f32(a, b));  // a0 b0 a2 b2
  const float64x2_t t1 = vreinterpretq_f64_f32(vtrn2q_f32(a, b));  // a1 b1 a3 b3
  const float64x2_t t2 = vreinterpretq_f64_f32(vtrn1q_f32(c, d));  // c0 d0 c2 d2
  const float64x2_t t3 = vreinterpretq_f64_f32(vtrn2q_f32(c, d));  // c1 d1 c3 d3
  o[0] = vreinterpretq_f32_f64(vtrn1q_f64(t0, t2));
  o[1] = vreinterpretq_f32_f64(vtrn1q_f64(t1, t3));
  o[2] = vreinterpretq_f32_f64(vtrn2q_f64(t0, t2));
  o[3] = vreinterpretq_f32_f64(vtrn2q_f64(t1, t3));
}

// Panel p, row k of dst = W[p*8 + j, k] for j < 8 (zero for rows >= N). Reads W only at rows
// < N and columns < K (the last K % 4 columns one by one).
void pack_weight_t_neon(const float* w, int64_t N, int64_t K, int64_t ldw, int64_t p0,
                        int64_t p1, float* dst) {
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t n0 = p * kNR, nn = N - n0 < kNR ? N - n0 : kNR;
    float* d = dst + p * K * kNR;
    int64_t k = 0;
    for (; k + 4 <= K; k += 4) {
      float32x4_t r[8], lo[4], hi[4];
      for (int64_t j = 0; j < 8; ++j)
        r[j] = j < nn ? vld1q_f32(w + (n0 + j) * ldw + k) : vdupq_n_f32(0.f);
      transpose4(r[0], r[1], r[2], r[3], lo);
      transpose4(r[4], r[5], r[6], r[7], hi);
      for (int t = 0; t < 4; ++t) {
        vst1q_f32(d + (k + t) * kNR, lo[t]);
        vst1q_f32(d + (k + t) * kNR + 4, hi[t]);
      }
    }
    for (; k < K; ++k)
      for (int64_t j = 0; j < kNR; ++j) d[k * kNR + j] = j < nn ? w[(n0 + j) * ldw + k] : 0.f;
  }
}

// ---------------------------------------------------------------------------------------------
// softmax

void softmax_rows_neon(int64_t M, int64_t N, float scale, float* S, int64_t ld) {
  if (N <= 0) return;
  const int64_t nfull = N / 4 * 4, rem = N - nfull;
  const uint32x4_t tm = lanes_below(rem);
  const float32x4_t vscale = vdupq_n_f32(scale), ninf = vdupq_n_f32(-INFINITY);
  for (int64_t m = 0; m < M; ++m) {
    float* s = S + m * ld;
    // max of s * scale (fmax propagates NaN: then every output is NaN, as in the reference).
    float32x4_t vmax = ninf;
    for (int64_t j = 0; j < nfull; j += 4)
      vmax = vmaxq_f32(vmax, vmulq_f32(vld1q_f32(s + j), vscale));
    if (rem) {
      const float32x4_t x = vmulq_f32(load_partial(s + nfull, rem), vscale);
      vmax = vmaxq_f32(vmax, vbslq_f32(tm, x, ninf));
    }
    const float32x4_t vmx = vdupq_n_f32(vmaxvq_f32(vmax));
    // s = exp(s * scale - max) (s * scale rounded first, as the scalar stores it), sum.
    float32x4_t vsum = vdupq_n_f32(0.f);
    for (int64_t j = 0; j < nfull; j += 4) {
      const float32x4_t x = opaque(vmulq_f32(vld1q_f32(s + j), vscale));
      const float32x4_t e = exp_neon(vsubq_f32(x, vmx));
      vst1q_f32(s + j, e);
      vsum = vaddq_f32(vsum, e);
    }
    if (rem) {
      const float32x4_t x = opaque(vmulq_f32(load_partial(s + nfull, rem), vscale));
      const float32x4_t e = vbslq_f32(tm, exp_neon(vsubq_f32(x, vmx)), vdupq_n_f32(0.f));
      store_partial(s + nfull, rem, e);
      vsum = vaddq_f32(vsum, e);
    }
    const float32x4_t vinv = vdupq_n_f32(1.0f / vaddvq_f32(vsum));
    for (int64_t j = 0; j < nfull; j += 4) vst1q_f32(s + j, vmulq_f32(vld1q_f32(s + j), vinv));
    if (rem) store_partial(s + nfull, rem, vmulq_f32(load_partial(s + nfull, rem), vinv));
  }
}

// ---------------------------------------------------------------------------------------------
// prop_rstd: offsets in lanes, tokens in groups of kRstdTokens
//
// Lane l of a vector is offset d0 + l (the last R % 4 offsets through load_partial /
// store_partial); tokens go in groups of 4 sharing each loaded pwt row, one accumulator each,
// so four independent chains hide the FMA latency. Pass 1 sums y * pw (pb's sum added once),
// pass 2 sums (y * pw + (pb - mean))^2, the deviation formed by one FMA.
constexpr int kRstdTokens = 4;

void prop_rstd_neon(int64_t M, int64_t R, int64_t C, const float* y, int64_t ldy,
                    const float* pwt, const float* pb, float eps, float* rstd) {
  if (M <= 0 || R <= 0 || C <= 0) return;
  float pb_sum = 0.0f;
  for (int64_t c = 0; c < C; ++c) pb_sum += pb[c];
  const float32x4_t vC = vdupq_n_f32(float(C)), veps = vdupq_n_f32(eps);
  const float32x4_t vpb_sum = vdupq_n_f32(pb_sum), one = vdupq_n_f32(1.0f);
  for (int64_t m0 = 0; m0 < M; m0 += kRstdTokens) {
    const int nt = M - m0 < kRstdTokens ? int(M - m0) : kRstdTokens;
    const float* ym[kRstdTokens];
    for (int t = 0; t < kRstdTokens; ++t) ym[t] = y + (m0 + (t < nt ? t : 0)) * ldy;
    for (int64_t d0 = 0; d0 < R; d0 += 4) {
      const int64_t nd = R - d0 < 4 ? R - d0 : 4;
      const float* w = pwt + d0;
      float32x4_t s[kRstdTokens], mean[kRstdTokens];
      for (int t = 0; t < kRstdTokens; ++t) s[t] = vdupq_n_f32(0.f);
      for (int64_t c = 0; c < C; ++c) {
        const float32x4_t wc = nd == 4 ? vld1q_f32(w + c * R) : load_partial(w + c * R, nd);
        for (int t = 0; t < kRstdTokens; ++t) s[t] = vfmaq_n_f32(s[t], wc, ym[t][c]);
      }
      for (int t = 0; t < kRstdTokens; ++t) {
        mean[t] = vdivq_f32(vaddq_f32(s[t], vpb_sum), vC);
        s[t] = vdupq_n_f32(0.f);
      }
      for (int64_t c = 0; c < C; ++c) {
        const float32x4_t wc = nd == 4 ? vld1q_f32(w + c * R) : load_partial(w + c * R, nd);
        const float32x4_t pbc = vdupq_n_f32(pb[c]);
        for (int t = 0; t < kRstdTokens; ++t) {
          const float32x4_t dev = vfmaq_n_f32(vsubq_f32(pbc, mean[t]), wc, ym[t][c]);
          s[t] = vfmaq_f32(s[t], dev, dev);
        }
      }
      for (int t = 0; t < nt; ++t) {
        const float32x4_t var = vaddq_f32(vdivq_f32(s[t], vC), veps);
        const float32x4_t v = vdivq_f32(one, vsqrtq_f32(var));
        if (nd == 4) {
          vst1q_f32(rstd + (m0 + t) * R + d0, v);
        } else {
          store_partial(rstd + (m0 + t) * R + d0, nd, v);
        }
      }
    }
  }
}

// scale_rows

void scale_rows_neon(int64_t rows, int64_t C, const float* src, const float* scale,
                     const float* e, float* const* dst) {
  const int64_t cfull = C / 4 * 4, rem = C - cfull;
  for (int64_t t = 0; t < rows; ++t) {
    float* o = dst[t];
    if (!o) continue;
    const float* s = src + t * C;
    const float32x4_t vs = vdupq_n_f32(scale[t]);
    for (int64_t c = 0; c < cfull; c += 4)
      vst1q_f32(o + c, vfmaq_f32(vld1q_f32(e + c), vld1q_f32(s + c), vs));
    if (rem)
      store_partial(o + cfull, rem,
                    vfmaq_f32(load_partial(e + cfull, rem), load_partial(s + cfull, rem), vs));
  }
}

const LglUKernels<float> kTable{"neon",
                                kNR,
                                gemm<NeonGemm>,
                                softmax_rows_neon,
                                prop_rstd_neon,
                                scale_rows_neon,
                                pack_weight_t_neon,
                                gemm_gelu<NeonGemm>,
                                gemm_add<NeonGemm>,
                                gemm_scatter<NeonGemm>};

}  // namespace

const LglUKernels<float>* neon_ukernels() { return &kTable; }

#else

const LglUKernels<float>* neon_ukernels() { return nullptr; }

#endif

}  // namespace cpu
}  // namespace edgevit
