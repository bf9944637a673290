// AVX2 + FMA gemm and packing micro-kernels (contract: gemm.h; readable
// reference: gemm_scalar.cpp). Built with -mavx2 -mfma for this file only (setup.py,
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
// (the group's last vector: a full, 128-bit or vmaskmovps store by its valid columns); gemm_add
// reads R where it stores C (the same masks); gemm_scatter stores like C into its non-null
// destination rows, reading e with the same masks. pack_weight_t reads W only at rows < N,
// columns < K (masked loads) and writes only its panels.
//
// Only intrinsics and plain C in this file: no std:: templates/inline functions, whose
// AVX2-compiled copies the linker could pick for callers on CPUs without AVX2.
#include "gemm.h"
#include "gemm_simd.h"
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

constexpr int kNR = kNR_avx2;
constexpr int kMaxNV = 3;

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

// The last vector of a tile row (nlast valid lanes, mask m): vmaskmovps only where no plain
// store fits, since its stores are slow on AMD even with every lane set (gemms with N = 48 and
// 384 ran 1.2x faster on Zen 4 with plain stores: docs/performance-notes.md); 4 lanes (N = 36,
// head_dim 36) take a 128-bit store.
static inline __attribute__((always_inline)) void store_last(float* c, int64_t nlast,
                                                             __m256i m, __m256 v) {
  if (nlast >= 8)
    _mm256_storeu_ps(c, v);
  else if (nlast == 4)
    _mm_storeu_ps(c, _mm256_castps256_ps128(v));
  else
    _mm256_maskstore_ps(c, m, v);
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
          const TilePrefetch& pf) {
  static_assert(MR >= 1 && MR <= 12 && NV >= 1 && NV <= 3, "tile shape");
  const __m256* init = g.init;
  const int64_t nlast = g.nlast;
  const __m256 i0 = init[0], i1 = NV > 1 ? init[1] : i0, i2 = NV > 2 ? init[2] : i0;
#define EDGEVIT_DECL(r) __m256 c##r##_0 = i0, c##r##_1 = i1, c##r##_2 = i2;
  EDGEVIT_ROWS(EDGEVIT_DECL)
#undef EDGEVIT_DECL
  const float* b = B;
  const char* pfp = pf.at;  // the next panel group (GroupPrefetch)
  for (int64_t k0 = 0; k0 < K; k0 += pf.every, pfp += pf.stride) {
    _mm_prefetch(pfp, _MM_HINT_T1);
    const int64_t k1 = K - k0 < pf.every ? K : k0 + pf.every;
    for (int64_t k = k0; k < k1; ++k, b += kNR) {
      const __m256 b0 = _mm256_loadu_ps(b);
      const __m256 b1 = NV > 1 ? _mm256_loadu_ps(b + ps) : b0;
      const __m256 b2 = NV > 2 ? _mm256_loadu_ps(b + 2 * ps) : b0;
#define EDGEVIT_FMA(r)                                                     \
      if constexpr (MR > r) {                                              \
        const __m256 a = _mm256_set1_ps(A[r * lda + k]);                   \
        c##r##_0 = _mm256_fmadd_ps(a, b0, c##r##_0);                       \
        if constexpr (NV > 1) c##r##_1 = _mm256_fmadd_ps(a, b1, c##r##_1); \
        if constexpr (NV > 2) c##r##_2 = _mm256_fmadd_ps(a, b2, c##r##_2); \
      }
      EDGEVIT_ROWS(EDGEVIT_FMA)
#undef EDGEVIT_FMA
    }
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
        store_last(c, nlast, last, epilogue<EP>(c##r##_0, rr, last, s, ev));         \
      if constexpr (NV == 2) {                                                       \
        _mm256_storeu_ps(c, epilogue<EP>(c##r##_0, rr, full, s, ev));                \
        store_last(c + kNR, nlast, last,                                            \
                   epilogue<EP>(c##r##_1, rr + kNR, last, s, ev + kNR));             \
      }                                                                              \
      if constexpr (NV == 3) {                                                       \
        _mm256_storeu_ps(c, epilogue<EP>(c##r##_0, rr, full, s, ev));                \
        _mm256_storeu_ps(c + kNR, epilogue<EP>(c##r##_1, rr + kNR, full, s, ev + kNR)); \
        store_last(c + 2 * kNR, nlast, last,                                        \
                   epilogue<EP>(c##r##_2, rr + 2 * kNR, last, s, ev + 2 * kNR));     \
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

}  // namespace

void gemm_avx2(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* Bp,
               const float* bias, float* C, int64_t ldc) {
  gemm_simd::gemm<Avx2Gemm>(M, N, K, A, lda, Bp, bias, C, ldc);
}

void gemm_gelu_avx2(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                    const float* Bp, const float* bias, float* C, int64_t ldc) {
  gemm_simd::gemm_gelu<Avx2Gemm>(M, N, K, A, lda, Bp, bias, C, ldc);
}

void gemm_add_avx2(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                   const float* Bp, const float* bias, const float* R, int64_t ldr, float* C,
                   int64_t ldc) {
  gemm_simd::gemm_add<Avx2Gemm>(M, N, K, A, lda, Bp, bias, R, ldr, C, ldc);
}

void gemm_scatter_avx2(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                       const float* Bp, const float* bias, const float* scale, const float* e,
                       float* const* dst) {
  gemm_simd::gemm_scatter<Avx2Gemm>(M, N, K, A, lda, Bp, bias, scale, e, dst);
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

#endif

}  // namespace cpu
}  // namespace edgevit
