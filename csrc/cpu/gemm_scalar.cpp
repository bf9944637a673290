// Scalar gemm and packing micro-kernels (contract: gemm.h, lgl_fused_ukernels.h): always
// compiled, the reference the SIMD variants are tested against (tests/native), float and double.
// Same loop structure as the SIMD files: an MR x NR register tile over a packed-B panel, k
// ascending, bias first.
#include <algorithm>

#include "activation.h"
#include "gemm.h"

namespace edgevit {
namespace cpu {
namespace {

constexpr int64_t kMR = 4;
constexpr int64_t kNR = kNR_scalar;

#if defined(__GNUC__) && !defined(__clang__)
#define EDGEVIT_NO_LOOP_VECTORIZE __attribute__((optimize("no-tree-loop-vectorize")))
#else
#define EDGEVIT_NO_LOOP_VECTORIZE
#endif

// C[0:MR, 0:nn) = bias + A[0:MR, 0:K) * panel. MR and kNR are compile-time, so the accumulator
// tile stays in registers and the compiler turns each k step's MR x kNR multiply-adds into
// vector code for the build's baseline ISA (SSE2 on x86-64, NEON on aarch64): plain C++, yet
// several times faster than a naive loop. GCC's loop vectoriser would instead vectorise the k
// loop badly (docs/performance-notes.md), so it is off for this function.
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

}  // namespace

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
  for (int64_t m = 0; m < M; ++m) gelu_scalar<T>(N, C + m * ldc);
}

template <typename T>
void gemm_add_scalar(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* Bp,
                     const T* bias, const T* R, int64_t ldr, T* C, int64_t ldc) {
  gemm_scalar<T>(M, N, K, A, lda, Bp, bias, C, ldc);
  for (int64_t m = 0; m < M; ++m) add_scalar<T>(N, R + m * ldr, C + m * ldc);
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

#define EDGEVIT_INSTANTIATE(T)                                                                \
  template void gemm_scalar<T>(int64_t, int64_t, int64_t, const T*, int64_t, const T*,        \
                               const T*, T*, int64_t);                                        \
  template void gemm_gelu_scalar<T>(int64_t, int64_t, int64_t, const T*, int64_t, const T*,   \
                                    const T*, T*, int64_t);                                   \
  template void gemm_add_scalar<T>(int64_t, int64_t, int64_t, const T*, int64_t, const T*,    \
                                   const T*, const T*, int64_t, T*, int64_t);                 \
  template void pack_weight_t_scalar<T>(const T*, int64_t, int64_t, int64_t, int64_t,         \
                                        int64_t, T*);                                         \
  template void pack_b<T>(const T*, int64_t, int64_t, int64_t, int64_t, int64_t, T*);
EDGEVIT_INSTANTIATE(float)
EDGEVIT_INSTANTIATE(double)
#undef EDGEVIT_INSTANTIATE

}  // namespace cpu
}  // namespace edgevit
