// AVX-512 gemm and packing micro-kernels (contract: gemm.h; readable reference: gemm_scalar.cpp).
// Built with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma for this file only (setup.py,
// tests/native/Makefile); isa.cpp calls it only on CPUs that have those features.
//
// Layout: B is packed in panels of nr = 16 columns (one zmm per packed row). nr = 16 rather than
// 32 because the workload's N are small (36, 48, 196, head dims 36/48): 16-column granularity
// wastes at most 15 lanes per gemm, and a tile may still span several adjacent panels.
//
// gemm tiling: C is computed in tiles of MR rows x NV panels (NV*16 columns), MR*NV zmm
// accumulators (named variables: GCC keeps an accumulator array this large in memory around the k
// loop), k ascending, one FMA per (row, panel, k) with the A element broadcast from memory.
// Panels go in groups of NV = 3 (MR <= 9: 27 accumulators + 3 B vectors + 1 broadcast of the 32
// zmm registers); a rest of 4 panels goes 2 + 2 (NV = 2, MR <= 12), a rest of 1 or 2 as one group
// (NV = 1: MR <= 14). The M rows of a group are split into ceil(M / MRmax) blocks of nearly equal
// height (M = 64, NV = 3 -> 8 blocks of 8; M = 49 -> 9 + 5 x 8), each run by a template
// instantiation for that exact MR, so there is no partial row tile. NV = 3 beats pairs-only (14 x
// 32) clearly and comes near the FMA peak on the large shapes (docs/performance-notes.md).
//
// pack_weight_t: 16 x 16 blocks of W transposed in registers (unpack/shuffle/shuffle_f32x4).
//
// Invariants (no out-of-bounds access): A is read only at rows < M and columns < K; bias only at
// columns < N (masked loads, which do not fault on masked-off lanes); packed panels are read
// whole (they are zero-padded to 16 columns); C is written only at rows < M, columns < N (masked
// store on the group's last vector); gemm_add reads R where it stores C (the same masks);
// gemm_scatter stores like C into its non-null destination rows, reading e with the same masks.
// pack_weight_t reads W only at rows < N, columns < K (masked loads) and writes only its panels.
//
// Only intrinsics and plain C in this file: no std:: templates/inline functions, whose
// AVX-512-compiled copies the linker could pick for callers on CPUs without AVX-512.
#include "gemm.h"
#include "gemm_simd.h"
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

constexpr int kNR = kNR_avx512;
constexpr int kMaxNV = 3;

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
          const GemmEpArgs& ep, const TilePrefetch& pf) {
  static_assert(MR >= 1 && MR <= 14 && NV >= 1 && NV <= 3, "tile shape");
  const __m512* init = g.init;
  const __mmask16 last = g.last;
  const __m512 i0 = init[0], i1 = NV > 1 ? init[1] : i0, i2 = NV > 2 ? init[2] : i0;
#define EDGEVIT_DECL(r) __m512 c##r##_0 = i0, c##r##_1 = i1, c##r##_2 = i2;
  EDGEVIT_ROWS(EDGEVIT_DECL)
#undef EDGEVIT_DECL
  const float* b = B;
  const char* pfp = pf.at;  // the next panel group (GroupPrefetch)
  for (int64_t k0 = 0; k0 < K; k0 += pf.every, pfp += pf.stride) {
    _mm_prefetch(pfp, _MM_HINT_T1);
    const int64_t k1 = K - k0 < pf.every ? K : k0 + pf.every;
    for (int64_t k = k0; k < k1; ++k, b += kNR) {
      const __m512 b0 = _mm512_loadu_ps(b);
      const __m512 b1 = NV > 1 ? _mm512_loadu_ps(b + ps) : b0;
      const __m512 b2 = NV > 2 ? _mm512_loadu_ps(b + 2 * ps) : b0;
#define EDGEVIT_FMA(r)                                                     \
      if constexpr (MR > r) {                                              \
        const __m512 a = _mm512_set1_ps(A[r * lda + k]);                   \
        c##r##_0 = _mm512_fmadd_ps(a, b0, c##r##_0);                       \
        if constexpr (NV > 1) c##r##_1 = _mm512_fmadd_ps(a, b1, c##r##_1); \
        if constexpr (NV > 2) c##r##_2 = _mm512_fmadd_ps(a, b2, c##r##_2); \
      }
      EDGEVIT_ROWS(EDGEVIT_FMA)
#undef EDGEVIT_FMA
    }
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

}  // namespace

void gemm_avx512(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* Bp,
                 const float* bias, float* C, int64_t ldc) {
  gemm_simd::gemm<Avx512Gemm>(M, N, K, A, lda, Bp, bias, C, ldc);
}

void gemm_gelu_avx512(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                      const float* Bp, const float* bias, float* C, int64_t ldc) {
  gemm_simd::gemm_gelu<Avx512Gemm>(M, N, K, A, lda, Bp, bias, C, ldc);
}

void gemm_add_avx512(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                     const float* Bp, const float* bias, const float* R, int64_t ldr, float* C,
                     int64_t ldc) {
  gemm_simd::gemm_add<Avx512Gemm>(M, N, K, A, lda, Bp, bias, R, ldr, C, ldc);
}

void gemm_scatter_avx512(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                         const float* Bp, const float* bias, const float* scale, const float* e,
                         float* const* dst) {
  gemm_simd::gemm_scatter<Avx512Gemm>(M, N, K, A, lda, Bp, bias, scale, e, dst);
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

#endif

}  // namespace cpu
}  // namespace edgevit
