// NEON (AArch64 Advanced SIMD) gemm and packing micro-kernels (contract: gemm.h;
// readable reference: gemm_scalar.cpp). NEON is the aarch64 baseline,
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
// stores like C into its non-null destination rows and reads e like R). pack_weight_t reads W
// only at rows < N, columns < K and writes only its panels.
//
// Only intrinsics and plain C in this file: no std:: templates/inline functions (ODR hazard of
// per-ISA files, see gemm_avx512.cpp).
#include "gemm.h"
#include "gemm_simd.h"
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

constexpr int kNR = kNR_neon;
constexpr int kMRMax = 8;

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
// No software prefetch (ps and pf unused): one panel per tile.
template <int MR, int EP>
void tile(int64_t K, const float* __restrict A, int64_t lda, const float* __restrict B,
          int64_t /*ps*/, const NeonGroup& g, float* __restrict C, int64_t ldc,
          const GemmEpArgs& ep, const TilePrefetch& /*pf*/) {
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

}  // namespace

void gemm_neon(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* Bp,
               const float* bias, float* C, int64_t ldc) {
  gemm_simd::gemm<NeonGemm>(M, N, K, A, lda, Bp, bias, C, ldc);
}

void gemm_gelu_neon(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                    const float* Bp, const float* bias, float* C, int64_t ldc) {
  gemm_simd::gemm_gelu<NeonGemm>(M, N, K, A, lda, Bp, bias, C, ldc);
}

void gemm_add_neon(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                   const float* Bp, const float* bias, const float* R, int64_t ldr, float* C,
                   int64_t ldc) {
  gemm_simd::gemm_add<NeonGemm>(M, N, K, A, lda, Bp, bias, R, ldr, C, ldc);
}

void gemm_scatter_neon(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                       const float* Bp, const float* bias, const float* scale, const float* e,
                       float* const* dst) {
  gemm_simd::gemm_scatter<NeonGemm>(M, N, K, A, lda, Bp, bias, scale, e, dst);
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

#endif

}  // namespace cpu
}  // namespace edgevit
