// Scalar micro-kernels of edgevit::lgl_fused: always compiled, the reference the SIMD variants
// are tested against (tests/native). Same loop structure as the SIMD files: an MR x NR register
// tile over a packed-B panel, k ascending, bias first.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "lgl_fused_ukernels.h"
#include "mlp_fused_ukernels.h"

namespace edgevit {
namespace cpu {
namespace {

constexpr int64_t kMR = 4;
constexpr int64_t kNR = 8;

// C[0:MR, 0:nn) = bias + A[0:MR, 0:K) * panel. MR and kNR are compile-time, so the accumulator
// tile stays in registers and the compiler turns each k step's MR x kNR multiply-adds into
// vector code for the build's baseline ISA (SSE2 on x86-64, NEON on aarch64): plain C++, yet
// several times faster than a naive loop. GCC's loop vectoriser would instead vectorise the k
// loop badly (docs/performance-notes.md), so it is off for this function.
#if defined(__GNUC__) && !defined(__clang__)
#define EDGEVIT_NO_LOOP_VECTORIZE __attribute__((optimize("no-tree-loop-vectorize")))
#define EDGEVIT_NO_TRAPPING_MATH __attribute__((optimize("no-trapping-math")))
#define EDGEVIT_ALWAYS_INLINE __attribute__((always_inline))
#else
#define EDGEVIT_ALWAYS_INLINE
#define EDGEVIT_NO_LOOP_VECTORIZE
#define EDGEVIT_NO_TRAPPING_MATH
#endif
// NT columns of the panel are computed: kNR, or kNR / 2 for a last panel of at most kNR / 2
// columns (d = 36 = 4.5 panels: the attention's products). kFull: all NT columns are stored and
// bias is non-null, so the compiler also turns the bias loads and the stores into whole vectors
// rather than testing j < nn at every element (docs/performance-notes.md).
template <typename T, int64_t MR, int64_t NT, bool kFull>
EDGEVIT_NO_LOOP_VECTORIZE void tile_scalar(int64_t K, const T* A, int64_t lda, const T* panel,
                                           const T* bias, int64_t nn, T* C, int64_t ldc) {
  static_assert(NT <= kNR, "a tile reads at most one panel's columns");
  const int64_t stored = kFull ? NT : nn;
  T acc[MR][NT];
  for (int64_t i = 0; i < MR; ++i)
    for (int64_t j = 0; j < NT; ++j) acc[i][j] = kFull ? bias[j] : (bias && j < nn) ? bias[j] : T(0);
  for (int64_t k = 0; k < K; ++k) {
    const T* b = panel + k * kNR;
    for (int64_t i = 0; i < MR; ++i) {
      const T a = A[i * lda + k];
      for (int64_t j = 0; j < NT; ++j) acc[i][j] += a * b[j];
    }
  }
  for (int64_t i = 0; i < MR; ++i)
    for (int64_t j = 0; j < stored; ++j) C[i * ldc + j] = acc[i][j];
}

template <typename T>
void gemm_scalar(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* Bp,
                 const T* bias, T* C, int64_t ldc) {
  using Tile = void (*)(int64_t, const T*, int64_t, const T*, const T*, int64_t, T*, int64_t);
  static_assert(kMR == 4, "the tile tables below list MR = 1..4");
  static const Tile full[kMR + 1] = {nullptr, tile_scalar<T, 1, kNR, true>,
                                     tile_scalar<T, 2, kNR, true>, tile_scalar<T, 3, kNR, true>,
                                     tile_scalar<T, 4, kNR, true>};
  static const Tile part[kMR + 1] = {nullptr, tile_scalar<T, 1, kNR, false>,
                                     tile_scalar<T, 2, kNR, false>, tile_scalar<T, 3, kNR, false>,
                                     tile_scalar<T, 4, kNR, false>};
  static const Tile half[kMR + 1] = {
      nullptr, tile_scalar<T, 1, kNR / 2, false>, tile_scalar<T, 2, kNR / 2, false>,
      tile_scalar<T, 3, kNR / 2, false>, tile_scalar<T, 4, kNR / 2, false>};
  static const T zeros[kNR] = {};
  for (int64_t n0 = 0; n0 < N; n0 += kNR) {
    const T* panel = Bp + (n0 / kNR) * K * kNR;
    const int64_t nn = std::min(kNR, N - n0);
    const Tile* tiles = nn == kNR ? full : nn <= kNR / 2 ? half : part;
    const T* b = bias ? bias + n0 : nn == kNR ? zeros : nullptr;  // full tiles add a bias
    for (int64_t m0 = 0; m0 < M; m0 += kMR) {
      tiles[std::min(kMR, M - m0)](K, A + m0 * lda, lda, panel, b, nn, C + m0 * ldc + n0, ldc);
    }
  }
}

// The reference epilogues: gemm, then the mlp_fused element-wise step on each row of C (the
// SIMD variants apply it to the register tile before storing; the same bits either way).
template <typename T>
void gemm_gelu_scalar(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* Bp,
                      const T* bias, T* C, int64_t ldc) {
  gemm_scalar<T>(M, N, K, A, lda, Bp, bias, C, ldc);
  for (int64_t m = 0; m < M; ++m) scalar_mlp_ukernels<T>().gelu(N, C + m * ldc);
}

template <typename T>
void gemm_add_scalar(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* Bp,
                     const T* bias, const T* R, int64_t ldr, T* C, int64_t ldc) {
  gemm_scalar<T>(M, N, K, A, lda, Bp, bias, C, ldc);
  for (int64_t m = 0; m < M; ++m) scalar_mlp_ukernels<T>().add(N, R + m * ldr, C + m * ldc);
}

// exp for softmax, of x = s - (the row's max): x <= 0 or NaN. float: the SIMD kernels' algorithm
// (Cephes: x = n ln2 + r, degree-5 polynomial, 2^n as two exact power-of-two factors so denormal
// results and 0 are right; NaN stays NaN; ~1 ulp), branch-free so the compiler vectorises the
// softmax loop; double: std::exp. GCC if-converts the clamp (and so vectorises) only without
// -ftrapping-math, which changes no result: it only lets a comparison of a NaN that cannot trap
// here run unconditionally. x <= 0 needs no upper clamp (the SIMD kernels' exp, for any x, clamps
// at 89 too): GCC turns each clamp into selects on the result, so the upper one would be pure
// cost (the same bits without it; docs/performance-notes.md).
EDGEVIT_NO_TRAPPING_MATH EDGEVIT_ALWAYS_INLINE inline float softmax_exp(float x) {
  x = x < -104.0f ? -104.0f : x;  // exp(-104) rounds to 0 (NaN compares false: stays NaN)
  // round(x log2 e) to nearest (even): adding and removing 1.5 * 2^23 (|x log2 e| < 2^22), a
  // form the compiler keeps (no -ffast-math) and vectorises, unlike a libm call.
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * (r * r) + r + 1.0f;
  // n is in [-150, 128] (NaN x: y is NaN, and n is replaced by 0 so the conversion is defined).
  const int32_t ni = int32_t(n == n ? n : 0.0f), n1 = ni >> 1, n2 = ni - n1;
  float s1, s2;
  const uint32_t b1 = uint32_t(n1 + 127) << 23, b2 = uint32_t(n2 + 127) << 23;
  std::memcpy(&s1, &b1, sizeof s1);
  std::memcpy(&s2, &b2, sizeof s2);
  return y * s1 * s2;
}
inline double softmax_exp(double x) { return std::exp(x); }

// The row's max and sum run in kLanes interleaved chains (element j in chain j % kLanes),
// combined at the end: one chain waits out an add's latency at every element (softmax was 19.5%
// of the scalar op's kernel time on XXS stage 2 with one chain, 15.8% with four; perf).
constexpr int64_t kLanes = 4;
static_assert(kLanes == 4, "softmax_rows_scalar combines exactly four chains");

template <typename T>
EDGEVIT_NO_TRAPPING_MATH void softmax_rows_scalar(int64_t M, int64_t N, T scale, T* S, int64_t ld) {
  for (int64_t m = 0; m < M; ++m) {
    T* s = S + m * ld;
    T mx[kLanes], sum[kLanes];
    for (int64_t l = 0; l < kLanes; ++l) mx[l] = -INFINITY, sum[l] = 0;
    for (int64_t j = 0; j < N; ++j) s[j] *= scale;
    int64_t j = 0;
    for (; j + kLanes <= N; j += kLanes)
      for (int64_t l = 0; l < kLanes; ++l)
        mx[l] = mx[l] < s[j + l] ? s[j + l] : mx[l];  // std::max, spelled out: no call under the attribute
    for (; j < N; ++j) mx[0] = mx[0] < s[j] ? s[j] : mx[0];
    const T mx01 = mx[0] < mx[1] ? mx[1] : mx[0], mx23 = mx[2] < mx[3] ? mx[3] : mx[2];
    const T row_max = mx01 < mx23 ? mx23 : mx01;
    // A row of -inf (or NaN) propagates NaN exactly as torch.softmax does.
    for (j = 0; j < N; ++j) s[j] = softmax_exp(s[j] - row_max);
    for (j = 0; j + kLanes <= N; j += kLanes)
      for (int64_t l = 0; l < kLanes; ++l) sum[l] += s[j + l];
    for (; j < N; ++j) sum[0] += s[j];
    const T inv = T(1) / ((sum[0] + sum[1]) + (sum[2] + sum[3]));
    for (j = 0; j < N; ++j) s[j] *= inv;
  }
}

// Offsets go in chunks of kRstdChunk: sums over channels c run for a whole chunk of offsets at
// once (pwt row c is contiguous in d), a loop the compiler vectorises.
constexpr int64_t kRstdChunk = 16;

template <typename T>
void prop_rstd_scalar(int64_t M, int64_t R, int64_t C, const T* y, int64_t ldy, const T* pwt,
                      const T* pb, T eps, T* rstd) {
  if (C <= 0) return;
  for (int64_t m = 0; m < M; ++m) {
    const T* ym = y + m * ldy;
    for (int64_t d0 = 0; d0 < R; d0 += kRstdChunk) {
      const int64_t nd = std::min(kRstdChunk, R - d0);
      T sum[kRstdChunk] = {}, mean[kRstdChunk], sq[kRstdChunk] = {};
      for (int64_t c = 0; c < C; ++c)
        for (int64_t d = 0; d < nd; ++d) sum[d] += ym[c] * pwt[c * R + d0 + d] + pb[c];
      for (int64_t d = 0; d < nd; ++d) mean[d] = sum[d] / T(C);
      for (int64_t c = 0; c < C; ++c)
        for (int64_t d = 0; d < nd; ++d) {
          const T dev = ym[c] * pwt[c * R + d0 + d] + pb[c] - mean[d];
          sq[d] += dev * dev;
        }
      for (int64_t d = 0; d < nd; ++d) rstd[m * R + d0 + d] = T(1) / std::sqrt(sq[d] / T(C) + eps);
    }
  }
}

template <typename T>
void scale_rows_scalar(int64_t rows, int64_t C, const T* src, const T* scale, const T* e,
                       T* const* dst) {
  for (int64_t t = 0; t < rows; ++t) {
    if (!dst[t]) continue;
    const T* s = src + t * C;
    for (int64_t c = 0; c < C; ++c) dst[t][c] = scale[t] * s[c] + e[c];
  }
}

template <typename T>
void pack_weight_t_scalar(const T* w, int64_t N, int64_t K, int64_t ldw, int64_t p0, int64_t p1,
                          T* dst) {
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t n0 = p * kNR, nn = std::min(kNR, N - n0);
    T* d = dst + p * K * kNR;
    for (int64_t k = 0; k < K; ++k) {
      for (int64_t j = 0; j < nn; ++j) d[k * kNR + j] = w[(n0 + j) * ldw + k];
      for (int64_t j = nn; j < kNR; ++j) d[k * kNR + j] = T(0);
    }
  }
}

}  // namespace

template <typename T>
void pack_b(const T* src, int64_t K, int64_t N, int64_t sk, int64_t sn, int64_t nr, T* dst) {
  for (int64_t n0 = 0; n0 < N; n0 += nr) {
    const int64_t nn = std::min(nr, N - n0);
    for (int64_t k = 0; k < K; ++k) {
      T* d = dst + (n0 / nr) * K * nr + k * nr;
      const T* s = src + k * sk + n0 * sn;
      if (sn == 1) {
        std::copy(s, s + nn, d);  // rows of B contiguous: a plain copy
      } else {
        for (int64_t j = 0; j < nn; ++j) d[j] = s[j * sn];
      }
      for (int64_t j = nn; j < nr; ++j) d[j] = T(0);
    }
  }
}

template <typename T>
const LglUKernels<T>& scalar_ukernels() {
  static const LglUKernels<T> table{"scalar",         kNR,
                                    gemm_scalar<T>,   softmax_rows_scalar<T>,
                                    prop_rstd_scalar<T>, scale_rows_scalar<T>,
                                    pack_weight_t_scalar<T>, gemm_gelu_scalar<T>,
                                    gemm_add_scalar<T>, nullptr};
  return table;
}

template void pack_b<float>(const float*, int64_t, int64_t, int64_t, int64_t, int64_t, float*);
template void pack_b<double>(const double*, int64_t, int64_t, int64_t, int64_t, int64_t, double*);
template const LglUKernels<float>& scalar_ukernels<float>();
template const LglUKernels<double>& scalar_ukernels<double>();

}  // namespace cpu
}  // namespace edgevit
